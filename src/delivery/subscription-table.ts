/** Past this many entries lookups go through a Map; below it a scan is cheaper than a Map's memory. */
const SMALL = 16;

const EMPTY: readonly never[] = Object.freeze([]);

/**
 * One connection's subscriptions by channel, with the Map methods a session uses. Idle
 * connections dominate a gateway's memory and most hold a few subscriptions, so up to SMALL
 * entries live in an array sized to fit (two entries cost 32 bytes of backing store; an empty
 * Map alone is over 200); beyond that a Map keeps every lookup constant-time for clients allowed
 * many subscriptions.
 */
export class SubscriptionTable<T extends { readonly ch: string }> {
  private items: readonly T[] | Map<string, T> = EMPTY;

  get size(): number {
    return Array.isArray(this.items) ? this.items.length : (this.items as Map<string, T>).size;
  }

  get(ch: string): T | undefined {
    const items = this.items;
    if (!Array.isArray(items)) return (items as Map<string, T>).get(ch);
    for (const s of items as readonly T[]) if (s.ch === ch) return s;
    return undefined;
  }

  has(ch: string): boolean {
    return this.get(ch) !== undefined;
  }

  /** Adds or replaces the entry for `sub.ch`. */
  set(sub: T): void {
    const items = this.items;
    if (!Array.isArray(items)) {
      (items as Map<string, T>).set(sub.ch, sub);
      return;
    }
    const list = items as readonly T[];
    const i = list.findIndex((s) => s.ch === sub.ch);
    // Arrays of exactly the right length (slice, concat): push() or a spread would grow the
    // backing store to 17 entries.
    if (i >= 0) {
      const next = list.slice();
      next[i] = sub;
      this.items = next;
    } else if (list.length < SMALL) {
      this.items = list.concat([sub]);
    } else {
      this.items = new Map([...list, sub].map((s) => [s.ch, s]));
    }
  }

  delete(ch: string): boolean {
    const items = this.items;
    if (!Array.isArray(items)) return (items as Map<string, T>).delete(ch);
    const list = items as readonly T[];
    const i = list.findIndex((s) => s.ch === ch);
    if (i < 0) return false;
    this.items = list.length === 1 ? EMPTY : list.slice(0, i).concat(list.slice(i + 1));
    return true;
  }

  clear(): void {
    this.items = EMPTY;
  }

  /** A snapshot: the loop may delete entries as it goes. */
  values(): T[] {
    return Array.isArray(this.items) ? [...(this.items as readonly T[])] : [...(this.items as Map<string, T>).values()];
  }
}
