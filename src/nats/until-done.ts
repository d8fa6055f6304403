import type { Logger } from "../log.js";

/**
 * Retries `op` until it succeeds, waiting 250 ms after the first failure and twice as long after
 * each next one, up to 5 s. A NATS cluster that is still forming answers before JetStream has a
 * meta leader (and a stream before it has a leader): start-up waits that out, however long it
 * takes, instead of exiting, which would only restart the same wait. Each attempt logs why it
 * failed (and while start-up waits, /readyz says 503), so a wait on a configuration JetStream
 * keeps refusing is visible rather than silent. A caller that retries in the background, after
 * start-up, passes `signal`: the wait then rejects once it is aborted (the owner closed).
 */
export async function untilDone<T>(op: () => Promise<T>, what: string, log: Logger, signal?: AbortSignal): Promise<T> {
  const started = Date.now();
  for (let attempt = 1, delay = 250; ; attempt++, delay = Math.min(delay * 2, 5_000)) {
    try {
      return await op();
    } catch (err) {
      if (signal?.aborted) throw err;
      log.warn({ err: (err as Error).message, attempt, waitedMs: Date.now() - started, retryInMs: delay }, what);
      await sleep(delay, signal);
    }
  }
}

/** The global timer (not node:timers/promises), so that tests' fake timers drive the waits too. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
