import type { Publication } from "../publication.js";

/** Recent publications kept per channel to close the window between a history read and joining live delivery. */
const RECENT = 64;

/**
 * A history channel's last live publications on this gateway and the newest offset seen, so a
 * subscriber that read history can join live delivery without a gap or a duplicate.
 */
export class RecentPublications {
  private pubs: Publication[] = [];
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
    if (this.pubs.length > RECENT) this.pubs.shift();
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
