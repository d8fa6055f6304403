/**
 * NatsUserCounts in-process with fake timers and a JetStream client that answers when the test
 * says: start-up does not wait for the counts' consumer, a refused subscribe is retried with
 * backoff, and closing stops the retries and drops a subscription that arrives too late.
 */
import type { JetStreamClient, JetStreamSubscription } from "nats";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLogger } from "../src/log.js";
import type { NatsLink } from "../src/nats/connection.js";
import { Subjects } from "../src/nats/subjects.js";
import { NatsUserCounts } from "../src/nats/user-counts.js";

interface Attempt {
  resolve: (sub: JetStreamSubscription) => void;
  reject: (err: Error) => void;
}

/** A JetStream client whose subscribe() calls wait for the test to settle them, in order. */
function pendingJetStream(): { js: JetStreamClient; attempts: Attempt[] } {
  const attempts: Attempt[] = [];
  const js = {
    subscribe: () =>
      new Promise<JetStreamSubscription>((resolve, reject) => {
        attempts.push({ resolve, reject });
      }),
  } as unknown as JetStreamClient;
  return { js, attempts };
}

/** Answers a pending subscribe with a subscription; returns whether that has been unsubscribed. */
async function answer(attempt: Attempt): Promise<() => boolean> {
  let done = false;
  const sub = {
    unsubscribe: () => {
      done = true;
    },
  } as unknown as JetStreamSubscription;
  attempt.resolve(sub);
  await vi.advanceTimersByTimeAsync(0);
  return () => done;
}

const link = { connected: true, require: () => undefined } as unknown as NatsLink;

function counts(js: JetStreamClient): NatsUserCounts {
  return new NatsUserCounts(js, new Subjects("t"), "node-a", link, async () => new Set(["node-b"]), createLogger("silent"));
}

/** A started NatsUserCounts whose first subscribe JetStream refused. */
function refusedOnce(): { c: NatsUserCounts; attempts: Attempt[] } {
  const { js, attempts } = pendingJetStream();
  const c = counts(js);
  c.start();
  attempts[0]!.reject(new Error("JetStream not ready"));
  return { c, attempts };
}

describe("NatsUserCounts following the counts", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("starts without waiting for the consumer, checking connects against the counts seen so far", async () => {
    const { js, attempts } = pendingJetStream();
    const c = counts(js);
    // start() is synchronous: a gateway listens right after it, the consumer still being made.
    expect(c.start()).toBeUndefined();
    expect(attempts).toHaveLength(1);
    expect(await c.total("alice", 2)).toBe(2);
    const unsubscribed = await answer(attempts[0]!);
    expect(unsubscribed()).toBe(false);
    await c.close();
    expect(unsubscribed()).toBe(true);
  });

  it("retries a refused subscribe with growing waits", async () => {
    const { c, attempts } = refusedOnce();
    await vi.advanceTimersByTimeAsync(249);
    expect(attempts).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(attempts).toHaveLength(2);
    attempts[1]!.reject(new Error("JetStream not ready"));
    await vi.advanceTimersByTimeAsync(499);
    expect(attempts).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(attempts).toHaveLength(3);
    const unsubscribed = await answer(attempts[2]!);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(attempts).toHaveLength(3);
    await c.close();
    expect(unsubscribed()).toBe(true);
  });

  it("stops retrying once closed, and drops a subscription that arrives after close", async () => {
    const { c: waiting, attempts } = refusedOnce();
    await vi.advanceTimersByTimeAsync(100);
    await waiting.close();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(attempts).toHaveLength(1);

    const late = pendingJetStream();
    const closing = counts(late.js);
    closing.start();
    await closing.close();
    const unsubscribed = await answer(late.attempts[0]!);
    expect(unsubscribed()).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(late.attempts).toHaveLength(1);
  });
});
