/**
 * The JetStream request gate in-process: how many run at once, in which order the rest get their
 * turn, what is refused when the queue is full and what never is.
 */
import { describe, expect, it } from "vitest";
import { JsLimiter } from "../src/nats/js-limiter.js";
import { ProtocolError } from "../src/protocol/codes.js";

/** A request that finishes when the test says so. */
function gated(): { run: () => Promise<string>; release: (v: string) => void; fail: (e: Error) => void; started: boolean } {
  let resolve!: (v: string) => void;
  let reject!: (e: Error) => void;
  const p = new Promise<string>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const g = {
    started: false,
    run: () => {
      g.started = true;
      return p;
    },
    release: (v: string) => resolve(v),
    fail: (e: Error) => reject(e),
  };
  return g;
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("JsLimiter", () => {
  it("runs at most `concurrency` requests and hands each freed slot to the oldest waiter", async () => {
    const lim = new JsLimiter(2, 10);
    const gs = Array.from({ length: 5 }, () => gated());
    const done: string[] = [];
    const all = gs.map((g, i) => lim.admit(g.run).then((v) => done.push(`${i}:${v}`)));
    await turn();
    expect(gs.map((g) => g.started)).toEqual([true, true, false, false, false]);
    expect(lim.load).toEqual({ active: 2, waiting: 3 });
    gs[1]?.release("b");
    await turn();
    expect(gs.map((g) => g.started)).toEqual([true, true, true, false, false]);
    gs[0]?.release("a");
    await turn();
    expect(gs.map((g) => g.started)).toEqual([true, true, true, true, false]);
    // A newcomer queues behind the waiter already there.
    const late = gated();
    const lateDone = lim.wait(late.run);
    gs[2]?.release("c");
    await turn();
    expect(gs[4]?.started).toBe(true);
    expect(late.started).toBe(false);
    for (const g of gs) g.release("x");
    late.release("late");
    await Promise.all(all);
    expect(await lateDone).toBe("late");
    expect(done.slice(0, 3)).toEqual(["1:b", "0:a", "2:c"]);
    expect(lim.load).toEqual({ active: 0, waiting: 0 });
  });

  it("refuses admitted work with a 503 when the queue is full, but queues `wait` work anyway", async () => {
    let refusals = 0;
    const lim = new JsLimiter(1, 2, () => refusals++);
    const gs = Array.from({ length: 3 }, () => gated());
    const running = gs.map((g) => lim.admit(g.run));
    await turn();
    const refused = await lim.admit(async () => "never").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ProtocolError);
    expect((refused as ProtocolError).code).toBe(503);
    expect((refused as ProtocolError).retryAfter).toBe(1);
    expect(refusals).toBe(1);
    const own = gated();
    const ownDone = lim.wait(own.run);
    expect(lim.load).toEqual({ active: 1, waiting: 3 });
    for (const g of gs) g.release("ok");
    own.release("own");
    expect(await Promise.all(running)).toEqual(["ok", "ok", "ok"]);
    expect(await ownDone).toBe("own");
  });

  it("frees the slot of a request that fails", async () => {
    const lim = new JsLimiter(1, 1);
    const bad = gated();
    const failing = lim.admit(bad.run);
    const next = gated();
    const nextDone = lim.admit(next.run);
    bad.fail(new Error("boom"));
    await expect(failing).rejects.toThrow("boom");
    await turn();
    expect(next.started).toBe(true);
    next.release("fine");
    expect(await nextDone).toBe("fine");
    expect(lim.load).toEqual({ active: 0, waiting: 0 });
  });
});
