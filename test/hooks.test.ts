/**
 * Backend hooks against real gateways on NATS (127.0.0.1:4222) and a real backend
 * (test/helpers/hook-backend.ts) answering over NATS and HTTP: connect over both, subscribe
 * refused on every transport, publish replacing data, rpc from a raw WebSocket and the SDK, and
 * the failure paths (slow backend, failOpen, invalid answers, nobody listening, connection refused).
 */
import { randomBytes } from "node:crypto";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client, NatsedgeError } from "../src/client/index.js";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { metricValue, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { freePort } from "./helpers/nats.js";
import { HookBackend, type Behaviour } from "./helpers/hook-backend.js";
import { openSseClients, SseClient } from "./helpers/sse-client.js";
import { Signal } from "./helpers/signal.js";
import { ok } from "./helpers/suite.js";
import { signature } from "../src/http/signature.js";

const NATS = "nats://127.0.0.1:4222";
const API_KEY = "hooks-test-api-key-0123456789abcdef";
const SESSION_SECRET = "hooks-test-session-secret-0123456789abcdef";
const HTTP_SECRET = "hooks-test-http-secret-0123456789abcdef";
const run = randomBytes(4).toString("hex");
/** The backend listens on PREFIX_A; nobody answers hooks on PREFIX_B (no responders). */
const PREFIX_A = `hooktest${run}a`;
const PREFIX_B = `hooktest${run}b`;

/** The backend's decisions, the same over NATS and HTTP. */
function decide(kind: string, body: Record<string, unknown>): Behaviour {
  const data = (body.data ?? {}) as Record<string, unknown>;
  const ch = String(body.ch ?? "");
  switch (kind) {
    case "connect": {
      const sid = (body.cookies as Record<string, string> | undefined)?.sid;
      if (data.ticket === "deny") return { answer: { error: { code: 401, message: "ticket refused" } } };
      if (data.user === "brief") return { answer: { result: { user: "brief", exp: Math.floor(Date.now() / 1000) + 2 } } };
      if (typeof data.user === "string") {
        return { answer: { result: { user: data.user, info: { tenant: (body.headers as Record<string, string> | undefined)?.["x-tenant"] ?? null }, channels: data.channels } } };
      }
      if (sid !== undefined) return { answer: { result: { user: `cookie-${sid}`, exp: Math.floor(Date.now() / 1000) + 3600 } } };
      return { answer: { error: { code: 401, message: "no credentials" } } };
    }
    case "refresh":
      return { answer: { result: { exp: Math.floor(Date.now() / 1000) + 3600, info: { refreshed: true } } } };
    case "subscribe":
      if (ch.includes("secret")) return { answer: { error: { code: 403, message: "not for you" } } };
      if (ch.includes("garbage")) return { raw: "<html>not json</html>" };
      if (ch.includes("hang")) return { answer: { result: {} }, delayMs: 1500 };
      if (ch.includes("plain")) return { answer: { result: {} } };
      return { answer: { result: { info: { role: "member" } } } };
    case "publish":
      if (data.text === "bad") return { answer: { error: { code: 403, message: "moderated" } } };
      return { answer: { result: { data: { text: String(data.text).toUpperCase(), checked: true } } } };
    case "rpc":
      if (body.method === "fail") return { answer: { error: { code: 400, message: "bad method" } } };
      return { answer: { result: { data: { echo: body.data ?? null, user: body.user, method: body.method } } } };
    default:
      return { raw: "unknown kind" };
  }
}

let backend: HookBackend;
/** All hooks over NATS. */
let gwA: GatewayProcess;
/** Hooks over HTTP, plus hooks nobody answers (NATS without responders, a refused connection). */
let gwB: GatewayProcess;

beforeAll(async () => {
  backend = await HookBackend.start(NATS, PREFIX_A, decide);
  const closedPort = await freePort();
  gwA = await startGateway({
    config: {
      yaml: `
apiKey: ${API_KEY}
sessionSecret: ${SESSION_SECRET}
nats: { servers: ["${NATS}"], prefix: ${PREFIX_A}, storage: memory }
hooks:
  connect: nats
  refresh: nats
  rpc: nats
  headers: [x-tenant]
  cookies: [sid]
namespaces:
  chat: { clientPublish: true, presence: true, subscribeHook: nats, publishHook: nats }
  room: { presence: true, joinLeave: true, subscribeHook: nats }
  slow: { subscribeHook: { target: nats, timeout: 300ms } }
  lenient: { subscribeHook: { target: nats, timeout: 300ms, failOpen: true } }
  news: { history: { size: 10, ttl: 5m } }
`,
    },
  });
  gwB = await startGateway({
    config: {
      yaml: `
apiKey: ${API_KEY}
sessionSecret: ${SESSION_SECRET}
nats: { servers: ["${NATS}"], prefix: ${PREFIX_B}, storage: memory }
hooks:
  connect: ${backend.url}/connect
  rpc: ${backend.url}/rpc
  cookies: [sid]
  httpSecret: ${HTTP_SECRET}
namespaces:
  chat: { clientPublish: true, subscribeHook: "${backend.url}/subscribe", publishHook: "${backend.url}/publish" }
  quiet: { subscribeHook: nats }
  gone: { subscribeHook: "http://127.0.0.1:${closedPort}/hook" }
`,
    },
  });
});

afterAll(async () => {
  for (const c of openSseClients) c.close();
  await gwA?.stop();
  await gwB?.stop();
  await backend?.stop();
});

async function wsConnect(gw: GatewayProcess, data: unknown, headers: Record<string, string> = {}): Promise<{ c: TestClient; reply: Frame }> {
  const c = new TestClient(gw.wsUrl, { headers });
  await c.opened;
  const reply = await c.request("connect", { data });
  return { c, reply };
}

async function lp(gw: GatewayProcess, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Frame }> {
  const res = await fetch(gw.url + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Frame };
}

describe("connect hook", () => {
  it("over NATS: authenticates a WebSocket client from data, headers and cookies, and subscribes it server-side", async () => {
    const { c, reply } = await wsConnect(gwA, { user: "alice", channels: ["news.feed"] }, {
      "x-tenant": "acme",
      cookie: "sid=s1; other=x",
      authorization: "Bearer not-forwarded",
    });
    expect(ok(reply).user).toBe("alice");
    const call = await backend.waitForCall((k) => k.kind === "connect" && (k.body.data as Frame)?.user === "alice", "connect call");
    expect(call.via).toBe("nats");
    expect(call.body.transport).toBe("websocket");
    expect(call.body.headers).toEqual({ "x-tenant": "acme" });
    expect(call.body.cookies).toEqual({ sid: "s1" });
    expect(JSON.stringify(call.body)).not.toContain("not-forwarded");
    const sub = await c.nextPush((p) => p.push === "sub", "server-side sub push");
    expect(sub).toMatchObject({ ch: "news.feed", offset: expect.any(Number) as number });
    const pub = await api(gwA.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "news.feed", data: { n: 1 } } });
    expect(pub.status).toBe(200);
    await c.waitFor(() => c.pubs("news.feed")[0], "publication on the server-side subscription");
    c.close();
  });

  it("refused by the backend: the client gets its code and the connection closes with 4001", async () => {
    const { c, reply } = await wsConnect(gwA, { ticket: "deny" });
    expect(reply.error).toMatchObject({ code: 401, message: "ticket refused" });
    expect((await c.closed).code).toBe(4001);
  });

  it("over HTTP: long-poll connect from a cookie issues a session for the backend's user", async () => {
    const res = await lp(gwB, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, { cookie: "sid=lp7" });
    expect(res.status).toBe(200);
    const hello = ok((res.body.replies as Frame[])[0] as Frame);
    expect(hello.user).toBe("cookie-lp7");
    const call = await backend.waitForCall((k) => k.kind === "connect" && k.via === "http" && k.body.transport === "longpoll", "http connect call");
    expect(call.body.cookies).toEqual({ sid: "lp7" });
  });

  it("over HTTP: every call is signed with hooks.httpSecret (HMAC-SHA256 over timestamp.body)", async () => {
    const res = await lp(gwB, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, { cookie: "sid=signed" });
    expect(res.status).toBe(200);
    const call = await backend.waitForCall((k) => k.via === "http" && k.body.cookies !== undefined && (k.body.cookies as Frame).sid === "signed", "signed connect call");
    const http = call.http as NonNullable<typeof call.http>;
    expect(Math.abs(Number(http.timestamp) - Date.now() / 1000)).toBeLessThan(60);
    expect(http.signature).toBe(signature(HTTP_SECRET, http.timestamp as string, http.raw));
    expect(http.signature).not.toBe(signature("another-secret-of-32-characters-x", http.timestamp as string, http.raw));
  });

  it("over HTTP: an SSE stream is authenticated from a cookie", async () => {
    const s = await SseClient.open(gwB.url, "ch=chat.sse", { cookie: "sid=sse1" });
    expect(s.status).toBe(200);
    await s.next("subscribed");
    const call = await backend.waitForCall((k) => k.kind === "connect" && k.body.transport === "sse", "sse connect call");
    expect(call.body.cookies).toEqual({ sid: "sse1" });
    s.close();
  });

  it("refresh without a token asks the refresh hook", async () => {
    const { c } = await wsConnect(gwA, { user: "rita" });
    ok(await c.request("refresh", {}));
    const call = await backend.waitForCall((k) => k.kind === "refresh" && k.body.user === "rita", "refresh call");
    expect(call.body.transport).toBe("websocket");
    c.close();
  });
});

describe("refresh at expiry", () => {
  it("a WebSocket connection the connect hook authenticated is extended by the refresh hook, not closed", async () => {
    const { c, reply } = await wsConnect(gwA, { user: "brief" });
    expect(ok(reply).user).toBe("brief");
    const call = await backend.waitForCall((k) => k.kind === "refresh" && k.body.user === "brief", "refresh at expiry", 5_000);
    expect(call.body.transport).toBe("websocket");
    ok(await c.request("ping"));
    expect(c.pushes.filter((p) => p.push === "disconnect")).toEqual([]);
    c.close();
  });
});

describe("subscribe hook", () => {
  it("refuses on WebSocket with the backend's code", async () => {
    const { c } = await wsConnect(gwA, { user: "bob" });
    const reply = await c.request("subscribe", { ch: "chat.secret" });
    expect(reply.error).toMatchObject({ code: 403, message: "not for you" });
    ok(await c.request("subscribe", { ch: "chat.room" }));
    const call = await backend.waitForCall((k) => k.kind === "subscribe" && k.body.ch === "chat.room", "subscribe call");
    expect(call.body).toMatchObject({ user: "bob", transport: "websocket" });
    // The backend's channel info is how the client shows in the channel's presence.
    const presence = ok(await c.request("presence", { ch: "chat.room" }));
    expect(Object.values(presence.clients as Record<string, Frame>)[0]).toMatchObject({ user: "bob", info: { role: "member" } });
    c.close();
  });

  it("a leave after the refresh hook replaced the client's info carries the info it joined with", async () => {
    // "plain" channels get no info from the subscribe hook: presence shows the session's own.
    const ch = `room.plain-${run}`;
    const watcher = (await wsConnect(gwA, { user: "watcher" })).c;
    ok(await watcher.request("subscribe", { ch }));
    const { c } = await wsConnect(gwA, { user: "ivy" }, { "x-tenant": "acme" });
    ok(await c.request("subscribe", { ch }));
    const isIvy = (p: Frame): boolean => (p.info as Frame | undefined)?.user === "ivy";
    const join = await watcher.nextPush((p) => p.push === "join" && isIvy(p), "join of ivy");
    expect(join.info).toMatchObject({ user: "ivy", info: { tenant: "acme" } });
    ok(await c.request("refresh"));
    await backend.waitForCall((k) => k.kind === "refresh" && k.body.user === "ivy", "refresh call");
    ok(await c.request("unsubscribe", { ch }));
    // After the presence grace period (5 s by default).
    const leave = await watcher.nextPush((p) => p.push === "leave" && isIvy(p), "leave of ivy", 15_000);
    expect(leave.info).toEqual(join.info);
    c.close();
    watcher.close();
  });

  it("refuses on long-poll, per channel in the poll answer; the other channels are polled", async () => {
    const res = await lp(gwA, "/lp/rpc", { cmds: [{ id: 1, op: "connect", data: { user: "carol" } }] });
    const session = ok((res.body.replies as Frame[])[0] as Frame).session as string;
    const subs = { "chat.secret": null, "chat.lp-room": null, "news.lp": null, "nowhere.x": null };
    const poll = await lp(gwA, "/lp/poll", { session, subs, timeout: 0 });
    expect(poll.status).toBe(200);
    const errors = poll.body.errors as Record<string, Frame>;
    expect(errors["chat.secret"]).toMatchObject({ code: 403, message: "not for you" });
    expect(errors["nowhere.x"]).toMatchObject({ code: 404 });
    expect(Object.keys(poll.body.subs as Frame).sort()).toEqual(["chat.lp-room", "news.lp"]);
    expect((poll.body.subs as Record<string, Frame>)["news.lp"]).toMatchObject({ offset: expect.any(Number) as number });
  });

  it("long-poll refresh without a token asks the refresh hook and issues a new session", async () => {
    const res = await lp(gwA, "/lp/rpc", { cmds: [{ id: 1, op: "connect", data: { user: "lena" } }] });
    const session = ok((res.body.replies as Frame[])[0] as Frame).session as string;
    const refreshed = await lp(gwA, "/lp/rpc", { session, cmds: [{ id: 2, op: "refresh" }] });
    const next = ok((refreshed.body.replies as Frame[])[0] as Frame).session as string;
    expect(typeof next).toBe("string");
    expect(next).not.toBe(session);
    const call = await backend.waitForCall((k) => k.kind === "refresh" && k.body.user === "lena", "long-poll refresh call");
    expect(call.body.transport).toBe("longpoll");
    // Without a refresh hook, refresh needs a token as before.
    const b = await lp(gwB, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }, { id: 2, op: "refresh" }] }, { cookie: "sid=nr" });
    expect((b.body.replies as Frame[])[1]).toMatchObject({ error: { code: 400, message: "token is required (no refresh hook is configured)" } });
  });

  it("refuses on SSE before the stream opens", async () => {
    const s = await SseClient.open(gwA.url, "ch=chat.secret", { cookie: "sid=s2" });
    expect(s.status).toBe(403);
    expect(s.refusal).toMatchObject({ error: { code: 403, message: "not for you" } });
  });

  it("a slow backend fails closed: 503 with retryAfter, counted as timeout", async () => {
    const before = await metricValue(gwA, 'natsedge_hook_calls_total{kind="subscribe",result="timeout"}');
    const { c } = await wsConnect(gwA, { user: "dan" });
    const started = Date.now();
    const reply = await c.request("subscribe", { ch: "slow.hang" });
    expect(reply.error).toMatchObject({ code: 503, retryAfter: 1 });
    expect(Date.now() - started).toBeLessThan(1400);
    expect(await metricValue(gwA, 'natsedge_hook_calls_total{kind="subscribe",result="timeout"}')).toBe(before + 1);
    expect(await metricValue(gwA, 'natsedge_hook_duration_seconds_count{kind="subscribe",transport="websocket"}')).toBeGreaterThan(0);
    await gwA.waitForLog("hook call failed", { where: (r) => r.hook === "subscribe" && r.reason === "timeout" });
    c.close();
  });

  it("failOpen: a slow backend lets the subscription through", async () => {
    const { c } = await wsConnect(gwA, { user: "erin" });
    ok(await c.request("subscribe", { ch: "lenient.hang" }));
    c.close();
  });

  it("an answer that is not valid fails closed and is counted", async () => {
    const before = await metricValue(gwA, 'natsedge_hook_calls_total{kind="subscribe",result="invalid"}');
    const { c } = await wsConnect(gwA, { user: "finn" });
    const reply = await c.request("subscribe", { ch: "chat.garbage" });
    expect(reply.error).toMatchObject({ code: 503, retryAfter: 1 });
    expect(await metricValue(gwA, 'natsedge_hook_calls_total{kind="subscribe",result="invalid"}')).toBe(before + 1);
    c.close();
  });

  it("nobody answering over NATS (no responders) fails closed at once", async () => {
    const { c } = await wsConnect(gwB, undefined, { cookie: "sid=q1" });
    const started = Date.now();
    const reply = await c.request("subscribe", { ch: "quiet.room" });
    expect(reply.error).toMatchObject({ code: 503, retryAfter: 1 });
    expect(Date.now() - started).toBeLessThan(1000);
    expect(await metricValue(gwB, 'natsedge_hook_calls_total{kind="subscribe",result="unavailable"}')).toBeGreaterThanOrEqual(1);
    c.close();
  });

  it("a refused HTTP connection fails closed", async () => {
    const { c } = await wsConnect(gwB, undefined, { cookie: "sid=g1" });
    const reply = await c.request("subscribe", { ch: "gone.room" });
    expect(reply.error).toMatchObject({ code: 503, retryAfter: 1 });
    c.close();
  });
});

describe("publish hook", () => {
  it("replaces the data every subscriber gets, or refuses it", async () => {
    const { c } = await wsConnect(gwA, { user: "gus" });
    ok(await c.request("subscribe", { ch: "chat.pub" }));
    ok(await c.request("publish", { ch: "chat.pub", data: { text: "hello" } }));
    const pub = await c.waitFor(() => c.pubs("chat.pub")[0], "replaced publication");
    expect(pub.data).toEqual({ text: "HELLO", checked: true });
    const refused = await c.request("publish", { ch: "chat.pub", data: { text: "bad" } });
    expect(refused.error).toMatchObject({ code: 403, message: "moderated" });
    c.close();
  });

  it("over HTTP on long-poll", async () => {
    const res = await lp(gwB, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, { cookie: "sid=p1" });
    const session = ok((res.body.replies as Frame[])[0] as Frame).session as string;
    const sent = await lp(gwB, "/lp/rpc", { session, cmds: [{ id: 2, op: "publish", ch: "chat.lp", data: { text: "x" } }] });
    ok((sent.body.replies as Frame[])[0] as Frame);
    await backend.waitForCall((k) => k.kind === "publish" && k.via === "http" && k.body.ch === "chat.lp", "http publish call");
  });
});

describe("rpc", () => {
  it("round trip on WebSocket, and the backend's refusal", async () => {
    const { c } = await wsConnect(gwA, { user: "hana" });
    const answer = ok(await c.request("rpc", { method: "echo", data: { q: 1 } }));
    expect(answer.data).toEqual({ echo: { q: 1 }, user: "hana", method: "echo" });
    const refused = await c.request("rpc", { method: "fail" });
    expect(refused.error).toMatchObject({ code: 400, message: "bad method" });
    c.close();
  });

  it("round trip on long-poll over HTTP", async () => {
    const res = await lp(gwB, "/lp/rpc", {
      cmds: [
        { id: 1, op: "connect" },
        { id: 2, op: "rpc", method: "echo", data: [1, 2] },
      ],
    }, { cookie: "sid=r1" });
    const replies = res.body.replies as Frame[];
    expect(ok(replies[1] as Frame).data).toEqual({ echo: [1, 2], user: "cookie-r1", method: "echo" });
  });

  it("the SDK reports the connect hook's server-side subscriptions and their publications", async () => {
    const client = new Client(gwA.url, { WebSocket: WebSocket as never, autoConnect: false, data: { user: "sdk", channels: ["news.sdk"] } });
    const seen = new Signal();
    const events: Frame[] = [];
    client.on("serverSubscribed", (sub) => {
      events.push({ event: "serverSubscribed", channel: sub.channel, position: sub.position });
      sub.setHandlers({
        onPublication: (p) => {
          events.push({ event: "publication", ...p });
          seen.wake();
        },
      });
      seen.wake();
    });
    try {
      await client.connect();
      await seen.until(() => events.find((e) => e.event === "serverSubscribed"), "serverSubscribed event", 10_000, () => JSON.stringify(events));
      expect(events[0]).toMatchObject({ channel: "news.sdk", position: { offset: expect.any(Number) as number } });
      expect((await api(gwA.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "news.sdk", data: { hi: 1 } } })).status).toBe(200);
      const pub = await seen.until(() => events.find((e) => e.event === "publication"), "publication event", 10_000, () => JSON.stringify(events));
      expect(pub).toMatchObject({ ch: "news.sdk", data: { hi: 1 } });
    } finally {
      client.disconnect();
    }
  });

  it("from the SDK: client.rpc resolves with the backend's data and rejects with its refusal", async () => {
    const client = new Client(gwA.url, { WebSocket: WebSocket as never, autoConnect: false, data: { user: "ivy" } });
    try {
      await client.connect();
      expect(await client.rpc("echo", { hi: true })).toEqual({ echo: { hi: true }, user: "ivy", method: "echo" });
      const err = await client.rpc("fail").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NatsedgeError);
      expect((err as NatsedgeError).code).toBe(400);
    } finally {
      client.disconnect();
    }
  });
});
