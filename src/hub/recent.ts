import type { Publication } from "../publication.js";

/** Recent publications kept per channel to close the window between a history read and joining live delivery. */
const RECENT = 64;
/**
 * While a catch-up reads history, everything delivered meanwhile is kept (up to this many), so a
 * slow read on a busy channel still lines up instead of being refused as moving too fast.
 */
const HELD = 10_000;

/**
 * A history channel's last live publications on this gateway and the newest offset seen, so a
 * subscriber that read history can join live delivery without a gap or a duplicate.
 */
export class RecentPublications {
  private pubs: Publication[] = [];
  /** Catch-ups reading history right now: none of what they may need is dropped. */
  private holds = 0;
  /** The newest offset delivered live, if any has been seen since subscribing. */
  lastOffset: number | undefined;

  /** The channel's offset when the broker subscription started (nothing seen live yet). */
  baseline(offset: number): void {
    if (this.lastOffset === undefined) this.lastOffset = offset;
  }

  add(pub: Publication): void {
    if (pub.offset === undefined) return;
    this.lastOffset = pub.offset;
    this.pubs.push(pub);
    this.trim();
  }

  /**
   * Keeps everything delivered from now until the returned release is called; the buffer shrinks
   * back at the next publication, so the caller can still read it right after releasing.
   */
  hold(): () => void {
    this.holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
    };
  }

  private trim(): void {
    const keep = this.holds > 0 ? HELD : RECENT;
    if (this.pubs.length > keep) this.pubs.splice(0, this.pubs.length - keep);
  }

  /**
   * Publications just read from history (oldest first, linked by `prev`) that lead into what is
   * kept here are kept too, up to the usual count: the next client recovering from the same
   * stretch (a restarted replica's first minutes) needs no read. Nothing is kept unless the read
   * joins what is here without a hole.
   */
  backfill(read: Publication[]): void {
    const first = this.pubs[0];
    const older = first ? read.filter((p) => (p.offset as number) < (first.offset as number)) : read;
    const joint = older.at(-1);
    if (!joint) return;
    if (first ? first.prev !== joint.offset : this.lastOffset !== joint.offset) return;
    this.pubs = older.concat(this.pubs);
    this.trim();
  }

  /** What was delivered before a continuity break proves nothing about what follows it. */
  forget(): void {
    this.pubs = [];
    this.lastOffset = undefined;
  }

  /**
   * Live publications with offsets after `after` already fanned out here, or undefined when they
   * are no longer all in the buffer.
   */
  after(after: number): Publication[] | undefined {
    if (this.lastOffset === undefined || this.lastOffset <= after) return [];
    const i = this.pubs.findIndex((p) => (p.offset as number) > after);
    if (i < 0) return undefined;
    const first = this.pubs[i] as Publication;
    // Offsets need not be consecutive (NATS stream sequences are shared by a namespace), so
    // coverage is proven by the publication's link to its predecessor.
    if (i === 0 && (first.prev === undefined || first.prev > after)) return undefined;
    return this.pubs.slice(i);
  }
}
