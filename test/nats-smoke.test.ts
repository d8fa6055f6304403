import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";

const CONFIG = `
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
presenceGrace: 0s
`;

describe("two replicas over one nats-server", () => {
  let nats: NatsCluster;
  const gws: GatewayProcess[] = [];
  beforeAll(async () => {
    nats = await startNats(1);
    for (let i = 0; i < 2; i++) gws.push(await startGateway({ config: { yaml: CONFIG }, args: ["--nats", nats.servers] }));
  });
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.stop()));
    await nats?.stop();
  });

  it("delivers a publication made on one replica to a subscriber on the other", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const sub = await TestClient.connect(a.wsUrl);
    const pub = await TestClient.connect(b.wsUrl);
    expect((await sub.request("subscribe", { ch: "chat.x" })).ok).toMatchObject({ offset: 0 });
    const r = await pub.request("publish", { ch: "chat.x", data: { n: 1 } });
    expect(r.ok).toMatchObject({ offset: 1 });
    const p = await sub.nextPush((f) => f.push === "pub");
    expect(p).toMatchObject({ ch: "chat.x", offset: 1, data: { n: 1 } });
    sub.close();
    pub.close();
  });
});
