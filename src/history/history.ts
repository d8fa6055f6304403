import type { HistoryOptions } from "../config/types.js";
import type { Publication, StreamPosition } from "../publication.js";

export interface HistoryQuery {
  /** Only publications after this position; with another epoch nothing can be returned. */
  since?: StreamPosition;
  /** At most this many, the oldest first. */
  limit?: number;
}

export interface HistoryResult {
  pubs: Publication[];
  /** The channel's current position (the newest offset, 0 when nothing was published). */
  position: StreamPosition;
  /**
   * With `since`: true when `pubs` is exactly everything published after it (the history still
   * reached back that far and the epoch matched).
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
  close(): Promise<void>;
}
