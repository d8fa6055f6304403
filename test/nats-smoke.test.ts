import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";
import { signToken } from "./helpers/tokens.js";

const SECRET = "nats-smoke-hmac-secret-0123456789abcdef";
const CONFIG = `
auth:
  hmacSecret: "${SECRET}"
maxConnectionsPerUser: 2
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
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

  it("delivers an idempotent publish to a channel without history once, on every replica", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const subA = await TestClient.connect(a.wsUrl);
    const subB = await TestClient.connect(b.wsUrl);
    const pub = await TestClient.connect(b.wsUrl);
    for (const s of [subA, subB]) expect((await s.request("subscribe", { ch: "live.x" })).ok).toEqual({});
    const seen = [subA.record(), subB.record()];
    // The same key twice from different replicas' clients, then a marker without a key.
    expect((await pub.request("publish", { ch: "live.x", data: "once", idempotencyKey: "k-1" })).ok).toEqual({});
    expect((await subA.request("publish", { ch: "live.x", data: "again", idempotencyKey: "k-1" })).ok).toEqual({});
    expect((await pub.request("publish", { ch: "live.x", data: "marker" })).ok).toEqual({});
    for (const [i, s] of [subA, subB].entries()) {
      await s.nextPush((f) => f.push === "pub" && f.data === "marker", "marker");
      expect(seen[i]?.filter((f) => f.push === "pub").map((f) => f.data)).toEqual(["once", "marker"]);
    }
    // Another channel has its own key space.
    expect((await pub.request("publish", { ch: "live.y", data: "other channel", idempotencyKey: "k-1" })).ok).toEqual({});
    for (const c of [subA, subB, pub]) c.close();
  });

  it("limits a user's connections across replicas, and frees the slot when one closes", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const token = await signToken({ sub: "trudy" }, SECRET);
    const first = await TestClient.connect(a.wsUrl, token);
    const second = await TestClient.connect(b.wsUrl, token);
    const third = new TestClient(a.wsUrl);
    await third.opened;
    expect((await third.request("connect", { token })).error).toMatchObject({ code: 429 });
    expect((await third.closed).code).toBe(4029);
    // The entry of a closed connection is removed from the shared store (asynchronously, in
    // NATS): connect again until the slot is seen free.
    second.close();
    await second.closed;
    const deadline = Date.now() + 10_000;
    let fourth: TestClient | undefined;
    for (let i = 0; i < 50 && !fourth && Date.now() < deadline; i++) {
      const c = new TestClient(b.wsUrl);
      await c.opened;
      const r = await c.request("connect", { token });
      if (r.ok) fourth = c;
      else await c.closed;
    }
    expect(fourth).toBeDefined();
    first.close();
    fourth?.close();
  });
});
