/**
 * The client SDK falling back from WebSocket to long-poll and back, behind a loopback proxy that
 * refuses WebSocket upgrades on demand (test/helpers/proxy.ts), against a real gateway: the same
 * API on both transports (publish, presence, history), the long-poll loop stopping after the
 * switch, a silent connection caught by the keepalive ping, and a numbered stream (from a backend, and from the client itself with idempotency
 * keys) arriving exactly once, in order, across every switch.
 */
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Client, NatsedgeError, type ClientOptions, type Publication } from "../src/client/index.js";
import { api } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { metric, sequenceProblem, sleep, strictlyIncreasing, waitUntil } from "./cluster/util.js";

const API_KEY = "client-fallback-api-key-01234567";
const CONFIG = `
apiKey: ${API_KEY}
sessionSecret: "client-fallback-session-secret-0123456789abcdef"
presenceGrace: 0s
commandRate: 0
pingInterval: 2s
namespaces:
  chat: { history: { size: 2000, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
`;

interface Logged {
  at: number;
  event: string;
  arg: unknown;
}

const open: Client[] = [];
function sdk(url: string, opts: ClientOptions = {}): { client: Client; events: Logged[] } {
  const events: Logged[] = [];
  const client = new Client(url, { WebSocket, ...opts });
  for (const event of ["connecting", "connected", "disconnected", "error"]) {
    client.on(event as "error", (arg: unknown) => events.push({ at: performance.now(), event, arg }));
  }
  open.push(client);
  return { client, events };
}
afterEach(() => {
  for (const c of open.splice(0)) c.disconnect();
});

const transportsConnected = (events: Logged[]): string[] =>
  events.filter((e) => e.event === "connected").map((e) => (e.arg as { transport: string }).transport);

let gw: GatewayProcess;
let proxy: TestProxy;
beforeAll(async () => {
  gw = await startGateway({ config: { yaml: CONFIG } });
  proxy = await startProxy({ port: gw.port });
});
afterAll(async () => {
  await proxy?.close();
  await gw?.stop();
});

/** Publishes {n} for n = 1..count through the HTTP server API, one after another, at `rate`/s. */
async function backend(ch: string, count: number, rate: number, stop: { stopped: boolean }): Promise<void> {
  const start = Date.now();
  for (let n = 1; n <= count && !stop.stopped; n++) {
    const wait = start + (n * 1000) / rate - Date.now();
    if (wait > 0) await sleep(wait);
    const r = await api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { n } } });
    if (r.status !== 200) throw new Error(`publish ${n}: ${JSON.stringify(r.body)}`);
  }
}

async function publishOne(ch: string, n: number): Promise<void> {
  const r = await api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { n } } });
  expect(r.status).toBe(200);
}

const polls = async (): Promise<number> =>
  (await metric(gw, "natsedge_longpoll_requests_total", 'outcome="data"').catch(() => 0)) +
  (await metric(gw, "natsedge_longpoll_requests_total", 'outcome="position"').catch(() => 0)) +
  (await metric(gw, "natsedge_longpoll_requests_total", 'outcome="timeout"').catch(() => 0));

describe("WebSocket blocked, then allowed, then blocked again", () => {
  it("switches transports with the same API, and every publication arrives once, in order", async () => {
    const ch = `chat.fallback-${process.pid}`;
    proxy.blockWebSocket = true;
    const { client, events } = sdk(proxy.url, { websocketRetryInterval: 300, minReconnectDelay: 50, maxReconnectDelay: 200 });
    const got: Publication<{ n?: number; m?: number }>[] = [];
    let subscribed = 0;
    const unrecovered: unknown[] = [];
    const sub = client.subscribe<{ n?: number; m?: number }>(ch, {
      onPublication: (p) => got.push(p),
      onSubscribed: () => subscribed++,
      onUnrecovered: (pos) => unrecovered.push(pos),
    });
    // An observer on a direct WebSocket, to show up in presence.
    const observer = new Client(gw.url, { WebSocket });
    open.push(observer);
    let observerSubscribed = false;
    observer.subscribe(ch, { onSubscribed: () => (observerSubscribed = true) });

    await waitUntil(() => (subscribed === 1 && observerSubscribed) || undefined, "subscribed");
    expect(client.transport).toBe("longpoll");
    expect(proxy.stats.refused).toBeGreaterThanOrEqual(1);

    // The same API on long-poll.
    const checkApi = async (transport: string): Promise<void> => {
      expect(client.transport).toBe(transport);
      const presence = await waitUntil(async () => {
        const p = await sub.presence();
        return Object.keys(p).length === 2 ? p : undefined;
      }, `presence of both on ${transport}`);
      expect(Object.keys(presence).sort()).toEqual([client.clientId, observer.clientId].sort());
      const h = await sub.history({ limit: 5 });
      expect(h.epoch).toEqual(expect.any(String));
      expect(h.pubs.length).toBeLessThanOrEqual(5);
      expect(await sub.presenceStats()).toMatchObject({ clients: 2 });
    };
    await checkApi("longpoll");

    // Two numbered streams: a backend through the server API, and the client itself, which
    // retries a publish that a transport switch cut off, with the same idempotency key.
    const N = 400;
    const M = 60;
    const stop = { stopped: false };
    const fromBackend = backend(ch, N, 100, stop);
    let retries = 0;
    const fromClient = (async () => {
      for (let m = 1; m <= M; m++) {
        await sleep(50);
        for (let attempt = 0; ; attempt++) {
          try {
            await sub.publish({ m }, `fallback-${process.pid}-${m}`);
            break;
          } catch (err) {
            if (!(err instanceof NatsedgeError) || err.code !== 503 || attempt > 20) throw err;
            retries++;
          }
        }
      }
    })();

    try {
      await waitUntil(() => got.length >= 60 || undefined, "publications on long-poll");
      // Allow WebSocket: the periodic retry switches over, and the long-poll loop stops.
      proxy.blockWebSocket = false;
      await waitUntil(() => client.transport === "websocket" || undefined, "the switch to WebSocket", 10_000);
      await waitUntil(async () => ((await metric(gw, "natsedge_longpoll_held")) === 0 ? true : undefined), "no poll held");
      const pollsOnWs = await polls();
      await checkApi("websocket");
      await waitUntil(() => got.length >= 200 || undefined, "publications on WebSocket");
      expect(await polls()).toBe(pollsOnWs); // the old long-poll loop is gone

      // Block again and cut the WebSocket: back to long-poll, recovering from the last offset.
      proxy.blockWebSocket = true;
      proxy.dropWebSockets();
      await waitUntil(() => client.transport === "longpoll" || undefined, "the fallback to long-poll", 10_000);
      await checkApi("longpoll");
      await Promise.all([fromBackend, fromClient]);
    } finally {
      stop.stopped = true;
    }
    await waitUntil(() => got.length >= N + M || undefined, "every publication", 15_000);
    await sleep(200); // nothing more arrives
    const ns = got.filter((p) => p.data.n !== undefined).map((p) => p.data.n as number);
    const ms = got.filter((p) => p.data.m !== undefined).map((p) => p.data.m as number);
    expect(sequenceProblem(ns, N)).toBeUndefined();
    expect(sequenceProblem(ms, M)).toBeUndefined();
    expect(strictlyIncreasing(got.map((p) => p.offset as number))).toBe(true);
    expect(unrecovered).toEqual([]);
    expect(transportsConnected(events)).toEqual(["longpoll", "websocket", "longpoll"]);
    expect(sub.position?.offset).toBe(N + M);
    console.log(`fallback: ${N + M} publications, ${retries} client publish retries, ${proxy.stats.refused} upgrades refused`);
  });

  it("a connection that goes silent (no close) is caught by the keepalive ping and replaced", async () => {
    const ch = `chat.silent-${process.pid}`;
    proxy.blockWebSocket = false;
    // The gateway's pingInterval is 2 s: the client pings after 2 s without a message and gives
    // the reply `timeout` (1 s) to come.
    const { client, events } = sdk(proxy.url, { timeout: 1000, minReconnectDelay: 50, maxReconnectDelay: 100 });
    const got: number[] = [];
    let subscribed = 0;
    client.subscribe<{ n: number }>(ch, { onPublication: (p) => got.push(p.data.n), onSubscribed: () => subscribed++ });
    await waitUntil(() => subscribed === 1 || undefined, "subscribed");
    await publishOne(ch, 1);
    await waitUntil(() => got.length === 1 || undefined, "the first publication");
    proxy.freeze();
    const frozenAt = performance.now();
    await publishOne(ch, 2);
    const gone = await waitUntil(() => events.find((e) => e.event === "disconnected"), "the dead connection noticed", 10_000);
    expect(gone.arg).toMatchObject({ code: 1006, reason: "ping timed out", reconnect: true });
    expect(gone.at - frozenAt).toBeLessThan(6_000); // at most 2 s idle + 1 s check + 1 s timeout, plus slack
    await waitUntil(() => (subscribed === 2 && got.length === 2) || undefined, "resubscribed, with the missed publication");
    expect(got).toEqual([1, 2]);
    expect(transportsConnected(events)).toEqual(["websocket", "websocket"]);
  });

  it("`transports: ['longpoll']` never tries WebSocket; a long-poll client and a WebSocket client chat", async () => {
    const ch = `chat.lponly-${process.pid}`;
    proxy.blockWebSocket = false;
    const before = proxy.stats.upgradeRequests;
    const lp = sdk(proxy.url, { transports: ["longpoll"], websocketRetryInterval: 100 });
    const ws = sdk(gw.url);
    const seen: Record<string, string[]> = { lp: [], ws: [] };
    let ready = 0;
    const subLp = lp.client.subscribe<{ text: string }>(ch, { onPublication: (p) => seen.lp?.push(p.data.text), onSubscribed: () => ready++ });
    const subWs = ws.client.subscribe<{ text: string }>(ch, { onPublication: (p) => seen.ws?.push(p.data.text), onSubscribed: () => ready++ });
    await waitUntil(() => ready === 2 || undefined, "both subscribed");
    await subLp.publish({ text: "from long-poll" });
    await subWs.publish({ text: "from websocket" });
    await waitUntil(() => (seen.lp?.length === 2 && seen.ws?.length === 2) || undefined, "both messages on both");
    expect(seen.lp).toEqual(["from long-poll", "from websocket"]);
    expect(seen.ws).toEqual(seen.lp);
    await sleep(300); // the retry interval passes: nothing tries WebSocket
    expect(proxy.stats.upgradeRequests).toBe(before);
    expect(lp.client.transport).toBe("longpoll");
  });
});
