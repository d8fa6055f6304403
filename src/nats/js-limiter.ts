import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/**
 * JetStream API requests one gateway has in flight at most. A burst (every history channel caught
 * up after a reconnect, thousands of leaves at shutdown, a crowd reading history) otherwise lands
 * on the JetStream API at once, where requests time out and are retried by their clients, and the
 * burst feeds itself.
 */
export const JS_CONCURRENCY = 32;
/** Requests waiting for a slot beyond which new client-driven work is refused. */
export const JS_QUEUE = 1_000;

/**
 * A FIFO gate in front of the JetStream API. Work that a client asked for enters with `admit`,
 * which refuses (503, retry) when the queue is full, so a flood costs waiting clients a fast
 * refusal instead of everyone a timeout. Requests that continue work already admitted (the rest of
 * a history read), and the gateway's own work that must not be dropped (catch-up after a
 * reconnect, leaves), enter with `wait`: they queue however long the queue is, and are counted in
 * it.
 */
export class JsLimiter {
  private active = 0;
  private readonly queue: Array<() => void> = [];

  constructor(
    readonly concurrency = JS_CONCURRENCY,
    readonly maxQueue = JS_QUEUE,
    /** Told of every refusal (counted in natsedge_jetstream_refused_total). */
    private readonly onRefused: () => void = () => undefined,
  ) {}

  /** Runs `request` in turn, or throws a 503 at once when `maxQueue` requests wait already. */
  admit<T>(request: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency && this.queue.length >= this.maxQueue) {
      this.onRefused();
      return Promise.reject(
        new ProtocolError(ErrorCode.Unavailable, "gateway busy: too many JetStream requests waiting; retry", 1),
      );
    }
    return this.wait(request);
  }

  /** Runs `request` in turn, however many wait before it. */
  async wait<T>(request: () => Promise<T>): Promise<T> {
    if (this.active >= this.concurrency) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.active++;
    try {
      return await request();
    } finally {
      // The slot passes straight to the next in line, so a newcomer cannot overtake the queue.
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }

  /** Requests running and waiting (what tests look at). */
  get load(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.queue.length };
  }
}
