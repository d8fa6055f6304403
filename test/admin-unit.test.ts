/**
 * The admin console's parts in-process: the login cookie and CSRF token, the login budget, and
 * channel tails on a hub over the memory broker (fake timers for their expiry).
 */
import pino from "pino";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AdminAuth, LOGIN_FAILURES_PER_MINUTE, LOGIN_TTL_MS } from "../src/admin/auth.js";
import { mostSubscribed } from "../src/admin/node-report.js";
import { ChannelTails, MAX_TAILS, SHOWN_DATA, TAIL_BUFFER, TAIL_IDLE_MS } from "../src/admin/tail.js";
import { MemoryBroker } from "../src/broker/memory.js";
import type { NamespaceOptions } from "../src/config/types.js";
import { MemoryHistory } from "../src/history/memory.js";
import { Hub } from "../src/hub/hub.js";
import { Metrics } from "../src/metrics.js";
import { MemoryPresence } from "../src/presence/memory.js";
import { Payload } from "../src/protocol/payload.js";
import { MemoryRevocations } from "../src/sessions/revocations.js";

const SECRET = "unit-admin-secret-0123456789abcdefghij";

function cookieOf(setCookie: string): string {
  return setCookie.split(";")[0] as string;
}

describe("AdminAuth", () => {
  it("accepts its own login until it expires, and nothing tampered or signed with another secret", () => {
    const auth = new AdminAuth(SECRET, false);
    const now = 1_800_000_000_000;
    const cookie = cookieOf(auth.login(now));
    expect(auth.verify(`other=1; ${cookie}`, now + 1000)).toEqual({ id: expect.any(String), csrf: expect.any(String) });
    expect(auth.verify(cookie, now + LOGIN_TTL_MS + 1)).toBeUndefined();
    const [expires, id, sig] = cookie.split("=")[1]!.split(".") as [string, string, string];
    expect(auth.verify(`natsedge_admin=${Number(expires) + LOGIN_TTL_MS}.${id}.${sig}`, now)).toBeUndefined();
    expect(auth.verify(`natsedge_admin=${expires}.${id}x.${sig}`, now)).toBeUndefined();
    expect(auth.verify("natsedge_admin=garbage", now)).toBeUndefined();
    expect(auth.verify("", now)).toBeUndefined();
    expect(new AdminAuth(`${SECRET}-rotated`, false).verify(cookie, now)).toBeUndefined();
  });

  it("derives a CSRF token per login that only that login accepts", () => {
    const auth = new AdminAuth(SECRET, false);
    const a = auth.verify(cookieOf(auth.login()))!;
    const b = auth.verify(cookieOf(auth.login()))!;
    expect(a.csrf).not.toBe(b.csrf);
    expect(auth.csrfMatches(a, a.csrf)).toBe(true);
    expect(auth.csrfMatches(a, b.csrf)).toBe(false);
    expect(auth.csrfMatches(a, "")).toBe(false);
  });

  it("marks the cookie Secure only on a TLS admin port", () => {
    expect(new AdminAuth(SECRET, true).login()).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
    expect(new AdminAuth(SECRET, false).login()).not.toContain("Secure");
  });

  it("refuses an address after its wrong secrets, and only that address", () => {
    const auth = new AdminAuth(SECRET, false);
    expect(auth.check(SECRET, "10.0.0.1")).toBe("ok");
    for (let i = 0; i < LOGIN_FAILURES_PER_MINUTE; i++) {
      expect(auth.refused("10.0.0.1")).toBeUndefined();
      expect(auth.check("wrong", "10.0.0.1")).toBe("wrong");
    }
    expect(auth.refused("10.0.0.1")).toBeGreaterThan(0);
    // Past the budget the secret is not compared at all, right or wrong.
    expect(auth.check(SECRET, "10.0.0.1")).toBe("refused");
    expect(auth.refused("10.0.0.2")).toBeUndefined();
  });
});

describe("mostSubscribed", () => {
  const channels = (counts: number[]) => () => counts.map((subscribers, i) => ({ ch: `room.c${i}`, subscribers, delivered: 0 }));
  const picked = (counts: number[], k: number) => mostSubscribed(channels(counts), k).top.map((c) => c.subscribers).sort((a, b) => b - a);

  it("takes the k most subscribed, ties at the cut filled up to k, everything when there are at most k", () => {
    expect(picked([1, 5, 3, 5, 2, 9], 3)).toEqual([9, 5, 5]);
    expect(picked([1, 4, 4, 4, 9], 3)).toEqual([9, 4, 4]);
    expect(picked([2, 2, 2, 2], 2)).toEqual([2, 2]);
    expect(picked([3, 1], 5)).toEqual([3, 1]);
    expect(picked([], 5)).toEqual([]);
    expect(mostSubscribed(channels([1, 2, 3]), 2).total).toBe(3);
  });
});

describe("ChannelTails", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  const NS: NamespaceOptions = { presence: false, joinLeave: false, clientPublish: true, anonymous: true, personal: false };
  const channel = (ch: string) => ({ ch, namespace: "room", options: NS });

  async function hub(): Promise<Hub> {
    const history = new MemoryHistory();
    const h = new Hub({
      broker: new MemoryBroker(history, 60_000),
      history,
      presence: new MemoryPresence(),
      revocations: new MemoryRevocations(),
      metrics: new Metrics(),
      log: pino({ level: "silent" }),
      presenceGraceMs: 0,
      maxPresenceMembers: 100,
    });
    await h.start();
    return h;
  }

  const publish = (h: Hub, ch: string, data: unknown) => h.publish({ ch, data: Payload.fromValue(data, "json"), ts: Date.now() }, {}, "api");

  it("holds the channel while read, keeps the newest publications, and lets go once nobody reads", async () => {
    vi.useFakeTimers();
    const h = await hub();
    const tails = new ChannelTails(h);
    expect(await tails.read(channel("room.a"), 0)).toEqual({ pubs: [], seq: 0 });
    expect([...h.channelCounts()]).toEqual([{ ch: "room.a", subscribers: 1, delivered: 0 }]);
    for (let n = 1; n <= TAIL_BUFFER + 5; n++) await publish(h, "room.a", { n });
    await publish(h, "room.other", { n: 0 });
    // Deliveries are counted per held channel (the console's rates); unheld channels are not.
    expect([...h.channelCounts()]).toEqual([{ ch: "room.a", subscribers: 1, delivered: TAIL_BUFFER + 5 }]);
    const r = await tails.read(channel("room.a"), 0);
    expect(r.seq).toBe(TAIL_BUFFER + 5);
    expect(r.pubs).toHaveLength(TAIL_BUFFER);
    expect(r.pubs[0]).toMatchObject({ seq: 6, data: '{"n":6}' });
    expect((await tails.read(channel("room.a"), r.seq - 1)).pubs.map((p) => p.seq)).toEqual([r.seq]);

    vi.advanceTimersByTime(TAIL_IDLE_MS + TAIL_IDLE_MS / 3);
    expect([...h.channelCounts()]).toEqual([]);
    await h.close();
  });

  it("cuts long data and refuses more than MAX_TAILS channels", async () => {
    const h = await hub();
    const tails = new ChannelTails(h);
    await tails.read(channel("room.long"), 0);
    await publish(h, "room.long", "x".repeat(SHOWN_DATA * 2));
    const [pub] = (await tails.read(channel("room.long"), 0)).pubs;
    expect(pub!.data).toHaveLength(SHOWN_DATA + 1);
    for (let i = 1; i < MAX_TAILS; i++) await tails.read(channel(`room.t${i}`), 0);
    await expect(tails.read(channel("room.one-too-many"), 0)).rejects.toMatchObject({ code: 429 });
    tails.closeAll();
    expect([...h.channelCounts()]).toEqual([]);
    await h.close();
  });
});
