import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";

describe("embedded default", () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway();
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it("lets an anonymous client publish to and receive from the public namespace", async () => {
    const a = await TestClient.connect(gw.wsUrl);
    const b = await TestClient.connect(gw.wsUrl, undefined, { format: "msgpack" });
    expect((await a.request("subscribe", { ch: "public.smoke" })).ok).toBeDefined();
    expect((await b.request("subscribe", { ch: "public.smoke" })).ok).toBeDefined();
    const reply = await a.request("publish", { ch: "public.smoke", data: { text: "hi" } });
    expect(reply.ok).toEqual({ offset: 1, epoch: expect.any(String) });
    for (const c of [a, b]) {
      const push = await c.nextPush((p) => p.push === "pub");
      expect(push).toMatchObject({ ch: "public.smoke", offset: 1, data: { text: "hi" } });
    }
    a.close();
    b.close();
  });
});
