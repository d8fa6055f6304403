import type { HistoryQuery, HistoryResult } from "../history/history.js";

/**
 * Identical history reads in flight share one backend read. Clients that lost the same replica
 * come back at the same moment, each asking for its channels from the last position it saw,
 * which is the same for every subscriber of a channel: one read serves them all. A result is
 * never changed by its readers, and whoever lines it up with live delivery proves that itself
 * (delivery/catch-up.ts), so a reader that joins a read started a moment earlier loses nothing.
 */
export class SharedReads {
  private readonly inFlight = new Map<string, Promise<HistoryResult>>();

  read(ch: string, query: HistoryQuery, run: () => Promise<HistoryResult>): Promise<HistoryResult> {
    const key = keyOf(ch, query);
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    const read = run().finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, read);
    return read;
  }
}

function keyOf(ch: string, q: HistoryQuery): string {
  return `${ch}\u0000${q.since ? `${q.since.epoch}\u0000${q.since.offset}` : "-"}\u0000${q.limit ?? "-"}\u0000${q.reverse === true ? 1 : 0}`;
}
