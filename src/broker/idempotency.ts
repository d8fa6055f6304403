import type { PublishResult } from "./broker.js";

/**
 * Remembers recent publish results by idempotency key. Entries all live for the same window, so
 * Map insertion order is expiry order and eviction only ever looks at the front.
 */
export class IdempotencyCache {
  private readonly entries = new Map<string, { result: PublishResult; expires: number }>();

  constructor(
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get(ch: string, key: string): PublishResult | undefined {
    this.evict();
    return this.entries.get(ch + "\u0000" + key)?.result;
  }

  set(ch: string, key: string, result: PublishResult): void {
    this.entries.set(ch + "\u0000" + key, { result, expires: this.now() + this.windowMs });
  }

  private evict(): void {
    const now = this.now();
    for (const [k, e] of this.entries) {
      if (e.expires > now) break;
      this.entries.delete(k);
    }
  }
}
