import type { Logger } from "../log.js";

/**
 * One on/off bit per key (a user is online, a channel is occupied), shared by every replica and
 * changed only by compare-and-set: of several replicas setting the same change at once, exactly
 * one is told it made it.
 */
export interface TransitionState {
  /** Sets the key's bit; true only for the caller that changed it. */
  set(key: string, on: boolean): Promise<boolean>;
}

export class MemoryTransitionState implements TransitionState {
  private readonly on = new Set<string>();

  async set(key: string, on: boolean): Promise<boolean> {
    if (this.on.has(key) === on) return false;
    if (on) this.on.add(key);
    else this.on.delete(key);
    return true;
  }
}

/**
 * Rounds one settle may take. Each round that changes the bit is a real (if brief) transition
 * seen by the count; more than a few in a row means the count flaps, and the next change settles
 * again anyway.
 */
const MAX_ROUNDS = 4;
/** Attempts of a settle that failed (the store unreachable), 1 s apart, doubling. */
const ATTEMPTS = 3;

/**
 * Decides transitions from counts: after any change to what is counted (a connection, a
 * channel's holder on a replica), the replica that made the change settles the key: it counts,
 * sets the bit to "count > 0", and announces only when it changed the bit. After a change it
 * counts again, since a replica that counted before the change may have seen the old bit and
 * settled nothing; so the bit follows the count, and each change of the bit is announced by
 * exactly one replica (the compare-and-set winner).
 */
export class Transitions {
  /** Settles running per key, and whether another was asked for meanwhile. */
  private readonly running = new Map<string, { again: boolean; done: Promise<void> }>();

  constructor(
    private readonly state: TransitionState,
    private readonly log: Logger,
  ) {}

  /**
   * Settles the key now (or once more after the settle already running for it). `present`: the
   * caller has just added an entry of the key that it alone removes, and tells whether it still
   * holds one; while it does, the first round needs no count.
   */
  settle(key: string, count: () => Promise<number>, announce: (on: boolean) => void, present?: () => boolean): Promise<void> {
    const run = this.running.get(key);
    if (run) {
      run.again = true;
      return run.done;
    }
    const entry = { again: false, done: Promise.resolve() };
    entry.done = (async () => {
      try {
        let known = present;
        do {
          entry.again = false;
          const first = known;
          await this.withRetries(key, () => this.rounds(key, count, announce, first));
          known = undefined;
        } while (entry.again);
      } finally {
        this.running.delete(key);
      }
    })();
    this.running.set(key, entry);
    return entry.done;
  }

  /** Settles still running (shutdown waits for them). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running.values()].map((r) => r.done));
  }

  private async rounds(
    key: string,
    count: () => Promise<number>,
    announce: (on: boolean) => void,
    present: (() => boolean) | undefined,
  ): Promise<void> {
    for (let i = 0; i < MAX_ROUNDS; i++) {
      // Asked when the round starts, not when the entry was added: a removal since (its own
      // settle may already have announced the change) must not turn the bit back on.
      const on = (i === 0 && present?.() === true) || (await count()) > 0;
      if (!(await this.state.set(key, on))) return;
      announce(on);
    }
  }

  private async withRetries(key: string, op: () => Promise<void>): Promise<void> {
    for (let attempt = 1, delay = 1000; ; attempt++, delay *= 2) {
      try {
        return await op();
      } catch (err) {
        if (attempt >= ATTEMPTS) {
          this.log.warn({ err, key }, "lifecycle transition not settled; the next change of the key settles it");
          return;
        }
        await new Promise((r) => setTimeout(r, delay).unref());
      }
    }
  }
}
