/**
 * Fault injection on the path between gateways and NATS, under steady publishing.
 *
 * A three-node NATS cluster (streams with three replicas; servers do not advertise each other to
 * clients, so every gateway reaches NATS only through its own fault proxy), gateway A through
 * proxy A to node 0, gateway B through proxy B to node 1, and two backends on node 2 publishing
 * at a steady rate: numbered messages into a history channel (JetStream) and into a channel
 * without history (core NATS). Every fault is applied to gateway A, one after another; gateway B
 * is the control. On each gateway: the SDK over WebSocket, the SDK over long-poll, and an SSE
 * stream that reconnects with Last-Event-ID as a browser does.
 *
 * Asserted: in the history channel every client ends with every publication exactly once, in
 * order, at the stored offsets; /readyz on A goes 503 within the documented bound during a stall
 * and returns to 200 after it, stays 200 under the added latency, and B stays ready throughout.
 * Measured and printed: what each fault costs each transport in the channel without history
 * (docs/protocol.md, "NATS mode: what clients notice").
 *
 * Then a fault the partition above runs into now and then, made on purpose: a gateway reconnects
 * while the stream has no leader it can reach, so its catch-up read fails, in a channel where
 * nothing is published afterwards.
 */
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "nats";
import WebSocket from "ws";
import { TestClient } from "../helpers/client.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client, type Publication, type Subscription } from "../../src/client/index.js";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { startNats, type NatsCluster, type NatsNode } from "../helpers/nats.js";
import { eventually } from "../helpers/signal.js";
import { openSseClients, SseClient, type SseEvent } from "../helpers/sse-client.js";
import { API_KEY, logRecords, moveStreamLeader, readyz, sequenceProblem, SequencePublisher, sleep, streamSettled, strictlyIncreasing, within } from "./util.js";

const HIST = "chat.faults";
const LIVE = "live.faults";
const RATE = 150;
/** What /readyz must take at most to notice a stall: the documented 1.5 s, plus polling slack. */
const STALL_BOUND_MS = 2_000;
/** Time after each fault ends before the next begins, so a fault's losses are counted as its own. */
const SETTLE_MS = 1_500;
/**
 * A phase begins this long before its fault: publications still on their way when a connection
 * is reset are lost, and must count against the fault that lost them, not the phase before.
 */
const LEAD_IN_MS = 250;
/** A browser waits the stream's `retry:` (2000 ms) before reconnecting. */
const SSE_RETRY_MS = 2_000;

const YAML = `
apiKey: ${API_KEY}
sessionSecret: "faults-test-session-secret-0123456789abcdef"
presenceGrace: 0s
commandRate: 0
drainPeriod: 0s
namespaces:
  chat: { history: { size: 20000, ttl: 10m }, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
nats:
  streamReplicas: 3
`;

type Transport = "websocket" | "longpoll" | "sse";
interface HistPub {
  n: number;
  offset: number;
}
interface LiveData {
  n: number;
  phase: string;
}

/** What one client saw. */
interface Collector {
  name: string;
  gateway: "A" | "B";
  transport: Transport;
  hist: HistPub[];
  live: LiveData[];
  /** Continuity signals, disconnects, reconnects: what the client had to deal with. */
  signals: string[];
  /** Times the client filled a hole from history itself (see the SDK note in the report). */
  repairs: number;
  /** Channels subscribed at least once (2 when the client is all set). */
  subscribed: number;
  stop(): void;
}

let phase = "start";
const t0 = Date.now();
const timeline: string[] = [];

function signal(c: Collector, what: string): void {
  c.signals.push(what);
  timeline.push(`${Date.now() - t0} ms ${phase}: ${c.name} ${what}`);
}
const phases: Array<{ name: string; fault: string }> = [];
const measured: Record<string, unknown> = {};

/** Publishes `{n, phase}` to the channel without history through core NATS, paced, until stopped. */
class LivePublisher {
  readonly published: LiveData[] = [];
  private stopped = false;
  private done: Promise<void> | undefined;

  constructor(private readonly nc: NatsConnection) {}

  start(rate: number): void {
    this.done = (async () => {
      const t0 = Date.now();
      for (let n = 1; !this.stopped && n < 1_000_000; n++) {
        const wait = t0 + (n * 1000) / rate - Date.now();
        if (wait > 0) await sleep(wait);
        const data = { n, phase };
        this.nc.publish(`natsedge.ch.${LIVE}`, Buffer.from(JSON.stringify(data)));
        this.published.push(data);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
    await this.nc.flush();
  }
}

/** Reads pages of history after `since` up to offset `upTo`, through `read` (SDK or server API). */
async function historyBetween(
  read: (since: number) => Promise<Array<{ offset: number; n: number }>>,
  since: number,
  upTo: number,
): Promise<HistPub[]> {
  const out: HistPub[] = [];
  for (let at = since, page = 0; at < upTo && page < 100; page++) {
    const pubs = (await read(at)).filter((p) => p.offset > at && p.offset <= upTo);
    if (pubs.length === 0) break;
    out.push(...pubs);
    at = (pubs.at(-1) as HistPub).offset;
  }
  return out;
}

/**
 * The SDK on one transport. The history subscription resumes by itself across reconnects. Two
 * signals it leaves to the application here: `recovered:false` (onUnrecovered) and an `unsub`
 * push with `resubscribe` (the SDK on this branch ends the subscription with onError 410). For
 * both the collector reads the missing stretch from history itself, holding live publications
 * meanwhile, and counts a repair.
 */
function sdkCollector(gw: GatewayProcess, gateway: "A" | "B", transport: "websocket" | "longpoll"): Collector {
  const client = new Client(gw.url, { WebSocket, transports: [transport], minReconnectDelay: 100, maxReconnectDelay: 1_000 });
  const c: Collector = { name: `${gateway} ${transport}`, gateway, transport, hist: [], live: [], signals: [], repairs: 0, subscribed: 0, stop: () => client.disconnect() };
  client.on("disconnected", (e) => {
    if (e.code !== 1000) signal(c, `disconnected ${e.code}`);
  });
  let liveSubscribed = false;
  client.subscribe<LiveData>(LIVE, {
    onPublication: (p) => c.live.push(p.data),
    onSubscribed: () => {
      if (!liveSubscribed) c.subscribed++;
      liveSubscribed = true;
    },
  });

  // Live publications are held while a stretch is read from history; repairs run one at a time.
  let sub: Subscription<{ n: number }>;
  let held: Array<Publication<{ n: number }>> | undefined;
  let repairs: Promise<void> = Promise.resolve();
  let pendingRepairs = 0;
  let base = 0;
  let epoch = "";
  const record = (p: { n: number; offset: number }): void => {
    if (p.offset <= base) return; // read from history already; this subscription could not know
    c.hist.push(p);
    base = p.offset;
  };
  const repair = (upTo: number): void => {
    c.repairs++;
    pendingRepairs++;
    repairs = repairs.then(async () => {
      const read = async (at: number): Promise<HistPub[]> =>
        (await sub.history({ since: { offset: at, epoch }, limit: 1000 })).pubs.map((p) => ({ offset: p.offset as number, n: p.data.n }));
      try {
        for (const p of await historyBetween(read, base, upTo)) record(p);
      } catch (err) {
        signal(c, `repair failed: ${(err as Error).message}`);
      }
      if (--pendingRepairs > 0) return;
      for (const p of (held ?? []).splice(0)) record({ n: p.data.n, offset: p.offset as number });
      held = undefined;
    });
  };
  const open = (resuming: boolean): void => {
    let first = true;
    const s = client.subscribe<{ n: number }>(HIST, {
      onPublication: (p) => (held ? held.push(p) : record({ n: p.data.n, offset: p.offset as number })),
      onSubscribed: () => {
        if (!first) return;
        first = false;
        if (!resuming) c.subscribed++;
        const pos = s.position as { offset: number; epoch: string };
        epoch = pos.epoch;
        if (resuming) repair(pos.offset);
        else base = pos.offset;
      },
      onUnrecovered: (pos) => {
        signal(c, "recovered:false");
        held ??= [];
        repair(pos.offset);
      },
      onError: (err) => {
        signal(c, `unsub ${err.code}`);
        if (err.code !== 410) return;
        held ??= [];
        open(true);
      },
    });
    sub = s;
  };
  open(false);
  return c;
}

/** An SSE stream over both channels that, like a browser, reconnects with Last-Event-ID after it ends. */
function sseCollector(gw: GatewayProcess, gateway: "A" | "B"): Collector {
  let stopped = false;
  const c: Collector = { name: `${gateway} sse`, gateway, transport: "sse", hist: [], live: [], signals: [], repairs: 0, subscribed: 0, stop: () => (stopped = true) };
  const apiHistory = async (): Promise<Array<{ offset: number; n: number }>> => {
    const res = await fetch(`${gw.url}/api/history?channel=${HIST}&limit=20000`, { headers: { authorization: `apikey ${API_KEY}` } });
    const body = (await res.json()) as { pubs: Array<{ offset: number; data: { n: number } }> };
    return body.pubs.map((p) => ({ offset: p.offset, n: p.data.n }));
  };
  const handle = async (e: SseEvent): Promise<void> => {
    const d = JSON.parse(e.data) as { ch?: string; offset?: number; data?: { n: number }; code?: number };
    if (e.event === "pub" && d.ch === HIST) c.hist.push({ n: (d.data as { n: number }).n, offset: d.offset as number });
    else if (e.event === "pub" && d.ch === LIVE) c.live.push(d.data as LiveData);
    else if (e.event === "disconnect") signal(c, `disconnect ${d.code}`);
    else if (e.event === "subscribed") c.subscribed = 2;
    else if (e.event === "reset" && d.ch === HIST) {
      // A browser app would reload the channel here; the collector fills the stretch from history.
      signal(c, "reset");
      c.repairs++;
      const since = c.hist.at(-1)?.offset ?? 0;
      c.hist.push(...(await historyBetween(async () => apiHistory(), since, d.offset as number)));
    }
  };
  void (async () => {
    let lastId = "";
    for (let stream = 0; stream < 100 && !stopped; stream++) {
      if (stream > 0) {
        signal(c, "reconnect");
        await sleep(SSE_RETRY_MS);
      }
      let s: SseClient;
      try {
        s = await SseClient.open(gw.url, `ch=${HIST}&ch=${LIVE}`, lastId === "" ? {} : { "last-event-id": lastId });
      } catch {
        signal(c, "connect failed");
        continue;
      }
      if (s.status !== 200) {
        signal(c, `refused ${s.status}`);
        continue;
      }
      if (stream > 0) signal(c, "resumed");
      let seen = 0;
      while (!stopped) {
        await s.waitFor(() => (s.events.length > seen || s.ended || stopped ? true : undefined), "an event", 60_000).catch(() => undefined);
        while (seen < s.events.length) await handle(s.events[seen++] as SseEvent);
        if (s.ended) break;
      }
      if (s.lastId !== "") lastId = s.lastId;
      s.close();
    }
  })();
  return c;
}

/** /readyz of each gateway every 50 ms: when it changed, and in which phase. */
function watchReadiness(gws: Record<"A" | "B", GatewayProcess>): { log: Array<{ gw: string; status: number; at: number; phase: string }>; stop(): void } {
  const log: Array<{ gw: string; status: number; at: number; phase: string }> = [];
  let stopped = false;
  for (const [name, gw] of Object.entries(gws)) {
    void (async () => {
      let last = 0;
      for (let i = 0; !stopped && i < 10_000; i++) {
        const status = await readyz(gw);
        if (status !== last) log.push({ gw: name, status, at: Date.now(), phase });
        last = status;
        await sleep(50);
      }
    })();
  }
  return { log, stop: () => (stopped = true) };
}

describe("faults between gateways and NATS under steady publishing", () => {
  let nats: NatsCluster | undefined;
  const proxies: FaultProxy[] = [];
  const gws: GatewayProcess[] = [];
  const collectors: Collector[] = [];
  let histPub: SequencePublisher | undefined;
  let livePub: LivePublisher | undefined;
  let liveNc: NatsConnection | undefined;

  beforeAll(async () => {
    nats = await startNats(3, { args: ["--no_advertise"] });
    for (const node of nats.nodes.slice(0, 2)) proxies.push(await startFaultProxy({ port: node.port }));
    // One after the other: the first creates the streams.
    for (const p of proxies) gws.push(await startGateway({ config: { yaml: YAML }, args: ["--nats", p.url], readyTimeoutMs: 40_000 }));
  }, 90_000);

  afterAll(async () => {
    for (const c of collectors) c.stop();
    for (const s of openSseClients) s.close();
    await histPub?.close().catch(() => undefined);
    await liveNc?.close().catch(() => undefined);
    await Promise.allSettled(gws.map((g) => g.stop("SIGKILL")));
    await Promise.allSettled(proxies.map((p) => p.close()));
    await nats?.stop();
    console.log(`fault measurements: ${JSON.stringify(measured)}`);
  }, 60_000);

  it("history exactly once everywhere; readiness follows a stall; losses without history measured", async () => {
    const cluster = nats as NatsCluster;
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const proxyA = proxies[0] as FaultProxy;
    const node0 = cluster.nodes[0] as NatsNode;
    const node2 = cluster.nodes[2] as NatsNode;
    const started = Date.now();

    for (const [gw, name] of [[a, "A"], [b, "B"]] as const) {
      collectors.push(sdkCollector(gw, name, "websocket"), sdkCollector(gw, name, "longpoll"), sseCollector(gw, name));
    }
    await eventually(() => (collectors.every((c) => c.subscribed === 2) ? true : undefined), "every client subscribed", 20_000, 50);
    const readiness = watchReadiness({ A: a, B: b });

    histPub = new SequencePublisher(node2.url, `natsedge.ch.${HIST}`, randomUUID());
    await histPub.open();
    const histRun = histPub.run(1_000_000, RATE);
    histRun.catch(() => undefined);
    liveNc = await connect({ servers: node2.url });
    livePub = new LivePublisher(liveNc);

    const begin = async (name: string, fault: string): Promise<void> => {
      phase = name;
      timeline.push(`${Date.now() - t0} ms: begin ${name}`);
      phases.push({ name, fault });
      await sleep(LEAD_IN_MS);
    };
    const reconnectsOfA = (): number => logRecords(a, "NATS reconnected").length;

    await begin("baseline", "none (2 s)");
    livePub.start(RATE);
    await sleep(2_000);

    await begin("latency", "150 ms added each way on A's NATS path for 4 s");
    proxyA.latencyMs = 150;
    await sleep(4_000);
    proxyA.latencyMs = 0;
    await sleep(SETTLE_MS);

    await begin("stall", "A's NATS path stalled for 3 s (socket open, nothing moves)");
    const stallAt = Date.now();
    proxyA.stall(true);
    await eventually(async () => ((await readyz(a)) === 503 ? true : undefined), "A not ready during the stall", STALL_BOUND_MS + 1_000, 25);
    const stallNoticedMs = Date.now() - stallAt;
    expect(await readyz(b), "B is not affected").toBe(200);
    await sleep(Math.max(0, 3_000 - (Date.now() - stallAt)));
    const resumedAt = Date.now();
    proxyA.stall(false);
    await eventually(async () => ((await readyz(a)) === 200 ? true : undefined), "A ready after the stall", 5_000, 25);
    measured.readiness = { stallTo503Ms: stallNoticedMs, resumeTo200Ms: Date.now() - resumedAt };
    expect(stallNoticedMs).toBeLessThanOrEqual(STALL_BOUND_MS);
    await sleep(SETTLE_MS);

    await begin("resets", "A's NATS connection reset 3 times, 1 s apart");
    for (let i = 0; i < 3; i++) {
      const before = reconnectsOfA();
      proxyA.drop();
      await eventually(() => (reconnectsOfA() > before ? true : undefined), "A reconnected after a reset", 15_000, 25);
      await sleep(1_000);
    }
    await sleep(SETTLE_MS);

    await begin("partition", "A's NATS node killed (-9) for 3 s, then restarted");
    const before = reconnectsOfA();
    await node0.kill();
    await sleep(3_000);
    await node0.restart();
    await eventually(() => (reconnectsOfA() > before ? true : undefined), "A reconnected after the partition", 30_000, 25);
    await eventually(async () => ((await readyz(a)) === 200 ? true : undefined), "A ready after the partition", 15_000, 25);
    await sleep(SETTLE_MS);

    await begin("after", "none (1 s)");
    await sleep(1_000);
    await livePub.stop();
    histPub.stop();
    const stats = await within(histRun, 30_000, "the history publisher");
    const count = stats.published;
    const liveCount = livePub.published.length;
    readiness.stop();

    // History: everyone ends with 1..count, exactly once and in order, at the stored offsets.
    await eventually(() => (collectors.every((c) => c.hist.length >= count) ? true : undefined), "every history publication everywhere", 30_000, 100).catch(
      () => undefined,
    );
    // Without history the last ones may be lost too: give them a moment, then count.
    await eventually(() => (collectors.every((c) => c.live.some((d) => d.n === liveCount)) ? true : undefined), "the last publication without history", 3_000, 100).catch(
      () => undefined,
    );
    for (const c of collectors) c.stop();
    measured.runMs = Date.now() - started;
    measured.published = { history: count, withoutHistory: liveCount, rate: RATE };
    measured.readyzChanges = readiness.log.map((r) => ({ gw: r.gw, status: r.status, phase: r.phase, atMs: r.at - started }));

    const table: Record<string, Record<string, string>> = {};
    const problems: string[] = [];
    for (const c of collectors) {
      const ns = c.hist.map((p) => p.n);
      const problem = sequenceProblem(ns, count);
      const offsetsOk = problem === undefined && strictlyIncreasing(c.hist.map((p) => p.offset)) && c.hist.every((p, i) => p.offset === stats.offsets[i]);
      if (!offsetsOk) problems.push(`${c.name}: ${problem ?? "offsets differ from the stored ones"}`);
      const row: Record<string, string> = { "history exactly once": offsetsOk ? "yes" : "NO" };
      const got = new Map<number, number>();
      for (const d of c.live) got.set(d.n, (got.get(d.n) ?? 0) + 1);
      const dups = [...got.values()].filter((k) => k > 1).length;
      for (const p of phases) {
        const sent = livePub.published.filter((d) => d.phase === p.name);
        const missing = sent.filter((d) => !got.has(d.n)).length;
        row[p.name] = `${missing}/${sent.length}`;
      }
      row.duplicates = String(dups);
      row.repairs = String(c.repairs);
      row.signals = summarize(c.signals);
      table[c.name] = row;
      expect(dups, `${c.name}: a publication without history delivered twice`).toBe(0);
    }
    measured.phases = phases;
    measured.timeline = timeline;
    measured.continuityLostOnA = logRecords(a, "channel continuity lost").map((r) => `${Number(r.time) - t0} ms ${String(r.ch)}: ${String(r.reason)}`);
    measured.gapFillFailuresOnA = logRecords(a, "gap fill failed").map((r) => `${Number(r.time) - t0} ms ${JSON.stringify(r.err).slice(0, 200)}`);
    measured.catchUpFailuresOnA = logRecords(a, "catch-up after reconnect failed").map((r) => `${Number(r.time) - t0} ms ${JSON.stringify(r.err).slice(0, 200)}`);
    measured.table = table;
    console.log(`faults: publications lost without history (missing/published per phase), history check, signals`);
    console.table(table);
    expect(problems).toEqual([]);
    // 150 ms each way is well within the probe's deadline; B had no fault at all.
    expect(readiness.log.filter((r) => r.gw === "A" && r.phase === "latency" && r.status !== 200)).toEqual([]);
    expect(readiness.log.filter((r) => r.gw === "B" && r.status !== 200)).toEqual([]);
  }, 180_000);

  it("a reconnect whose catch-up read fails still delivers what a quiet channel missed", async () => {
    const cluster = nats as NatsCluster;
    const a = gws[0] as GatewayProcess;
    const proxyA = proxies[0] as FaultProxy;
    const [node0, node1, node2] = cluster.nodes as [NatsNode, NatsNode, NatsNode];
    const ch = "chat.quiet";
    const stream = "natsedge_ns_chat";
    // The partition above may leave an election running; this fault is made on a settled stream.
    const admin = await connect({ servers: node2.url });
    try {
      await streamSettled(admin, stream, 2);
    } finally {
      await admin.close();
    }
    const sub = await TestClient.connect(a.wsUrl);
    try {
      expect(await sub.request("subscribe", { ch }, 20_000)).toMatchObject({ ok: { offset: 0 } });
      // A is cut off while three publications are stored; nothing is published after them.
      const reconnects = logRecords(a, "NATS reconnected").length;
      proxyA.refuse = true;
      proxyA.drop();
      const nc = await connect({ servers: node2.url });
      try {
        const js = nc.jetstream();
        for (let n = 1; n <= 3; n++) await js.publish(`natsedge.ch.${ch}`, Buffer.from(JSON.stringify({ n })), { msgID: `quiet-${n}` });
        // The stream must be led from a node that is about to go: then A's node cannot answer for it.
        const leader = await moveStreamLeader(nc, stream, node0.name);
        expect(leader).toBeDefined();
        expect(leader).not.toBe(node0.name);
      } finally {
        await nc.close();
      }
      // A comes back while its node has no stream leader to ask: its catch-up read times out.
      await Promise.all([node1.kill(), node2.kill()]);
      const failuresBefore = logRecords(a, "catch-up after reconnect failed").length;
      proxyA.refuse = false;
      await eventually(() => (logRecords(a, "NATS reconnected").length > reconnects ? true : undefined), "A reconnected", 15_000, 25);
      await eventually(() => (logRecords(a, "catch-up after reconnect failed").length > failuresBefore ? true : undefined), "the catch-up to fail", 15_000, 50);
      const backAt = Date.now();
      await Promise.all([node1.restart(), node2.restart()]);
      // No new publication reveals the gap: the gateway must go back for it by itself.
      const got = await sub.waitFor(() => (sub.pubs(ch).length >= 3 ? sub.pubs(ch) : undefined), "the three publications", 20_000);
      measured.quietCatchUpAfterQuorumMs = Date.now() - backAt;
      expect(got.map((p) => p.data)).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    } finally {
      sub.terminate();
    }
  }, 90_000);
});

/** "disconnected 1006 ×3, reconnect" from a list of signals. */
function summarize(signals: string[]): string {
  const counts = new Map<string, number>();
  for (const s of signals) counts.set(s, (counts.get(s) ?? 0) + 1);
  return [...counts].map(([s, k]) => (k > 1 ? `${s} ×${k}` : s)).join(", ") || "-";
}
