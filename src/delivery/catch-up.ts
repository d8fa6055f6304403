import type { HistoryOptions } from "../config/types.js";
import type { Hub } from "../hub/hub.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Publication, StreamPosition } from "../publication.js";

/** What a client lacks of a history channel up to `position`, and whether `since` was honoured. */
export interface CatchUp {
  pubs: Publication[];
  position: StreamPosition;
  /** True only when `since` was given and everything after it up to `position` is in `pubs`. */
  recovered: boolean;
  /** Messages read from history, for the client's command budget. */
  reads: number;
  /** Where the missed publications came from: this gateway's recent ones, or a history read. */
  source: "recent" | "history";
}

const ATTEMPTS = 3;

/**
 * Lines a history channel's stored past up with its live fan-out, the same for every transport.
 * The caller already holds the hub subscription, so the hub records what is delivered live
 * meanwhile (all of it while the read runs); if the caller then starts taking live delivery
 * before it awaits anything else, the first live publication it keeps (offset > position)
 * follows `pubs` without a gap or a duplicate. A continuity break during the read leaves the hub without that record: the read is
 * repeated, and a channel that keeps moving faster than it can be read is refused with 503.
 * Without `since` only the position is read.
 *
 * Memory answers first whenever it provably gives what history would: a new subscriber to a
 * channel held here takes up the live position, and a client back after a short absence (a
 * reconnect storm after a replica died is thousands of them at once) usually missed only what
 * this gateway has just fanned out. What a read brings back is kept for the next one.
 */
export async function catchUp(hub: Hub, ch: string, opts: HistoryOptions, since: StreamPosition | undefined): Promise<CatchUp> {
  if (!since) {
    const position = hub.livePosition(ch);
    if (position) return { pubs: [], position, recovered: false, reads: 0, source: "recent" };
  } else {
    const recent = hub.recentSince(ch, opts, since);
    if (recent) return { ...recent, recovered: true, reads: 0, source: "recent" };
  }
  let reads = 0;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const release = hub.holdRecent(ch);
    let result;
    try {
      result = await hub.readHistory(ch, opts, since ? { since } : { limit: 0 });
    } finally {
      // What was delivered during the read stays until the next publication: nothing below awaits.
      release();
    }
    reads += result.reads;
    const top = result.position.offset;
    const live = hub.lastOffset(ch) ?? top;
    const recovered = since !== undefined && result.complete;
    const pubs = recovered ? result.pubs : [];
    const epoch = result.position.epoch;
    if (live < top) {
      // History is ahead of live delivery: the rest will arrive live.
      const upToLive = pubs.filter((p) => (p.offset as number) <= live);
      hub.keepRead(ch, epoch, upToLive);
      return { pubs: upToLive, position: { offset: live, epoch }, recovered, reads, source: "history" };
    }
    const extra = hub.recentAfter(ch, top);
    if (extra) {
      const all = recovered ? pubs.concat(extra) : pubs;
      hub.keepRead(ch, epoch, all);
      return { pubs: all, position: { offset: live, epoch }, recovered, reads, source: "history" };
    }
  }
  throw new ProtocolError(ErrorCode.Unavailable, "channel is moving too fast to recover; retry");
}
