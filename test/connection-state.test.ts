/**
 * The compact per-connection structures, in-process with fake timers: the one-timer queue of
 * connect deadlines, the one-timer schedule of token expiries and a session's subscription table
 * (array while small, Map beyond).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ExpirySchedule } from "../src/delivery/expiry-schedule.js";
import { SubscriptionTable } from "../src/delivery/subscription-table.js";
import { DeadlineQueue } from "../src/transport/deadline-queue.js";

describe("DeadlineQueue", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("expires each item its delay after it was added, in order, with one timer", () => {
    const expired: string[] = [];
    const q = new DeadlineQueue<string>(10_000, (s) => expired.push(s));
    q.add("a");
    vi.advanceTimersByTime(4_000);
    q.add("b");
    q.add("c");
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(5_999);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(["a"]);
    expect(q.size).toBe(2);
    vi.advanceTimersByTime(4_000);
    expect(expired).toEqual(["a", "b", "c"]);
    expect(q.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    q.add("d");
    vi.advanceTimersByTime(10_000);
    expect(expired).toEqual(["a", "b", "c", "d"]);
  });

  it("keeps going after a callback throws, and clear() drops everything unexpired", () => {
    const expired: number[] = [];
    const q = new DeadlineQueue<number>(100, (n) => {
      expired.push(n);
      if (n === 1) throw new Error("boom");
    });
    q.add(1);
    vi.advanceTimersByTime(50);
    q.add(2);
    expect(() => vi.advanceTimersByTime(50)).toThrow("boom");
    vi.advanceTimersByTime(50);
    expect(expired).toEqual([1, 2]);
    q.add(3);
    q.clear();
    vi.advanceTimersByTime(1_000);
    expect(expired).toEqual([1, 2]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("stays bounded over many rounds of items", () => {
    let n = 0;
    const q = new DeadlineQueue<number>(1_000, () => n++);
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 100; i++) q.add(i);
      vi.advanceTimersByTime(500);
    }
    expect(q.size).toBeLessThanOrEqual(200);
    vi.advanceTimersByTime(1_000);
    expect(n).toBe(5_000);
    expect(q.size).toBe(0);
  });
});

describe("ExpirySchedule", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(1_000_000_000_000);
  });
  afterEach(() => {
    vi.useRealTimers();
  });
  const nowS = () => Math.floor(Date.now() / 1000);

  it("expires items at their second, earliest first, with one timer; removed ones never", () => {
    const expired: string[] = [];
    const s = new ExpirySchedule<string>((x) => expired.push(x));
    const t = nowS();
    s.add("late", t + 30);
    s.add("soon", t + 5);
    s.add("soon2", t + 5);
    s.add("gone", t + 10);
    s.remove("gone", t + 10);
    s.remove("never-added", t + 10);
    expect(vi.getTimerCount()).toBe(1);
    expect(s.size).toBe(3);
    vi.advanceTimersByTime(4_999);
    expect(expired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(expired).toEqual(["soon", "soon2"]);
    vi.advanceTimersByTime(10_000);
    expect(expired).toEqual(["soon", "soon2"]);
    s.add("earlier", t + 20);
    vi.advanceTimersByTime(5_000);
    expect(expired).toEqual(["soon", "soon2", "earlier"]);
    vi.advanceTimersByTime(10_000);
    expect(expired).toEqual(["soon", "soon2", "earlier", "late"]);
    expect(s.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("expires a second already past at once, and waits out deadlines beyond setTimeout's range", () => {
    const expired: string[] = [];
    const s = new ExpirySchedule<string>((x) => expired.push(x));
    const t = nowS();
    s.add("far", t + 40 * 86_400); // 40 days: more than 2^31-1 ms
    vi.advanceTimersByTime(25 * 86_400_000);
    expect(expired).toEqual([]);
    s.add("past", t - 1);
    vi.advanceTimersByTime(0);
    expect(expired).toEqual(["past"]);
    vi.advanceTimersByTime(15 * 86_400_000);
    expect(expired).toEqual(["past", "far"]);
  });

  it("does not pile up the seconds of removed items", () => {
    const s = new ExpirySchedule<number>(() => undefined);
    const t = nowS();
    for (let i = 0; i < 10_000; i++) {
      s.add(i, t + 3_600 + i);
      s.remove(i, t + 3_600 + i);
    }
    s.add(-1, t + 100);
    expect(s.size).toBe(1);
    expect((s as unknown as { heap: number[] }).heap.length).toBeLessThanOrEqual(130);
  });
});

describe("SubscriptionTable", () => {
  const sub = (ch: string, v = 0) => ({ ch, v });

  it("answers like a Map below and above the array size, and lets a loop delete as it goes", () => {
    const t = new SubscriptionTable<{ ch: string; v: number }>();
    const ref = new Map<string, { ch: string; v: number }>();
    expect(t.size).toBe(0);
    expect(t.get("x")).toBeUndefined();
    for (let i = 0; i < 40; i++) {
      const s = sub(`ns.c${i}`);
      t.set(s);
      ref.set(s.ch, s);
      expect(t.size).toBe(ref.size);
      expect(t.get(s.ch)).toBe(s);
    }
    const replaced = sub("ns.c3", 1);
    t.set(replaced);
    ref.set(replaced.ch, replaced);
    expect(t.size).toBe(40);
    expect(t.get("ns.c3")).toBe(replaced);
    for (const s of t.values()) {
      if (Number(s.ch.slice(4)) % 2 === 0) {
        expect(t.delete(s.ch)).toBe(true);
        ref.delete(s.ch);
      }
    }
    expect(t.delete("ns.c0")).toBe(false);
    expect(t.size).toBe(ref.size);
    expect(new Set(t.values())).toEqual(new Set(ref.values()));
    t.clear();
    expect(t.size).toBe(0);
    expect(t.has("ns.c1")).toBe(false);
  });

  it("replaces and deletes in the small form", () => {
    const t = new SubscriptionTable<{ ch: string; v: number }>();
    t.set(sub("a.1"));
    t.set(sub("a.2"));
    t.set(sub("a.1", 7));
    expect(t.size).toBe(2);
    expect(t.get("a.1")?.v).toBe(7);
    expect(t.delete("a.2")).toBe(true);
    expect(t.delete("a.2")).toBe(false);
    expect(t.values().map((s) => s.ch)).toEqual(["a.1"]);
    expect(t.delete("a.1")).toBe(true);
    expect(t.size).toBe(0);
  });
});
