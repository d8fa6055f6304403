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
 */
export async function catchUp(hub: Hub, ch: string, opts: HistoryOptions, since: StreamPosition | undefined): Promise<CatchUp> {
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
    if (live < top) {
      // History is ahead of live delivery: the rest will arrive live.
      return { pubs: pubs.filter((p) => (p.offset as number) <= live), position: { offset: live, epoch: result.position.epoch }, recovered, reads };
    }
    const extra = hub.recentAfter(ch, top);
    if (extra) {
      return { pubs: recovered ? pubs.concat(extra) : pubs, position: { offset: live, epoch: result.position.epoch }, recovered, reads };
    }
  }
  throw new ProtocolError(ErrorCode.Unavailable, "channel is moving too fast to recover; retry");
}
