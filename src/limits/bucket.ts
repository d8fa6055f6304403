/** A token bucket: refills at `rate` tokens per second up to `burst`. */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now = Date.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
  }

  /** Takes one token if there is one. */
  take(now = Date.now()): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** Whether take() would succeed, without taking. */
  available(now = Date.now()): boolean {
    this.refill(now);
    return this.tokens >= 1;
  }

  /**
   * Charges work already done. The balance may go below zero: nothing more is admitted until it
   * is paid off, so the debt never exceeds the cost of one piece of work.
   */
  charge(cost: number, now = Date.now()): void {
    this.refill(now);
    this.tokens -= cost;
  }

  /** Whole seconds until a token is available (at least 1), for Retry-After. */
  retryAfter(now = Date.now()): number {
    this.refill(now);
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }
}

/**
 * Buckets by key (an IP address, a client id) for keys that come and go: bounded, evicting the
 * least recently used, so a flood of new keys costs memory up to `max` entries and no more. An
 * evicted key starts again with a full bucket; with `max` well above the number of active keys,
 * only keys idle long enough to have refilled anyway are evicted.
 */
export class BucketMap {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly max: number,
  ) {}

  get(key: string, now = Date.now()): TokenBucket {
    let b = this.buckets.get(key);
    if (b) {
      // Map keeps insertion order: re-inserting makes this the most recently used.
      this.buckets.delete(key);
    } else {
      b = new TokenBucket(this.rate, this.burst, now);
      if (this.buckets.size >= this.max) {
        const oldest = this.buckets.keys().next();
        if (!oldest.done) this.buckets.delete(oldest.value);
      }
    }
    this.buckets.set(key, b);
    return b;
  }

  get size(): number {
    return this.buckets.size;
  }
}
