import type { HistoryOptions } from "../config/types.js";
import type { Publication, StreamPosition } from "../publication.js";

/** The largest `limit` a client may ask for; the hub reads at most the namespace's size. */
export const MAX_HISTORY_LIMIT = 2 ** 31 - 1;

export interface HistoryQuery {
  /**
   * Only publications after this position (with `reverse`: before it); with another epoch nothing
   * can be returned.
   */
  since?: StreamPosition;
  /** At most this many: the oldest after `since`, else (and with `reverse`) the newest. */
  limit?: number;
  /**
   * Newest first. Without `since`: the newest `limit` (or all), newest first. With `since`: the
   * newest `limit` (or all) publications *before* `since.offset`, newest first, so that a client
   * pages back through a channel by passing the offset of the oldest entry it holds.
   */
  reverse?: boolean;
}

export interface HistoryResult {
  pubs: Publication[];
  /** The channel's current position (the newest offset, 0 when nothing was published). */
  position: StreamPosition;
  /**
   * With `since`: true when `pubs` is exactly everything published after it (the history still
   * reached back that far and the epoch matched). With `since` and `reverse`: true when the epoch
   * matched and `since` is not ahead of the channel; what aged out before `since` is simply not
   * there, as at the start of a channel.
   */
  complete: boolean;
  /**
   * What the answer cost the backend: JetStream requests in NATS mode, publications read in
   * memory mode. Clients are charged for it (one command token per 100).
   */
  reads: number;
}

/** Per-channel retained publications with monotonic offsets. */
export interface History {
  read(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult>;
  /**
   * The channel's epoch when this process knows it without asking anyone (cached), else
   * undefined: a recovery answered from the gateway's own recent publications must still prove
   * the client's position belongs to the current stream.
   */
  knownEpoch(ch: string): string | undefined;
  close(): Promise<void>;
}
