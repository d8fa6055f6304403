import type { StoredMsg } from "nats";
import { namespaceOf } from "../channels.js";
import type { HistoryOptions } from "../config/types.js";
import type { Metrics } from "../metrics.js";
import { decodePublication } from "../nats/codec.js";
import type { NatsLink } from "../nats/connection.js";
import type { JsLimiter } from "../nats/js-limiter.js";
import { isNotFound, leaderGet, type Jsm, type Streams } from "../nats/streams.js";
import { SubjectCursor, type CursorContext, type Delivered } from "../nats/subject-cursor.js";
import type { Subjects } from "../nats/subjects.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Publication } from "../publication.js";
import type { History, HistoryQuery, HistoryResult } from "./history.js";

/** Start positions tried (consumers created) to find where a channel's newest N begin. */
const MAX_PROBES = 8;
/** A start position is taken when it leaves at most this many (or N, if more) extra to skip. */
const MIN_SLACK = 64;
/** Times a newest-N read goes further back when it came up short (a race, invalid payloads). */
const MAX_ROUNDS = 3;
/** Publications a `since` read fetches with message gets before it turns to a consumer. */
const GET_WALK = 3;

/** One read: where it reads, what it has spent, and the channel's newest sequence when it began. */
interface Read {
  ctx: CursorContext;
  ch: string;
  stream: string;
  subject: string;
  /** The channel's newest sequence, from the stream leader. */
  top: number;
}

interface Item {
  seq: number;
  /** Undefined when the stored message is not valid data (counted, skipped). */
  pub: Publication | undefined;
}

/**
 * History read from a namespace's JetStream stream. Offsets are stream sequences: increasing per
 * channel, not consecutive.
 *
 * A read asks the stream leader for the channel's newest sequence (`last_by_subj`; a lagging
 * replica would hand out stale positions), then walks the channel with an ephemeral consumer
 * filtered to its subject (see SubjectCursor): O(1) JetStream requests plus the messages
 * returned, whatever the channel's length. Such a consumer may run on any replica of the stream,
 * so a walk goes on until it has seen the leader's newest sequence. Two cases need no consumer:
 * the newest one is the message `last_by_subj` returned, and a `since` read that finds the
 * newest within GET_WALK leader gets (a recovery after a short absence) stops there, since a
 * consumer costs more than a few gets (in a cluster its creation goes through the meta leader).
 *
 * The newest N without `since` need the sequence where they begin, which nats-server 2.9 cannot
 * look up by subject. Creating a consumer at a start sequence answers how many of the channel's
 * messages lie at or after it, so the start is searched for: first where it would be if nothing
 * else were published in between, then by the density seen so far (gallop back, then
 * interpolate), accepting a start that leaves a little extra to skip. At most MAX_PROBES
 * consumers; a channel that is the only one publishing needs one.
 *
 * Whether a `since` position is still fully covered is decided conservatively: the stream keeps
 * no per-subject "previous" link in stored messages, so coverage is proven only when the message
 * at `since` itself is still retained (a subject's messages are dropped oldest first), when
 * nothing was published after it, or when the stream has never dropped anything. It is checked
 * before a consumer is created, and again after the walk, because a walk passes silently over
 * messages trimmed away in front of it. Otherwise the answer is `recovered:false`, and the client reloads instead of silently
 * missing data.
 */
export class NatsHistory implements History {
  private readonly cleanup = new Set<Promise<void>>();
  /** Test seam: runs after a `since` read has walked, before coverage is checked again. */
  beforeRecheck: (() => Promise<void>) | undefined;

  constructor(
    private readonly jsm: Jsm,
    private readonly streams: Streams,
    private readonly subjects: Subjects,
    private readonly metrics: Metrics,
    private readonly link: NatsLink,
    private readonly limiter: JsLimiter,
  ) {}

  knownEpoch(ch: string): string | undefined {
    return this.streams.cachedEpoch(namespaceOf(ch));
  }

  async read(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    this.link.require();
    const ns = namespaceOf(ch);
    const epoch = await this.streams.epoch(ns);
    const ctx: CursorContext = { nc: this.link.nc, jsm: this.jsm, limiter: this.limiter, cost: { reads: 0 }, cleanup: this.cleanup };
    const r: Read = { ctx, ch, stream: this.streams.streamOf(ns), subject: this.subjects.channel(ch), top: 0 };
    // The first request of a read is admitted or refused; the rest finish what was admitted.
    const top = await this.get(r, "admit", { last_by_subj: r.subject });
    r.top = top?.seq ?? 0;
    const { since, limit, reverse = false } = query;
    let offset = r.top;
    const answer = (pubs: Publication[], complete: boolean): HistoryResult => ({
      pubs: reverse ? pubs.reverse() : pubs,
      position: { offset, epoch },
      complete,
      reads: ctx.cost.reads,
    });

    if (!since) {
      if (limit === 0 || !top) return answer([], true);
      // The newest one is the message that gave the position.
      const newestOne = limit === 1 ? this.decodeStored(ch, top) : undefined;
      if (newestOne) return answer([newestOne], true);
      const newest = await this.newest(r, limit, undefined);
      offset = Math.max(r.top, newest.last);
      return answer(newest.pubs, true);
    }
    if (since.epoch !== epoch || since.offset > r.top || since.offset < 0) return answer([], false);
    if (reverse) {
      if (limit === 0 || since.offset <= 1) return answer([], true);
      return answer((await this.newest(r, limit, since.offset)).pubs, true);
    }
    if (since.offset === r.top) return answer([], true);
    const walk = limit === 0 ? { pubs: [], last: since.offset } : await this.after(r, since.offset, limit ?? opts.size, opts.size);
    if (!walk) return answer([], false);
    offset = Math.max(r.top, walk.last);
    await this.beforeRecheck?.();
    if (!(await this.covered(r, since.offset, opts.size))) return answer([], false);
    return answer(walk.pubs, true);
  }

  /**
   * The channel's publications after `since`, oldest first, at most `max`, read up to its newest
   * message at least; undefined when, before a consumer was worth creating, the position turned
   * out not to be covered.
   */
  private async after(r: Read, since: number, max: number, size: number): Promise<{ pubs: Publication[]; last: number } | undefined> {
    const pubs: Publication[] = [];
    let last = since;
    const add = (seq: number, pub: Publication | undefined): void => {
      if (pub) pubs.push({ ...pub, prev: last });
      last = seq;
    };
    // A client back after a short absence missed a handful of publications: a few leader gets
    // cost less than a consumer, whose creation goes through the meta leader in a cluster.
    for (let i = 0; i < GET_WALK && pubs.length < max && last < r.top; i++) {
      const m = await this.get(r, "wait", { next_by_subj: r.subject, seq: last + 1 });
      if (!m) return { pubs, last };
      add(m.seq, this.decodeStored(r.ch, m));
    }
    if (pubs.length >= max || last >= r.top) return { pubs, last };
    // A longer walk is worth it only from a position that still holds (asked meanwhile).
    const [holds, opened] = await Promise.allSettled([
      this.covered(r, since, size),
      SubjectCursor.open(r.ctx, r.stream, r.subject, last + 1, "wait"),
    ]);
    if (opened.status === "rejected") throw opened.reason;
    const cursor = opened.value;
    try {
      if (holds.status === "rejected") throw holds.reason;
      if (!holds.value) return undefined;
      while (pubs.length < max && last < r.top) {
        const m = await this.take(r, cursor, last, r.top, max - pubs.length);
        if (!m) break;
        add(m.seq, this.decode(r.ch, m));
      }
      return { pubs, last };
    } finally {
      cursor.close();
    }
  }

  /**
   * The channel's newest `n` publications (all when `n` is undefined) before sequence `below`
   * (or up to its newest), oldest first, and the newest sequence the walk saw.
   */
  private async newest(r: Read, n: number | undefined, below: number | undefined): Promise<{ pubs: Publication[]; last: number }> {
    let upper = below === undefined ? r.top : below - 1;
    // Probes count from their start to the end of the channel: what lies at or after `below`
    // is taken off.
    let base = 0;
    if (below !== undefined && n !== undefined) {
      const probe = await SubjectCursor.open(r.ctx, r.stream, r.subject, below, "wait");
      base = probe.pendingAtStart;
      probe.close();
    }
    let items: Item[] = [];
    let last = 0;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const need = n === undefined ? undefined : n - items.filter((i) => i.pub).length;
      const cursor =
        need === undefined ? await SubjectCursor.open(r.ctx, r.stream, r.subject, 1, "wait") : await this.locate(r, need, upper, base);
      let walked: Item[];
      try {
        // The first round of a read without `below` goes on to the end of what the consumer
        // holds, so that a publication racing the read does not leave it one short.
        walked = await this.walk(r, cursor, upper, round === 0 && below === undefined);
      } finally {
        cursor.close();
      }
      if (round === 0) last = walked.at(-1)?.seq ?? 0;
      items = walked.concat(items);
      if (need === undefined || items.filter((i) => i.pub).length >= (n as number) || cursor.start <= 1) break;
      base = cursor.pendingAtStart;
      upper = cursor.start - 1;
    }
    const pubs: Publication[] = [];
    for (let i = 0; i < items.length; i++) {
      const { pub } = items[i] as Item;
      // Each walk continues the next one's start, so the sequence before an item is its neighbour's.
      if (pub) pubs.push(i > 0 ? { ...pub, prev: (items[i - 1] as Item).seq } : pub);
    }
    return { pubs: n === undefined ? pubs : pubs.slice(Math.max(0, pubs.length - n)), last };
  }

  /**
   * A cursor at a start sequence from which at least `n` (and at most `n` plus the slack) of the
   * channel's messages up to `upper` remain, or at sequence 1 (everything) when there are fewer.
   * `base` is the count of the channel's messages after `upper`.
   */
  private async locate(r: Read, n: number, upper: number, base: number): Promise<SubjectCursor> {
    const slack = Math.max(MIN_SLACK, n);
    // Known: from `hi.x` on, fewer than n remain.
    let hi = { x: upper + 1, count: 0 };
    let lo: { x: number; count: number; cursor: SubjectCursor } | undefined;
    let x = Math.max(1, upper - n + 1);
    for (let probe = 1; ; probe++) {
      let cursor: SubjectCursor;
      try {
        cursor = await SubjectCursor.open(r.ctx, r.stream, r.subject, x, "wait");
      } catch (err) {
        lo?.cursor.close();
        throw err;
      }
      const count = Math.max(0, cursor.pendingAtStart - base);
      if (count >= n || x <= 1) {
        lo?.cursor.close();
        lo = { x, count, cursor };
        if (x <= 1 || count <= n + slack) return cursor;
      } else {
        cursor.close();
        hi = { x, count };
      }
      if (lo && (probe >= MAX_PROBES || hi.x - lo.x <= 1)) return lo.cursor;
      if (probe >= MAX_PROBES - 1 && !lo) {
        x = 1;
      } else if (lo) {
        // Between a start with too many and one with too few: aim for the middle of the slack,
        // assuming the channel's messages are spread evenly there.
        const share = (n + slack / 2 - hi.count) / (lo.count - hi.count);
        x = Math.min(hi.x - 1, Math.max(lo.x + 1, hi.x - Math.round(share * (hi.x - lo.x))));
      } else {
        // Too few from `hi.x` on: step back by what the density seen so far suggests, at least
        // doubling the distance each time.
        const span = upper + 1 - hi.x;
        const density = Math.max(1, hi.count) / span;
        x = Math.max(1, upper + 1 - Math.max(2 * span, Math.ceil((n + slack / 2) / density)));
      }
    }
  }

  /**
   * Walks from the cursor's start through sequence `upper`; with `toEnd`, on past it until the
   * consumer has nothing more or has delivered what it held at its start.
   */
  private async walk(r: Read, cursor: SubjectCursor, upper: number, toEnd: boolean): Promise<Item[]> {
    const items: Item[] = [];
    let last = cursor.start - 1;
    for (;;) {
      const m = await this.take(r, cursor, last, upper);
      if (!m || (!toEnd && m.seq > upper)) break;
      items.push({ seq: m.seq, pub: this.decode(r.ch, m) });
      last = m.seq;
      if (m.seq >= upper && (!toEnd || m.pending === 0 || items.length >= cursor.pendingAtStart)) break;
    }
    return items;
  }

  /**
   * The cursor's next message. When none comes, either nothing is left up to `bound` (trimmed
   * while the read ran) or the consumer's replica is behind the leader: the leader tells which.
   */
  private async take(r: Read, cursor: SubjectCursor, last: number, bound: number, want?: number): Promise<Delivered | undefined> {
    const m = await cursor.next(want);
    if (m) return m;
    const next = await this.get(r, "wait", { next_by_subj: r.subject, seq: last + 1 });
    if (!next || next.seq > bound) return undefined;
    throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable (history replica behind the stream leader)");
  }

  private decodeStored(ch: string, m: StoredMsg): Publication | undefined {
    const pub = decodePublication(ch, m.data, m.header, { offset: m.seq, time: m.time.getTime() });
    if (!pub) this.metrics.invalidPayloads.inc();
    return pub;
  }

  private decode(ch: string, m: Delivered): Publication | undefined {
    const pub = decodePublication(ch, m.data, m.headers, { offset: m.seq, time: m.time });
    if (!pub) this.metrics.invalidPayloads.inc();
    return pub;
  }

  private async covered(r: Read, offset: number, size: number): Promise<boolean> {
    if (offset === 0) return this.coveredFromStart(r, size);
    const at = await this.get(r, "wait", { seq: offset });
    return at !== undefined && at.subject === r.subject;
  }

  /**
   * From the very beginning: nothing may have aged out (the stream still holds its first message,
   * and age trims stream-wide oldest first) and the channel never hit its size limit (which trims
   * per channel).
   */
  private async coveredFromStart(r: Read, size: number): Promise<boolean> {
    r.ctx.cost.reads++;
    const info = await this.limiter.wait(() => this.jsm.streams.info(r.stream, { subjects_filter: r.subject }));
    return info.state.first_seq <= 1 && (info.state.subjects?.[r.subject] ?? 0) < size;
  }

  private async get(
    r: Read,
    gate: "admit" | "wait",
    query: { seq?: number; last_by_subj?: string; next_by_subj?: string },
  ): Promise<StoredMsg | undefined> {
    r.ctx.cost.reads++;
    try {
      // The stream leader, not direct get: a lagging replica answering a position would hand
      // clients stale cursors (seen as duplicates and a skipped message across replicas).
      return await this.limiter[gate](() => leaderGet(this.jsm, r.stream, query));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Waits for the consumers of finished reads to be deleted. */
  async close(): Promise<void> {
    await Promise.all([...this.cleanup]);
  }
}
