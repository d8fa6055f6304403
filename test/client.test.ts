/**
 * The client SDK (src/client/index.ts) in Node on `ws`, against real gateway processes (memory
 * broker): backoff and jitter bounds, reconnect delays against a gateway that is stopped and
 * started again, commands issued while disconnected, token refresh before exp (WebSocket and
 * long-poll), the 4002 and 4001 paths, narrowed tokens, subscription errors, and MessagePack.
 */
import { spawn } from "node:child_process";
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { backoff, Client, NatsedgeError, type ClientOptions, type Position, type Publication, type Subscription } from "../src/client/index.js";
import { api } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { freePort } from "./helpers/nats.js";
import { startProxy, type TestProxy } from "./helpers/proxy.js";
import { signToken } from "./helpers/tokens.js";
import { sequenceProblem, sleep, waitUntil } from "./cluster/util.js";

const API_KEY = "client-test-api-key-0123456789ab";
const SECRET = "client-test-hmac-secret-0123456789abcdef";
const CONFIG = `
apiKey: ${API_KEY}
presenceGrace: 0s
drainPeriod: 0s
commandRate: 0
auth:
  hmacSecret: "${SECRET}"
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
  tiny: { history: { size: 3, ttl: 5m }, clientPublish: true, anonymous: true }
  secure: { history: { size: 100, ttl: 5m }, presence: true, clientPublish: true }
`;

interface Logged {
  at: number;
  event: string;
  arg: unknown;
}

/** A client on `ws` whose events are logged in order; closed after the test. */
const open: Client[] = [];
function sdk(url: string | string[], opts: ClientOptions = {}): { client: Client; events: Logged[] } {
  const events: Logged[] = [];
  const client = new Client(url, { WebSocket, autoConnect: false, ...opts });
  for (const event of ["connecting", "connected", "disconnected", "error"]) {
    client.on(event as "error", (arg: unknown) => events.push({ at: performance.now(), event, arg }));
  }
  open.push(client);
  if (opts.autoConnect !== false) void client.connect();
  return { client, events };
}
afterEach(() => {
  for (const c of open.splice(0)) c.disconnect();
});

interface Recorded {
  sub: Subscription<{ n: number }>;
  pubs: Publication<{ n: number }>[];
  subscribed: number;
  unrecovered: Position[];
  errors: NatsedgeError[];
}
function record(client: Client, ch: string): Recorded {
  const r = { pubs: [], subscribed: 0, unrecovered: [], errors: [] } as unknown as Recorded;
  r.sub = client.subscribe<{ n: number }>(ch, {
    onPublication: (p) => r.pubs.push(p),
    onSubscribed: () => r.subscribed++,
    onUnrecovered: (pos) => r.unrecovered.push(pos),
    onError: (e) => r.errors.push(e),
  });
  return r;
}
/** Measurements printed at the end of the file, for the report. */
const measured: Record<string, unknown> = {};
afterAll(() => console.log(`client measurements: ${JSON.stringify(measured)}`));

const ns = (r: Recorded): number[] => r.pubs.map((p) => p.data.n);
const count = (events: Logged[], event: string): number => events.filter((e) => e.event === event).length;
const connected = (events: Logged[], n = 1): Promise<Logged> =>
  waitUntil(() => events.filter((e) => e.event === "connected")[n - 1], `connected #${n}`);

let seq = 0;
const chan = (namespace: string): string => `${namespace}.sdk${++seq}-${process.pid}`;
const token = (sub: string, ttlS?: number, extra: Record<string, unknown> = {}): Promise<string> =>
  signToken({ sub, ...(ttlS === undefined ? {} : { exp: Math.floor(Date.now() / 1000) + ttlS }), ...extra }, SECRET);

describe("backoff()", () => {
  it("stays within [0, min(max, min * 2^n)] for every attempt, with full jitter", () => {
    for (let n = 0; n <= 40; n++) {
      const ceiling = Math.min(20_000, 500 * 2 ** n);
      expect(backoff(n, 500, 20_000, () => 0)).toBe(0);
      expect(backoff(n, 500, 20_000, () => 0.999999)).toBeLessThanOrEqual(ceiling);
      expect(backoff(n, 500, 20_000, () => 0.999999)).toBeGreaterThanOrEqual(Math.floor(ceiling * 0.999));
      for (let i = 0; i < 200; i++) {
        const d = backoff(n, 100, 3000);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(Math.min(3000, 100 * 2 ** n));
        expect(Number.isInteger(d)).toBe(true);
      }
    }
    // Defaults: 500 ms doubling to 20 s; huge attempt numbers do not overflow.
    expect(backoff(1e9, undefined, undefined, () => 0.5)).toBe(10_000);
    const samples = Array.from({ length: 500 }, () => backoff(4, 100, 10_000));
    expect(Math.min(...samples)).toBeLessThan(400);
    expect(Math.max(...samples)).toBeGreaterThan(1200);
  });
});

describe("a gateway that is stopped and started again", () => {
  // The client talks to a loopback proxy in front of the gateway, which counts WebSocket
  // upgrade requests and follows the gateway to its new port after the restart.
  let gw: GatewayProcess | undefined;
  let proxy: TestProxy | undefined;
  const start = async (): Promise<GatewayProcess> => (gw = await startGateway({ config: { yaml: CONFIG } }));
  beforeAll(async () => {
    proxy = await startProxy({ port: (await start()).port });
  });
  afterAll(async () => {
    await proxy?.close();
    await gw?.stop();
  });

  it("reconnects with jittered delays within the backoff bounds, queues commands, and comes back on WebSocket", async () => {
    const MIN = 100;
    const MAX = 800;
    const p = proxy as TestProxy;
    const { client, events } = sdk(p.url, { reconnectJitter: MIN, minReconnectDelay: MIN, maxReconnectDelay: MAX, timeout: 20_000, websocketRetryInterval: 1000 });
    const ch = chan("chat");
    const r = record(client, ch);
    await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
    expect(client.transport).toBe("websocket");
    await r.sub.publish({ n: 1 });

    const downAt = events.length;
    await (gw as GatewayProcess).stop("SIGKILL");
    const upgradesAtKill = p.stats.upgradeRequests;
    // Every attempt fails at once (the proxy finds nothing behind it): wait for 8 of them.
    await waitUntil(() => count(events.slice(downAt), "connecting") >= 8 || undefined, "8 reconnect attempts", 20_000);
    const down = events.slice(downAt);
    const attempts = count(down, "connecting");
    // Each attempt tried WebSocket first: a gateway that is down is not a blocked WebSocket.
    await waitUntil(() => p.stats.upgradeRequests - upgradesAtKill >= attempts - 1 || undefined, "an upgrade per attempt");
    // Strictly alternating: each loss or failed attempt arms exactly one timer (no double timers).
    const kinds = down.filter((e) => e.event === "disconnected" || e.event === "connecting").map((e) => e.event);
    for (let i = 0; i + 1 < kinds.length; i += 2) expect(kinds.slice(i, i + 2)).toEqual(["disconnected", "connecting"]);
    const delays: Array<{ delay: number; ceiling: number }> = [];
    for (let i = 0, k = 0; i < down.length && k < 8; i++) {
      if (down[i]?.event !== "disconnected") continue;
      const next = down.slice(i).find((e) => e.event === "connecting");
      if (!next) break;
      delays.push({ delay: Math.round(next.at - (down[i] as Logged).at), ceiling: Math.min(MAX, MIN * 2 ** k) });
      k++;
    }
    expect(delays).toHaveLength(8);
    for (const { delay, ceiling } of delays) {
      expect(delay).toBeGreaterThanOrEqual(0);
      // Slack for timer lateness on a loaded machine.
      expect(delay, JSON.stringify(delays)).toBeLessThanOrEqual(ceiling + 150);
    }
    // Jitter: not every delay sits at its ceiling (probability of that with full jitter: 0.1^8).
    expect(delays.some(({ delay, ceiling }) => delay < ceiling * 0.9), JSON.stringify(delays)).toBe(true);
    expect(down[0]).toMatchObject({ event: "disconnected", arg: { code: 1006, reconnect: true } });
    measured.reconnectDelays = delays;

    // A publish while disconnected waits for the connection instead of failing.
    const queued = r.sub.publish({ n: 2 });
    const restarted = events.length;
    p.target = { port: (await start()).port };
    await waitUntil(() => events.slice(restarted).find((e) => e.event === "connected"), "reconnected", 15_000);
    // On WebSocket (an attempt that raced the gateway's start could land on long-poll for a
    // moment; the 1 s WebSocket retry then brings it back).
    await waitUntil(() => client.transport === "websocket" || undefined, "back on WebSocket", 5_000);
    expect(await queued).toMatchObject({ offset: expect.any(Number) });
    await waitUntil(() => ns(r).includes(2) || undefined, "the queued publication");
    // Memory mode: the restarted gateway has a new epoch, so the position could not be recovered.
    expect(r.unrecovered).toHaveLength(1);
    expect(ns(r)).toEqual([1, 2]);
  });

  it("rejects a command queued while disconnected once `timeout` passes, and at once after disconnect()", async () => {
    const { client } = sdk(`http://127.0.0.1:${await freePort()}`, { minReconnectDelay: 50, maxReconnectDelay: 100, timeout: 300 });
    await expect(client.command({ op: "ping" })).rejects.toMatchObject({ code: 503, message: "not connected" });
    const pending = client.command({ op: "ping" });
    client.disconnect();
    await expect(pending).rejects.toMatchObject({ code: 503 });
    await expect(client.command({ op: "ping" })).rejects.toMatchObject({ code: 503 });
    expect(client.state).toBe("disconnected");
  });
});

describe("against one gateway", () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ config: { yaml: CONFIG } });
  });
  afterAll(async () => {
    await gw?.stop();
  });
  const publish = (ch: string, data: unknown): Promise<unknown> =>
    api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data } }).then((r) => {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body;
    });

  for (const transport of ["websocket", "longpoll"] as const) {
    it(`refreshes a short-lived token before exp and stays connected past it (${transport})`, async () => {
      const calls: number[] = [];
      const exps: number[] = [];
      const { client, events } = sdk(gw.url, {
        transports: [transport],
        getToken: async () => {
          calls.push(Date.now());
          const exp = Math.floor(Date.now() / 1000) + 3;
          exps.push(exp);
          return signToken({ sub: "alice", exp }, SECRET);
        },
      });
      const ch = chan("secure");
      const r = record(client, ch);
      await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
      expect(client.transport).toBe(transport);
      const firstExp = exps[0] as number;
      // Two refreshes, and well past the first token's exp.
      await waitUntil(() => (calls.length >= 3 && Date.now() > firstExp * 1000 + 500) || undefined, "refreshes past exp", 15_000);
      expect(calls[1]).toBeLessThan(firstExp * 1000);
      // Refreshed about every second, not in a tight loop (3 s tokens once refreshed at once, forever).
      expect(calls.length).toBeLessThanOrEqual(6);
      expect(count(events, "disconnected")).toBe(0);
      expect(count(events, "connected")).toBe(1);
      await publish(ch, { n: 1 });
      await r.sub.publish({ n: 2 });
      await waitUntil(() => r.pubs.length === 2 || undefined, "both publications");
      expect(ns(r)).toEqual([1, 2]);
      expect(events.filter((e) => e.event === "error")).toEqual([]);
    });
  }

  it("after a 4002 (refresh failed, token expired) gets a new token and reconnects, recovering what it missed", async () => {
    let firstExp = 0;
    const calls: number[] = [];
    const { client, events } = sdk(gw.url, {
      minReconnectDelay: 300,
      maxReconnectDelay: 300,
      getToken: async () => {
        calls.push(Date.now());
        if (firstExp === 0) {
          firstExp = Math.floor(Date.now() / 1000) + 2;
          return signToken({ sub: "bob", exp: firstExp }, SECRET);
        }
        // The token service is down until the first token has expired.
        if (Date.now() < firstExp * 1000) throw new Error("token service unavailable");
        return signToken({ sub: "bob", exp: Math.floor(Date.now() / 1000) + 60 }, SECRET);
      },
    });
    // Counted in the event itself: with full jitter the reconnect (and its getToken call) may
    // already have happened by the time the test looks.
    let callsAtClose = -1;
    client.on("disconnected", () => {
      if (callsAtClose < 0) callsAtClose = calls.length;
    });
    const ch = chan("secure");
    const r = record(client, ch);
    await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
    await publish(ch, { n: 1 });
    const gone = await waitUntil(() => events.find((e) => e.event === "disconnected"), "the 4002", 10_000);
    expect(gone.arg).toMatchObject({ code: 4002, reason: "token expired", reconnect: true });
    expect(callsAtClose).toBeGreaterThan(0);
    // Published between the close and the reconnect (the reconnect waits at most 300 ms).
    await publish(ch, { n: 2 });
    await connected(events, 2);
    expect(calls.length).toBeGreaterThan(callsAtClose);
    await publish(ch, { n: 3 });
    await waitUntil(() => r.pubs.length >= 3 || undefined, "three publications");
    expect(ns(r)).toEqual([1, 2, 3]);
    expect(r.unrecovered).toEqual([]);
    expect(r.subscribed).toBe(2);
  });

  it("does not retry a fixed token: an expiring one ends with 4002 then 4001; a bad one with 4001", async () => {
    const { client, events } = sdk(gw.url, { token: await token("carol", 2), minReconnectDelay: 20, maxReconnectDelay: 40 });
    record(client, chan("secure"));
    const ended = await waitUntil(
      () => events.find((e) => e.event === "disconnected" && !(e.arg as { reconnect: boolean }).reconnect),
      "the final disconnect",
      10_000,
    );
    const codes = events.filter((e) => e.event === "disconnected").map((e) => (e.arg as { code: number }).code);
    expect(codes).toEqual([4002, 4001]);
    expect(ended.arg).toMatchObject({ code: 4001, reason: "token expired", reconnect: false });
    const settled = events.length;
    await sleep(300); // nothing happens: no reconnect timer is left
    expect(events.slice(settled)).toEqual([]);
    expect(client.state).toBe("disconnected");

    const bad = sdk(gw.url, { token: "not.a.jwt", minReconnectDelay: 20 });
    await waitUntil(() => bad.events.find((e) => e.event === "disconnected"), "refused");
    expect(bad.events.find((e) => e.event === "disconnected")?.arg).toMatchObject({ code: 4001, reconnect: false });
    await sleep(200); // nothing happens
    expect(count(bad.events, "connecting")).toBe(1);
  });

  it("a refresh to a narrower token ends the subscription it no longer allows (unsub push)", async () => {
    let narrow = false;
    const [chA, chB] = [chan("secure"), chan("secure")];
    const { client, events } = sdk(gw.url, {
      getToken: () => {
        const channels = narrow ? [chA] : ["secure.*"];
        narrow = true;
        return signToken({ sub: "dave", exp: Math.floor(Date.now() / 1000) + 3, channels }, SECRET);
      },
    });
    const a = record(client, chA);
    const b = record(client, chB);
    await waitUntil(() => (a.subscribed && b.subscribed) || undefined, "both subscribed");
    await waitUntil(() => b.errors[0], "the unsub", 10_000);
    expect(b.errors[0]).toBeInstanceOf(NatsedgeError);
    expect(b.errors[0]).toMatchObject({ code: 403, message: "not allowed by token" });
    expect(client.subscriptions.has(b.sub.channel)).toBe(false);
    expect(a.errors).toEqual([]);
    await a.sub.publish({ n: 1 });
    await waitUntil(() => a.pubs.length === 1 || undefined, "a still works");
    expect(events.filter((e) => e.event === "error")).toEqual([]);
  });

  for (const transport of ["websocket", "longpoll"] as const) {
    it(`reports subscription errors and forgets the subscription (${transport})`, async () => {
      const { client } = sdk(gw.url, { transports: [transport] });
      const unknown = record(client, "nope.x");
      const secure = record(client, chan("secure"));
      const fine = record(client, chan("chat"));
      await waitUntil(() => (unknown.errors[0] && secure.errors[0] && fine.subscribed) || undefined, "errors and a subscription");
      expect(unknown.errors[0]).toMatchObject({ code: 404 });
      expect(secure.errors[0]).toMatchObject({ code: 401 });
      expect([...client.subscriptions.keys()]).toEqual([fine.sub.channel]);
      // A failed channel can be subscribed again; commands still work.
      expect(() => client.subscribe("nope.x")).not.toThrow();
      await expect(fine.sub.publish({ n: 1 })).resolves.toMatchObject({ offset: 1 });
      await expect(client.command({ op: "publish", ch: "live.x" })).rejects.toMatchObject({ code: 400, message: "data is required" });
      await waitUntil(() => fine.pubs.length === 1 || undefined, "the publication");
    });
  }

  for (const transport of ["websocket", "longpoll"] as const) {
    it(`speaks MessagePack in Node: publish, presence, history, delivery to a JSON client (${transport})`, async () => {
      const ch = chan("chat");
      const { client } = sdk(gw.url, { format: "msgpack", transports: [transport] });
      const json = sdk(gw.url);
      const mine = record(client, ch);
      const theirs = record(json.client, ch);
      await waitUntil(() => (mine.subscribed && theirs.subscribed) || undefined, "both subscribed");
      expect(client.transport).toBe(transport);
      await mine.sub.publish({ n: 1, text: "ü" } as { n: number });
      await theirs.sub.publish({ n: 2 });
      await waitUntil(() => (mine.pubs.length === 2 && theirs.pubs.length === 2) || undefined, "both publications everywhere");
      expect(ns(mine)).toEqual([1, 2]);
      expect(ns(theirs)).toEqual([1, 2]);
      expect((mine.pubs[0]?.data as unknown as { text: string }).text).toBe("ü");
      expect(mine.pubs[1]?.info?.client).toBe(json.client.clientId);
      const h = await mine.sub.history();
      expect(h.pubs.map((p) => p.data.n)).toEqual([1, 2]);
      expect(h).toMatchObject({ offset: 2, epoch: expect.any(String) });
      const presence = await mine.sub.presence();
      expect(Object.keys(presence)).toContain(json.client.clientId);
      expect(await mine.sub.presenceStats()).toMatchObject({ clients: 2 });
    });
  }

  it("applies recovered publications before live ones that arrive in the same read", async () => {
    // `ws` emits every message of one socket read synchronously. Block the client's event loop
    // right after it sent `subscribe` with `since`, while another process publishes: the reply
    // (with the missed publications) and the live pushes after it then arrive in one read. The
    // reply used to be applied in a promise continuation, after those pushes had moved the
    // position past the recovered publications, which were then dropped as duplicates.
    const ch = chan("chat");
    const { client, events } = sdk(gw.url);
    const r = record(client, ch);
    await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
    await publish(ch, { n: 1 });
    await waitUntil(() => r.pubs.length === 1 || undefined, "the first publication");
    client.disconnect();
    const TOTAL = 300;
    const script = `
      const [url, key, ch, total] = process.argv.slice(1);
      (async () => {
        for (let n = 2; n <= Number(total); n++) {
          if (n === 12) console.log("publishing");
          const res = await fetch(url + "/api/publish", { method: "POST", headers: { authorization: "apikey " + key }, body: JSON.stringify({ channel: ch, data: { n } }) });
          if (res.status !== 200) { console.error(await res.text()); process.exit(1); }
          await new Promise((r) => setTimeout(r, 2));
        }
      })();`;
    const child = spawn(process.execPath, ["-e", script, gw.url, API_KEY, ch, String(TOTAL)], { stdio: ["ignore", "pipe", "inherit"] });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    try {
      await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
      client.on("connected", () =>
        setImmediate(() => {
          const until = performance.now() + 300;
          while (performance.now() < until) {
            /* busy: the socket buffers the reply and the pushes after it */
          }
        }),
      );
      await client.connect();
      expect(await exited).toBe(0);
    } finally {
      child.kill();
    }
    await waitUntil(() => r.pubs.length >= TOTAL || undefined, "every publication");
    expect(sequenceProblem(ns(r), TOTAL)).toBeUndefined();
    expect(r.unrecovered).toEqual([]);
    expect(count(events, "connected")).toBe(2);
  });

  for (const transport of ["websocket", "longpoll"] as const) {
    it(`surfaces recovered:false (history too short) and continues from the new position (${transport})`, async () => {
      const ch = chan("tiny");
      const { client } = sdk(gw.url, { transports: [transport] });
      const r = record(client, ch);
      await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
      await publish(ch, { n: 1 });
      await waitUntil(() => r.pubs.length === 1 || undefined, "the first publication");
      const epoch = r.sub.position?.epoch;
      client.disconnect();
      for (let n = 2; n <= 10; n++) await publish(ch, { n });
      await client.connect();
      await waitUntil(() => r.subscribed === 2 || undefined, "subscribed again");
      expect(r.unrecovered).toEqual([{ offset: 10, epoch }]);
      await publish(ch, { n: 11 });
      await waitUntil(() => r.pubs.length === 2 || undefined, "the next publication");
      expect(ns(r)).toEqual([1, 11]);
      expect(r.sub.position).toEqual({ offset: 11, epoch });
    });
  }

  for (const transport of ["websocket", "longpoll"] as const) {
    it(`keeps the order of commands issued at once (${transport})`, async () => {
      const ch = chan("chat");
      const { client } = sdk(gw.url, { transports: [transport] });
      const r = record(client, ch);
      await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
      const replies = await Promise.all(Array.from({ length: 40 }, (_, i) => r.sub.publish({ n: i + 1 })));
      expect(replies.map((x) => x.offset)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
      await waitUntil(() => r.pubs.length === 40 || undefined, "40 publications");
      expect(sequenceProblem(ns(r), 40)).toBeUndefined();
    });
  }

  it("disconnect() stops for good; connect() starts again and resumes the subscription", async () => {
    const ch = chan("chat");
    const { client, events } = sdk(gw.url, { minReconnectDelay: 20 });
    const r = record(client, ch);
    await waitUntil(() => r.subscribed === 1 || undefined, "subscribed");
    client.disconnect();
    expect(events.at(-1)).toMatchObject({ event: "disconnected", arg: { code: 1000, reconnect: false } });
    await publish(ch, { n: 1 });
    await sleep(200); // nothing happens while disconnected
    expect(client.state).toBe("disconnected");
    expect(count(events, "connecting")).toBe(1);
    await client.connect();
    await waitUntil(() => r.pubs.length === 1 || undefined, "the missed publication, recovered");
    expect(ns(r)).toEqual([1]);
    expect(r.unrecovered).toEqual([]);
  });
});
