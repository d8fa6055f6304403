/**
 * Attacks on a real gateway process, each checked for its documented answer, and after all of
 * them a normal client on the same process still connects, subscribes and receives. Every client
 * here names its own address in X-Forwarded-For (the gateway trusts the proxy 127.0.0.1), so the
 * per-address limits of one attack do not decide another's.
 */
import { headers as natsHeaders, connect as natsConnect, type NatsConnection } from "nats";
import { Packr } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { metricValue, rssKiB, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";
import { headerOf, rawRequest } from "./helpers/raw-http.js";
import { eventually } from "./helpers/signal.js";
import { signToken } from "./helpers/tokens.js";

const SECRET = "hostile-test-hmac-secret-0123456789abcdef";
const API_KEY = "hostile-test-api-key-0123456789abcdef";
const CONFIG = `
apiKey: ${API_KEY}
trustedProxies: ["127.0.0.1"]
maxConnectionsPerIp: 5
connectRate: 5
maxConnectionsPerUser: 2
commandRate: 50
maxHeldPolls: 2
maxPresenceMembers: 3
bodyTimeout: 1s
presenceGrace: 0s
auth:
  hmacSecret: "${SECRET}"
namespaces:
  chat: { history: { size: 5, ttl: 5m }, presence: true, clientPublish: true, anonymous: true }
  room: { presence: true, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
  secure: { clientPublish: true }
`;

let address = 0;
/** A fresh client address (TEST-NET-3, never contacted: it only travels in a header). */
function nextAddress(): string {
  return `203.0.113.${++address}`;
}

function client(gw: GatewayProcess, opts: { format?: "json" | "msgpack"; from?: string } = {}): TestClient {
  return new TestClient(gw.wsUrl, { format: opts.format, headers: { "X-Forwarded-For": opts.from ?? nextAddress() } });
}

async function connected(gw: GatewayProcess, opts: { format?: "json" | "msgpack"; from?: string; token?: string } = {}): Promise<TestClient> {
  const c = client(gw, opts);
  await c.opened;
  const r = await c.request("connect", opts.token === undefined ? {} : { token: opts.token });
  if (!r.ok) throw new Error(`connect failed: ${JSON.stringify(r)}`);
  return c;
}

/** The HTTP status an upgrade got (101 when it was accepted) and its Retry-After. */
function upgrade(gw: GatewayProcess, headers: Record<string, string>): Promise<{ status: number; retryAfter?: string; ws?: WebSocket }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(gw.wsUrl, "natsedge.v1.json", { headers });
    ws.once("open", () => resolve({ status: 101, ws }));
    ws.once("unexpected-response", (_req, res) => {
      resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined });
      res.resume();
    });
    ws.once("error", () => undefined);
  });
}

async function lp(gw: GatewayProcess, path: string, body: unknown, from: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Frame; retryAfter: string | null }> {
  const res = await fetch(gw.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-for": from, ...headers },
    body: typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Frame, retryAfter: res.headers.get("retry-after") };
}

describe("a gateway facing hostile clients", () => {
  let gw: GatewayProcess;
  let nats: NatsCluster;
  let natsGw: GatewayProcess;
  let nc: NatsConnection;
  const open: TestClient[] = [];
  const track = <T extends TestClient>(c: T): T => {
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    nats = await startNats(1);
    [gw, natsGw] = await Promise.all([
      startGateway({ config: { yaml: CONFIG } }),
      startGateway({ config: { yaml: CONFIG }, args: ["--nats", nats.servers] }),
    ]);
    nc = await natsConnect({ servers: nats.servers });
  });

  afterAll(async () => {
    for (const c of open) c.terminate();
    await nc?.close();
    await Promise.all([gw?.stop(), natsGw?.stop()]);
    await nats?.stop();
  });

  it("refuses MessagePack bombs within milliseconds, with 4004 / 400, and stays small", async () => {
    const before = rssKiB(gw.proc.pid as number);
    const array32 = Buffer.from([0xdd, 0x01, 0xf0, 0x00, 0x00]);
    const bombs = [
      array32,
      Buffer.concat([array32, array32, array32]),
      Buffer.concat(Array.from({ length: 20 }, () => array32)),
      Buffer.concat(Array.from({ length: 20 }, () => Buffer.from([0xdf, 0x10, 0x00, 0x00, 0x00]))),
    ];
    for (const bomb of bombs) {
      const c = track(client(gw, { format: "msgpack" }));
      await c.opened;
      const started = performance.now();
      c.sendRaw(bomb);
      const closed = await c.closed;
      expect(closed.code).toBe(4004);
      expect(performance.now() - started).toBeLessThan(500);
      const bye = c.pushes.find((p) => p.push === "disconnect");
      expect(bye).toMatchObject({ code: 4004, reconnect: false });
      // The same body on the long-poll endpoint.
      const res = await fetch(`${gw.url}/lp/rpc`, {
        method: "POST",
        headers: { "content-type": "application/msgpack", "x-forwarded-for": nextAddress() },
        body: bomb,
      });
      expect(res.status).toBe(400);
      await res.arrayBuffer();
    }
    const grown = rssKiB(gw.proc.pid as number) - before;
    console.log(`RSS after ${bombs.length} MessagePack bombs over WebSocket and /lp/rpc: +${grown} KiB`);
    expect(grown).toBeLessThan(8 * 1024);
  });

  it("refuses data one wire format cannot carry, from clients, the API and raw NATS publishers", async () => {
    const sub = track(await connected(natsGw));
    expect((await sub.request("subscribe", { ch: "chat.mixed" })).ok).toBeDefined();
    // A BigInt extension in a frame: the frame is not protocol MessagePack.
    const m = track(client(natsGw, { format: "msgpack" }));
    await m.opened;
    m.sendRaw(new Packr({ useRecords: false, useBigIntExtension: true } as ConstructorParameters<typeof Packr>[0]).pack({ id: 1, op: "connect", n: 2n ** 70n }));
    expect((await m.closed).code).toBe(4004);
    // JSON that parses to Infinity.
    const j = track(await connected(natsGw));
    j.sendRaw('{"id":9,"op":"publish","ch":"chat.mixed","data":1e999}');
    expect(await j.waitFor(() => j.replies.get(9), "reply")).toMatchObject({ error: { code: 400, message: expect.stringMatching(/NaN or Infinity/) } });
    // Raw NATS publishers: a BigInt ext and a NaN are dropped and counted; a BOM is stripped.
    const invalidBefore = await metricValue(natsGw, "natsedge_invalid_payloads_total");
    const h = natsHeaders();
    h.set("Content-Type", "application/msgpack");
    const js = nc.jetstream();
    await js.publish("natsedge.ch.chat.mixed", Buffer.from([0xc7, 0x09, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9]), { headers: h });
    await js.publish("natsedge.ch.chat.mixed", Buffer.from([0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]), { headers: h });
    await js.publish("natsedge.ch.chat.mixed", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"bom":true}')]));
    const pub = await sub.nextPush((p) => p.push === "pub" && p.ch === "chat.mixed", "the BOM publication");
    expect(pub.data).toEqual({ bom: true });
    expect(await metricValue(natsGw, "natsedge_invalid_payloads_total")).toBe(invalidBefore + 2);
    // History of the channel answers (the JSON client would get 500 if a BigInt had been stored).
    const hist = await sub.request("history", { ch: "chat.mixed", limit: 10 });
    expect((hist.ok as { pubs: Frame[] }).pubs.map((p) => p.data)).toEqual([{ bom: true }]);
  });

  it("caps connections per address and the connect rate, with 429 and Retry-After", async () => {
    const from = nextAddress();
    const held: WebSocket[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await upgrade(gw, { "X-Forwarded-For": from });
      expect(r.status).toBe(101);
      held.push(r.ws as WebSocket);
    }
    const refused = await upgrade(gw, { "X-Forwarded-For": from });
    expect(refused.status).toBe(429);
    expect(Number(refused.retryAfter)).toBeGreaterThan(0);
    // A spoofed header from an untrusted peer is not believed: without trustedProxies... here the
    // peer is trusted, so the chain's right-most untrusted entry counts, whatever is left of it.
    const chained = await upgrade(gw, { "X-Forwarded-For": `198.51.100.1, ${from}` });
    expect(chained.status).toBe(429);
    for (const ws of held) ws.close();
    // The connect rate: 5 per second, bursts of 10, per address.
    const burst = nextAddress();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await upgrade(gw, { "X-Forwarded-For": burst });
      statuses.push(r.status);
      r.ws?.close();
      if (r.ws) await new Promise((resolve) => r.ws?.once("close", resolve));
    }
    expect(statuses.filter((s) => s === 101).length).toBeLessThanOrEqual(11);
    expect(statuses).toContain(429);
    expect(await metricValue(gw, `natsedge_connections_refused_total{reason="per_ip"}`)).toBeGreaterThan(0);
    expect(await metricValue(gw, `natsedge_connections_refused_total{reason="connect_rate"}`)).toBeGreaterThan(0);
  });

  it("refuses a user's third connection across the cluster (429, close 4029), and SSE streams count", async () => {
    const token = await signToken({ sub: "mallory" }, SECRET);
    const a = track(await connected(gw, { token }));
    const b = track(await connected(gw, { token }));
    const c = track(client(gw));
    await c.opened;
    const reply = await c.request("connect", { token });
    expect(reply.error).toMatchObject({ code: 429 });
    expect((await c.closed).code).toBe(4029);
    const sse = await fetch(`${gw.url}/sse?ch=live.x&token=${token}`, { headers: { "x-forwarded-for": nextAddress() } });
    expect(sse.status).toBe(429);
    await sse.text();
    // One gone, one more may come.
    a.close();
    await a.closed;
    const d = track(client(gw));
    await d.opened;
    expect((await d.request("connect", { token })).ok).toMatchObject({ user: "mallory" });
    b.close();
  });

  it("refuses connections beyond maxConnections with 503 and Retry-After", async () => {
    const small = await startGateway({ args: ["--max-connections", "2"] });
    try {
      const a = await upgrade(small, {});
      const b = await upgrade(small, {});
      const c = await upgrade(small, {});
      expect([a.status, b.status, c.status]).toEqual([101, 101, 503]);
      expect(c.retryAfter).toBe("5");
      a.ws?.close();
      await new Promise((resolve) => a.ws?.once("close", resolve));
      const d = await upgrade(small, {});
      expect(d.status).toBe(101);
      b.ws?.close();
      d.ws?.close();
    } finally {
      await small.stop();
    }
  });

  it("keeps one command budget for a long-poll session across requests", async () => {
    const from = nextAddress();
    const connect = await lp(gw, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, from);
    const session = ((connect.body.replies as Frame[])[0]?.ok as { session: string }).session;
    let refused = 0;
    let answered = 0;
    for (let i = 0; i < 30 && refused === 0; i++) {
      const r = await lp(gw, "/lp/rpc", { session, cmds: Array.from({ length: 10 }, (_, k) => ({ id: k, op: "ping" })) }, nextAddress());
      for (const reply of r.body.replies as Frame[]) {
        if (reply.error) refused++;
        else answered++;
      }
    }
    // 50 per second with bursts of 100: far fewer than the 300 sent get through.
    expect(answered).toBeLessThanOrEqual(130);
    expect(refused).toBeGreaterThan(0);
    // Batching into requests without a session buys nothing either: they share their address's budget.
    const batch = await lp(gw, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }, ...Array.from({ length: 99 }, (_, k) => ({ id: k + 2, op: "ping" }))] }, from);
    const more = await lp(gw, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }, ...Array.from({ length: 99 }, (_, k) => ({ id: k + 2, op: "ping" }))] }, from);
    const errors = [...(batch.body.replies as Frame[]), ...(more.body.replies as Frame[])].filter((r) => r.error);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]?.error).toMatchObject({ code: 429, retryAfter: expect.any(Number) });
  });

  it("caps the polls one session holds, and a __proto__ channel gets its error", async () => {
    const from = nextAddress();
    const connect = await lp(gw, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, from);
    const session = ((connect.body.replies as Frame[])[0]?.ok as { session: string }).session;
    const held = [0, 1].map(() => lp(gw, "/lp/poll", { session, subs: { "live.held": null }, timeout: 2 }, from));
    // Both are held (no data on live.held): wait until the gateway counts them.
    await eventually(async () => ((await metricValue(gw, "natsedge_longpoll_held")) >= 2 ? true : undefined), "two held polls");
    const third = await lp(gw, "/lp/poll", { session, subs: { "live.held": null }, timeout: 0 }, from);
    expect(third.status).toBe(429);
    expect(third.retryAfter).toBe("1");
    await Promise.all(held);
    // JSON.parse makes "__proto__" an own key: it must come back as a channel error.
    const proto = await lp(gw, "/lp/poll", `{"session":${JSON.stringify(session)},"subs":{"__proto__":null,"live.ok":null},"timeout":0}`, from);
    expect(proto.status).toBe(200);
    expect(Object.hasOwn(proto.body.errors as object, "__proto__")).toBe(true);
    expect((proto.body.errors as Record<string, Frame>)["__proto__"]).toMatchObject({ code: 400 });
  });

  it("refuses channel names with control characters and caps presence per channel", async () => {
    const c = track(await connected(gw));
    for (const ch of ["chat.a\u0000b", "chat.bell\u0007", "chat.nel\u0085", "chat.ls\u2028", "chat.del\u007f"]) {
      expect((await c.request("subscribe", { ch })).error, JSON.stringify(ch)).toMatchObject({ code: 400 });
    }
    const members = await Promise.all([0, 1, 2].map(async () => track(await connected(gw))));
    for (const m of members) expect((await m.request("subscribe", { ch: "room.full" })).ok).toEqual({});
    const fourth = await c.request("subscribe", { ch: "room.full" });
    expect(fourth.error).toMatchObject({ code: 429, message: expect.stringMatching(/full/) });
    expect((await c.request("subscribe", { ch: "live.free" })).ok).toEqual({});
  });

  it("answers history beyond the namespace's size with what is retained", async () => {
    const c = track(await connected(gw));
    for (let i = 1; i <= 7; i++) expect((await c.request("publish", { ch: "chat.h", data: i })).ok).toBeDefined();
    const r = await c.request("history", { ch: "chat.h", limit: 1_000_000 });
    expect((r.ok as { pubs: Frame[] }).pubs.map((p) => p.data)).toEqual([3, 4, 5, 6, 7]);
  });

  it("refuses tokens without exp", async () => {
    const c = track(client(gw));
    await c.opened;
    const r = await c.request("connect", { token: await signToken({ sub: "eve", exp: undefined }, SECRET) });
    expect(r.error).toMatchObject({ code: 401, message: 'token has no "exp" claim' });
    expect((await c.closed).code).toBe(4001);
  });

  it("validates the WebSocket handshake (RFC 6455): 400 for a bad key, 426 for another version", async () => {
    const head = (key: string, version: string): string =>
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
      `Sec-WebSocket-Version: ${version}\r\nX-Forwarded-For: ${nextAddress()}\r\n\r\n`;
    const good = Buffer.alloc(16, 7).toString("base64");
    expect((await rawRequest(gw.port, [head(good, "13")])).status).toBe(101);
    for (const key of ["not-base64!", Buffer.alloc(15).toString("base64"), Buffer.alloc(17).toString("base64"), ""]) {
      expect((await rawRequest(gw.port, [head(key, "13")])).status, key).toBe(400);
    }
    const v8 = await rawRequest(gw.port, [head(good, "8")]);
    expect(v8.status).toBe(426);
    expect(headerOf(v8.head, "sec-websocket-version")).toBe("13");
  });

  it("reads chunked bodies, times out trickled ones (408) and answers 431 for large heads", async () => {
    const body = JSON.stringify({ cmds: [{ id: 1, op: "ping" }] });
    const chunked = await rawRequest(gw.port, [
      `POST /lp/rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: ${nextAddress()}\r\n\r\n`,
      `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    ]);
    expect(chunked.status).toBe(200);
    expect(JSON.parse(chunked.body)).toMatchObject({ replies: [{ id: 1, error: { code: 401 } }] });
    // Content-Length and Transfer-Encoding together (a request-smuggling shape): uWS closes the
    // connection without an answer; the point is that nothing hangs.
    const smuggle = await rawRequest(gw.port, [`POST /lp/rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`]);
    expect(smuggle.closed).toBe(true);
    const started = Date.now();
    const trickle = await rawRequest(gw.port, [`POST /lp/rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Forwarded-For: ${nextAddress()}\r\n\r\n{"cmds"`, ":["], 5_000, 300);
    expect(trickle.status).toBe(408);
    expect(Date.now() - started).toBeLessThan(3_000);
    const big = await rawRequest(gw.port, [`GET /sse?ch=live.x HTTP/1.1\r\nHost: x\r\nCookie: c=${"a".repeat(40_000)}\r\n\r\n`]);
    expect(big.status).toBe(431);
    const ws = await rawRequest(gw.port, [`GET /ws HTTP/1.1\r\nHost: x\r\nX-Pad: ${"b".repeat(40_000)}\r\n\r\n`]);
    expect(ws.status).toBe(431);
    expect(await metricValue(gw, `natsedge_http_refused_total{reason="header_too_large"}`)).toBeGreaterThanOrEqual(2);
    expect(await metricValue(gw, `natsedge_http_refused_total{reason="body_timeout"}`)).toBeGreaterThanOrEqual(1);
  });

  it("still serves a normal client on the same process after all of the above", async () => {
    for (const g of [gw, natsGw]) {
      expect(g.proc.exitCode).toBeNull();
      const sub = track(await connected(g));
      const pub = track(await connected(g, { format: "msgpack" }));
      expect((await sub.request("subscribe", { ch: "chat.after" })).ok).toBeDefined();
      expect((await pub.request("publish", { ch: "chat.after", data: { fine: true } })).ok).toBeDefined();
      expect((await sub.nextPush((p) => p.push === "pub" && p.ch === "chat.after", "publication")).data).toEqual({ fine: true });
      const res = await api(g.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "chat.after", data: 2 }, headers: { "x-forwarded-for": nextAddress() } });
      expect(res.status).toBe(200);
    }
  });
});
