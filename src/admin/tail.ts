import type { ResolvedChannel } from "../channels.js";
import type { FanoutSink, Hub } from "../hub/hub.js";
import type { Publication } from "../publication.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/** Channels tailed at once on one gateway, across all consoles. */
export const MAX_TAILS = 16;
/** Publications a tail keeps for its next read. */
export const TAIL_BUFFER = 50;
/** A tail nobody read for this long is closed (the console tab went away). */
export const TAIL_IDLE_MS = 15_000;
/** Characters of a publication's JSON a tail keeps. */
export const SHOWN_DATA = 4096;

/** A publication as the console shows it. */
export interface ShownPublication {
  /** Position in this tail, for `after`. */
  seq: number;
  ts: number;
  offset?: number;
  user?: string;
  /** The data as JSON, cut at SHOWN_DATA characters. */
  data: string;
}

interface Tail {
  pubs: ShownPublication[];
  seq: number;
  readAt: number;
  release: () => void;
}

export function shown(pub: Publication, seq: number): ShownPublication {
  const json = pub.data.json().toString("utf8");
  return {
    seq,
    ts: pub.ts,
    ...(pub.offset === undefined ? {} : { offset: pub.offset }),
    ...(pub.info ? { user: pub.info.user } : {}),
    data: json.length > SHOWN_DATA ? `${json.slice(0, SHOWN_DATA)}…` : json,
  };
}

/**
 * Live tails of channels for the console: the channel is held through the hub like any local
 * subscriber, and what it delivers is kept in a small buffer the console polls. A tail ends when
 * it is no longer read; with no tails open this is not a hub sink at all and runs no timer.
 */
export class ChannelTails implements FanoutSink {
  private readonly tails = new Map<string, Tail>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly hub: Hub) {}

  /** Publications after `after` (a seq), opening the tail first if needed. */
  async read(channel: ResolvedChannel, after: number, now = Date.now()): Promise<{ pubs: ShownPublication[]; seq: number }> {
    const tail = this.tails.get(channel.ch) ?? (await this.open(channel, now));
    tail.readAt = now;
    return { pubs: tail.pubs.filter((p) => p.seq > after), seq: tail.seq };
  }

  private async open(channel: ResolvedChannel, now: number): Promise<Tail> {
    if (this.tails.size >= MAX_TAILS) {
      throw new ProtocolError(ErrorCode.RateLimited, `at most ${MAX_TAILS} channels can be tailed at once`);
    }
    const tail: Tail = { pubs: [], seq: 0, readAt: now, release: () => this.hub.unsubscribe(channel.ch) };
    this.tails.set(channel.ch, tail);
    if (this.tails.size === 1) {
      this.hub.addSink(this);
      this.sweeper = setInterval(() => this.sweep(Date.now()), TAIL_IDLE_MS / 3);
      this.sweeper.unref();
    }
    try {
      await this.hub.subscribe(channel.ch, channel.options);
    } catch (err) {
      this.close(channel.ch, () => undefined);
      throw err;
    }
    return tail;
  }

  sweep(now: number): void {
    for (const [ch, tail] of this.tails) if (now - tail.readAt > TAIL_IDLE_MS) this.close(ch, tail.release);
  }

  closeAll(): void {
    for (const [ch, tail] of this.tails) this.close(ch, tail.release);
  }

  private close(ch: string, release: () => void): void {
    this.tails.delete(ch);
    release();
    if (this.tails.size > 0) return;
    this.hub.removeSink(this);
    clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  publication(pub: Publication): number {
    const tail = this.tails.get(pub.ch);
    if (tail) {
      tail.pubs.push(shown(pub, ++tail.seq));
      if (tail.pubs.length > TAIL_BUFFER) tail.pubs.shift();
    }
    // Not a client delivery: natsedge_messages_sent_total does not count the console.
    return 0;
  }

  join(): void {}
  leave(): void {}
  continuityLost(): void {}
}
