/**
 * Items that each expire a fixed delay after they were added, with one timer for all of them
 * instead of a timer (and a closure) per item. Items expire in the order they were added; the
 * owner's callback decides whether an expired item still matters.
 */
export class DeadlineQueue<T> {
  private items: (T | undefined)[] = [];
  private due: number[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly delayMs: number,
    private readonly expire: (item: T) => void,
  ) {}

  get size(): number {
    return this.items.length - this.head;
  }

  add(item: T): void {
    this.items.push(item);
    this.due.push(Date.now() + this.delayMs);
    if (!this.timer) this.arm();
  }

  /** Forgets every item without expiring it. */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.items = [];
    this.due = [];
    this.head = 0;
  }

  private arm(): void {
    const next = this.due[this.head];
    if (next === undefined) return;
    this.timer = setTimeout(() => this.run(), Math.max(0, next - Date.now()));
    this.timer.unref();
  }

  private run(): void {
    this.timer = undefined;
    const now = Date.now();
    try {
      while (this.head < this.items.length && (this.due[this.head] as number) <= now) {
        const item = this.items[this.head] as T;
        // Released at once: an expired item must not be kept alive by the queue.
        this.items[this.head] = undefined;
        this.head++;
        this.expire(item);
      }
    } finally {
      this.compact();
      this.arm();
    }
  }

  /** Drops the expired slots once they are most of the arrays. */
  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.due = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.due = this.due.slice(this.head);
      this.head = 0;
    }
  }
}
