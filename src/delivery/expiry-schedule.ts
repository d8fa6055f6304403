// setTimeout fires at once for delays past 2^31-1 ms; a later deadline re-arms instead.
const MAX_TIMER = 2_147_483_647;

/**
 * Items that expire at a whole second (a token's `exp`), with one timer for all of them instead
 * of a timer and a closure per item: items are grouped by second, and a heap of those seconds
 * finds the next one. remove() needs the second the item was added with.
 */
export class ExpirySchedule<T> {
  private readonly bySecond = new Map<number, Set<T>>();
  /** Min-heap of seconds; may hold seconds whose items were all removed (skipped when reached). */
  private heap: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private armedFor: number | undefined;

  constructor(
    private readonly expire: (item: T) => void,
    private readonly now: () => number = Date.now,
  ) {}

  add(item: T, atSecond: number): void {
    let set = this.bySecond.get(atSecond);
    if (!set) {
      this.bySecond.set(atSecond, (set = new Set()));
      this.push(atSecond);
    }
    set.add(item);
    if (this.armedFor === undefined || atSecond < this.armedFor) this.arm();
  }

  remove(item: T, atSecond: number): void {
    const set = this.bySecond.get(atSecond);
    if (!set?.delete(item) || set.size > 0) return;
    this.bySecond.delete(atSecond);
    // Seconds left behind by removed items would otherwise pile up until they come round.
    if (this.heap.length > 64 && this.heap.length > 2 * this.bySecond.size) {
      this.heap = [...this.bySecond.keys()].sort((a, b) => a - b);
    }
  }

  get size(): number {
    let n = 0;
    for (const set of this.bySecond.values()) n += set.size;
    return n;
  }

  /** Forgets everything without expiring it. */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = undefined;
    this.bySecond.clear();
    this.heap = [];
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = undefined;
    const next = this.heap[0];
    if (next === undefined) return;
    const delay = Math.min(MAX_TIMER, Math.max(0, next * 1000 - this.now()));
    this.armedFor = next;
    this.timer = setTimeout(() => this.run(), delay);
    this.timer.unref();
  }

  private run(): void {
    this.timer = undefined;
    this.armedFor = undefined;
    const now = this.now();
    try {
      for (let next = this.heap[0]; next !== undefined && next * 1000 <= now; next = this.heap[0]) {
        this.pop();
        const set = this.bySecond.get(next);
        if (!set) continue;
        this.bySecond.delete(next);
        for (const item of set) this.expire(item);
      }
    } finally {
      this.arm();
    }
  }

  private push(s: number): void {
    const h = this.heap;
    h.push(s);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((h[p] as number) <= s) break;
      h[i] = h[p] as number;
      i = p;
    }
    h[i] = s;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop();
    if (last === undefined || h.length === 0) return;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && (h[r] as number) < (h[l] as number) ? r : l;
      if ((h[c] as number) >= last) break;
      h[i] = h[c] as number;
      i = c;
    }
    h[i] = last;
  }
}
