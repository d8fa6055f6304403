/**
 * Server-side subscriptions in the client SDK, against a real gateway (memory broker) whose
 * connect hook (test/helpers/hook-backend.ts, over HTTP) names channels, and the server API's
 * `subscribe` over HTTP: each becomes a Subscription announced by `serverSubscribed`, with the
 * interface of the app's own; across a reconnect the hook's channels are made again by the
 * gateway and the SDK fills the gap from history, the server API's the SDK subscribes itself
 * from its position; after disconnect() and connect() the same Subscription resumes on both
 * transports; long-poll polls the connect reply's channels.
 */
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Client, type ClientInfo, type ClientOptions, type NatsedgeError, type Position, type Publication, type Subscription } from "../src/client/index.js";
import { api } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { HookBackend } from "./helpers/hook-backend.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { eventually, Signal } from "./helpers/signal.js";

const NATS = "nats://127.0.0.1:4222";
const API_KEY = "server-subs-test-api-key-0123456789";
const SESSION_SECRET = "server-subs-test-session-secret-0123456789";

let backend: HookBackend;
let gw: GatewayProcess;
let proxy: TestProxy;

beforeAll(async () => {
  // The connect hook names the user and the channels the client asks for in `data`.
  backend = await HookBackend.start(NATS, `serversubs${process.pid}`, (kind, body) => {
    const data = (body.data ?? {}) as { user?: string; channels?: string[] };
    if (kind !== "connect" || typeof data.user !== "string") return { answer: { error: { code: 401, message: "no user" } } };
    return { answer: { result: { user: data.user, channels: data.channels } } };
  });
  gw = await startGateway({
    config: {
      yaml: `
apiKey: ${API_KEY}
sessionSecret: ${SESSION_SECRET}
presenceGrace: 0s
drainPeriod: 0s
commandRate: 0
hooks:
  connect: ${backend.url}/connect
namespaces:
  feed: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true }
  live: { presence: true }
`,
    },
  });
  proxy = await startProxy({ port: gw.port });
});

afterAll(async () => {
  await proxy?.close();
  await gw?.stop();
  await backend?.stop();
});

/** A client whose server-side subscriptions record everything they hear; closed after the test. */
interface Heard {
  sub: Subscription<{ n: number }>;
  pubs: Publication<{ n: number }>[];
  joins: ClientInfo[];
  subscribed: number;
  unrecovered: Position[];
  errors: NatsedgeError[];
}
interface Harness {
  client: Client;
  signal: Signal;
  heard: Map<string, Heard>;
  announced: string[];
  connects: number;
  until<T>(check: () => T | undefined, what: string): Promise<T>;
}
const open: Client[] = [];
function sdk(user: string, channels: string[], opts: ClientOptions = {}): Harness {
  const signal = new Signal();
  const client = new Client(proxy.url, { WebSocket, autoConnect: false, reconnectJitter: 50, minReconnectDelay: 50, maxReconnectDelay: 200, data: { user, channels }, ...opts });
  open.push(client);
  const h: Harness = {
    client,
    signal,
    heard: new Map(),
    announced: [],
    connects: 0,
    until: (check, what) => signal.until(check, what, 10_000, () => JSON.stringify({ announced: h.announced, heard: [...h.heard].map(([ch, x]) => [ch, x.pubs.map((p) => p.data.n), x.subscribed, x.unrecovered, x.errors.map((e) => e.message)]) })),
  };
  client.on("connected", () => {
    h.connects++;
    signal.wake();
  });
  client.on("disconnected", () => signal.wake());
  client.on("serverSubscribed", (s) => {
    const sub = s as Subscription<{ n: number }>;
    const x: Heard = { sub, pubs: [], joins: [], subscribed: 0, unrecovered: [], errors: [] };
    h.announced.push(sub.channel);
    h.heard.set(sub.channel, x);
    const wake = <A>(f: (a: A) => void) => (a: A) => {
      f(a);
      signal.wake();
    };
    sub.setHandlers({
      onPublication: wake((p) => x.pubs.push(p)),
      onJoin: wake((i) => x.joins.push(i)),
      onSubscribed: () => {
        x.subscribed++;
        signal.wake();
      },
      onUnrecovered: wake((p) => x.unrecovered.push(p)),
      onError: wake((e) => x.errors.push(e)),
    });
    signal.wake();
  });
  return h;
}
afterEach(() => {
  proxy.blockWebSocket = false;
  for (const c of open.splice(0)) c.disconnect();
});

const publish = async (channel: string, n: number): Promise<void> => {
  expect((await api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel, data: { n } } })).status).toBe(200);
};
const ns = (x: Heard | undefined): number[] => (x?.pubs ?? []).map((p) => p.data.n);
/** The server-side subscription to `ch` once it is active. */
const subscribed = (h: Harness, ch: string): Promise<Heard> => h.until(() => (h.heard.get(ch)?.subscribed ? h.heard.get(ch) : undefined), `${ch} subscribed`);
/** Waits until `x` has heard `n` publications. */
const heard = (h: Harness, x: Heard, n: number): Promise<true> => h.until(() => (ns(x).length >= n ? true : undefined), `${n} publications`);

/** A WebSocket client of `user` whose connect hook names `ch`, once it has heard publication `first`. */
async function hookSubscribed(user: string, ch: string, first: number): Promise<{ h: Harness; feed: Heard }> {
  const h = sdk(user, [ch], { transports: ["websocket"] });
  await h.client.connect();
  const feed = await subscribed(h, ch);
  await publish(ch, first);
  await heard(h, feed, 1);
  return { h, feed };
}

/** Cuts the client's WebSocket and keeps it out until `during` has run. */
async function outage(h: Harness, during: () => Promise<void>): Promise<void> {
  const before = h.connects;
  proxy.blockWebSocket = true;
  proxy.dropWebSockets();
  await h.until(() => (h.client.state !== "connected" ? true : undefined), "disconnected");
  await during();
  proxy.blockWebSocket = false;
  await h.until(() => (h.connects > before ? true : undefined), "reconnected");
}

describe("server-side subscriptions on WebSocket", () => {
  it("the connect hook's channels are Subscriptions with the interface of the app's own", async () => {
    const h = sdk("wendy", ["feed.w1", "live.w1"], { transports: ["websocket"] });
    await h.client.connect();
    const feed = await subscribed(h, "feed.w1");
    await h.until(() => h.heard.get("live.w1")?.subscribed || undefined, "live.w1 subscribed");
    expect(h.announced.sort()).toEqual(["feed.w1", "live.w1"]);
    expect([...h.client.serverSubscriptions.keys()].sort()).toEqual(["feed.w1", "live.w1"]);
    expect(h.client.subscriptions.size).toBe(0);
    expect(feed.sub.server).toBe(true);
    expect(feed.sub.active).toBe(true);
    expect(feed.sub.position).toEqual({ offset: expect.any(Number) as number, epoch: expect.any(String) as string });
    expect(() => h.client.subscribe("feed.w1")).toThrow(/already subscribed/);

    await publish("feed.w1", 1);
    expect((await feed.sub.publish({ n: 2 })).offset).toEqual(expect.any(Number));
    await heard(h, feed, 2);
    expect(ns(feed)).toEqual([1, 2]);
    expect(feed.sub.position?.offset).toBe(feed.pubs[1]?.offset);
    expect((await feed.sub.history()).pubs.map((p) => p.data.n)).toEqual([1, 2]);
    expect(await feed.sub.presenceStats()).toEqual({ clients: 1, users: 1 });
    expect(Object.values(await feed.sub.presence()).map((c) => c.user)).toEqual(["wendy"]);

    // Another user's connect hook subscription to the same channel: a join for wendy.
    const other = sdk("xavier", ["feed.w1"], { transports: ["websocket"] });
    await other.client.connect();
    await h.until(() => feed.joins.find((j) => j.user === "xavier"), "xavier's join");

    // Unsubscribing ends it on the gateway too: other's presence no longer counts wendy.
    feed.sub.unsubscribe();
    expect(h.client.serverSubscriptions.has("feed.w1")).toBe(false);
    const otherFeed = await subscribed(other, "feed.w1");
    await eventually(async () => ((await otherFeed.sub.presenceStats()).users === 1 ? true : undefined), "wendy gone from presence");
    await publish("feed.w1", 3);
    await other.until(() => (ns(otherFeed).includes(3) ? true : undefined), "3 at other");
    expect(ns(feed)).toEqual([1, 2]);
  });

  it("after a reconnect the hook makes them again and the SDK fills the gap from history, once each, in order", async () => {
    const { h, feed } = await hookSubscribed("yara", "feed.y1", 1);
    await outage(h, async () => {
      for (const n of [2, 3, 4]) await publish("feed.y1", n);
    });
    await publish("feed.y1", 5);
    await heard(h, feed, 5);
    expect(ns(feed)).toEqual([1, 2, 3, 4, 5]);
    expect(feed.unrecovered).toEqual([]);
    expect(feed.subscribed).toBe(2);
    // The same object throughout, announced once.
    expect(h.announced).toEqual(["feed.y1"]);
    expect(h.client.serverSubscriptions.get("feed.y1")).toBe(feed.sub);
    // Live delivery continues after the recovery.
    await publish("feed.y1", 6);
    await heard(h, feed, 6);
    expect(ns(feed)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it("a server API subscription is kept across a reconnect by subscribing from its position; server API unsubscribe ends it", async () => {
    const h = sdk("zoe", [], { transports: ["websocket"] });
    await h.client.connect();
    expect((await api(gw.url, "POST", "/api/subscribe", { key: API_KEY, body: { user: "zoe", channel: "feed.z1" } })).status).toBe(200);
    const feed = await subscribed(h, "feed.z1");
    await publish("feed.z1", 1);
    await heard(h, feed, 1);
    await outage(h, async () => {
      for (const n of [2, 3]) await publish("feed.z1", n);
    });
    await h.until(() => (ns(feed).length === 3 && feed.subscribed === 2 ? true : undefined), "2 and 3 recovered");
    await publish("feed.z1", 4);
    await heard(h, feed, 4);
    expect(ns(feed)).toEqual([1, 2, 3, 4]);
    expect(feed.unrecovered).toEqual([]);
    expect(h.announced).toEqual(["feed.z1"]);

    expect((await api(gw.url, "POST", "/api/unsubscribe", { key: API_KEY, body: { user: "zoe", channel: "feed.z1" } })).status).toBe(200);
    const err = await h.until(() => feed.errors[0], "unsubscribed by server");
    expect(err.code).toBe(403);
    expect(h.client.serverSubscriptions.has("feed.z1")).toBe(false);
  });

  it("a gap beyond the retained history is reported with onUnrecovered, and delivery continues", async () => {
    const { h, feed } = await hookSubscribed("abel", "feed.a1", 0);
    // More than the namespace's history size (100) while away: offset 1 ages out.
    await outage(h, async () => {
      for (let n = 1; n <= 105; n++) await publish("feed.a1", n);
    });
    await h.until(() => (feed.subscribed === 2 ? true : undefined), "subscribed again");
    await publish("feed.a1", 106);
    await h.until(() => (ns(feed).includes(106) ? true : undefined), "106");
    expect(feed.unrecovered.length).toBe(1);
    expect(ns(feed)).toEqual([0, 106]);
  });
});

describe("server-side subscriptions across disconnect() and connect()", () => {
  for (const transport of ["websocket", "longpoll"] as const) {
    it(`${transport}: the same Subscription resumes from its position`, async () => {
      const h = sdk(`dora-${transport}`, [`feed.d-${transport}`], { transports: [transport] });
      const ch = `feed.d-${transport}`;
      await h.client.connect();
      const feed = await subscribed(h, ch);
      await publish(ch, 1);
      await heard(h, feed, 1);
      h.client.disconnect();
      expect(feed.sub.active).toBe(false);
      for (const n of [2, 3]) await publish(ch, n);
      await h.client.connect();
      expect(h.client.transport).toBe(transport);
      await h.until(() => (ns(feed).length >= 3 && feed.subscribed === 2 ? true : undefined), "2 and 3");
      await publish(ch, 4);
      await heard(h, feed, 4);
      expect(ns(feed)).toEqual([1, 2, 3, 4]);
      expect(feed.unrecovered).toEqual([]);
      expect(h.announced).toEqual([ch]);
    });
  }
});

describe("server-side subscriptions on long-poll", () => {
  it("the connect reply's channels are polled as server-side subscriptions", async () => {
    const h = sdk("lena", ["feed.l1"], { transports: ["longpoll"] });
    await h.client.connect();
    expect(h.client.transport).toBe("longpoll");
    const feed = await subscribed(h, "feed.l1");
    expect(feed.sub.server).toBe(true);
    await publish("feed.l1", 1);
    await publish("feed.l1", 2);
    await heard(h, feed, 2);
    expect(ns(feed)).toEqual([1, 2]);
    expect(h.announced).toEqual(["feed.l1"]);
  });
});
