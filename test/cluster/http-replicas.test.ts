/**
 * The HTTP transports without sticky sessions: two gateway replicas over one nats-server,
 * sharing `sessionSecret`. A long-poll client spreading its requests round-robin over both (and
 * carrying on alone when one is SIGKILLed mid-stream), and an SSE client resuming on the other
 * replica, get a backend's numbered stream exactly once, in order. Sessions travel between
 * replicas with the shared secret and are refused (401) by a gateway with another one.
 */
import { connect as natsConnect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Frame } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { startNats, type NatsCluster } from "../helpers/nats.js";
import { eventually, Signal } from "../helpers/signal.js";
import { openSseClients, SseClient, type SseEvent } from "../helpers/sse-client.js";
import { signToken } from "../helpers/tokens.js";

const JWT_SECRET = "http-replicas-jwt-hmac-secret-0123456789";
const SHARED_SECRET = "http-replicas-shared-session-secret-0123456789";
const OTHER_SECRET = "http-replicas-other-session-secret-9876543210";
const PREFIX = "natsedge";

function yaml(sessionSecret: string): string {
  return [
    `sessionSecret: "${sessionSecret}"`,
    "presenceGrace: 0s",
    "commandRate: 0",
    "drainPeriod: 0s",
    // Polled channels stay subscribed this long: short, so the cleanup checks see them go.
    "pollWarmTime: 1s",
    "auth:",
    `  hmacSecret: "${JWT_SECRET}"`,
    "namespaces:",
    "  chat: { history: { size: 1000, ttl: 10m }, clientPublish: true, anonymous: true }",
    "  secure: { history: { size: 100, ttl: 10m }, clientPublish: true }",
  ].join("\n");
}

let nats: NatsCluster | undefined;
/** r1 and r2 share the session secret; r3 has another. */
const gws: GatewayProcess[] = [];
let backend: NatsConnection | undefined;

const r = (i: 1 | 2 | 3): GatewayProcess => gws[i - 1] as GatewayProcess;

beforeAll(async () => {
  nats = await startNats(1);
  // One after another: the first creates the streams.
  for (const secret of [SHARED_SECRET, SHARED_SECRET, OTHER_SECRET]) {
    gws.push(await startGateway({ config: { yaml: yaml(secret) }, args: ["--nats", nats.servers], readyTimeoutMs: 40_000 }));
  }
  backend = await natsConnect({ servers: nats.servers });
}, 120_000);

afterAll(async () => {
  for (const s of openSseClients.splice(0)) s.close();
  await backend?.close();
  await Promise.all(gws.map((g) => g.stop()));
  await nats?.stop();
}, 60_000);

let seq = 0;
const chan = (ns: string): string => `${ns}.http${++seq}-${process.pid}`;
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// --- a backend publishing straight into NATS ------------------------------------------------------

/** Publishes {n} for n = 1..count to natsedge.ch.<ch> with a plain NATS client, paced to `rate`/s. */
class Backend {
  published = 0;
  done: Promise<void> = Promise.resolve();

  constructor(private readonly ch: string) {}

  start(count: number, rate: number): this {
    const nc = backend as NatsConnection;
    const subject = `${PREFIX}.ch.${this.ch}`;
    this.done = (async () => {
      const t0 = Date.now();
      for (let n = 1; n <= count; n++) {
        const wait = t0 + (n * 1000) / rate - Date.now();
        if (wait > 0) await sleep(wait);
        nc.publish(subject, Buffer.from(JSON.stringify({ n })));
        this.published = n;
      }
      await nc.flush();
    })();
    return this;
  }
}

/** The 1..count check: a description of the first problem, or undefined. */
function sequenceProblem(got: number[], count: number): string | undefined {
  if (got.length !== count || got.some((n, i) => n !== i + 1)) {
    const dup = got.filter((n, i) => got.indexOf(n) !== i);
    const missing = Array.from({ length: count }, (_, i) => i + 1).filter((n) => !got.includes(n));
    const disorder = got.findIndex((n, i) => i > 0 && n <= (got[i - 1] as number));
    return `got ${got.length} of ${count}; missing ${JSON.stringify(missing.slice(0, 20))} (${missing.length}), duplicated ${JSON.stringify(dup.slice(0, 20))}, first disorder at ${disorder}`;
  }
  return undefined;
}

// --- long-poll ----------------------------------------------------------------------------------

interface Cursor {
  offset: number;
  epoch: string;
}

async function postJson(base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: Frame }> {
  const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: Frame;
  try {
    parsed = JSON.parse(text) as Frame;
  } catch {
    parsed = { raw: text };
  }
  return { status: res.status, body: parsed };
}

async function lpConnect(base: string, token?: string): Promise<Frame> {
  const res = await postJson(base, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] }, token ? { authorization: `Bearer ${token}` } : {});
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const reply = (res.body.replies as Frame[])[0] as Frame;
  expect(reply.error, JSON.stringify(reply)).toBeUndefined();
  return reply.ok as Frame;
}

/**
 * A long-poll client that sends each request to the next live replica in turn. A request whose
 * replica dies (connection refused or reset) is sent again, with the same cursor, to the next one;
 * that replica is not used again.
 */
class RoundRobinPoller {
  readonly got: number[] = [];
  readonly offsets: number[] = [];
  readonly requests: number[];
  readonly dead = new Set<number>();
  failures = 0;
  /** Index of the replica the request in flight went to. */
  inflight: number | undefined;
  /** Woken when a request is sent and when an answer is taken in. */
  readonly progress = new Signal();
  private turn = 0;

  constructor(
    private readonly bases: string[],
    private readonly session: string,
    private readonly ch: string,
    public cursor: Cursor | null,
  ) {
    this.requests = bases.map(() => 0);
  }

  private nextReplica(): number {
    for (let k = 0; k < this.bases.length; k++) {
      const i = this.turn++ % this.bases.length;
      if (!this.dead.has(i)) return i;
    }
    throw new Error("no replica left");
  }

  /** One poll, retried on another replica if its replica is gone. */
  async pollOnce(timeout: number): Promise<void> {
    for (let attempt = 0; attempt < 4; attempt++) {
      const i = this.nextReplica();
      this.inflight = i;
      this.requests[i] = (this.requests[i] as number) + 1;
      this.progress.wake();
      let res: { status: number; body: Frame };
      try {
        res = await postJson(this.bases[i] as string, "/lp/poll", { session: this.session, subs: { [this.ch]: this.cursor }, timeout });
      } catch {
        this.failures++;
        this.dead.add(i);
        continue;
      } finally {
        this.inflight = undefined;
      }
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      const sub = (res.body.subs as Record<string, Frame>)[this.ch] as Frame;
      expect(sub.recovered, `recovered:false at ${JSON.stringify(this.cursor)}: ${JSON.stringify(res.body)}`).toBeUndefined();
      for (const p of res.body.pubs as Frame[]) {
        this.offsets.push(p.offset as number);
        this.got.push((p.data as { n: number }).n);
      }
      this.cursor = { offset: sub.offset as number, epoch: sub.epoch as string };
      this.progress.wake();
      return;
    }
    throw new Error("every attempt failed");
  }

  async run(count: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.got.length < count && Date.now() < deadline) await this.pollOnce(5);
  }
}

function strictlyIncreasing(xs: number[]): boolean {
  return xs.every((x, i) => i === 0 || x > (xs[i - 1] as number));
}

const waitUntil = <T>(check: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> =>
  eventually(check, what, timeoutMs, 10);

const pubNs = (events: SseEvent[]): number[] =>
  events.filter((e) => e.event === "pub").map((e) => ((JSON.parse(e.data) as Frame).data as { n: number }).n);

async function metric(g: GatewayProcess, name: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m && m[1] === name) sum += Number(m[3]);
  }
  return sum;
}

// --- tests ----------------------------------------------------------------------------------------

describe("HTTP transports across two replicas", () => {
  it("a long-poll client alternating between replicas gets a 300-message stream exactly once, in order", async () => {
    const ch = chan("chat");
    const hello = await lpConnect(r(1).url);
    const poller = new RoundRobinPoller([r(1).url, r(2).url], hello.session as string, ch, null);
    await poller.pollOnce(0); // the starting position
    expect(poller.cursor).toMatchObject({ offset: 0 });
    const pub = new Backend(ch).start(300, 100);
    await poller.run(300, 30_000);
    await pub.done;
    expect(sequenceProblem(poller.got, 300)).toBeUndefined();
    expect(strictlyIncreasing(poller.offsets)).toBe(true);
    expect(poller.failures).toBe(0);
    // Both replicas really served it, about equally.
    expect(Math.min(...poller.requests)).toBeGreaterThan(10);
    expect(Math.abs((poller.requests[0] as number) - (poller.requests[1] as number))).toBeLessThanOrEqual(1);
    // Nothing more arrives: a last poll times out empty at the same cursor.
    const cursor = poller.cursor;
    await poller.pollOnce(0);
    expect(poller.got).toHaveLength(300);
    expect(poller.cursor).toEqual(cursor);
    console.log(`round-robin long-poll: ${poller.requests.join(" + ")} requests for 300 messages`);
  });

  it("an SSE client reconnecting with Last-Event-ID to the OTHER replica misses nothing", async () => {
    const ch = chan("chat");
    const q = `ch=${encodeURIComponent(ch)}`;
    const first = await SseClient.open(r(1).url, q);
    expect(first.status).toBe(200);
    await first.waitFor(() => first.events.find((e) => e.event === "subscribed"), "subscribed on r1", 15_000);
    const pub = new Backend(ch).start(200, 100);
    await first.waitFor(() => (pubNs(first.events).length >= 60 ? true : undefined), "60 pubs on r1", 15_000);
    first.close();
    const lastPub = first.events.filter((e) => e.event === "pub").at(-1) as SseEvent;
    const seenOnFirst = pubNs(first.events).filter((n) => n <= ((JSON.parse(lastPub.data) as Frame).data as { n: number }).n);
    // Make sure some are published while no stream is open.
    const at = pub.published;
    await waitUntil(() => (pub.published >= at + 10 ? true : undefined), "10 publications while disconnected");
    const second = await SseClient.open(r(2).url, q, { "last-event-id": lastPub.lastId });
    expect(second.status).toBe(200);
    await pub.done;
    await second.waitFor(() => (seenOnFirst.length + pubNs(second.events).length >= 200 ? true : undefined), "the rest on r2", 20_000);
    expect(second.events.some((e) => e.event === "reset")).toBe(false);
    const all = [...seenOnFirst, ...pubNs(second.events)];
    expect(sequenceProblem(all, 200)).toBeUndefined();
    // The resumed stream starts with what was missed, before `subscribed`.
    const firstOnSecond = second.events[0] as SseEvent;
    expect(firstOnSecond.event).toBe("pub");
    expect(((JSON.parse(firstOnSecond.data) as Frame).data as { n: number }).n).toBe((seenOnFirst.at(-1) as number) + 1);
    second.close();
  });

  it("pretty-printed multi-line JSON from a NATS backend reaches SSE as one data line and long-poll as valid JSON", async () => {
    const ch = chan("chat");
    const q = `ch=${encodeURIComponent(ch)}`;
    const s = await SseClient.open(r(2).url, q);
    await s.waitFor(() => s.events.find((e) => e.event === "subscribed"), "subscribed", 15_000);
    const hello = await lpConnect(r(1).url);
    const session = hello.session as string;
    const start = await postJson(r(1).url, "/lp/poll", { session, subs: { [ch]: null } });
    const cursor = (start.body.subs as Record<string, Cursor>)[ch];
    const data = { text: "two\nlines", list: [1, { deep: [true, null] }], unicode: "é\u2028" };
    const raw = JSON.stringify(data, null, 2);
    expect(raw.split("\n").length).toBeGreaterThan(5);
    (backend as NatsConnection).publish(`${PREFIX}.ch.${ch}`, Buffer.from(raw, "utf8"));
    const e = await s.waitFor(() => s.events.find((x) => x.event === "pub"), "the pub on SSE", 15_000);
    expect(e.dataLines).toBe(1);
    expect(JSON.parse(e.data)).toMatchObject({ ch, data });
    const lp = await postJson(r(1).url, "/lp/poll", { session, subs: { [ch]: cursor }, timeout: 10 });
    expect(lp.status).toBe(200);
    expect(lp.body.pubs).toEqual([{ ch, offset: expect.any(Number), data }]);
    s.close();
  });

  it("a session issued by one replica works on the other; a gateway with another secret answers 401", async () => {
    const ch = chan("secure");
    const token = await signToken({ sub: "mallory-not", info: { team: "blue" } }, JWT_SECRET);
    const hello = await lpConnect(r(1).url, token);
    const session = hello.session as string;
    expect(hello.user).toBe("mallory-not");

    const pub = await postJson(r(2).url, "/lp/rpc", { session, cmds: [{ id: 1, op: "publish", ch, data: "via r2" }] });
    expect(pub.status).toBe(200);
    expect((pub.body.replies as Frame[])[0]).toMatchObject({ id: 1, ok: { offset: expect.any(Number) } });
    const poll = await postJson(r(2).url, "/lp/poll", { session, subs: { [ch]: { offset: 0, epoch: "x" } } });
    expect(poll.status).toBe(200);
    const hist = await postJson(r(1).url, "/lp/rpc", { session, cmds: [{ id: 1, op: "history", ch }] });
    expect(((hist.body.replies as Frame[])[0]?.ok as Frame).pubs).toEqual([
      { offset: expect.any(Number), data: "via r2", info: { client: hello.client, user: "mallory-not" } },
    ]);
    const sse = await SseClient.open(r(2).url, `ch=${encodeURIComponent(ch)}&session=${encodeURIComponent(session)}`);
    expect(sse.status).toBe(200);
    sse.close();

    // Another secret: every HTTP entry point refuses the session.
    const rpc3 = await postJson(r(3).url, "/lp/rpc", { session, cmds: [{ id: 1, op: "ping" }] });
    expect(rpc3.status).toBe(401);
    expect(rpc3.body).toMatchObject({ error: { code: 401 } });
    expect((await postJson(r(3).url, "/lp/poll", { session, subs: { [ch]: null } })).status).toBe(401);
    expect((await SseClient.open(r(3).url, `ch=${encodeURIComponent(ch)}&session=${encodeURIComponent(session)}`)).status).toBe(401);
    // And the other way round.
    const foreign = (await lpConnect(r(3).url, token)).session as string;
    expect((await postJson(r(1).url, "/lp/rpc", { session: foreign, cmds: [{ id: 1, op: "ping" }] })).status).toBe(401);
    expect((await postJson(r(2).url, "/lp/poll", { session: foreign, subs: { [ch]: null } })).status).toBe(401);
  });

  it("SSE clients that go away while their channels are being subscribed leave no subscription behind", async () => {
    const g = r(1);
    await waitUntil(async () => ((await metric(g, "natsedge_channels")) === 0 ? true : undefined), "no channels on r1");
    // Four channels per stream: subscribing takes a NATS round trip each, a window to abort in.
    for (let i = 0; i < 40; i++) {
      const q = [chan("chat"), chan("chat"), chan("chat"), chan("secure")].map((c) => `ch=${encodeURIComponent(c)}`).join("&");
      const ctl = new AbortController();
      const pending = fetch(`${g.url}/sse?${q}&token=${encodeURIComponent(await signToken({ sub: "racer" }, JWT_SECRET))}`, {
        signal: ctl.signal,
      }).then(
        async (res) => {
          await res.body?.cancel();
        },
        () => undefined,
      );
      await sleep(i % 8);
      ctl.abort();
      await pending;
    }
    let left = -1;
    await waitUntil(
      async () => ((left = await metric(g, "natsedge_channels")) === 0 ? true : undefined),
      "every channel released",
      10_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}: ${left} channel subscriptions leaked`);
    });
    expect(await metric(g, "natsedge_connections")).toBe(0);
  });

  // Last: it kills replica 2.
  it("a long-poll client keeps getting everything, exactly once, when one replica is SIGKILLed mid-stream", async () => {
    const ch = chan("chat");
    const hello = await lpConnect(r(2).url);
    const poller = new RoundRobinPoller([r(1).url, r(2).url], hello.session as string, ch, null);
    await poller.pollOnce(0);
    const pub = new Backend(ch).start(300, 100);
    const running = poller.run(300, 40_000);
    // Kill r2 while a poll is held there (or as soon as possible after 100 messages).
    const state = (): string => `got ${poller.got.length}, in flight on ${String(poller.inflight)}`;
    await poller.progress.until(() => (poller.got.length >= 100 ? true : undefined), "100 messages before the kill", 20_000, state);
    await poller.progress.until(() => (poller.inflight === 1 ? true : undefined), "a poll in flight on r2", 5_000, state).catch(() => undefined);
    const inflightAtKill = poller.inflight === 1;
    r(2).proc.kill("SIGKILL");
    await r(2).exited;
    await running;
    await pub.done;
    expect(sequenceProblem(poller.got, 300)).toBeUndefined();
    expect(strictlyIncreasing(poller.offsets)).toBe(true);
    // The request that died with r2 (or the next one sent there) was retried on r1.
    expect(poller.failures).toBeGreaterThanOrEqual(1);
    expect(poller.dead.has(1)).toBe(true);
    console.log(
      `kill mid-stream: ${poller.requests.join(" + ")} requests, ${poller.failures} failed over (a poll was ${inflightAtKill ? "" : "not "}in flight on r2 at the kill)`,
    );
  });
});
