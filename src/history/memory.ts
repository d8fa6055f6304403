import { randomBytes } from "node:crypto";
import type { HistoryOptions } from "../config/types.js";
import type { Publication, StreamPosition } from "../publication.js";
import type { History, HistoryQuery, HistoryResult } from "./history.js";

interface Stream {
  epoch: string;
  top: number;
  /** Retained publications, oldest first; offsets are consecutive. */
  pubs: Publication[];
  touched: number;
  ttl: number;
}

/**
 * History held in this process. A stream that expires completely is forgotten, and a later one
 * for the same channel gets a new epoch, exactly as after a restart: clients holding old
 * positions are told `recovered:false` rather than handed a wrong continuation.
 */
export class MemoryHistory implements History {
  private readonly streams = new Map<string, Stream>();
  private readonly sweeper: NodeJS.Timeout;
  /** Streams of channels someone listens to are never forgotten: their subscribers hold positions. */
  private inUse: (ch: string) => boolean = () => false;

  constructor(private readonly now: () => number = Date.now) {
    this.sweeper = setInterval(() => this.sweep(), 30_000);
    this.sweeper.unref();
  }

  append(pub: Publication, opts: HistoryOptions): StreamPosition {
    const s = this.stream(pub.ch, opts);
    s.top++;
    s.pubs.push({ ...pub, offset: s.top, prev: s.top - 1 });
    if (s.pubs.length > opts.size) s.pubs.splice(0, s.pubs.length - opts.size);
    return { offset: s.top, epoch: s.epoch };
  }

  async read(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    const s = this.stream(ch, opts);
    const position = { offset: s.top, epoch: s.epoch };
    const { since, limit, reverse = false } = query;
    const answer = (pubs: Publication[], complete: boolean): HistoryResult => ({
      pubs: reverse ? pubs.reverse() : pubs,
      position,
      complete,
      reads: pubs.length,
    });
    if (since && (since.epoch !== s.epoch || since.offset > s.top || since.offset < 0)) return answer([], false);
    if (!since || reverse) {
      const end = since ? s.pubs.findIndex((p) => (p.offset as number) >= since.offset) : -1;
      const before = end < 0 ? s.pubs : s.pubs.slice(0, end);
      return answer(limit === undefined ? before.slice() : before.slice(Math.max(0, before.length - limit)), true);
    }
    const oldest = s.pubs[0]?.offset ?? s.top + 1;
    if (oldest > since.offset + 1) return answer([], false);
    const from = since.offset + 1 - oldest;
    return answer(s.pubs.slice(from, limit === undefined ? undefined : from + limit), true);
  }

  knownEpoch(ch: string): string | undefined {
    return this.streams.get(ch)?.epoch;
  }

  keepWhile(inUse: (ch: string) => boolean): void {
    this.inUse = inUse;
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  private stream(ch: string, opts: HistoryOptions): Stream {
    const now = this.now();
    let s = this.streams.get(ch);
    if (!s) {
      s = { epoch: randomBytes(6).toString("base64url"), top: 0, pubs: [], touched: now, ttl: opts.ttl };
      this.streams.set(ch, s);
    }
    s.touched = now;
    s.ttl = opts.ttl;
    expire(s, now);
    return s;
  }

  /**
   * Forgets streams whose publications have all expired, that nobody subscribes to and nobody
   * read for a while, so memory tracks activity rather than every channel ever used.
   */
  private sweep(): void {
    const now = this.now();
    const idleSince = now - 10 * 60_000;
    for (const [ch, s] of this.streams) {
      expire(s, now);
      if (s.pubs.length === 0 && s.touched < idleSince && !this.inUse(ch)) this.streams.delete(ch);
    }
  }
}

function expire(s: Stream, now: number): void {
  const cutoff = now - s.ttl;
  let expired = 0;
  while (expired < s.pubs.length && (s.pubs[expired] as Publication).ts < cutoff) expired++;
  if (expired > 0) s.pubs.splice(0, expired);
}
