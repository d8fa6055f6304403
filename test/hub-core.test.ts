/**
 * The hub's parts in-process, against a scriptable broker and the memory presence, with fake
 * timers: the order of broker calls per channel, continuity breaks, the recent buffer's proof of
 * coverage, the delivery core's catch-up racing live delivery and breaks, and the presence
 * announcer's grace period and races.
 */
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Broker, BrokerHandler, ControlMessage, PublishOptions, PublishResult } from "../src/broker/broker.js";
import { Hub, type FanoutSink } from "../src/hub/hub.js";
import { RecentPublications } from "../src/hub/recent.js";
import { Metrics } from "../src/metrics.js";
import { PresenceAnnouncer } from "../src/presence/announcer.js";
import { MemoryPresence } from "../src/presence/memory.js";
import { Payload } from "../src/protocol/payload.js";
import type { ClientInfo, Publication } from "../src/publication.js";
import { MemoryRevocations } from "../src/sessions/revocations.js";
import { MemoryHistory } from "../src/history/memory.js";
import type { History, HistoryQuery, HistoryResult } from "../src/history/history.js";
import type { HistoryOptions } from "../src/config/types.js";
import { catchUp } from "../src/delivery/catch-up.js";

const log = pino({ level: "silent" });
const NS = { presence: true, joinLeave: true, clientPublish: true, anonymous: true, personal: false, history: { size: 10, ttl: 60_000 } };

/** A broker whose subscribe calls wait until the test lets them go, and which records everything. */
class ScriptedBroker implements Broker {
  handler: BrokerHandler | undefined;
  readonly calls: string[] = [];
  readonly joins: Array<[string, string]> = [];
  readonly leaves: Array<[string, string]> = [];
  private readonly gates: Array<{ ch: string; open: (baseline: number | undefined) => void; fail: (e: Error) => void }> = [];

  async start(handler: BrokerHandler): Promise<void> {
    this.handler = handler;
  }
  async publish(_pub: Publication, _opts: PublishOptions): Promise<PublishResult> {
    return {};
  }
  async publishJoin(ch: string, info: ClientInfo): Promise<void> {
    this.joins.push([ch, info.user]);
  }
  async publishLeave(ch: string, info: ClientInfo): Promise<void> {
    this.leaves.push([ch, info.user]);
  }
  async publishControl(_msg: ControlMessage): Promise<void> {}
  subscribe(ch: string): Promise<number | undefined> {
    this.calls.push(`sub ${ch}`);
    return new Promise((open, fail) => this.gates.push({ ch, open, fail }));
  }
  async unsubscribe(ch: string): Promise<void> {
    this.calls.push(`unsub ${ch}`);
  }
  async close(): Promise<void> {}
  /** Lets the oldest pending subscribe finish; the test must know one is pending. */
  release(baseline?: number): void {
    const gate = this.gates.shift();
    if (!gate) throw new Error("no subscribe is pending");
    gate.open(baseline);
  }
  failNext(): void {
    const gate = this.gates.shift();
    if (!gate) throw new Error("no subscribe is pending");
    gate.fail(new Error("no responders"));
  }
}

class RecordingSink implements FanoutSink {
  readonly pubs: number[] = [];
  readonly lost: string[] = [];
  publication(pub: Publication): number {
    this.pubs.push(pub.offset ?? -1);
    return 1;
  }
  join(): void {}
  leave(): void {}
  continuityLost(ch: string): void {
    this.lost.push(ch);
  }
}

function pub(ch: string, offset: number, prev: number): Publication {
  return { ch, data: Payload.fromValue(offset), offset, prev, ts: Date.now() };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

describe("Hub with a scripted broker", () => {
  let broker: ScriptedBroker;
  let hub: Hub;
  let sink: RecordingSink;
  beforeEach(async () => {
    broker = new ScriptedBroker();
    const presence = new MemoryPresence();
    hub = new Hub({
      broker,
      history: new MemoryHistory(),
      presence,
      revocations: new MemoryRevocations(),
      metrics: new Metrics(),
      log,
      presenceGraceMs: 0,
      maxPresenceMembers: 10,
    });
    sink = new RecordingSink();
    hub.addSink(sink);
    await hub.start();
  });

  it("makes one broker subscription for many subscribers, and runs broker calls per channel in order", async () => {
    const a = hub.subscribe("c.x", NS);
    const b = hub.subscribe("c.x", NS);
    await settle();
    broker.release(5);
    await Promise.all([a, b]);
    expect(broker.calls).toEqual(["sub c.x"]);
    expect(hub.lastOffset("c.x")).toBe(5);
    hub.unsubscribe("c.x");
    hub.unsubscribe("c.x");
    // Subscribing again at once: the unsubscribe goes first, then a new subscribe.
    const c = hub.subscribe("c.x", NS);
    await settle();
    broker.release(7);
    await c;
    expect(broker.calls).toEqual(["sub c.x", "unsub c.x", "sub c.x"]);
  });

  it("hands control messages to the user's sessions: disconnect to all, (un)subscribe to those that take them", async () => {
    const seen: string[] = [];
    const ws = {
      user: "u1",
      disconnect: (code: number) => seen.push(`ws disconnect ${code}`),
      subscribeByServer: (ch: string) => seen.push(`ws subscribe ${ch}`),
      unsubscribeByServer: (ch: string, reason: string) => seen.push(`ws unsubscribe ${ch} ${reason}`),
    };
    const poll = { user: "u1", disconnect: (code: number) => seen.push(`poll disconnect ${code}`) };
    const other = { user: "u2", disconnect: () => seen.push("other"), subscribeByServer: () => seen.push("other") };
    for (const s of [ws, poll, other]) hub.register(s);
    broker.handler?.onControl({ kind: "subscribe", user: "u1", ch: "c.a" });
    broker.handler?.onControl({ kind: "unsubscribe", user: "u1", ch: "c.a", reason: "why" });
    broker.handler?.onControl({ kind: "disconnect", user: "u1", code: 4003, reason: "bye" });
    expect(seen).toEqual(["ws subscribe c.a", "ws unsubscribe c.a why", "ws disconnect 4003", "poll disconnect 4003"]);
  });

  it("counts local holders per channel", async () => {
    const holds = [hub.subscribe("c.a", NS), hub.subscribe("c.a", NS), hub.subscribe("c.b", NS)];
    await settle();
    broker.release(1);
    broker.release(1);
    await Promise.all(holds);
    expect([...hub.channelCounts()]).toEqual([
      { ch: "c.a", subscribers: 2, delivered: 0 },
      { ch: "c.b", subscribers: 1, delivered: 0 },
    ]);
    hub.unsubscribe("c.a");
    hub.unsubscribe("c.b");
    expect([...hub.channelCounts()]).toEqual([{ ch: "c.a", subscribers: 1, delivered: 0 }]);
  });

  it("forgets a channel whose broker subscription failed, so the next subscriber tries again", async () => {
    const a = hub.subscribe("c.y", NS);
    await settle();
    broker.failNext();
    await expect(a).rejects.toMatchObject({ code: 503 });
    const b = hub.subscribe("c.y", NS);
    await settle();
    broker.release(0);
    await b;
    expect(broker.calls).toEqual(["sub c.y", "sub c.y"]);
  });

  it("proves coverage from the recent buffer only through each publication's link to its predecessor", async () => {
    const s = hub.subscribe("c.z", NS);
    await settle();
    broker.release(10);
    await s;
    broker.handler?.onPublication(pub("c.z", 12, 10));
    broker.handler?.onPublication(pub("c.z", 15, 12));
    expect(hub.recentAfter("c.z", 10)?.map((p) => p.offset)).toEqual([12, 15]);
    expect(hub.recentAfter("c.z", 12)?.map((p) => p.offset)).toEqual([15]);
    expect(hub.recentAfter("c.z", 15)).toEqual([]);
    // Before the buffer's first link: not provable.
    expect(hub.recentAfter("c.z", 9)).toBeUndefined();
    expect(sink.pubs).toEqual([12, 15]);
  });

  it("on a continuity break forgets what it delivered and tells every sink before anything past it", async () => {
    const s = hub.subscribe("c.w", NS);
    await settle();
    broker.release(0);
    await s;
    broker.handler?.onPublication(pub("c.w", 1, 0));
    broker.handler?.onContinuityLost("c.w", "a gap");
    expect(sink.lost).toEqual(["c.w"]);
    expect(hub.lastOffset("c.w")).toBeUndefined();
    // A publication past the break carries its true predecessor: no proof of coverage from 1.
    broker.handler?.onPublication(pub("c.w", 9, 5));
    expect(hub.recentAfter("c.w", 1)).toBeUndefined();
    // Channels this gateway does not hold are not signalled.
    broker.handler?.onContinuityLost("c.other", "a gap");
    expect(sink.lost).toEqual(["c.w"]);
  });
});

/** Memory history that runs a test's script between taking its snapshot and answering. */
class ScriptedHistory implements History {
  readonly inner = new MemoryHistory();
  reads = 0;
  /** Called after the n-th read (1-based) took its snapshot: live delivery that races the read. */
  during: (n: number) => void = () => {};
  async read(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    const result = await this.inner.read(ch, opts, query);
    this.during(++this.reads);
    return result;
  }
  knownEpoch(ch: string): string | undefined {
    return this.inner.knownEpoch(ch);
  }
  async close(): Promise<void> {
    await this.inner.close();
  }
}

describe("catchUp: history lined up with live delivery (the core every transport uses)", () => {
  const opts = NS.history;
  let broker: ScriptedBroker;
  let history: ScriptedHistory;
  let hub: Hub;
  /** Stores a publication (as the broker's stream would) and returns it with its offset. */
  const store = (ch: string): Publication => {
    const at = history.inner.append({ ch, data: Payload.fromValue("x"), ts: Date.now() }, opts);
    return { ch, data: Payload.fromValue(at.offset), offset: at.offset, prev: at.offset - 1, ts: Date.now() };
  };
  beforeEach(async () => {
    broker = new ScriptedBroker();
    history = new ScriptedHistory();
    hub = new Hub({ broker, history, presence: new MemoryPresence(), revocations: new MemoryRevocations(), metrics: new Metrics(), log, presenceGraceMs: 0, maxPresenceMembers: 10 });
    hub.addSink(new RecordingSink());
    await hub.start();
  });
  const subscribed = async (ch: string, baseline: number): Promise<void> => {
    const s = hub.subscribe(ch, NS);
    await settle();
    broker.release(baseline);
    await s;
  };
  /** The channel's epoch, read from the store itself; `history.reads` counts the reads from here on. */
  const epochOf = async (ch: string): Promise<string> => {
    const epoch = (await history.inner.read(ch, opts, { limit: 0 })).position.epoch;
    history.reads = 0;
    return epoch;
  };

  it("publications delivered live during the read come back once, after the stored ones", async () => {
    for (let i = 0; i < 3; i++) store("c.a");
    await subscribed("c.a", 3);
    history.during = () => {
      // Published after the snapshot: in the stream, and delivered live before the read returns.
      broker.handler?.onPublication(store("c.a"));
      broker.handler?.onPublication(store("c.a"));
    };
    const epoch = await epochOf("c.a");
    const caught = await catchUp(hub, "c.a", opts, { offset: 1, epoch });
    expect(caught.pubs.map((p) => p.offset)).toEqual([2, 3, 4, 5]);
    expect(caught).toMatchObject({ position: { offset: 5, epoch }, recovered: true });
  });

  it("a slow read on a busy channel lines up too: everything delivered during the read is kept (more than 64)", async () => {
    store("c.f");
    store("c.f");
    await subscribed("c.f", 2);
    history.during = () => {
      for (let i = 0; i < 200; i++) broker.handler?.onPublication(store("c.f"));
    };
    const epoch = await epochOf("c.f");
    const caught = await catchUp(hub, "c.f", opts, { offset: 1, epoch });
    expect(history.reads).toBe(1);
    expect(caught.pubs.map((p) => p.offset)).toEqual(Array.from({ length: 201 }, (_, i) => i + 2));
    expect(caught.position.offset).toBe(202);
    // Released: the next publication shrinks the buffer back to the last 64.
    broker.handler?.onPublication(store("c.f"));
    expect(hub.recentAfter("c.f", 2)).toBeUndefined();
    expect(hub.recentAfter("c.f", 203 - 64)?.length).toBe(64);
  });

  it("history ahead of live delivery: the position stops at what was delivered live, the rest arrives live", async () => {
    for (let i = 0; i < 4; i++) store("c.b");
    await subscribed("c.b", 2);
    const epoch = await epochOf("c.b");
    const caught = await catchUp(hub, "c.b", opts, { offset: 0, epoch });
    expect(caught.pubs.map((p) => p.offset)).toEqual([1, 2]);
    expect(caught.position.offset).toBe(2);
  });

  it("a continuity break during the read makes it read again; the second read covers the break exactly", async () => {
    // The client missed offset 2, which this gateway never delivered live: history is read.
    store("c.c");
    store("c.c");
    await subscribed("c.c", 2);
    history.during = (n) => {
      if (n !== 1) return;
      store("c.c"); // lost on the way to this gateway: only the stream has it
      broker.handler?.onContinuityLost("c.c", "a gap");
      broker.handler?.onPublication(store("c.c"));
    };
    const epoch = await epochOf("c.c");
    const caught = await catchUp(hub, "c.c", opts, { offset: 1, epoch });
    expect(history.reads).toBe(2);
    expect(caught.pubs.map((p) => p.offset)).toEqual([2, 3, 4]);
    expect(caught).toMatchObject({ position: { offset: 4 }, recovered: true, source: "history" });
  });

  it("a channel that breaks during every read is refused with 503, never answered with a gap", async () => {
    store("c.d");
    store("c.d");
    await subscribed("c.d", 2);
    history.during = () => {
      store("c.d");
      broker.handler?.onContinuityLost("c.d", "a gap");
      broker.handler?.onPublication(store("c.d"));
    };
    const epoch = await epochOf("c.d");
    await expect(catchUp(hub, "c.d", opts, { offset: 1, epoch })).rejects.toMatchObject({ code: 503 });
    expect(history.reads).toBe(3);
  });

  it("a client back after a short absence is answered from what this gateway just fanned out, without a history read", async () => {
    store("c.r");
    await subscribed("c.r", 1);
    for (let i = 0; i < 3; i++) broker.handler?.onPublication(store("c.r"));
    const epoch = await epochOf("c.r");
    const caught = await catchUp(hub, "c.r", opts, { offset: 1, epoch });
    expect(caught).toMatchObject({ position: { offset: 4, epoch }, recovered: true, reads: 0, source: "recent" });
    expect(caught.pubs.map((p) => p.offset)).toEqual([2, 3, 4]);
    // Nothing missed is an answer too.
    expect(await catchUp(hub, "c.r", opts, { offset: 4, epoch })).toMatchObject({ pubs: [], position: { offset: 4 }, recovered: true, source: "recent" });
    expect(history.reads).toBe(0);
  });

  it("recovery from memory only when it is provably complete: otherwise history answers", async () => {
    store("c.m");
    await subscribed("c.m", 1);
    for (let i = 0; i < 70; i++) broker.handler?.onPublication(store("c.m"));
    const epoch = await epochOf("c.m");
    // Older than the last 64 kept here: history decides (it keeps 10, so it cannot recover either).
    expect(await catchUp(hub, "c.m", opts, { offset: 1, epoch })).toMatchObject({ pubs: [], recovered: false, source: "history", position: { offset: 71 } });
    // Another epoch: the stream this position belongs to is gone.
    expect(await catchUp(hub, "c.m", opts, { offset: 70, epoch: "other" })).toMatchObject({ recovered: false, source: "history" });
    // Ahead of this gateway (the client came from a replica further on).
    expect(await catchUp(hub, "c.m", opts, { offset: 72, epoch })).toMatchObject({ recovered: false, source: "history" });
    // Kept here, but more than history keeps (its size is 10): the answer is history's.
    expect(await catchUp(hub, "c.m", opts, { offset: 60, epoch })).toMatchObject({ pubs: [], recovered: false, source: "history" });
    expect(history.reads).toBe(4);
    // Within the size and the ttl: memory answers.
    expect(await catchUp(hub, "c.m", opts, { offset: 61, epoch })).toMatchObject({ recovered: true, source: "recent" });
    expect(history.reads).toBe(4);
    // After a continuity break nothing this gateway kept proves anything.
    broker.handler?.onContinuityLost("c.m", "a gap");
    expect(await catchUp(hub, "c.m", opts, { offset: 70, epoch })).toMatchObject({ recovered: true, source: "history" });
    expect(history.reads).toBe(5);
  });

  it("recovery from memory never hands out what history's ttl has expired", async () => {
    store("c.t");
    await subscribed("c.t", 1);
    const stale = store("c.t");
    broker.handler?.onPublication({ ...stale, ts: Date.now() - opts.ttl - 1 });
    broker.handler?.onPublication(store("c.t"));
    const epoch = await epochOf("c.t");
    expect(await catchUp(hub, "c.t", opts, { offset: 1, epoch })).toMatchObject({ source: "history" });
    expect(history.reads).toBe(1);
    // From after the stale one, memory answers.
    expect(await catchUp(hub, "c.t", opts, { offset: 2, epoch })).toMatchObject({ source: "recent", recovered: true });
  });

  it("identical reads in flight share one history read: a replica's clients recovering at once", async () => {
    for (let i = 0; i < 3; i++) store("c.g");
    await subscribed("c.g", 3);
    const epoch = await epochOf("c.g");
    const all = await Promise.all([
      ...Array.from({ length: 50 }, () => catchUp(hub, "c.g", opts, { offset: 1, epoch })),
      catchUp(hub, "c.g", opts, { offset: 2, epoch }),
    ]);
    // One read for the 50 clients at offset 1, one for the client at offset 2.
    expect(history.reads).toBe(2);
    for (const c of all.slice(0, 50)) expect(c.pubs.map((p) => p.offset)).toEqual([2, 3]);
    expect(all[50]?.pubs.map((p) => p.offset)).toEqual([3]);
    // What the read brought back joins the live position: it is kept, and the next client
    // recovering from that stretch is answered from memory.
    const next = await catchUp(hub, "c.g", opts, { offset: 1, epoch });
    expect(next).toMatchObject({ source: "recent", recovered: true, position: { offset: 3 } });
    expect(next.pubs.map((p) => p.offset)).toEqual([2, 3]);
    expect(history.reads).toBe(2);
    // Older than anything read: history again.
    await catchUp(hub, "c.g", opts, { offset: 0, epoch });
    expect(history.reads).toBe(3);
  });

  it("a new subscriber to a held channel takes the live position from memory; a read across a break is kept where it joins", async () => {
    for (let i = 0; i < 3; i++) store("c.n");
    await subscribed("c.n", 3);
    const epoch = await epochOf("c.n");
    expect(await catchUp(hub, "c.n", opts, undefined)).toMatchObject({ pubs: [], position: { offset: 3, epoch }, recovered: false, source: "recent" });
    broker.handler?.onPublication(store("c.n"));
    expect(await catchUp(hub, "c.n", opts, undefined)).toMatchObject({ position: { offset: 4, epoch } });
    expect(history.reads).toBe(0);
    // Offset 5 is lost on the way here (a continuity break), 6 arrives live: a read from 1
    // reaches 6 through the stream, but what this gateway kept starts after the break.
    store("c.n");
    broker.handler?.onContinuityLost("c.n", "a gap");
    broker.handler?.onPublication(store("c.n"));
    const read = await catchUp(hub, "c.n", opts, { offset: 1, epoch });
    expect(read.pubs.map((p) => p.offset)).toEqual([2, 3, 4, 5, 6]);
    expect(history.reads).toBe(1);
    // The read joined 6's predecessor, so it was kept: the stretch is whole in memory now.
    expect(await catchUp(hub, "c.n", opts, { offset: 2, epoch })).toMatchObject({ source: "recent" });
    expect(history.reads).toBe(1);
  });

  it("since from another epoch or past the retained window: recovered false, no publications, the live position", async () => {
    for (let i = 0; i < 15; i++) store("c.e");
    await subscribed("c.e", 15);
    const epoch = await epochOf("c.e");
    for (const since of [{ offset: 1, epoch }, { offset: 3, epoch: "other" }]) {
      const caught = await catchUp(hub, "c.e", opts, since);
      expect(caught).toMatchObject({ pubs: [], recovered: false, position: { offset: 15, epoch } });
    }
  });
});

describe("RecentPublications", () => {
  it("keeps the last 64 and says when an offset is no longer covered", () => {
    const r = new RecentPublications();
    r.baseline(0);
    for (let i = 1; i <= 100; i++) r.add(pub("c.r", i, i - 1));
    expect(r.lastOffset).toBe(100);
    expect(r.after(90)?.length).toBe(10);
    expect(r.after(36)?.length).toBe(64);
    expect(r.after(35)).toBeUndefined();
  });

  it("keeps a history read only where it joins what is kept without a hole", () => {
    const r = new RecentPublications();
    r.baseline(0);
    r.add(pub("c.b", 10, 8));
    // 5..7 end at 7, but 10 follows 8: a hole at 8 (missing from the read).
    r.backfill([pub("c.b", 5, 4), pub("c.b", 6, 5), pub("c.b", 7, 6)]);
    expect(r.after(4)).toBeUndefined();
    // 6..8 join 10 through 8; the overlap (10 read again) is not doubled.
    r.backfill([pub("c.b", 6, 5), pub("c.b", 8, 6), pub("c.b", 10, 8)]);
    expect(r.after(5)?.map((p) => p.offset)).toEqual([6, 8, 10]);
    // Nothing kept yet: a read joins only at the newest offset seen.
    const empty = new RecentPublications();
    empty.baseline(3);
    empty.backfill([pub("c.e", 1, 0), pub("c.e", 2, 1)]);
    expect(empty.after(0)).toBeUndefined();
    empty.backfill([pub("c.e", 2, 1), pub("c.e", 3, 2)]);
    expect(empty.after(1)?.map((p) => p.offset)).toEqual([2, 3]);
  });
});

describe("PresenceAnnouncer with fake timers", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  const alice1: ClientInfo = { client: "a1", user: "alice" };
  const alice2: ClientInfo = { client: "a2", user: "alice" };

  function setup(graceMs: number): { broker: ScriptedBroker; presence: MemoryPresence; announcer: PresenceAnnouncer } {
    const broker = new ScriptedBroker();
    const presence = new MemoryPresence();
    return { broker, presence, announcer: new PresenceAnnouncer(presence, broker, new Metrics(), log, graceMs) };
  }

  it("announces a join per user, and a leave only when the user's last connection left after the grace", async () => {
    const { broker, presence, announcer } = setup(5_000);
    await announcer.join("c.p", alice1, true);
    await announcer.join("c.p", alice2, true);
    expect(broker.joins).toEqual([["c.p", "alice"]]);
    announcer.leave("c.p", alice1, true);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(broker.leaves).toEqual([]); // alice is still there with a2
    announcer.leave("c.p", alice2, true);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(broker.leaves).toEqual([]);
    expect((await presence.stats("c.p")).clients).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(broker.leaves).toEqual([["c.p", "alice"]]);
    expect((await presence.stats("c.p")).clients).toBe(0);
  });

  it("a reconnect within the grace period makes no leave and no second join", async () => {
    const { broker, announcer } = setup(5_000);
    await announcer.join("c.q", alice1, true);
    announcer.leave("c.q", alice1, true);
    await vi.advanceTimersByTimeAsync(2_000);
    await announcer.join("c.q", alice1, true);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(broker.joins).toEqual([["c.q", "alice"]]);
    expect(broker.leaves).toEqual([]);
  });

  it("a leave racing its own join waits for it: no ghost entry", async () => {
    const { broker, presence, announcer } = setup(0);
    const joining = announcer.join("c.g", alice1, true);
    announcer.leave("c.g", alice1, true);
    await joining;
    await vi.advanceTimersByTimeAsync(0);
    expect((await presence.stats("c.g")).clients).toBe(0);
    expect(broker.joins).toEqual([["c.g", "alice"]]);
    expect(broker.leaves).toEqual([["c.g", "alice"]]);
  });

  it("announces at most 50 events per channel per second", async () => {
    const { broker, announcer } = setup(0);
    vi.setSystemTime(new Date("2026-12-04T00:00:00.000Z"));
    for (let i = 0; i < 80; i++) await announcer.join("c.b", { client: `c${i}`, user: `u${i}` }, true);
    expect(broker.joins.length).toBe(50);
    vi.setSystemTime(new Date("2026-12-04T00:00:01.000Z"));
    await announcer.join("c.b", { client: "late", user: "late" }, true);
    expect(broker.joins.length).toBe(51);
  });

  it("flush() runs the pending leaves at once (shutdown)", async () => {
    const { broker, announcer } = setup(60_000);
    await announcer.join("c.f", alice1, true);
    announcer.leave("c.f", alice1, true);
    await announcer.flush();
    expect(broker.leaves).toEqual([["c.f", "alice"]]);
  });
});
