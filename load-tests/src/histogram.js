/**
 * A small log-linear (HDR-style) histogram of non-negative integers (microseconds here).
 * Values 0..255 have their own bucket; above that every power of two is split into 128 linear
 * sub-buckets, so a recorded value is known to within 1/128 (< 0.8 %) of itself. Buckets live in a
 * Uint32Array that worker threads can post to the main thread and that merges by addition.
 */
const LINEAR = 256;
const SUB_BITS = 7;
const SUB = 1 << SUB_BITS; // 128
const MAX_EXP = 31;
export const BUCKETS = LINEAR + (MAX_EXP - 8) * SUB; // 3200
const MAX_VALUE = 2 ** 31 - 1;

export function bucketOf(v) {
  if (v < LINEAR) return v < 0 ? 0 : v;
  if (v > MAX_VALUE) v = MAX_VALUE;
  const e = 31 - Math.clz32(v); // position of the top bit, >= 8
  return LINEAR + (e - 8) * SUB + ((v >>> (e - SUB_BITS)) - SUB);
}

/** Lowest value that lands in bucket i, and the bucket's width. */
function bucketRange(i) {
  if (i < LINEAR) return [i, 1];
  const e = 8 + Math.floor((i - LINEAR) / SUB);
  const sub = ((i - LINEAR) % SUB) + SUB;
  const width = 2 ** (e - SUB_BITS);
  return [sub * width, width];
}

export class Histogram {
  constructor(counts) {
    this.counts = counts ?? new Uint32Array(BUCKETS);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
    if (counts) for (const c of counts) this.n += c;
  }

  record(v) {
    v = v < 0 ? 0 : Math.round(v);
    this.counts[bucketOf(v)]++;
    this.n++;
    this.sum += v;
    if (v > this.max) this.max = v;
  }

  reset() {
    this.counts.fill(0);
    this.n = 0;
    this.max = 0;
    this.sum = 0;
  }

  /** Plain data for postMessage. */
  snapshot() {
    return { counts: this.counts.slice(), n: this.n, max: this.max, sum: this.sum };
  }

  static merge(snaps) {
    const h = new Histogram();
    for (const s of snaps) {
      if (!s) continue;
      for (let i = 0; i < BUCKETS; i++) h.counts[i] += s.counts[i];
      h.n += s.n;
      h.sum += s.sum;
      if (s.max > h.max) h.max = s.max;
    }
    return h;
  }

  /** The value at quantile q (0..1): the middle of the bucket holding it, never above max. */
  quantile(q) {
    if (this.n === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const [lo, width] = bucketRange(i);
        return Math.min(this.max, lo + (width - 1) / 2);
      }
    }
    return this.max;
  }

  /** Summary in milliseconds (values are recorded in microseconds). */
  summaryMs() {
    const ms = (us) => (Number.isNaN(us) ? null : Math.round(us) / 1000);
    return {
      count: this.n,
      mean: this.n ? ms(this.sum / this.n) : null,
      p50: ms(this.quantile(0.5)),
      p90: ms(this.quantile(0.9)),
      p99: ms(this.quantile(0.99)),
      p999: ms(this.quantile(0.999)),
      max: this.n ? ms(this.max) : null,
    };
  }
}
