/**
 * Shared pieces of the cluster tests: gateway config, tokens, /metrics and /readyz readers,
 * bounded polling, and a backend publisher that writes sequence-numbered messages into a
 * channel's stream in strict order.
 */
import { SignJWT } from "jose";
import { connect, headers as natsHeaders, type JetStreamClient, type NatsConnection } from "nats";
import type { TestClient, Frame } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { Signal } from "../helpers/signal.js";

export const SECRET = "cluster-test-hmac-secret-0123456789abcdef";
export const API_KEY = "cluster-api-key-0123-0123456789a";

/** The history namespace of the brief, a namespace without history, and HMAC auth. */
export function gatewayYaml(opts: { replicas?: number; extra?: string; historySize?: number } = {}): string {
  return [
    `apiKey: ${API_KEY}`,
    "presenceGrace: 0s",
    "commandRate: 0",
    "drainPeriod: 0s",
    "auth:",
    `  hmacSecret: "${SECRET}"`,
    "namespaces:",
    `  chat: { history: { size: ${opts.historySize ?? 1000}, ttl: 10m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }`,
    "  live: { presence: true, joinLeave: true, clientPublish: true, anonymous: true }",
    ...(opts.replicas === undefined ? [] : ["nats:", `  streamReplicas: ${opts.replicas}`]),
    opts.extra ?? "",
  ].join("\n");
}

/**
 * Starts `n` gateways one after another (the first creates the streams; the others only look
 * them up), each pointed at every NATS server.
 */
export async function startReplicas(n: number, servers: string, yaml: string, into: GatewayProcess[]): Promise<void> {
  for (let i = 0; i < n; i++) {
    into.push(await startGateway({ config: { yaml }, args: ["--nats", servers], readyTimeoutMs: 40_000 }));
  }
}

export function sign(sub: string, info?: unknown): Promise<string> {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return new SignJWT(info === undefined ? { sub, exp } : { sub, exp, info })
    .setProtectedHeader({ alg: "HS256" })
    .sign(new TextEncoder().encode(SECRET));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `check` until it returns something other than undefined, or fails after `timeoutMs`. An
 * error thrown by `check` (a gateway not answering yet) counts as "not yet"; the last one is named
 * in the timeout error.
 */
export function waitUntil<T>(
  check: () => Promise<T | undefined> | T | undefined,
  what: string,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  let last: unknown;
  const attempt = async (): Promise<T | undefined> => {
    try {
      return await check();
    } catch (err) {
      last = err;
      return undefined;
    }
  };
  return new Signal().until(attempt, what, timeoutMs, () => (last ? `last error: ${String(last)}` : "condition never held"), intervalMs);
}

/** Sum of a Prometheus series on the gateway's /metrics (over all label sets unless `labels` is given). */
export async function metric(gw: GatewayProcess, name: string, labels?: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (labels !== undefined && m[2] !== `{${labels}}`) continue;
    sum += Number(m[3]);
    found = true;
  }
  if (!found) throw new Error(`metric ${name}${labels ? `{${labels}}` : ""} not on /metrics`);
  return sum;
}

export async function readyz(gw: GatewayProcess): Promise<number> {
  try {
    return (await fetch(`${gw.adminUrl}/readyz`)).status;
  } catch {
    return -1;
  }
}

/** The NATS server ("host:port") the gateway last logged being (re)connected to. */
export function natsServerOf(gw: GatewayProcess): string | undefined {
  let server: string | undefined;
  for (const line of gw.lines) {
    if (!line.startsWith("{")) continue;
    try {
      const rec = JSON.parse(line) as { msg?: string; server?: string };
      if ((rec.msg === "connected to NATS" || rec.msg === "NATS reconnected") && typeof rec.server === "string") {
        server = rec.server;
      }
    } catch {
      /* not a log record */
    }
  }
  return server;
}

/** Log records (parsed JSON lines) of a gateway whose msg is `msg`. */
export function logRecords(gw: GatewayProcess, msg: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of gw.lines) {
    if (!line.startsWith("{")) continue;
    try {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (rec.msg === msg) out.push(rec);
    } catch {
      /* not a log record */
    }
  }
  return out;
}

/** The `pub` pushes a client got in `ch`, in arrival order. */
export function pubsIn(c: TestClient, ch: string): Frame[] {
  return c.pushes.filter((p) => p.push === "pub" && p.ch === ch);
}

export function nOf(p: Frame): number | undefined {
  const d = p.data as { n?: unknown } | null | undefined;
  return typeof d === "object" && d !== null && typeof d.n === "number" ? d.n : undefined;
}

/** Waits until the client has a `pub` in `ch` whose data satisfies `pred` (pushes are not consumed). */
export function waitForPub(c: TestClient, ch: string, pred: (p: Frame) => boolean, what: string, timeoutMs = 15_000): Promise<Frame> {
  let i = 0;
  return c.waitFor(
    () => {
      for (; i < c.pushes.length; i++) {
        const p = c.pushes[i] as Frame;
        if (p.push === "pub" && p.ch === ch && pred(p)) return p;
      }
      return undefined;
    },
    what,
    timeoutMs,
  );
}

/** Waits for any push satisfying `pred` without consuming it. */
export function waitForPush(c: TestClient, pred: (p: Frame) => boolean, what: string, timeoutMs = 15_000): Promise<Frame> {
  return c.waitFor(() => c.pushes.find(pred), what, timeoutMs);
}

/** Asserts `got` is exactly 1..count: returns a description of the first problem, or undefined. */
export function sequenceProblem(got: number[], count: number): string | undefined {
  if (got.length !== count) {
    const seen = new Map<number, number>();
    for (const n of got) seen.set(n, (seen.get(n) ?? 0) + 1);
    const missing: number[] = [];
    const dup: number[] = [];
    for (let n = 1; n <= count; n++) {
      const k = seen.get(n) ?? 0;
      if (k === 0) missing.push(n);
      if (k > 1) dup.push(n);
    }
    return `got ${got.length} of ${count}; missing ${JSON.stringify(missing.slice(0, 20))} (${missing.length}), duplicated ${JSON.stringify(dup.slice(0, 20))} (${dup.length})`;
  }
  for (let i = 0; i < count; i++) {
    if (got[i] !== i + 1) return `out of order at index ${i}: ${JSON.stringify(got.slice(Math.max(0, i - 3), i + 4))}`;
  }
  return undefined;
}

export function strictlyIncreasing(xs: number[]): boolean {
  for (let i = 1; i < xs.length; i++) if ((xs[i] as number) <= (xs[i - 1] as number)) return false;
  return true;
}

export interface PublisherStats {
  published: number;
  retries: number;
  /** Longest time one message took from first attempt to ack. */
  maxStallMs: number;
  offsets: number[];
}

/**
 * A backend writing `{n}` for n = 1..count into a channel's subject through JetStream, one at a
 * time (each waits for its ack), paced to `rate` per second. Each message carries a Nats-Msg-Id,
 * so a retry after a lost ack cannot store it twice, and the stream order is exactly 1..count.
 */
export class SequencePublisher {
  readonly stats: PublisherStats = { published: 0, retries: 0, maxStallMs: 0, offsets: [] };
  private nc: NatsConnection | undefined;
  private js: JetStreamClient | undefined;
  private stopped = false;

  constructor(
    private readonly server: string,
    private readonly subject: string,
    private readonly runId: string,
  ) {}

  async open(): Promise<void> {
    this.nc = await connect({ servers: this.server, maxReconnectAttempts: -1, reconnectTimeWait: 250 });
    this.js = this.nc.jetstream({ timeout: 2_000 });
  }

  /**
   * Publishes n = first .. first+count-1; resolves when all are acked, rejects if one cannot be
   * stored within `perMessageMs`.
   */
  async run(count: number, rate: number, perMessageMs = 30_000, first = 1): Promise<PublisherStats> {
    const js = this.js as JetStreamClient;
    const start = Date.now();
    for (let n = first; n < first + count && !this.stopped; n++) {
      const due = start + ((n - first + 1) * 1000) / rate;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      const t0 = Date.now();
      for (let attempt = 0; ; attempt++) {
        try {
          const h = natsHeaders();
          h.set("Content-Type", "application/json");
          const ack = await js.publish(this.subject, Buffer.from(JSON.stringify({ n })), {
            msgID: `${this.runId}-${n}`,
            headers: h,
          });
          this.stats.offsets.push(ack.seq);
          break;
        } catch (err) {
          // stop() ends the run after the message in hand is stored, not in the middle of it: a
          // message given up on during a leader election would leave the stream's order unknown.
          if (Date.now() - t0 > perMessageMs || this.nc?.isClosed()) throw err;
          this.stats.retries++;
          await sleep(Math.min(500, 50 * (attempt + 1)));
        }
      }
      this.stats.maxStallMs = Math.max(this.stats.maxStallMs, Date.now() - t0);
      this.stats.published = n;
    }
    return this.stats;
  }

  /** Publishes no further message; the one being stored (retried through an election) still is. */
  stop(): void {
    this.stopped = true;
  }

  async close(): Promise<void> {
    this.stop();
    if (this.nc && !this.nc.isClosed()) await this.nc.close();
  }
}

/** Awaits `promise`, failing after `ms` (so a stuck step fails the test instead of hanging it). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Asks the stream's leader to step down until another node than `away` leads it (bounded), and
 * returns the leader then: a test that kills `away` wants the stream to stay led, or wants its
 * leader out of reach.
 */
export async function moveStreamLeader(nc: NatsConnection, stream: string, away: string): Promise<string | undefined> {
  const jsm = await nc.jetstreamManager();
  const leaderOf = async (): Promise<string | undefined> => (await jsm.streams.info(stream)).cluster?.leader;
  for (let i = 0; i < 10 && (await leaderOf()) === away; i++) {
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, undefined, { timeout: 5_000 }).catch(() => undefined);
    await waitUntil(async () => {
      const l = await leaderOf();
      return l !== undefined && l !== away ? l : undefined;
    }, "a new stream leader", 15_000, 200).catch(() => undefined);
  }
  return leaderOf();
}

/**
 * Waits until the stream has a leader and `followers` replicas that are current and online: a
 * test that has just killed or restarted nodes starts its next step on a settled stream, as an
 * operator would, instead of in the middle of an election.
 */
export async function streamSettled(nc: NatsConnection, stream: string, followers: number, timeoutMs = 30_000): Promise<void> {
  const jsm = await nc.jetstreamManager();
  await waitUntil(
    async () => {
      const c = (await jsm.streams.info(stream)).cluster;
      const reps = c?.replicas ?? [];
      return c?.leader !== undefined && reps.length === followers && reps.every((r) => r.current && !r.offline) ? true : undefined;
    },
    `stream ${stream} led, with ${followers} current replicas`,
    timeoutMs,
    200,
  );
}
