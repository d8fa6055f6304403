/**
 * Lifecycle events in-process with fake timers: the webhook batcher (batch size, flush interval,
 * backoff, bounded queue, signatures) and the transition decider (one announcement per change
 * of the bit, whatever the interleaving of counts and settles).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MemoryTransitionState, Transitions, type TransitionState } from "../src/events/transitions.js";
import { makeEvent, type LifecycleEvent } from "../src/events/types.js";
import {
  ATTEMPTS,
  BACKOFF_FIRST_MS,
  BACKOFF_MAX_MS,
  BATCH_MAX,
  FLUSH_MS,
  QUEUE_MAX,
  WebhookSender,
  type Post,
} from "../src/events/webhook.js";
import { signature, SIGNATURE_HEADER, TIMESTAMP_HEADER } from "../src/http/signature.js";
import { UserConnections } from "../src/limits/user-connections.js";
import { createLogger } from "../src/log.js";
import { MemoryPresence } from "../src/presence/memory.js";
import { Metrics } from "../src/metrics.js";

const SECRET = "webhook-unit-secret-0123456789abcdef";
const log = createLogger("silent");

interface Sent {
  events: LifecycleEvent[];
  headers: Record<string, string>;
  body: string;
  at: number;
}

/** A receiver answering with the given statuses in turn (then 200), recording every POST. */
function receiver(statuses: Array<number | Error> = []): { post: Post; sent: Sent[] } {
  const sent: Sent[] = [];
  const post: Post = async (body, headers) => {
    sent.push({ events: (JSON.parse(body) as { events: LifecycleEvent[] }).events, headers, body, at: Date.now() });
    const next = statuses.shift() ?? 200;
    if (next instanceof Error) throw next;
    return next;
  };
  return { post, sent };
}

function ev(n: number): LifecycleEvent {
  return makeEvent("user.online", "node-a", { user: `u${n}` });
}

async function counter(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return Number(v?.value ?? 0);
}

describe("WebhookSender", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("waits the flush interval for a partial batch, and sends a full batch at once", async () => {
    const { post, sent } = receiver();
    const w = new WebhookSender(SECRET, post, new Metrics(), log, () => 0);
    w.enqueue(ev(1));
    await vi.advanceTimersByTimeAsync(FLUSH_MS - 1);
    expect(sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent.map((s) => s.events.length)).toEqual([1]);

    for (let i = 0; i < BATCH_MAX + 5; i++) w.enqueue(ev(i));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent.map((s) => s.events.length)).toEqual([1, BATCH_MAX]);
    await vi.advanceTimersByTimeAsync(FLUSH_MS);
    expect(sent.map((s) => s.events.length)).toEqual([1, BATCH_MAX, 5]);
  });

  it("signs the timestamp and the body with HMAC-SHA256", async () => {
    const { post, sent } = receiver();
    const w = new WebhookSender(SECRET, post, new Metrics(), log);
    w.enqueue(ev(1));
    await vi.advanceTimersByTimeAsync(FLUSH_MS);
    const [s] = sent;
    const ts = s!.headers[TIMESTAMP_HEADER]!;
    expect(Math.abs(Number(ts) - Date.now() / 1000)).toBeLessThan(2);
    expect(s!.headers[SIGNATURE_HEADER]).toBe(signature(SECRET, ts, s!.body));
    expect(s!.headers[SIGNATURE_HEADER]).not.toBe(signature(SECRET + "x", ts, s!.body));
  });

  it("retries failures with exponential backoff, then delivers the same batch once", async () => {
    const { post, sent } = receiver([500, new Error("connection refused"), 503, 429]);
    const metrics = new Metrics();
    const w = new WebhookSender(SECRET, post, metrics, log, () => 0);
    w.enqueue(ev(1));
    await vi.advanceTimersByTimeAsync(FLUSH_MS);
    const start = sent[0]!.at;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sent).toHaveLength(5);
    expect(sent.map((s) => s.at - start)).toEqual([0, 500, 1500, 3500, 7500]);
    expect(new Set(sent.map((s) => s.events[0]!.id)).size).toBe(1);
    expect(await counter(metrics, "natsedge_webhook_deliveries_total", { result: "retry" })).toBe(4);
    expect(await counter(metrics, "natsedge_webhook_deliveries_total", { result: "ok" })).toBe(1);
  });

  it("gives a batch up after ATTEMPTS tries, backoff capped, and goes on with the next", async () => {
    const { post, sent } = receiver(Array.from({ length: ATTEMPTS }, () => 500));
    const metrics = new Metrics();
    const w = new WebhookSender(SECRET, post, metrics, log, () => 0);
    w.enqueue(ev(1));
    await vi.advanceTimersByTimeAsync(FLUSH_MS);
    const delays = [];
    for (let i = 1; i < ATTEMPTS; i++) delays.push(Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (i - 1)));
    await vi.advanceTimersByTimeAsync(delays.reduce((a, b) => a + b, 0));
    expect(sent).toHaveLength(ATTEMPTS);
    expect(await counter(metrics, "natsedge_webhook_deliveries_total", { result: "failed" })).toBe(1);
    expect(await counter(metrics, "natsedge_webhook_events_dropped_total")).toBe(1);
    w.enqueue(ev(2));
    await vi.advanceTimersByTimeAsync(FLUSH_MS);
    expect(sent.at(-1)!.events[0]!.type).toBe("user.online");
    expect(sent).toHaveLength(ATTEMPTS + 1);
    expect(await counter(metrics, "natsedge_webhook_deliveries_total", { result: "ok" })).toBe(1);
  });

  it("does not retry a 4xx answer", async () => {
    const { post, sent } = receiver([400]);
    const metrics = new Metrics();
    const w = new WebhookSender(SECRET, post, metrics, log);
    w.enqueue(ev(1));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sent).toHaveLength(1);
    expect(await counter(metrics, "natsedge_webhook_deliveries_total", { result: "rejected" })).toBe(1);
  });

  it("keeps at most QUEUE_MAX events while the receiver is down, dropping the oldest", async () => {
    let release: (() => void) | undefined;
    const sent: LifecycleEvent[][] = [];
    const post: Post = async (body) => {
      sent.push((JSON.parse(body) as { events: LifecycleEvent[] }).events);
      if (sent.length === 1) await new Promise<void>((r) => (release = r));
      return 200;
    };
    const metrics = new Metrics();
    const w = new WebhookSender(SECRET, post, metrics, log);
    for (let i = 0; i < BATCH_MAX; i++) w.enqueue(ev(i)); // the first batch, held in flight
    await vi.advanceTimersByTimeAsync(0);
    const extra = 250;
    for (let i = 0; i < QUEUE_MAX + extra; i++) w.enqueue(ev(1_000_000 + i));
    expect(w.waiting).toBe(QUEUE_MAX);
    expect(await counter(metrics, "natsedge_webhook_events_dropped_total")).toBe(extra);
    release!();
    await vi.advanceTimersByTimeAsync(FLUSH_MS * 2);
    const delivered = sent.slice(1).flat();
    expect(delivered).toHaveLength(QUEUE_MAX);
    expect((delivered[0] as { user: string }).user).toBe(`u${1_000_000 + extra}`);
  });

  it("sends what is queued at close, one try per batch, and counts what it could not", async () => {
    const { post, sent } = receiver([500]);
    const metrics = new Metrics();
    const w = new WebhookSender(SECRET, post, metrics, log);
    w.enqueue(ev(1));
    const closed = w.close();
    await vi.advanceTimersByTimeAsync(0);
    await closed;
    expect(sent).toHaveLength(1);
    w.enqueue(ev(2));
    expect(await counter(metrics, "natsedge_webhook_events_dropped_total")).toBe(2);
  });
});

/** A bit whose reads and writes wait for the test to let them through, to force interleavings. */
class GatedState implements TransitionState {
  readonly inner = new MemoryTransitionState();
  gates: Array<() => void> = [];
  async set(key: string, on: boolean): Promise<boolean> {
    await new Promise<void>((r) => this.gates.push(r));
    return this.inner.set(key, on);
  }
  open(): void {
    const g = this.gates.shift();
    g?.();
  }
  /** Lets every set through from now on. */
  passAll(): void {
    this.set = (key, on) => this.inner.set(key, on);
    for (const g of this.gates.splice(0)) g();
  }
}

describe("Transitions", () => {
  it("announces a change once however many settle it", async () => {
    const t = new Transitions(new MemoryTransitionState(), log);
    const announced: boolean[] = [];
    const count = async (): Promise<number> => 2;
    await Promise.all([1, 2, 3].map(() => t.settle("u:a", count, (on) => announced.push(on))));
    await t.settle("u:a", count, (on) => announced.push(on));
    expect(announced).toEqual([true]);
  });

  it("needs no count for the first round after the caller's own add, but counts after a change", async () => {
    const t = new Transitions(new MemoryTransitionState(), log);
    let counted = 0;
    const count = async (): Promise<number> => {
      counted++;
      return 1;
    };
    const announced: boolean[] = [];
    await t.settle("u:a", count, (on) => announced.push(on), () => true);
    expect(announced).toEqual([true]);
    expect(counted).toBe(1); // the re-count after the change, not before it
    await t.settle("u:a", count, (on) => announced.push(on), () => true);
    expect(counted).toBe(1); // the bit was on already: nothing changed, nothing counted
    // The entry went before the settle ran: it counts, and finds nobody.
    const none = async (): Promise<number> => 0;
    await t.settle("u:b", none, (on) => announced.push(on), () => false);
    expect(announced).toEqual([true]);
  });

  it("follows the count when a settle that saw zero loses the race to a connect", async () => {
    // Two replicas (two deciders over one bit): A saw the last connection go (count 0) and is
    // about to set off; B added a connection and finds the bit still on. A's change must not
    // leave the user offline: A counts again after it and turns the bit back on.
    const state = new GatedState();
    await state.inner.set("u:a", true);
    const a = new Transitions(state, log);
    const b = new Transitions(state, log);
    let connections = 0;
    const announced: boolean[] = [];
    const settledA = a.settle("u:a", async () => connections, (on) => announced.push(on));
    await vi.waitFor(() => expect(state.gates).toHaveLength(1)); // A counted 0, waits to set off
    connections = 1; // B's connect lands
    const settledB = b.settle("u:a", async () => connections, (on) => announced.push(on));
    await vi.waitFor(() => expect(state.gates).toHaveLength(2));
    state.gates.splice(1, 1)[0]!(); // B sets on first: no change
    await settledB;
    state.open(); // A sets off: a change, so it counts again
    await vi.waitFor(() => expect(state.gates).toHaveLength(1));
    state.open(); // A sets on
    await vi.waitFor(() => expect(state.gates).toHaveLength(1));
    state.open(); // A finds the bit on: settled
    await settledA;
    expect(announced).toEqual([false, true]);
  });

  it("settles once more when asked while a settle runs", async () => {
    const state = new GatedState();
    await state.inner.set("c:x", true);
    const t = new Transitions(state, log);
    let n = 1;
    const announced: boolean[] = [];
    const first = t.settle("c:x", async () => n, (on) => announced.push(on));
    await vi.waitFor(() => expect(state.gates).toHaveLength(1)); // counted 1: the bit stays on
    n = 0; // the last holder goes meanwhile; its settle joins the running one
    expect(t.settle("c:x", async () => n, (on) => announced.push(on))).toBe(first);
    state.passAll();
    await first;
    expect(announced).toEqual([false]);
    await t.idle();
  });
});

describe("UserConnections without lifecycle events", () => {
  it("enforces the limit from the counts alone, writing no presence entries", async () => {
    const presence = new MemoryPresence();
    const users = new UserConnections(presence, 2, log);
    await users.add({ client: "c1", user: "dee" });
    await users.add({ client: "c2", user: "dee" });
    await expect(users.add({ client: "c3", user: "dee" })).rejects.toMatchObject({ code: 429 });
    expect(await presence.clients("$conn.dee")).toBe(0);
    users.remove({ client: "c1", user: "dee" });
    await users.flush();
    await users.add({ client: "c3", user: "dee" });
    expect(await presence.clients("$conn.dee")).toBe(0);
  });
});

describe("UserConnections with lifecycle events", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("counts without a limit, keeps a closed connection's entry for the grace period, and reports each change", async () => {
    const presence = new MemoryPresence();
    const changes: Array<[string, boolean]> = [];
    const users = new UserConnections(presence, 0, log, { changed: (u, present) => changes.push([u, present?.() ?? false]), graceMs: 1000 });
    const a = { client: "c1", user: "ann" };
    await users.add(a);
    expect(await presence.clients("$conn.ann")).toBe(1);
    users.remove(a);
    await vi.advanceTimersByTimeAsync(999);
    expect(await presence.clients("$conn.ann")).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await presence.clients("$conn.ann")).toBe(0);
    expect(changes).toEqual([["ann", true], ["ann", false]]);
    await users.add({ client: "anon", user: "" });
    expect(changes).toHaveLength(2); // anonymous connections are nobody's
  });

  it("keeps the entry of a session that comes back with its client id within the grace period", async () => {
    const presence = new MemoryPresence();
    const users = new UserConnections(presence, 0, log, { changed: () => undefined, graceMs: 1000 });
    const s = { client: "sse-session", user: "bo" };
    await users.add(s);
    users.remove(s);
    await vi.advanceTimersByTimeAsync(500);
    await users.add(s);
    await vi.advanceTimersByTimeAsync(5000);
    expect(await presence.clients("$conn.bo")).toBe(1);
  });

  it("removes lingering entries at once when flushed (shutdown)", async () => {
    const presence = new MemoryPresence();
    const users = new UserConnections(presence, 0, log, { changed: () => undefined, graceMs: 60_000 });
    await users.add({ client: "c", user: "cy" });
    users.remove({ client: "c", user: "cy" });
    await users.flush();
    expect(await presence.clients("$conn.cy")).toBe(0);
  });
});
