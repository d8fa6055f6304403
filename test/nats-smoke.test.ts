import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../src/client/index.js";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { metricValue, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";
import { eventually } from "./helpers/signal.js";
import { SseClient } from "./helpers/sse-client.js";
import { signToken } from "./helpers/tokens.js";

const SECRET = "nats-smoke-hmac-secret-0123456789abcdef";
const API_KEY = "nats-smoke-api-key-0123456789abcdefgh";
const CONFIG = `
apiKey: ${API_KEY}
sessionSecret: nats-smoke-session-secret-0123456789abcdef
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
    // The JetStream limiter's load is on /metrics (idle now: nothing waits).
    expect(await metricValue(a, 'natsedge_jetstream_requests{state="waiting"}')).toBe(0);
    expect((await (await fetch(`${a.adminUrl}/metrics`)).text())).toMatch(/^natsedge_jetstream_requests\{state="active"\} \d+$/m);
    sub.close();
    pub.close();
  });

  it("a client moving to a replica that holds the channel recovers from its memory; a longer absence reads history", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const ch = "chat.moving";
    const series = (source: string): string => `natsedge_recoveries_total{result="recovered",source="${source}"}`;
    // Someone on B keeps the channel held there, as the rest of a room does in a storm.
    const stay = await TestClient.connect(b.wsUrl);
    expect((await stay.request("subscribe", { ch })).ok).toMatchObject({ offset: 0 });
    const publish = async (n: number): Promise<number> => {
      const res = await api(a.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { n } } });
      expect(res.status).toBe(200);
      return res.body.offset as number;
    };
    const moveAfter = async (missed: number): Promise<Frame> => {
      const mover = await TestClient.connect(a.wsUrl);
      const at = (await mover.request("subscribe", { ch })).ok as { offset: number; epoch: string };
      mover.close();
      let last = 0;
      for (let i = 1; i <= missed; i++) last = await publish(i);
      await stay.waitFor(() => (stay.pubs(ch).at(-1)?.offset === last ? true : undefined), "B to deliver the last one");
      const back = await TestClient.connect(b.wsUrl);
      const reply = (await back.request("subscribe", { ch, since: at })).ok as Frame;
      back.close();
      expect(reply).toMatchObject({ recovered: true, offset: last });
      expect((reply.pubs as Frame[]).map((p) => (p.data as { n: number }).n)).toEqual(Array.from({ length: missed }, (_, i) => i + 1));
      return reply;
    };
    const recent0 = await metricValue(b, series("recent"));
    const history0 = await metricValue(b, series("history"));
    await moveAfter(5);
    expect(await metricValue(b, series("recent"))).toBe(recent0 + 1);
    expect(await metricValue(b, series("history"))).toBe(history0);
    // B keeps the last 64 it delivered: 70 missed come from the stream.
    await moveAfter(70);
    expect(await metricValue(b, series("recent"))).toBe(recent0 + 1);
    expect(await metricValue(b, series("history"))).toBe(history0 + 1);
    stay.close();
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
    const fourth = await eventually(
      async () => {
        const c = new TestClient(b.wsUrl);
        await c.opened;
        const r = await c.request("connect", { token });
        if (r.ok) return c;
        await c.closed;
        return undefined;
      },
      "a connection admitted once the closed one's slot is free",
      10_000,
      0,
    );
    expect(fourth).toBeDefined();
    first.close();
    fourth.close();
  });

  it("counts a user's connections from what the replicas publish, ignoring junk and gateways that are gone", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const user = "mallory";
    const tok = Buffer.from(user).toString("base64url");
    const nc = await connect({ servers: nats.servers });
    try {
      const js = nc.jetstream();
      // A gateway that does not exist claims 50 of her connections; the rest is not a count at all.
      for (const [subject, body] of [
        [`natsedge.ucount.${tok}.no-such-gateway`, "50"],
        [`natsedge.ucount.${tok}`, "1"],
        [`natsedge.ucount.${tok}.x.y`, "1"],
        [`natsedge.ucount.%%%.x`, "1"],
        [`natsedge.ucount.${tok}.junk`, "x".repeat(5000)],
        [`natsedge.ucount.${tok}.neg`, "-3"],
      ] as const) {
        await js.publish(subject, Buffer.from(body));
      }
    } finally {
      await nc.close();
    }
    const token = await signToken({ sub: user }, SECRET);
    const first = await TestClient.connect(a.wsUrl, token);
    const second = await TestClient.connect(b.wsUrl, token);
    // Still exactly two: both replicas see each other's count, and nothing else.
    const third = new TestClient(b.wsUrl);
    await third.opened;
    expect((await third.request("connect", { token })).error).toMatchObject({ code: 429 });
    for (const c of [first, second]) c.close();
  });

  it("a server-side disconnect ends the user's WebSocket, SSE and long-poll sessions on every replica", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const token = await signToken({ sub: "victor" }, SECRET);
    const post = async (gw: GatewayProcess, path: string, body: unknown): Promise<{ status: number; body: Frame }> => {
      const res = await fetch(gw.url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Frame };
    };
    const connect = await post(a, "/lp/rpc", { cmds: [{ id: 1, op: "connect", token }] });
    const session = ((connect.body.replies as Frame[])[0]?.ok as { session: string }).session;
    const held = post(a, "/lp/poll", { session, subs: { "live.quiet": null }, timeout: 20 });
    const ws = await TestClient.connect(b.wsUrl, token);
    // The SDK over long-poll, on the other replica: a revoked session ends it like 4003 does.
    const sdk = new Client(a.url, { transports: ["longpoll"], token, autoConnect: false, minReconnectDelay: 20 });
    const ended = new Promise<{ code: number; reconnect: boolean }>((resolve) => sdk.on("disconnected", resolve));
    const sdkUp = new Promise<void>((resolve) => sdk.on("connected", () => resolve()));
    void sdk.connect();
    sdk.subscribe("live.quiet");
    await sdkUp;
    const sse = await SseClient.open(b.url, `ch=live.quiet&session=${encodeURIComponent(session)}`);
    await sse.waitFor(() => sse.events.find((e) => e.event === "subscribed"), "SSE subscribed");
    // Wait for the poll to be held before disconnecting (a poll answered at once proves nothing).
    // Both polls on A (the raw one and the SDK's) are held before the disconnect.
    await eventually(async () => ((await metricValue(a, "natsedge_longpoll_held")) >= 2 ? true : undefined), "the polls to be held");

    const started = Date.now();
    expect((await api(b.url, "POST", "/api/disconnect", { key: API_KEY, body: { user: "victor" } })).status).toBe(200);
    expect((await ws.closed).code).toBe(4003);
    const bye = await sse.waitFor(() => sse.events.find((e) => e.event === "disconnect"), "SSE disconnect");
    expect(JSON.parse(bye.data)).toMatchObject({ code: 4003, reconnect: false });
    const answer = await held;
    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({ error: { code: 401, message: expect.stringMatching(/ended by the server/) } });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await ended).toMatchObject({ code: 4003, reconnect: false });
    sdk.disconnect();
    // The session is revoked on both replicas: its next requests are refused.
    for (const gw of [a, b]) {
      const again = await post(gw, "/lp/poll", { session, subs: { "live.quiet": null }, timeout: 0 });
      expect(again.status).toBe(401);
      const rpc = await post(gw, "/lp/rpc", { session, cmds: [{ id: 1, op: "ping" }] });
      expect(rpc.status).toBe(401);
    }
    // A disconnect is not a ban: a new session works.
    const fresh = await post(a, "/lp/rpc", { cmds: [{ id: 1, op: "connect", token }] });
    const newSession = ((fresh.body.replies as Frame[])[0]?.ok as { session: string }).session;
    expect((await post(b, "/lp/poll", { session: newSession, subs: { "live.quiet": null }, timeout: 0 })).status).toBe(200);
  });
});
