/**
 * Failover under a steady publish stream into a history channel (a backend writing
 * sequence-numbered messages through JetStream at a few hundred per second):
 *  (a) kill -9 of one node of a three-node NATS cluster: gateways on that node reconnect, fill
 *      the gap from the stream, and every subscriber on every replica ends with 1..N once, in order;
 *  (b) kill -9 of one gateway: its clients reconnect to the other replicas with `since` and end
 *      with 1..N once, in order; the dead gateway's clients leave presence and a leave is pushed.
 */
import { randomUUID } from "node:crypto";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type ClientOptions, type Frame } from "../helpers/client.js";
import type { GatewayProcess } from "../helpers/gateway.js";
import { startNats, type NatsCluster, type NatsNode } from "../helpers/nats.js";
import {
  API_KEY,
  gatewayYaml,
  logRecords,
  metric,
  moveStreamLeader,
  natsServerOf,
  nOf,
  pubsIn,
  sequenceProblem,
  SequencePublisher,
  sign,
  sleep,
  startReplicas,
  streamSettled,
  strictlyIncreasing,
  waitForPub,
  waitForPush,
  waitUntil,
  within,
} from "./util.js";

const COUNT = 3000;
const RATE = 300;
const FREEZE_MS = 500;
const KILL_AT = 800;
const STREAM = "natsedge_ns_chat";

/** Measurements printed at the end of the file, for the report. */
const measured: Record<string, unknown> = {};

async function client(g: GatewayProcess, open: TestClient[], user?: string, opts?: ClientOptions): Promise<TestClient> {
  const c = await TestClient.connect(g.wsUrl, user === undefined ? undefined : await sign(user), opts);
  open.push(c);
  return c;
}

async function subscribe(c: TestClient, ch: string, since?: { offset: number; epoch: string }): Promise<Record<string, unknown>> {
  const r = await c.request("subscribe", since ? { ch, since } : { ch }, 20_000);
  expect(r.error, JSON.stringify(r)).toBeUndefined();
  return r.ok as Record<string, unknown>;
}

function nodeOf(nats: NatsCluster, server: string | undefined): NatsNode | undefined {
  return nats.nodes.find((n) => server !== undefined && server.endsWith(`:${n.port}`));
}

/** Checks a subscriber's complete view: data n = 1..COUNT exactly once in order, offsets increasing. */
function expectComplete(frames: Frame[], what: string, publisherOffsets: number[]): void {
  const ns = frames.map((f) => nOf(f) as number);
  expect(sequenceProblem(ns, COUNT), what).toBeUndefined();
  const offsets = frames.map((f) => f.offset as number);
  expect(strictlyIncreasing(offsets), `${what}: offsets increasing`).toBe(true);
  expect(offsets, `${what}: offsets are the stored ones`).toEqual(publisherOffsets);
}

afterAll(() => {
  console.log(`failover measurements: ${JSON.stringify(measured)}`);
});

/**
 * A subscriber as an application that follows the continuity contract (docs/protocol.md,
 * "Continuity signals") sees its channel: the `pub` pushes, and after an `unsub` with
 * `resubscribe` (a gap the gateway could not fill, e.g. a read that timed out while a node came
 * back) the publications recovered by subscribing again with `since` = the last one it holds.
 * Whatever the gateway did, the result must be every publication once, in order.
 */
class Follower {
  readonly frames: Frame[] = [];
  resubscribes = 0;
  private seen = 0;
  private stopped = false;

  constructor(
    readonly c: TestClient,
    private readonly ch: string,
    private epoch: string,
  ) {
    void this.follow();
  }

  stop(): void {
    this.stopped = true;
  }

  private async follow(): Promise<void> {
    while (!this.stopped) {
      const next = await this.c
        .waitFor(() => (this.c.pushes.length > this.seen || this.stopped ? true : undefined), "a push", 600_000)
        .catch(() => undefined);
      if (next === undefined || this.stopped) return;
      while (this.seen < this.c.pushes.length) {
        const p = this.c.pushes[this.seen++] as Frame;
        if (p.ch !== this.ch) continue;
        if (p.push === "pub") this.frames.push(p);
        else if (p.push === "unsub" && p.resubscribe === true) await this.resubscribe();
      }
    }
  }

  /** As the SDK does: a 503 (JetStream unreadable during an election) is retried with backoff. */
  private async resubscribe(): Promise<void> {
    this.resubscribes++;
    const last = this.frames.at(-1);
    const since = last ? { offset: last.offset as number, epoch: this.epoch } : undefined;
    let r = await this.c.request("subscribe", since ? { ch: this.ch, since } : { ch: this.ch }, 20_000);
    for (let attempt = 1; (r.error as Frame | undefined)?.code === 503 && attempt < 20 && !this.stopped; attempt++) {
      await sleep(Math.min(2_000, 100 * 2 ** attempt));
      r = await this.c.request("subscribe", since ? { ch: this.ch, since } : { ch: this.ch }, 20_000);
    }
    expect(r.error, JSON.stringify(r)).toBeUndefined();
    const ok = r.ok as Frame;
    expect(ok.recovered, `${this.ch}: the resubscribe recovers (the history holds the whole run)`).not.toBe(false);
    this.epoch = ok.epoch as string;
    for (const p of (ok.pubs as Frame[] | undefined) ?? []) this.frames.push({ ...p, push: "pub", ch: this.ch });
  }

  async waitForLast(what: string): Promise<Frame> {
    try {
      return await this.c.waitFor(() => this.frames.find((p) => nOf(p) === COUNT), what, 30_000);
    } catch (err) {
      const tail = this.c.pushes.slice(-6).map((p) => JSON.stringify(p).slice(0, 200));
      throw new Error(`${what}: ${this.frames.length} publications, the last n=${String(nOf(this.frames.at(-1) ?? {}))}, ${this.resubscribes} resubscribes; last pushes: ${tail.join(" ")}`, { cause: err });
    }
  }
}

describe("kill -9 of a NATS node mid-stream (3-node cluster, streamReplicas 3)", () => {
  let nats: NatsCluster | undefined;
  const gws: GatewayProcess[] = [];
  const open: TestClient[] = [];
  let publisher: SequencePublisher | undefined;
  let admin: NatsConnection | undefined;

  beforeAll(async () => {
    nats = await startNats(3);
    // The whole run fits the channel's history: a subscriber told to resubscribe late (JetStream
    // reads time out through the leader election, more so on a loaded machine) still recovers
    // everything, so exactly-once is what the contract promises here, not recovered:false.
    await startReplicas(3, nats.servers, gatewayYaml({ replicas: 3, historySize: COUNT }), gws);
  }, 120_000);

  afterAll(async () => {
    await publisher?.close().catch(() => undefined);
    await admin?.close().catch(() => undefined);
    for (const c of open.splice(0)) c.terminate();
    await Promise.allSettled(gws.map((g) => g.stop()));
    await nats?.stop();
  }, 60_000);

  it("every subscriber on every replica ends with every sequence number once, in order", async () => {
    const cluster = nats as NatsCluster;
    const ch = "chat.fo-nats";
    admin = await connect({ servers: cluster.servers });

    // Phase 1 kills the node replica 1 is connected to. It must not lead the channel's stream, so
    // publishing goes on at full rate while replica 1 is away and it has a real gap to fill.
    const victim = nodeOf(cluster, natsServerOf(gws[0] as GatewayProcess)) as NatsNode;
    expect(victim, `replica 1 NATS server: ${natsServerOf(gws[0] as GatewayProcess)}`).toBeDefined();
    const leader1 = await moveStreamLeader(admin, STREAM, victim.name);
    expect(leader1).toBeDefined();
    expect(leader1).not.toBe(victim.name);
    const onVictim = gws.filter((g) => nodeOf(cluster, natsServerOf(g)) === victim);
    const publishVia = cluster.nodes.find((n) => n !== victim && n.name !== leader1) as NatsNode;

    const subs: TestClient[] = [];
    for (const g of gws) subs.push(await client(g, open));
    subs.push(await client(gws[0] as GatewayProcess, open, "mp", { format: "msgpack" }));
    const followers: Follower[] = [];
    for (const s of subs) followers.push(new Follower(s, ch, (await subscribe(s, ch)).epoch as string));
    const snapshot = (): Promise<Array<{ detected: number; filled: number; reconnects: number }>> =>
      Promise.all(
        gws.map(async (g) => ({
          detected: await metric(g, "natsedge_gaps_detected_total"),
          filled: await metric(g, "natsedge_gap_publications_filled_total"),
          reconnects: await metric(g, "natsedge_nats_reconnects_total"),
        })),
      );
    const m0 = await snapshot();

    publisher = new SequencePublisher(publishVia.url, `natsedge.ch.${ch}`, randomUUID());
    await publisher.open();
    const pub = publisher;
    const started = Date.now();
    const run = pub.run(COUNT, RATE);
    run.catch(() => undefined); // awaited below; avoid an unhandled rejection while waiting
    await waitUntil(() => (pub.stats.published >= KILL_AT ? true : undefined), `${KILL_AT} published`, 30_000, 20);
    // The node hangs for a moment before it dies (as a failing machine would): the gateways on it
    // keep a socket that looks alive while messages routed to them are lost, so they miss a
    // stretch of the stream for certain rather than only when the kill lands between messages.
    const publishedAtKill1 = pub.stats.published;
    victim.proc?.kill("SIGSTOP");
    await sleep(FREEZE_MS);
    const kill1At = Date.now();
    await victim.kill();
    await waitUntil(
      () => (onVictim.every((g) => logRecords(g, "NATS reconnected").length > 0) ? true : undefined),
      "gateways on the killed node to reconnect",
      30_000,
      20,
    );
    const reconnect1Ms = Date.now() - kill1At;
    // Replica 1 fills the messages it missed while it was away (the stream goes on meanwhile).
    for (const g of onVictim) {
      const i = gws.indexOf(g);
      await waitUntil(async () => {
        const f = (await metric(g, "natsedge_gap_publications_filled_total")) - (m0[i]?.filled ?? 0);
        return f > 0 ? f : undefined;
      }, `replica ${i + 1} to fill its gap from the stream`, 20_000);
    }

    // Phase 2: the killed node comes back and catches up; then the stream leader is killed, so
    // publishing stalls through a leader election while gateways on that node reconnect.
    const restartAt = Date.now();
    await victim.restart();
    const restartMs = Date.now() - restartAt;
    await streamSettled(admin, STREAM, 2);
    const currentMs = Date.now() - restartAt;
    const m1 = await snapshot();
    const m1Published = pub.stats.published;
    const leader2 = cluster.nodes.find((n) => n.name === leader1) as NatsNode;
    const onLeader = gws.filter((g) => nodeOf(cluster, natsServerOf(g)) === leader2);
    const reconnectsBefore2 = await Promise.all(onLeader.map((g) => logRecords(g, "NATS reconnected").length));
    const kill2After = Math.min(pub.stats.published + 200, COUNT - 300);
    await waitUntil(() => (pub.stats.published >= kill2After ? true : undefined), "more published", 30_000, 20);
    const publishedAtKill2 = pub.stats.published;
    const kill2At = Date.now();
    await leader2.kill();
    await waitUntil(
      () => (onLeader.every((g, i) => logRecords(g, "NATS reconnected").length > (reconnectsBefore2[i] ?? 0)) ? true : undefined),
      "gateways on the killed leader to reconnect",
      30_000,
      20,
    );
    const reconnect2Ms = Date.now() - kill2At;

    const stats = await within(run, 90_000, "the publisher");
    const publishMs = Date.now() - started;
    for (const [i, f] of followers.entries()) await f.waitForLast(`subscriber ${i}: last message`);
    const doneMs = Date.now() - started;
    // A short quiet period: nothing (no duplicate) may arrive after the last message.
    await sleep(300);
    for (const f of followers) f.stop();
    for (const [i, f] of followers.entries()) expectComplete(f.frames, `subscriber ${i}`, stats.offsets);

    const m2 = await snapshot();
    for (const g of onVictim) {
      const i = gws.indexOf(g);
      expect(m1[i]?.detected ?? 0, `replica ${i + 1} gaps detected`).toBeGreaterThan(m0[i]?.detected ?? 0);
    }
    const delta = (a: typeof m0, b: typeof m0) =>
      a.map((x, i) => ({ replica: i + 1, gapsDetected: (b[i]?.detected ?? 0) - x.detected, filled: (b[i]?.filled ?? 0) - x.filled }));
    measured.natsKill = {
      phase1: {
        killed: victim.name,
        streamLeader: leader1,
        gatewaysOnKilledNode: onVictim.map((g) => gws.indexOf(g) + 1),
        publishedAtKill: publishedAtKill1,
        gatewayReconnectMs: reconnect1Ms,
        gaps: delta(m0, m1),
        restartMs,
        replicasCurrentMs: currentMs,
        publishedWhenCurrent: m1Published,
      },
      phase2: {
        killedLeader: leader2.name,
        gatewaysOnKilledNode: onLeader.map((g) => gws.indexOf(g) + 1),
        publishedAtKill: publishedAtKill2,
        gatewayReconnectMs: reconnect2Ms,
        gaps: delta(m1, m2),
      },
      resubscribes: followers.map((f) => f.resubscribes),
      publisherRetries: stats.retries,
      publisherMaxStallMs: stats.maxStallMs,
      publishMs,
      allDeliveredMs: doneMs,
    };
  }, 150_000);
});

describe("kill -9 of a gateway mid-stream", () => {
  let nats: NatsCluster | undefined;
  const gws: GatewayProcess[] = [];
  const open: TestClient[] = [];
  let publisher: SequencePublisher | undefined;

  beforeAll(async () => {
    nats = await startNats(3);
    await startReplicas(3, nats.servers, gatewayYaml({ replicas: 3 }), gws);
  }, 120_000);

  afterAll(async () => {
    await publisher?.close().catch(() => undefined);
    for (const c of open.splice(0)) c.terminate();
    await Promise.allSettled(gws.map((g) => g.stop()));
    await nats?.stop();
  }, 60_000);

  it("its clients resume on other replicas with since, and it leaves presence with a leave push", async () => {
    const ch = "chat.fo-gw";
    const [g0, g1, victim] = gws as [GatewayProcess, GatewayProcess, GatewayProcess];
    const obs = [await client(g0, open), await client(g1, open, undefined, { format: "msgpack" })];
    for (const o of obs) await subscribe(o, ch);
    const movers = [await client(victim, open, "mover1"), await client(victim, open, "mover2", { format: "msgpack" })];
    const moverReplies: Array<Record<string, unknown>> = [];
    for (const m of movers) moverReplies.push(await subscribe(m, ch));
    const ghost = await client(victim, open, "ghost");
    await subscribe(ghost, ch);
    const idOf = (c: TestClient): string => ((c.replies.get(1) as Frame).ok as { client: string }).client;
    const deadIds = [...movers, ghost].map(idOf);
    await waitUntil(async () => {
      const r = await api(g0.url, "GET", `/api/presence_stats?channel=${ch}`, { key: API_KEY });
      return r.body.clients === 5 ? true : undefined;
    }, "5 clients in presence");

    publisher = new SequencePublisher((nats as NatsCluster).nodes[1]?.url as string, `natsedge.ch.${ch}`, randomUUID());
    await publisher.open();
    const run = publisher.run(COUNT, RATE);
    run.catch(() => undefined);
    await waitUntil(() => ((publisher as SequencePublisher).stats.published >= KILL_AT ? true : undefined), `${KILL_AT} published`, 30_000, 20);
    const killedAt = Date.now();
    const obsPushesAtKill = (obs[0] as TestClient).pushes.length;
    victim.proc.kill("SIGKILL");

    // Presence and the leave push are watched while the movers resume and the stream goes on.
    const vanished = waitUntil(
      async () => {
        const r = await api(g0.url, "GET", `/api/presence?channel=${ch}`, { key: API_KEY });
        const clients = r.body.clients as Record<string, unknown> | undefined;
        return clients && deadIds.every((id) => !(id in clients)) ? Date.now() - killedAt : undefined;
      },
      "the killed gateway's clients to leave presence",
      30_000,
      250,
    );
    vanished.catch(() => undefined);
    const leaveSeen = waitForPush(
      obs[0] as TestClient,
      (p) => p.push === "leave" && (p.info as { user?: string }).user === "ghost",
      "the ghost's leave push",
      40_000,
    ).then(() => Date.now() - killedAt);
    leaveSeen.catch(() => undefined);

    // The movers see their connection drop, then subscribe on another replica from where they were.
    const resumed: Array<{ before: Frame[]; reply: Record<string, unknown>; after: TestClient }> = [];
    const resumeMs: number[] = [];
    for (const [i, m] of movers.entries()) {
      const closed = await within(m.closed, 15_000, `mover ${i} close`);
      expect(closed.code).toBe(1006);
      const before = pubsIn(m, ch);
      const last = before.at(-1);
      const since = {
        offset: (last?.offset as number | undefined) ?? (moverReplies[i]?.offset as number),
        epoch: moverReplies[i]?.epoch as string,
      };
      const target = i === 0 ? g0 : g1;
      const again = await client(target, open, `mover${i + 1}`, i === 1 ? { format: "msgpack" } : {});
      const reply = await subscribe(again, ch, since);
      resumeMs.push(Date.now() - killedAt);
      expect(reply.recovered, JSON.stringify(reply).slice(0, 500)).toBe(true);
      resumed.push({ before, reply, after: again });
    }

    const stats = await within(run, 90_000, "the publisher");
    for (const [i, o] of obs.entries()) await waitForPub(o, ch, (p) => nOf(p) === COUNT, `observer ${i}: last message`, 30_000);
    for (const [i, r] of resumed.entries()) await waitForPub(r.after, ch, (p) => nOf(p) === COUNT, `mover ${i}: last message`, 30_000);
    await sleep(300);
    for (const [i, o] of obs.entries()) expectComplete(pubsIn(o, ch), `observer ${i}`, stats.offsets);
    const recoveredCounts: number[] = [];
    for (const [i, r] of resumed.entries()) {
      const recovered = r.reply.pubs as Frame[];
      recoveredCounts.push(recovered.length);
      expectComplete([...r.before, ...recovered, ...pubsIn(r.after, ch)], `mover ${i} (before + recovered + live)`, stats.offsets);
    }

    const vanishMs = await vanished;
    expect(vanishMs).toBeLessThan(30_000);
    // Every replica agrees (HTTP API on one, the presence op on the others): the dead entries
    // are gone, the movers' new connections and the observers are there.
    const now = await api(g1.url, "GET", `/api/presence?channel=${ch}`, { key: API_KEY });
    const viaOps = await Promise.all([...obs, ...resumed.map((r) => r.after)].map((c) => c.request("presence", { ch })));
    const expectedIds = [...obs, ...resumed.map((r) => r.after)].map(idOf).sort();
    for (const clients of [now.body.clients, ...viaOps.map((r) => (r.ok as { clients: unknown }).clients)]) {
      expect(Object.keys(clients as object).sort()).toEqual(expectedIds);
    }
    const leaveMs = await leaveSeen;
    // The reaper runs every 10 s once the 15 s heartbeat has expired.
    expect(leaveMs).toBeLessThan(35_000);
    await waitForPush(obs[1] as TestClient, (p) => p.push === "leave" && (p.info as { user?: string }).user === "ghost", "ghost leave (msgpack observer)", 5_000);
    // The movers came back before their old entries expired: no leave for them.
    await sleep(1_000);
    for (const o of obs) {
      const moverLeaves = o.pushes.filter((p) => p.push === "leave" && /^mover/.test((p.info as { user?: string }).user ?? ""));
      expect(moverLeaves).toEqual([]);
    }
    measured.gatewayKill = {
      publishedAtKill: KILL_AT,
      moverResumedMs: resumeMs,
      recoveredOnResubscribe: recoveredCounts,
      presenceVanishMs: vanishMs,
      leavePushMs: leaveMs,
      moverJoinsAfterKill: obs[0]?.pushes.slice(obsPushesAtKill).filter((p) => p.push === "join" && /^mover/.test((p.info as { user?: string }).user ?? "")).length,
      publisherRetries: stats.retries,
    };
  }, 150_000);
});
