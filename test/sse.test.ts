/**
 * Server-Sent Events (`GET /sse`) against real gateways on the memory broker, read by a plain
 * HTTP client that parses the event stream itself: subscribe, resume with Last-Event-ID, reset,
 * auth and refusals before streaming, presence, multi-line data, disconnects, and a real
 * Chromium EventSource resuming on its own after the server ended its stream.
 */
import { createServer, type Server } from "node:http";
import { connect as connectSocket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { metricValue, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { freePort } from "./helpers/nats.js";
import { Signal } from "./helpers/signal.js";
import { ok } from "./helpers/suite.js";
import { signToken } from "./helpers/tokens.js";
import { openSseClients as open, SseClient, type SseEvent } from "./helpers/sse-client.js";

const API_KEY = "sse-test-api-key-0123456789abcde";
const JWT_SECRET = "sse-test-jwt-hmac-secret-0123456789";
const SESSION_SECRET = "sse-test-session-secret-0123456789abcdef";
const MAX_SUBS = 4;
const CHROMIUM = "/usr/bin/chromium";

const namespaces = `
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  tiny: { history: { size: 3, ttl: 5m }, anonymous: true }
  live: { anonymous: true }
  secure: { history: { size: 10, ttl: 5m }, presence: true, joinLeave: true }
  user: { personal: true, history: { size: 10, ttl: 5m } }
`;

let gw: GatewayProcess;
/** Serves the page the browser test runs in; its origin is the one allowed origin. */
let pageServer: Server;
let pageOrigin: string;

beforeAll(async () => {
  const pagePort = await freePort();
  pageOrigin = `http://127.0.0.1:${pagePort}`;
  pageServer = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>natsedge sse</title><p>sse test page</p>");
  });
  await new Promise<void>((resolve) => pageServer.listen(pagePort, "127.0.0.1", resolve));
  gw = await startGateway({
    config: {
      yaml:
        `apiKey: ${API_KEY}\nsessionSecret: "${SESSION_SECRET}"\npresenceGrace: 0s\ncommandRate: 0\n` +
        `maxSubscriptions: ${MAX_SUBS}\nallowedOrigins: ["${pageOrigin}"]\nauth:\n  hmacSecret: "${JWT_SECRET}"\n${namespaces}`,
    },
  });
});

afterAll(async () => {
  for (const s of open.splice(0)) s.close();
  await gw?.stop();
  await new Promise((resolve) => pageServer?.close(resolve));
});

let seq = 0;
const chan = (ns: string): string => `${ns}.sse${++seq}-${process.pid}`;
const sign = (sub: string, extra: Record<string, unknown> = {}): Promise<string> => signToken({ sub, ...extra }, JWT_SECRET);

const json = (e: SseEvent): Frame => JSON.parse(e.data) as Frame;

function decodeId(id: string): Record<string, [number, string]> {
  return JSON.parse(Buffer.from(id, "base64url").toString("utf8")) as Record<string, [number, string]>;
}

function encodeId(cursors: Record<string, [number, string]>): string {
  return encodeRaw(JSON.stringify(cursors));
}

function encodeRaw(text: string): string {
  return Buffer.from(text, "utf8").toString("base64url");
}

function query(chs: string[], extra: Record<string, string> = {}): string {
  const q = new URLSearchParams();
  for (const ch of chs) q.append("ch", ch);
  for (const [k, v] of Object.entries(extra)) q.append(k, v);
  return q.toString();
}

async function publish(ch: string, data: unknown, base = gw.url): Promise<{ offset: number; epoch: string }> {
  const res = await api(base, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as { offset: number; epoch: string };
}

async function waitMetric(g: GatewayProcess, name: string, labels: string | undefined, want: number, timeoutMs = 10_000): Promise<void> {
  const series = labels === undefined ? name : `${name}{${labels}}`;
  let last = NaN;
  await new Signal().until(
    async () => ((last = await metricValue(g, series)) === want ? true : undefined),
    `${series} == ${want}`,
    timeoutMs,
    () => `it is ${last}`,
    25,
  );
}

const SSE = 'transport="sse"';

// --- tests ----------------------------------------------------------------------------------------

describe("GET /sse", () => {
  it("two channels: `subscribed` first, then `pub` events whose ids carry every cursor", async () => {
    const a = chan("chat");
    const b = chan("chat");
    const before = await publish(a, "before");
    const s = await SseClient.open(gw.url, query([a, b]));
    expect(s.status).toBe(200);
    expect(s.headers?.get("content-type")).toMatch(/^text\/event-stream/);
    expect(s.headers?.get("cache-control")).toContain("no-store");

    const subscribed = await s.next("subscribed");
    expect(subscribed.event).toBe("subscribed");
    expect(subscribed.hasId).toBe(true);
    expect(json(subscribed)).toEqual({ subs: { [a]: { offset: 1, epoch: before.epoch }, [b]: { offset: 0, epoch: expect.any(String) } } });
    const epochB = (json(subscribed).subs as Record<string, { epoch: string }>)[b]?.epoch as string;
    expect(decodeId(subscribed.lastId)).toEqual({ [a]: [1, before.epoch], [b]: [0, epochB] });
    await waitMetric(gw, "natsedge_connections", SSE, 1);

    await publish(a, { n: 1 });
    await publish(b, { n: 2 });
    await publish(a, { n: 3 });
    const pubs = await s.take(3, "pub");
    expect(pubs.map((e) => e.event)).toEqual(["pub", "pub", "pub"]);
    expect(pubs.map(json)).toEqual([
      { ch: a, offset: 2, data: { n: 1 } },
      { ch: b, offset: 1, data: { n: 2 } },
      { ch: a, offset: 3, data: { n: 3 } },
    ]);
    expect(pubs.every((e) => e.hasId)).toBe(true);
    expect(new Set(pubs.map((e) => e.lastId)).size).toBe(3);
    expect(decodeId(pubs[0]?.lastId as string)).toEqual({ [a]: [2, before.epoch], [b]: [0, epochB] });
    expect(decodeId(pubs[2]?.lastId as string)).toEqual({ [a]: [3, before.epoch], [b]: [1, epochB] });
    s.close();
    await waitMetric(gw, "natsedge_connections", SSE, 0);
  });

  it.each(["header", "query"])("reconnect with Last-Event-ID (%s) gets exactly the 5 missed publications, in order, once", async (via) => {
    const a = chan("chat");
    const b = chan("chat");
    const s1 = await SseClient.open(gw.url, query([a, b]));
    await s1.next("subscribed");
    await publish(a, "a1");
    await publish(b, "b1");
    const seen = await s1.take(2, "live pubs");
    const lastId = seen[1]?.lastId as string;
    s1.close();
    // Disconnected for sure (the gateway noticed) before the five are published.
    await waitMetric(gw, "natsedge_connections", SSE, 0);
    for (const [ch, data] of [[a, "a2"], [b, "b2"], [a, "a3"], [a, "a4"], [b, "b3"]] as const) await publish(ch, data);

    const s2 = await SseClient.open(gw.url, query([a, b], via === "query" ? { lastEventId: lastId } : {}), via === "header" ? { "last-event-id": lastId } : {});
    expect(s2.status).toBe(200);
    const missed = await s2.take(5, "missed pubs");
    expect(missed.map((e) => e.event)).toEqual(["pub", "pub", "pub", "pub", "pub"]);
    // Per channel in order (channels are recovered one after the other).
    const got = missed.map(json);
    expect(got.filter((p) => p.ch === a).map((p) => [p.offset, p.data])).toEqual([[2, "a2"], [3, "a3"], [4, "a4"]]);
    expect(got.filter((p) => p.ch === b).map((p) => [p.offset, p.data])).toEqual([[2, "b2"], [3, "b3"]]);
    const subscribed = await s2.next("subscribed");
    expect(subscribed.event).toBe("subscribed");
    expect(decodeId(subscribed.lastId)).toMatchObject({ [a]: [4, expect.any(String)], [b]: [3, expect.any(String)] });
    // No duplicates: the next event is the next live publication.
    await publish(b, "b4");
    const live = await s2.next("live pub");
    expect(json(live)).toEqual({ ch: b, offset: 4, data: "b4" });
    expect(s2.events.filter((e) => e.event === "pub")).toHaveLength(6);
    s2.close();
  });

  it("a Last-Event-ID out of range or from another epoch gets `reset` with recovered:false", async () => {
    const tiny = chan("tiny"); // history size 3
    let top = { offset: 0, epoch: "" };
    for (let i = 1; i <= 10; i++) top = await publish(tiny, i);
    const chat = chan("chat");
    const chatTop = await publish(chat, "x");

    const tops = new Map([
      [tiny, top],
      [chat, chatTop],
    ]);
    const cases: Array<[string, Record<string, [number, string]>, string]> = [
      ["behind the retained history", { [tiny]: [1, top.epoch] }, tiny],
      ["ahead of the channel", { [tiny]: [99, top.epoch] }, tiny],
      ["another epoch", { [chat]: [0, "bogus-epoch"] }, chat],
    ];
    for (const [what, cursors, ch] of cases) {
      const pos = tops.get(ch) as { offset: number; epoch: string };
      const s = await SseClient.open(gw.url, query([ch]), { "last-event-id": encodeId(cursors) });
      const reset = await s.next(`reset (${what})`);
      expect(reset.event, what).toBe("reset");
      expect(json(reset), what).toEqual({ ch, offset: pos.offset, epoch: pos.epoch, recovered: false });
      expect(decodeId(reset.lastId), what).toEqual({ [ch]: [pos.offset, pos.epoch] });
      expect((await s.next("subscribed")).event).toBe("subscribed");
      // Live delivery continues from the current position.
      const next = await publish(ch, "after reset");
      tops.set(ch, next);
      expect(json(await s.next("live pub"))).toEqual({ ch, offset: next.offset, data: "after reset" });
      s.close();
    }

    // An id that is not ours cannot be resumed: the client is told, for every history channel,
    // and the stream goes on from now.
    const unreadable = ["!!not-an-id!!", encodeRaw("[1,2]"), encodeRaw(JSON.stringify({ [chat]: "x" })), "x".repeat(4100)];
    for (const id of unreadable) {
      const s = await SseClient.open(gw.url, query([chat]), { "last-event-id": id });
      try {
        const reset = await s.next(`reset for ${id.slice(0, 20)}`);
        expect(reset.event).toBe("reset");
        expect(json(reset)).toEqual({ ch: chat, offset: tops.get(chat)?.offset, epoch: chatTop.epoch, recovered: false });
        const first = await s.next("subscribed");
        expect(first.event).toBe("subscribed");
        expect(json(first)).toEqual({ subs: { [chat]: { offset: tops.get(chat)?.offset, epoch: chatTop.epoch } } });
      } finally {
        s.close();
      }
    }
  });

  it("a token in the query (or a session, or a Bearer header) opens token-only and personal channels", async () => {
    const secure = chan("secure");
    const token = await sign("alice");
    const s = await SseClient.open(gw.url, query([secure, "user.alice"], { token }));
    expect(s.status).toBe(200);
    await s.next("subscribed");
    await publish(secure, "for alice");
    expect(json(await s.next("pub"))).toEqual({ ch: secure, offset: 1, data: "for alice" });
    s.close();

    const bearer = await SseClient.open(gw.url, query([secure]), { authorization: `Bearer ${token}` });
    expect(bearer.status).toBe(200);
    bearer.close();

    // A long-poll session works too (the identity travels in it).
    const rpc = await fetch(`${gw.url}/lp/rpc`, { method: "POST", body: JSON.stringify({ cmds: [{ op: "connect", token }] }) });
    const session = ((((await rpc.json()) as Frame).replies as Frame[])[0]?.ok as Frame).session as string;
    const bySession = await SseClient.open(gw.url, query([secure], { session }));
    expect(bySession.status).toBe(200);
    expect((await bySession.next("subscribed")).event).toBe("subscribed");
    bySession.close();

    for (const [what, q] of [
      ["no token", query([secure])],
      ["a bad token", query([secure], { token: "not.a.token" })],
      ["an expired token", query([secure], { token: await sign("alice", { exp: Math.floor(Date.now() / 1000) - 10 }) })],
      ["a forged session", query([secure], { session: `${session.split(".")[0] as string}.AAAA` })],
    ] as const) {
      const r = await SseClient.open(gw.url, q);
      expect(r.status, what).toBe(401);
      expect(r.refusal, what).toMatchObject({ error: { code: 401 } });
    }
  });

  it("refusals come before streaming: 403 forbidden, 404 unknown namespace, 400 bad channel lists", async () => {
    const token = await sign("alice");
    const restricted = await sign("alice", { channels: ["chat.allowed.*"] });
    const cases: Array<[string, string, number]> = [
      ["another user's personal channel", query(["user.bob"], { token }), 403],
      ["a forbidden channel among allowed ones", query([chan("chat"), "user.bob"], { token }), 403],
      ["a channel the token does not grant", query(["chat.other"], { token: restricted }), 403],
      ["an unknown namespace", query(["nowhere.x"]), 404],
      ["no ch", query([]), 400],
      ["the same ch twice", query(["chat.twice", "chat.twice"]), 400],
      ["too many channels", query(Array.from({ length: MAX_SUBS + 1 }, () => chan("chat"))), 400],
      ["a bare namespace", query(["chat"]), 400],
      ["a wildcard", query(["chat.*"]), 400],
    ];
    for (const [what, q, status] of cases) {
      const r = await SseClient.open(gw.url, q);
      expect(r.status, what).toBe(status);
      expect(r.headers?.get("content-type"), what).toBe("application/json");
      expect(r.refusal, what).toMatchObject({ error: { code: status, message: expect.any(String) } });
    }
    // The granted pattern itself works.
    const r = await SseClient.open(gw.url, query(["chat.allowed.1"], { token: restricted }));
    expect(r.status).toBe(200);
    r.close();
    // Another origin is refused; the allowed one gets CORS headers.
    const evil = await SseClient.open(gw.url, query([chan("chat")]), { origin: "https://evil.example.net" });
    expect(evil.status).toBe(403);
    const good = await SseClient.open(gw.url, query([chan("chat")]), { origin: pageOrigin });
    expect(good.status).toBe(200);
    expect(good.headers?.get("access-control-allow-origin")).toBe(pageOrigin);
    good.close();
  });

  it("an SSE client's join and leave are seen by a WebSocket client", async () => {
    const ch = chan("chat");
    const ws = await TestClient.connect(gw.wsUrl);
    try {
      ok(await ws.request("subscribe", { ch }));
      const s = await SseClient.open(gw.url, query([ch], { token: await sign("ivy", { info: { name: "Ivy" } }) }));
      await s.next("subscribed");
      const join = await ws.nextPush((p) => p.push === "join" && (p.info as Frame).user === "ivy", "join of the SSE client");
      expect(join).toEqual({ push: "join", ch, info: { client: expect.any(String), user: "ivy", info: { name: "Ivy" } } });
      const client = (join.info as Frame).client as string;
      expect((ok(await ws.request("presence", { ch })).clients as Frame)[client]).toEqual({ user: "ivy", info: { name: "Ivy" } });
      // And the SSE client hears the WebSocket client's publications.
      ok(await ws.request("publish", { ch, data: "hello sse" }));
      expect(json(await s.next("pub"))).toMatchObject({ ch, offset: 1, data: "hello sse" });
      s.close();
      const leave = await ws.nextPush((p) => p.push === "leave" && (p.info as Frame).client === client, "leave of the SSE client");
      expect(leave).toMatchObject({ push: "leave", ch, info: { client, user: "ivy" } });
      expect((ok(await ws.request("presence", { ch })).clients as Frame)[client]).toBeUndefined();
    } finally {
      ws.close();
    }
  });

  it("pretty-printed multi-line JSON from a backend arrives as ONE valid data line", async () => {
    const ch = chan("chat");
    const s = await SseClient.open(gw.url, query([ch]));
    await s.next("subscribed");
    const data = { text: "line one\nline two\r\nline three", nested: { list: [1, 2, { deep: true }], empty: {} }, unicode: "é\u2028ü" };
    const body = JSON.stringify({ channel: ch, data }, null, 2);
    expect(body.split("\n").length).toBeGreaterThan(5);
    const res = await fetch(`${gw.url}/api/publish`, {
      method: "POST",
      headers: { authorization: `apikey ${API_KEY}`, "content-type": "application/json" },
      body,
    });
    expect(res.status).toBe(200);
    const e = await s.next("pub");
    expect(e.event).toBe("pub");
    expect(e.dataLines).toBe(1);
    expect(JSON.parse(e.data)).toEqual({ ch, offset: 1, data });
    s.close();
  });

  it("a server-side disconnect (API) ends the stream and cleans up: leave, connection gauge, channel", async () => {
    const ch = chan("chat");
    await waitMetric(gw, "natsedge_connections", SSE, 0);
    await waitMetric(gw, "natsedge_channels", undefined, 0);
    const ws = await TestClient.connect(gw.wsUrl);
    try {
      ok(await ws.request("subscribe", { ch }));
      const s = await SseClient.open(gw.url, query([ch], { token: await sign("judy") }));
      await s.next("subscribed");
      await ws.nextPush((p) => p.push === "join" && (p.info as Frame).user === "judy", "join");
      await waitMetric(gw, "natsedge_connections", SSE, 1);
      const res = await api(gw.url, "POST", "/api/disconnect", { key: API_KEY, body: { user: "judy" } });
      expect(res.status).toBe(200);
      const bye = await s.next("disconnect");
      expect(bye.event).toBe("disconnect");
      expect(json(bye)).toMatchObject({ code: 4003, reconnect: false });
      await s.waitEnded();
      await ws.nextPush((p) => p.push === "leave" && (p.info as Frame).user === "judy", "leave after the server disconnect");
      await waitMetric(gw, "natsedge_connections", SSE, 0);
      ws.close();
      await ws.closed;
      await waitMetric(gw, "natsedge_channels", undefined, 0);
    } finally {
      ws.close();
    }
  });

  it("a token expiring ends the stream with `disconnect` (reconnect: true) and cleans up", async () => {
    const ch = chan("chat");
    const exp = Math.floor(Date.now() / 1000) + 2;
    const s = await SseClient.open(gw.url, query([ch], { token: await sign("kim", { exp }) }));
    expect(s.status).toBe(200);
    await s.next("subscribed");
    const bye = await s.next("disconnect", 8_000);
    expect(bye.event).toBe("disconnect");
    expect(json(bye)).toMatchObject({ code: 4002, reconnect: true });
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000 - 50);
    await s.waitEnded();
    await waitMetric(gw, "natsedge_connections", SSE, 0);
  });
});

describe("SSE slow consumer", () => {
  it("a stream that stops reading is ended with `disconnect` 4008 and released; a reading stream gets everything", async () => {
    const g = await startGateway({
      config: { yaml: "commandRate: 0\nnamespaces:\n  feed: { history: { size: 1000, ttl: 5m }, anonymous: true }\n" },
      args: ["--backpressure-limit", "64KiB", "--api-key", API_KEY],
    });
    const sock = connectSocket(g.port);
    try {
      const ch = "feed.slow";
      const normal = await SseClient.open(g.url, query([ch]));
      await normal.next("subscribed");
      // The slow client: a raw socket that reads the response head and first event, then stops.
      let received = "";
      const arrived = new Signal();
      sock.on("data", (d: Buffer) => {
        received += d.toString("utf8");
        arrived.wake();
      });
      const receivedUntil = (text: string, what: string, timeoutMs = 10_000): Promise<true> =>
        arrived.until(() => (received.includes(text) ? true : undefined), what, timeoutMs, () => `received: ${received.slice(-2000)}`);
      sock.write(`GET /sse?${query([ch])} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n`);
      await receivedUntil("event: subscribed", "the slow client's subscribed event");
      sock.pause();
      await waitMetric(g, "natsedge_connections", SSE, 2);

      const pad = "p".repeat(24_000);
      let published = 0;
      for (; published < 2_000; ) {
        await publish(ch, { n: ++published, pad }, g.url);
        if (published % 10 === 0 && (await metricValue(g, `natsedge_connections{${SSE}}`)) === 1) break;
      }
      expect(await metricValue(g, `natsedge_connections{${SSE}}`), `still 2 SSE connections after ${published} publications`).toBe(1);
      // The reading client got every publication, in order.
      const pubs = await normal.take(published, "every publication", 20_000);
      expect(pubs.map((e) => (json(e).data as { n: number }).n)).toEqual(Array.from({ length: published }, (_, i) => i + 1));
      // Once it reads again, the slow client finds the reason at the end of its stream.
      sock.resume();
      await receivedUntil("event: disconnect", "the slow client's disconnect event", 20_000);
      expect(received).toMatch(/event: disconnect\ndata: \{"code":4008,[^\n]*"reconnect":true\}/);
      expect(g.lines.some((l) => l.includes("Maximum call stack"))).toBe(false);
      normal.close();
      await waitMetric(g, "natsedge_connections", SSE, 0);
      await waitMetric(g, "natsedge_channels", undefined, 0);
    } finally {
      sock.destroy();
      await g.stop();
    }
  });
});

describe("SSE and gateway shutdown", () => {
  it("SIGTERM drain sends `event: disconnect` with reconnect: true and ends the stream", async () => {
    const g = await startGateway({
      config: { yaml: "drainPeriod: 300ms\nnamespaces:\n  chat: { history: { size: 10, ttl: 5m }, anonymous: true }\n" },
    });
    try {
      const s = await SseClient.open(g.url, query(["chat.drain"]));
      expect(s.status).toBe(200);
      await s.next("subscribed");
      const stopped = g.stop("SIGTERM");
      const bye = await s.next("disconnect");
      expect(bye.event).toBe("disconnect");
      expect(json(bye)).toEqual({ code: 4000, reason: expect.any(String), reconnect: true });
      await s.waitEnded();
      expect(await stopped).toBe(0);
    } finally {
      await g.stop("SIGKILL");
    }
  });
});

describe("a real browser EventSource (Chromium via playwright-core)", () => {
  it("receives publications and, after the server ends the stream, resumes with Last-Event-ID on its own", async () => {
    const { existsSync } = await import("node:fs");
    expect(existsSync(CHROMIUM), `${CHROMIUM} is needed (apt-get install -y chromium)`).toBe(true);
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--disable-gpu", "--no-first-run"] });
    try {
      const page = await browser.newPage();
      await page.goto(`${pageOrigin}/`);
      const ch = chan("secure");
      const url = `${gw.url}/sse?${query([ch], { token: await sign("browser-user") })}`;
      // Plain page script (a string: the test's TypeScript has no DOM types).
      await page.evaluate(`(() => {
        window.log = [];
        const es = new EventSource(${JSON.stringify(url)});
        window.es = es;
        for (const type of ["subscribed", "pub", "reset", "disconnect"]) {
          es.addEventListener(type, (e) => window.log.push({ type, data: e.data, id: e.lastEventId }));
        }
        es.addEventListener("error", () => window.log.push({ type: "error", state: es.readyState }));
      })()`);
      type Logged = { type: string; data?: string; id?: string };
      const log = (): Promise<Logged[]> => page.evaluate("window.log") as Promise<Logged[]>;
      const waitLog = (pred: (l: Logged[]) => boolean, what: string): Promise<Logged[]> => {
        let last: Logged[] = [];
        return new Signal().until(
          async () => (pred((last = await log())) ? last : undefined),
          `browser: ${what}`,
          15_000,
          () => `log: ${JSON.stringify(last).slice(0, 2000)}`,
          50,
        );
      };
      const count = (l: Logged[], type: string): number => l.filter((x) => x.type === type).length;

      await waitLog((l) => count(l, "subscribed") === 1, "subscribed");
      for (let n = 1; n <= 3; n++) await publish(ch, { n });
      await waitLog((l) => count(l, "pub") === 3, "3 pubs");

      // The server ends the stream; the browser reconnects by itself (retry: 2 s) with Last-Event-ID.
      expect((await api(gw.url, "POST", "/api/disconnect", { key: API_KEY, body: { user: "browser-user" } })).status).toBe(200);
      await waitLog((l) => count(l, "disconnect") === 1, "disconnect");
      await waitMetric(gw, "natsedge_connections", SSE, 0);
      for (let n = 4; n <= 5; n++) await publish(ch, { n });
      await waitLog((l) => count(l, "subscribed") === 2, "the browser's reconnect");
      for (let n = 6; n <= 7; n++) await publish(ch, { n });
      const l = await waitLog((x) => count(x, "pub") === 7, "7 pubs");
      const ns = l.filter((x) => x.type === "pub").map((x) => (JSON.parse(x.data as string) as { data: { n: number } }).data.n);
      expect(ns).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(count(l, "reset")).toBe(0);
      // 4 and 5 were published while the browser was away: they came from the resume (Last-Event-ID),
      // which delivers missed publications before the new stream's `subscribed`.
      const resubscribed = l.findIndex((x, i) => x.type === "subscribed" && i > 0);
      const indexOfN = (n: number): number =>
        l.findIndex((x) => x.type === "pub" && (JSON.parse(x.data as string) as { data: { n: number } }).data.n === n);
      expect(indexOfN(4)).toBeGreaterThan(l.findIndex((x) => x.type === "disconnect"));
      expect(indexOfN(4)).toBeLessThan(resubscribed);
      expect(indexOfN(5)).toBeLessThan(resubscribed);
      expect(indexOfN(6)).toBeGreaterThan(resubscribed);
      // Every pub had an id; the last one names offset 7.
      const lastPub = l.filter((x) => x.type === "pub").at(-1) as Logged;
      expect(decodeId(lastPub.id as string)[ch]?.[0]).toBe(7);
      await page.evaluate("window.es.close()");
    } finally {
      await browser.close();
    }
  });
});
