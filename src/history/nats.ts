import { namespaceOf } from "../channels.js";
import type { StoredMsg } from "nats";
import type { HistoryOptions } from "../config/types.js";
import { decodePublication } from "../nats/codec.js";
import { isNotFound, leaderGet, type Jsm, type Streams } from "../nats/streams.js";
import type { Subjects } from "../nats/subjects.js";
import type { Metrics } from "../metrics.js";
import type { NatsLink } from "../nats/connection.js";
import type { Publication } from "../publication.js";
import type { History, HistoryQuery, HistoryResult } from "./history.js";

/**
 * History read from a namespace's JetStream stream with message gets answered by the stream
 * leader (consistent; no consumers to create and clean up). Offsets are stream sequences: increasing per channel, not consecutive.
 *
 * Whether a `since` position is still fully covered is decided conservatively: the stream keeps
 * no per-subject "previous" link in stored messages, so coverage is proven only when the message
 * at `since` itself is still retained (a subject's messages are dropped oldest first), when
 * nothing was published after it, or when the stream has never dropped anything. Otherwise the
 * answer is `recovered:false`, and the client reloads instead of silently missing data.
 */
/** JetStream requests one read made. */
interface Cost {
  reads: number;
}

export class NatsHistory implements History {
  constructor(
    private readonly jsm: Jsm,
    private readonly streams: Streams,
    private readonly subjects: Subjects,
    private readonly metrics: Metrics,
    private readonly link: NatsLink,
  ) {}

  async read(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    this.link.require();
    const cost: Cost = { reads: 0 };
    const ns = namespaceOf(ch);
    const stream = this.streams.streamOf(ns);
    const subject = this.subjects.channel(ch);
    const epoch = await this.streams.epoch(ns);
    const top = await this.get(cost, stream, { last_by_subj: subject });
    const position = { offset: top?.seq ?? 0, epoch };
    const { since, limit } = query;
    const answer = (pubs: Publication[], complete: boolean): HistoryResult => ({ pubs, position, complete, reads: cost.reads });

    if (!since) {
      if (limit === 0 || !top) return answer([], true);
      const all = await this.range(cost, stream, ch, 0, position.offset, opts.size);
      return answer(limit === undefined ? all : all.slice(Math.max(0, all.length - limit)), true);
    }
    if (since.epoch !== epoch || since.offset > position.offset) return answer([], false);
    if (since.offset === position.offset) return answer([], true);
    if (!(await this.covered(cost, stream, subject, since.offset, opts.size))) return answer([], false);
    return answer(await this.range(cost, stream, ch, since.offset, position.offset, limit ?? opts.size), true);
  }

  private async covered(cost: Cost, stream: string, subject: string, offset: number, size: number): Promise<boolean> {
    if (offset === 0) {
      // From the very beginning: nothing may have aged out (the stream still holds its first
      // message, and age trims stream-wide oldest first) and the channel never hit its size
      // limit (which trims per channel).
      cost.reads++;
      const info = await this.jsm.streams.info(stream, { subjects_filter: subject });
      return info.state.first_seq <= 1 && (info.state.subjects?.[subject] ?? 0) < size;
    }
    const at = await this.get(cost, stream, { seq: offset });
    return at !== undefined && at.subject === subject;
  }

  /** Stored publications of `ch` with after < offset <= upTo, oldest first, at most `max`. */
  private async range(cost: Cost, stream: string, ch: string, after: number, upTo: number, max: number): Promise<Publication[]> {
    const subject = this.subjects.channel(ch);
    const pubs: Publication[] = [];
    let cursor = after;
    while (cursor < upTo && pubs.length < max) {
      const m = await this.get(cost, stream, { next_by_subj: subject, seq: cursor + 1 });
      if (!m || m.seq > upTo) break;
      const pub = decodePublication(ch, m.data, m.header, { offset: m.seq, prev: cursor, time: m.time.getTime() });
      if (pub) pubs.push(pub);
      else this.metrics.invalidPayloads.inc();
      cursor = m.seq;
    }
    return pubs;
  }

  private async get(
    cost: Cost,
    stream: string,
    query: { seq?: number; last_by_subj?: string; next_by_subj?: string },
  ): Promise<StoredMsg | undefined> {
    cost.reads++;
    try {
      // The stream leader, not direct get: a lagging replica answering a position would hand
      // clients stale cursors (seen as duplicates and a skipped message across replicas).
      return await leaderGet(this.jsm, stream, query);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async close(): Promise<void> {}
}
