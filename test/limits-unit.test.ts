/**
 * The limit building blocks in-process, with explicit clocks: token buckets and their charges,
 * the bounded bucket map, client addresses behind proxies, connection admission and the
 * presence cap.
 */
import { describe, expect, it } from "vitest";
import { BucketMap, TokenBucket } from "../src/limits/bucket.js";
import { ClientAddress } from "../src/limits/client-address.js";
import { ConnectionLimiter } from "../src/limits/connections.js";
import { Metrics } from "../src/metrics.js";
import { PresenceCapacity } from "../src/presence/capacity.js";
import { MemoryPresence } from "../src/presence/memory.js";
import { ProtocolError } from "../src/protocol/codes.js";

describe("TokenBucket", () => {
  it("allows a burst, then the rate, and says when to retry", () => {
    const b = new TokenBucket(10, 20, 0);
    let taken = 0;
    while (b.take(0)) taken++;
    expect(taken).toBe(20);
    expect(b.retryAfter(0)).toBe(1);
    expect(b.take(100)).toBe(true); // 100 ms at 10/s refills one
    expect(b.take(100)).toBe(false);
    expect(b.take(10_000)).toBe(true);
    // Never more than the burst, however long it rested.
    let after = 0;
    while (b.take(1_000_000)) after++;
    expect(after).toBe(20);
  });

  it("lets expensive work drive the balance negative until it is paid off", () => {
    const b = new TokenBucket(100, 200, 0);
    expect(b.take(0)).toBe(true);
    b.charge(1_000, 0); // a history read of 100,000 messages
    expect(b.available(0)).toBe(false);
    expect(b.retryAfter(0)).toBe(9); // (1 - (199 - 1000)) / 100, rounded up
    expect(b.take(8_000)).toBe(false);
    expect(b.take(8_100)).toBe(true);
  });
});

describe("BucketMap", () => {
  it("keeps a bucket per key and evicts the least recently used beyond its size", () => {
    const m = new BucketMap(1, 1, 2);
    expect(m.get("a", 0).take(0)).toBe(true);
    expect(m.get("a", 0).take(0)).toBe(false); // same bucket
    m.get("b", 0);
    m.get("a", 0); // a is now the most recently used
    m.get("c", 0); // evicts b
    expect(m.size).toBe(2);
    expect(m.get("a", 0).take(0)).toBe(false); // a kept its (empty) bucket
    expect(m.get("b", 0).take(0)).toBe(true); // b came back with a full one
  });
});

describe("ClientAddress", () => {
  it("uses the peer unless it is a trusted proxy", () => {
    const none = new ClientAddress([]);
    expect(none.resolve("127.0.0.1", "203.0.113.9")).toBe("127.0.0.1");
    const trusting = new ClientAddress(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
    expect(trusting.resolve("192.0.2.1", "203.0.113.9")).toBe("192.0.2.1");
    expect(trusting.resolve("10.1.2.3", "")).toBe("10.1.2.3");
  });

  it("takes the right-most untrusted X-Forwarded-For entry from trusted proxies", () => {
    const a = new ClientAddress(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
    expect(a.resolve("127.0.0.1", "203.0.113.9")).toBe("203.0.113.9");
    // A client's own X-Forwarded-For (left) is not believed past the first untrusted hop.
    expect(a.resolve("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.5")).toBe("203.0.113.9");
    expect(a.resolve("fd00::1", "2001:db8::7")).toBe("2001:db8::7");
    // IPv4-mapped IPv6 is the IPv4 address, on both sides.
    expect(a.resolve("::ffff:127.0.0.1", "::ffff:203.0.113.9")).toBe("203.0.113.9");
    // A malformed chain proves nothing: the proxy's own address counts.
    expect(a.resolve("127.0.0.1", "203.0.113.9, not-an-ip")).toBe("127.0.0.1");
    // Only proxies all the way: the peer itself.
    expect(a.resolve("127.0.0.1", "10.0.0.1, 10.0.0.2")).toBe("127.0.0.1");
  });
});

describe("ConnectionLimiter", () => {
  it("refuses past the process limit (503) and the per-address limit (429), and counts closes", () => {
    const metrics = new Metrics();
    const l = new ConnectionLimiter({ maxConnections: 3, maxConnectionsPerIp: 2, connectRate: 0 }, metrics);
    const open = (ip: string): void => {
      expect(l.admit(ip)).toBeUndefined();
      l.opened(ip);
    };
    open("a");
    open("a");
    expect(l.admit("a")).toMatchObject({ status: 429, reason: "per_ip", retryAfter: 30 });
    open("b");
    expect(l.admit("c")).toMatchObject({ status: 503, reason: "max_connections", retryAfter: 5 });
    l.closed("a");
    expect(l.admit("c")).toBeUndefined();
    expect(l.size).toBe(2);
  });

  it("limits the connect rate per address, for connections and new sessions alike", () => {
    const l = new ConnectionLimiter({ maxConnections: 0, maxConnectionsPerIp: 0, connectRate: 2 }, new Metrics());
    const results = Array.from({ length: 5 }, (_, i) => (i % 2 ? l.admit("x") : l.admitSession("x")));
    expect(results.slice(0, 4).every((r) => r === undefined)).toBe(true);
    expect(results[4]).toMatchObject({ status: 429, reason: "connect_rate" });
    expect(l.admit("y")).toBeUndefined();
  });
});

describe("PresenceCapacity", () => {
  it("refuses joins past the cap, counting joins admitted since the last read", async () => {
    const presence = new MemoryPresence();
    await presence.add("room.a", { client: "c1", user: "" });
    const cap = new PresenceCapacity(presence, 3);
    await cap.admit("room.a", 0); // read: 1 member, +1
    await cap.admit("room.a", 10); // cached: 2, +1
    await expect(cap.admit("room.a", 20)).rejects.toMatchObject({ code: 429 });
    // A second later the count is read again: still 1 member in the store (the admitted joins
    // never happened), so there is room.
    await expect(cap.admit("room.a", 2_000)).resolves.toBeUndefined();
    await expect(cap.admit("room.b", 2_000)).resolves.toBeUndefined();
    expect(await cap.admit("room.b", 2_000).catch((e: unknown) => e)).not.toBeInstanceOf(ProtocolError);
  });
});
