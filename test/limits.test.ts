/**
 * Limits that bound what one request can cost: a presence list is refused past
 * MAX_PRESENCE_LIST members (presence_stats still answers), and an SSE stream whose event ids
 * could outgrow what a resume accepts is refused before it starts.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_PRESENCE_LIST } from "../src/presence/presence.js";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually } from "./helpers/signal.js";

const CONFIG = `
namespaces:
  room: { history: { size: 10, ttl: 5m }, presence: true, anonymous: true, clientPublish: true }
presenceGrace: 0s
maxSubscriptions: 200
# 1,001 clients from one address, opened in bursts of 100.
maxConnectionsPerIp: 0
connectRate: 0
`;

describe("limits", () => {
  let gw: GatewayProcess;
  const clients: TestClient[] = [];
  beforeAll(async () => {
    gw = await startGateway({ config: { yaml: CONFIG } });
  });
  afterAll(async () => {
    for (const c of clients) c.terminate();
    await gw?.stop();
  });

  it("refuses to list more than MAX_PRESENCE_LIST members, but counts them", async () => {
    const n = MAX_PRESENCE_LIST + 1;
    for (let i = 0; i < n; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(100, n - i) }, async () => {
          const c = await TestClient.connect(gw.wsUrl);
          const r = await c.request("subscribe", { ch: "room.big" });
          expect(r.ok, JSON.stringify(r)).toBeDefined();
          return c;
        }),
      );
      clients.push(...batch);
    }
    const asker = clients[0] as TestClient;
    const listed = await asker.request("presence", { ch: "room.big" });
    expect(listed.error).toMatchObject({ code: 413 });
    const stats = await asker.request("presence_stats", { ch: "room.big" });
    expect(stats.ok).toEqual({ clients: n, users: 0 });
    // One fewer member (presenceGrace 0: removed at once, but asynchronously) and the list is
    // answered again.
    const leaving = clients.pop() as TestClient;
    expect((await leaving.request("unsubscribe", { ch: "room.big" })).ok).toEqual({});
    const members = await eventually(
      async () => {
        const r = await asker.request("presence", { ch: "room.big" });
        return r.ok ? Object.keys((r.ok as { clients: object }).clients).length : undefined;
      },
      "the presence list answered again",
      10_000,
      50,
    );
    expect(members).toBe(MAX_PRESENCE_LIST);
  }, 120_000);

  it("refuses an SSE stream whose event ids could not be resumed", async () => {
    const long = Array.from({ length: 120 }, (_, i) => `ch=room.${"x".repeat(20)}${i}`).join("&");
    const refused = await fetch(`${gw.url}/sse?${long}`);
    expect(refused.status).toBe(400);
    expect(await refused.text()).toMatch(/too many or too long history channels/);
    const fine = await fetch(`${gw.url}/sse?ch=room.a&ch=room.b`);
    expect(fine.status).toBe(200);
    await fine.body?.cancel();
  });
});
