/**
 * "Something arrived": a test client calls wake() on every incoming message, and until() re-checks
 * a condition on each wake (or every `pollMs`) until it holds or the time is up.
 */
export class Signal {
  private waiters: Array<() => void> = [];
  /** Counts wakes, so a wake that comes while a check runs (before the next wait) is not lost. */
  private wakes = 0;

  wake(): void {
    this.wakes++;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the first value `check` returns; the timeout error names `what` and `context()`. */
  async until<T>(
    check: () => T | undefined | Promise<T | undefined>,
    what: string,
    timeoutMs: number,
    context: () => string,
    pollMs = Infinity,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = this.wakes;
      const v = await check();
      if (v !== undefined) return v;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; ${context()}`);
      // Woken while checking: something changed that this check may have missed; look again.
      if (this.wakes !== seen) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, pollMs));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

/**
 * Waits for a condition that no event announces (a metric on another process, a state read over
 * HTTP): `check` runs every `pollMs` until it returns a value, for at most `timeoutMs`.
 */
export function eventually<T>(
  check: () => T | undefined | Promise<T | undefined>,
  what: string,
  timeoutMs = 10_000,
  pollMs = 25,
): Promise<T> {
  return new Signal().until(check, what, timeoutMs, () => "condition never held", pollMs);
}
