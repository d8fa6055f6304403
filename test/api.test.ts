/**
 * The HTTP server API and origin checks, against real gateway processes and real clients.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type ClientOptions, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually } from "./helpers/signal.js";
import { signToken } from "./helpers/tokens.js";

const KEY = "api-test-key-0123-0123456789abcd";
const SECRET = "api-e2e-secret-at-least-32-bytes-long!!";

const NAMESPACES = `
namespaces:
  chat:
    presence: true
    joinLeave: true
    clientPublish: true
    anonymous: true
    history: { size: 10, ttl: 5m }
  news:
    anonymous: true
`;

const sign = (sub: string): Promise<string> => signToken({ sub }, SECRET);

let gw: GatewayProcess; // apiKey, allowedOrigins list, 1KiB frames, HS256
let noKey: GatewayProcess; // no apiKey, no allowedOrigins (same-origin only)
let embedded: GatewayProcess; // no config file: any origin

const open: TestClient[] = [];
async function connect(url: string, token?: string, opts?: ClientOptions): Promise<TestClient> {
  const c = await TestClient.connect(url, token, opts);
  open.push(c);
  return c;
}

/** Resolves with the HTTP status the WS upgrade got: 101 on success. */
async function upgradeStatus(url: string, origin: string): Promise<number> {
  const c = new TestClient(url, { headers: { Origin: origin } });
  try {
    await c.opened;
    c.close();
    return 101;
  } catch (err) {
    const m = /upgrade refused: (\d+)/.exec((err as Error).message);
    if (!m) throw err;
    return Number(m[1]);
  }
}

beforeAll(async () => {
  [gw, noKey, embedded] = await Promise.all([
    startGateway({
      config: {
        yaml:
          `apiKey: ${KEY}\nmaxFrameSize: 1KiB\npresenceGrace: 200ms\ntrustedProxies: ["127.0.0.1"]\n` +
          `allowedOrigins: ["https://app.example.com", "https://*.example.org", "http://localhost:3000"]\n` +
          `auth:\n  hmacSecret: "${SECRET}"\n${NAMESPACES}`,
      },
    }),
    startGateway({ config: { yaml: NAMESPACES } }),
    startGateway({ args: ["--api-key", KEY] }),
  ]);
});

afterAll(async () => {
  for (const c of open) c.terminate();
  await Promise.all([gw, noKey, embedded].map((g) => g?.stop()));
});

describe("API key", () => {
  it("answers 401 without a key, with a wrong key and with a malformed header", async () => {
    const body = { channel: "chat.a", data: 1 };
    // Wrong keys are throttled per client address (next test): these come from their own,
    // named by X-Forwarded-For, which the gateway believes from its trusted proxy 127.0.0.1.
    const from = { "x-forwarded-for": "192.0.2.1" };
    for (const opts of [
      { body, headers: from },
      { body, key: "wrong-key-0000", headers: from },
      { body, key: "", headers: from },
      { body, headers: { ...from, authorization: `Bearer ${KEY}` } },
      { body, headers: { ...from, authorization: KEY } },
    ]) {
      const res = await api(gw.url, "POST", "/api/publish", opts);
      expect(res.status, JSON.stringify(opts)).toBe(401);
      expect(res.body).toMatchObject({ error: { code: 401 } });
      expect(typeof (res.body.error as Frame).message).toBe("string");
    }
    for (const p of ["/api/presence?channel=chat.a", "/api/history?channel=chat.a"]) {
      expect((await api(gw.url, "GET", p, { headers: from })).status).toBe(401);
      expect((await api(gw.url, "GET", p, { key: "nope-nope-nope", headers: from })).status).toBe(401);
    }
    expect((await api(gw.url, "POST", "/api/disconnect", { body: { user: "x" }, headers: from })).status).toBe(401);
    // The scheme is case-insensitive.
    const ok = await api(gw.url, "POST", "/api/publish", { body, headers: { authorization: `APIKEY ${KEY}` } });
    expect(ok.status).toBe(200);
  });

  it("throttles wrong API keys per client address, proxy-aware", async () => {
    const body = { channel: "chat.a", data: 1 };
    const guesser = { "x-forwarded-for": "198.51.100.9, 127.0.0.1" };
    for (let i = 0; i < 10; i++) {
      expect((await api(gw.url, "POST", "/api/publish", { body, key: `guess-${i}`, headers: guesser })).status).toBe(401);
    }
    // Past the budget a key is not even checked: the right one is refused too, with a retry hint.
    for (const key of ["guess-10", KEY]) {
      const res = await api(gw.url, "POST", "/api/publish", { body, key, headers: guesser });
      expect(res.status).toBe(429);
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
    }
    // Another address is not affected.
    const other = { "x-forwarded-for": "198.51.100.10" };
    expect((await api(gw.url, "POST", "/api/publish", { body, key: KEY, headers: other })).status).toBe(200);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/natsedge_rate_limited_total\{kind="apikey"\} [1-9]/);
  });

  it("answers 401 to every request when no apiKey is configured", async () => {
    for (const key of [undefined, KEY, "anything-at-all"]) {
      const res = await api(noKey.url, "POST", "/api/publish", { key, body: { channel: "chat.a", data: 1 } });
      expect(res.status).toBe(401);
      expect(res.body).toMatchObject({ error: { code: 401, message: expect.stringMatching(/apiKey/) } });
      expect((await api(noKey.url, "GET", "/api/history?channel=chat.a", { key })).status).toBe(401);
    }
  });
});

describe("endpoints", () => {
  it("publish reaches JSON and msgpack subscribers", async () => {
    const j = await connect(gw.wsUrl);
    const m = await connect(gw.wsUrl, undefined, { format: "msgpack" });
    for (const c of [j, m]) expect((await c.request("subscribe", { ch: "chat.pub" })).ok).toBeDefined();
    const data = { text: "héllo", n: [1, 2.5, null, true], nested: { a: "b" } };
    const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.pub", data } });
    expect(res).toEqual({ status: 200, body: { offset: 1, epoch: expect.any(String) } });
    for (const c of [j, m]) {
      const push = await c.nextPush((p) => p.push === "pub" && p.ch === "chat.pub", `${c.format} pub`);
      expect(push).toEqual({ push: "pub", ch: "chat.pub", offset: 1, data });
    }
    // A namespace without history: no offset.
    const news = await connect(gw.wsUrl, undefined, { format: "msgpack" });
    expect((await news.request("subscribe", { ch: "news.x" })).ok).toBeDefined();
    const r2 = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "news.x", data: "s" } });
    expect(r2).toEqual({ status: 200, body: {} });
    expect(await news.nextPush((p) => p.push === "pub", "news pub")).toEqual({ push: "pub", ch: "news.x", data: "s" });
  });

  it("disconnect closes every connection of the user with 4003 and leaves others alone", async () => {
    const alice1 = await connect(gw.wsUrl, await sign("alice"));
    const alice2 = await connect(gw.wsUrl, await sign("alice"), { format: "msgpack" });
    const bob = await connect(gw.wsUrl, await sign("bob"));
    const res = await api(gw.url, "POST", "/api/disconnect", { key: KEY, body: { user: "alice" } });
    expect(res).toEqual({ status: 200, body: {} });
    for (const c of [alice1, alice2]) {
      const push = await c.nextPush((p) => p.push === "disconnect", "4003 push");
      expect(push).toMatchObject({ code: 4003, reconnect: false });
      expect((await c.closed).code).toBe(4003);
    }
    expect((await bob.request("ping")).ok).toEqual({});
    expect(bob.pushes.filter((p) => p.push === "disconnect")).toEqual([]);
    // Unknown user: still fine.
    expect((await api(gw.url, "POST", "/api/disconnect", { key: KEY, body: { user: "nobody" } })).status).toBe(200);
    for (const body of [{}, { user: "" }, { user: 5 }, { user: "x".repeat(257) }]) {
      const bad = await api(gw.url, "POST", "/api/disconnect", { key: KEY, body });
      expect(bad.status, JSON.stringify(body)).toBe(400);
    }
  });

  it("presence lists the subscribers of a channel", async () => {
    const empty = await api(gw.url, "GET", "/api/presence?channel=chat.pres", { key: KEY });
    expect(empty).toEqual({ status: 200, body: { clients: {} } });
    const a = await connect(gw.wsUrl, await sign("pat"));
    const b = await connect(gw.wsUrl);
    const ids: string[] = [];
    for (const c of [a, b]) {
      // The connect reply (request id 1) names the client id presence is keyed by.
      ids.push(((c.replies.get(1) as Frame).ok as Frame).client as string);
      expect((await c.request("subscribe", { ch: "chat.pres" })).ok).toBeDefined();
    }
    const res = await api(gw.url, "GET", "/api/presence?channel=chat.pres", { key: KEY });
    expect(res.status).toBe(200);
    const clients = res.body.clients as Record<string, Frame>;
    expect(Object.keys(clients).sort()).toEqual([...ids].sort());
    expect(Object.values(clients)).toEqual(expect.arrayContaining([{ user: "pat" }, { user: "" }]));
    a.close();
    await a.closed;
    // A departed client stays for the presence grace period (200ms here), then goes.
    const after = await eventually(
      async () => {
        const now = (await api(gw.url, "GET", "/api/presence?channel=chat.pres", { key: KEY })).body.clients as Record<string, Frame>;
        return Object.keys(now).length === 1 ? now : undefined;
      },
      "one client left in presence",
      5_000,
      20,
    );
    expect(Object.values(after)).toEqual([{ user: "" }]);
    // No presence in that namespace.
    expect((await api(gw.url, "GET", "/api/presence?channel=news.x", { key: KEY })).status).toBe(400);
  });

  it("history returns the newest publications up to limit, with offset and epoch", async () => {
    for (let i = 1; i <= 5; i++) {
      const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.hist", data: { i } } });
      expect(res.body).toEqual({ offset: i, epoch: expect.any(String) });
    }
    const all = await api(gw.url, "GET", "/api/history?channel=chat.hist", { key: KEY });
    expect(all.status).toBe(200);
    expect(all.body.offset).toBe(5);
    expect(typeof all.body.epoch).toBe("string");
    expect((all.body.pubs as Frame[]).map((p) => p.data)).toEqual([1, 2, 3, 4, 5].map((i) => ({ i })));

    const two = await api(gw.url, "GET", "/api/history?channel=chat.hist&limit=2", { key: KEY });
    expect(two.body).toEqual({
      offset: 5,
      epoch: all.body.epoch,
      pubs: [
        { offset: 4, data: { i: 4 } },
        { offset: 5, data: { i: 5 } },
      ],
    });
    // A client's publication carries its publisher info; the same history over WS.
    const c = await connect(gw.wsUrl);
    expect((await c.request("publish", { ch: "chat.hist", data: "ws" })).ok).toEqual({ offset: 6, epoch: expect.any(String) });
    const one = await api(gw.url, "GET", "/api/history?channel=chat.hist&limit=1", { key: KEY });
    expect(one.body.pubs).toEqual([{ offset: 6, data: "ws", info: { client: expect.any(String), user: "" } }]);

    for (const limit of ["0", "-1", "abc", "1.5", "2147483648", "99999999999"]) {
      const bad = await api(gw.url, "GET", `/api/history?channel=chat.hist&limit=${limit}`, { key: KEY });
      expect(bad.status, limit).toBe(400);
    }
    // Above the namespace's size (10): what is retained, not an error.
    const over = await api(gw.url, "GET", "/api/history?channel=chat.hist&limit=2147483647", { key: KEY });
    expect(over.status).toBe(200);
    expect(over.body.pubs).toHaveLength(6);
    const unused = await api(gw.url, "GET", "/api/history?channel=chat.never", { key: KEY });
    expect(unused.body).toMatchObject({ offset: 0, pubs: [] });
    expect((await api(gw.url, "GET", "/api/history?channel=news.x", { key: KEY })).status).toBe(400);
  });

  it("dedupes publishes by idempotencyKey", async () => {
    const c = await connect(gw.wsUrl);
    expect((await c.request("subscribe", { ch: "chat.idem" })).ok).toBeDefined();
    const body = { channel: "chat.idem", data: "once", idempotencyKey: "k-1" };
    const first = await api(gw.url, "POST", "/api/publish", { key: KEY, body });
    const second = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { ...body, data: "twice" } });
    expect(first.body).toEqual({ offset: 1, epoch: expect.any(String) });
    expect(second.body).toEqual({ offset: 1, epoch: expect.any(String) });
    // Same key on another channel is a different publication.
    const other = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { ...body, channel: "chat.idem2" } });
    expect(other.body).toEqual({ offset: 1, epoch: expect.any(String) });
    const third = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.idem", data: "next" } });
    expect(third.body).toEqual({ offset: 2, epoch: expect.any(String) });
    await c.waitFor(() => c.pubs("chat.idem").find((p) => p.data === "next"), "the publication after the duplicate");
    expect(c.pubs("chat.idem").map((p) => p.data)).toEqual(["once", "next"]);
    for (const idempotencyKey of ["", 5, "k".repeat(129)]) {
      const bad = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { ...body, idempotencyKey } });
      expect(bad.status).toBe(400);
    }
  });
});

describe("errors", () => {
  it("400 for bodies that are not a JSON object and for bad channels", async () => {
    for (const body of ["not json{", "[1,2]", "42", "null", '"str"', "", "{\"channel\":"]) {
      const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body, headers: { "content-type": "application/json" } });
      expect(res.status, body).toBe(400);
      expect(res.body).toMatchObject({ error: { code: 400, message: expect.any(String) } });
    }
    for (const channel of [undefined, 5, "", "chat..x", "chat.*", "chat.>", "chat.a b", "x".repeat(300)]) {
      const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel, data: 1 } });
      expect(res.status, String(channel)).toBe(400);
    }
    const noData = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.a" } });
    expect(noData.status).toBe(400);
    // Data too deeply nested to re-encode safely.
    const deep = `{"channel":"chat.a","data":${"[".repeat(300)}${"]".repeat(300)}}`;
    const tooDeep = await api(gw.url, "POST", "/api/publish", { key: KEY, body: deep });
    expect(tooDeep).toMatchObject({ status: 400, body: { error: { code: 400, message: expect.stringMatching(/nested/) } } });
    expect((await api(gw.url, "GET", "/api/history", { key: KEY })).status).toBe(400);
    expect((await api(gw.url, "GET", "/api/presence?channel=chat..a", { key: KEY })).status).toBe(400);
  });

  it("413 for a body over maxFrameSize", async () => {
    for (const size of [2048, 256 * 1024]) {
      const data = "x".repeat(size);
      const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.big", data } });
      expect(res.status, String(size)).toBe(413);
      expect(res.body).toMatchObject({ error: { code: 413 } });
    }
    // Just under the limit is fine.
    const fits = await api(gw.url, "POST", "/api/publish", {
      key: KEY,
      body: { channel: "chat.big", data: "y".repeat(900) },
    });
    expect(fits.status).toBe(200);
    // And the server keeps serving.
    expect((await api(gw.url, "GET", "/api/history?channel=chat.big&limit=1", { key: KEY })).status).toBe(200);
  });

  it("404 for unknown endpoints and namespaces", async () => {
    for (const [method, p] of [
      ["GET", "/api/nope"],
      ["POST", "/api/nope"],
      ["GET", "/api/publish"],
      ["GET", "/api"],
      ["GET", "/nothing-here"],
    ] as const) {
      const res = await api(gw.url, method, p, { key: KEY });
      expect(res.status, `${method} ${p}`).toBe(404);
      expect(res.body).toMatchObject({ error: { code: 404 } });
    }
    const ns = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "nope.a", data: 1 } });
    expect(ns).toMatchObject({ status: 404, body: { error: { code: 404 } } });
    expect((await api(gw.url, "GET", "/api/history?channel=nope.a", { key: KEY })).status).toBe(404);
    expect((await api(gw.url, "GET", "/api/presence?channel=__proto__.a", { key: KEY })).status).toBe(404);
    expect((await api(gw.url, "GET", "/api/presence?channel=constructor.x", { key: KEY })).status).toBe(404);
  });
});

describe("origins", () => {
  const publish = (url: string, origin: string | undefined, key = KEY) =>
    api(url, "POST", "/api/publish", {
      key,
      body: { channel: "chat.o", data: 1 },
      headers: origin === undefined ? {} : { origin },
    });

  it("checks the allowedOrigins list (with wildcards) on /api and on the WebSocket upgrade", async () => {
    const allowed = [
      "https://app.example.com",
      "https://a.example.org",
      "https://a.b.example.org",
      "http://localhost:3000",
    ];
    const refused = [
      "https://evil.com",
      "http://app.example.com",
      "https://app.example.com:8443",
      "https://example.org",
      "https://a.example.org.evil.com",
      "https://evilexample.org",
      "http://localhost:3001",
      `http://127.0.0.1:${gw.port}`,
      "null",
    ];
    for (const o of allowed) {
      expect((await publish(gw.url, o)).status, o).toBe(200);
      expect(await upgradeStatus(gw.wsUrl, o), o).toBe(101);
    }
    for (const o of refused) {
      const res = await publish(gw.url, o);
      expect(res.status, o).toBe(403);
      expect(res.body).toMatchObject({ error: { code: 403 } });
      expect(await upgradeStatus(gw.wsUrl, o), o).toBe(403);
    }
    // Origin is checked before the key: a refused origin does not learn whether the key is right.
    expect((await publish(gw.url, "https://evil.com", "wrong-key-000")).status).toBe(403);
    // No Origin header (non-browser clients) passes.
    expect((await publish(gw.url, undefined)).status).toBe(200);
    const c = await connect(gw.wsUrl);
    expect((await c.request("ping")).ok).toEqual({});
  });

  it("allows only same-origin (or no Origin) without a list", async () => {
    const same = `http://127.0.0.1:${noKey.port}`;
    // The API has no key here, so passing the origin check means reaching the 401.
    expect((await publish(noKey.url, same)).status).toBe(401);
    expect((await publish(noKey.url, undefined)).status).toBe(401);
    expect((await publish(noKey.url, "https://evil.com")).status).toBe(403);
    expect((await publish(noKey.url, `http://127.0.0.1:${noKey.port + 1}`)).status).toBe(403);
    expect(await upgradeStatus(noKey.wsUrl, same)).toBe(101);
    expect(await upgradeStatus(noKey.wsUrl, "https://evil.com")).toBe(403);
    expect(await upgradeStatus(noKey.wsUrl, "not a url")).toBe(403);
  });

  it("allows any origin in the embedded default", async () => {
    for (const o of ["https://evil.com", "http://localhost:1234", "null"]) {
      const res = await api(embedded.url, "POST", "/api/publish", {
        key: KEY,
        body: { channel: "public.o", data: 1 },
        headers: { origin: o },
      });
      expect(res.status, o).toBe(200);
      expect(await upgradeStatus(embedded.wsUrl, o), o).toBe(101);
    }
  });
});

describe("server-side subscriptions", () => {
  it("subscribe reaches every connection of the user with a push; unsubscribe ends it", async () => {
    const alice1 = await connect(gw.wsUrl, await sign("sally"));
    const alice2 = await connect(gw.wsUrl, await sign("sally"), { format: "msgpack" });
    const bob = await connect(gw.wsUrl, await sign("bert"));
    for (const c of [alice1, bob]) expect((await c.request("subscribe", { ch: "chat.marker" })).ok).toBeDefined();
    await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.srv", data: "before" } });

    const sub = await api(gw.url, "POST", "/api/subscribe", { key: KEY, body: { user: "sally", channel: "chat.srv" } });
    expect(sub).toEqual({ status: 200, body: {} });
    for (const c of [alice1, alice2]) {
      const push = await c.nextPush((p) => p.push === "sub", `${c.format} subscribe push`);
      // The position to recover from later: the publication before the subscription is not sent.
      expect(push).toEqual({ push: "sub", ch: "chat.srv", offset: 1, epoch: expect.any(String) });
    }
    // A second subscribe of an already subscribed connection changes nothing.
    expect((await api(gw.url, "POST", "/api/subscribe", { key: KEY, body: { user: "sally", channel: "chat.srv" } })).status).toBe(200);
    // Server-side subscriptions are in presence like any other.
    const presence = await api(gw.url, "GET", "/api/presence_stats?channel=chat.srv", { key: KEY });
    expect(presence.body).toEqual({ clients: 2, users: 1 });

    await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.srv", data: "live" } });
    for (const c of [alice1, alice2]) expect(await c.nextPush((p) => p.push === "pub", "pub")).toMatchObject({ ch: "chat.srv", offset: 2, data: "live" });
    expect(alice1.pushes.filter((p) => p.push === "sub")).toEqual([]);
    expect(bob.pubs("chat.srv")).toEqual([]);

    const unsub = await api(gw.url, "POST", "/api/unsubscribe", { key: KEY, body: { user: "sally", channel: "chat.srv" } });
    expect(unsub).toEqual({ status: 200, body: {} });
    for (const c of [alice1, alice2]) {
      expect(await c.nextPush((p) => p.push === "unsub", "unsub push")).toEqual({ push: "unsub", ch: "chat.srv", code: 403, reason: "unsubscribed by server" });
    }
    // Nothing more arrives: a publication after it is not delivered, one to another channel is.
    await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.srv", data: "after" } });
    await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.marker", data: "m" } });
    await alice1.nextPush((p) => p.push === "pub" && p.ch === "chat.marker", "marker");
    expect(alice1.pubs("chat.srv")).toEqual([]);
    // A subscription the client made ends the same way.
    await api(gw.url, "POST", "/api/unsubscribe", { key: KEY, body: { user: "bert", channel: "chat.marker" } });
    expect(await bob.nextPush((p) => p.push === "unsub", "bob unsub")).toMatchObject({ ch: "chat.marker", code: 403 });
    // Unknown users and channels nobody holds are fine.
    expect((await api(gw.url, "POST", "/api/unsubscribe", { key: KEY, body: { user: "nobody", channel: "chat.none" } })).status).toBe(200);
  });

  it("a server-side subscription is not limited by the token's channels, also after a refresh", async () => {
    const token = await signToken({ sub: "tess", channels: ["chat.mine"] }, SECRET);
    const c = await connect(gw.wsUrl, token);
    expect((await c.request("subscribe", { ch: "chat.theirs" })).error).toMatchObject({ code: 403 });
    await api(gw.url, "POST", "/api/subscribe", { key: KEY, body: { user: "tess", channel: "chat.theirs" } });
    await c.nextPush((p) => p.push === "sub", "subscribe push");
    expect((await c.request("refresh", { token })).ok).toEqual({});
    await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.theirs", data: "still here" } });
    expect(await c.nextPush((p) => p.push === "pub", "pub after refresh")).toMatchObject({ ch: "chat.theirs", data: "still here" });
    expect(c.pushes.filter((p) => p.push === "unsub")).toEqual([]);
    // The connection's own subscribe is still the token's to allow; where it does, it conflicts.
    expect((await c.request("subscribe", { ch: "chat.theirs" })).error).toMatchObject({ code: 403 });
    await api(gw.url, "POST", "/api/subscribe", { key: KEY, body: { user: "tess", channel: "chat.mine" } });
    await c.nextPush((p) => p.push === "sub" && p.ch === "chat.mine", "second subscribe push");
    expect((await c.request("subscribe", { ch: "chat.mine" })).error).toMatchObject({ code: 409 });
  });

  it("refuses bad users and channels with 400/404", async () => {
    for (const op of ["subscribe", "unsubscribe"]) {
      for (const body of [{ channel: "chat.a" }, { user: "", channel: "chat.a" }, { user: "x".repeat(257), channel: "chat.a" }, { user: "u" }, { user: "u", channel: "chat..a" }]) {
        const res = await api(gw.url, "POST", `/api/${op}`, { key: KEY, body });
        expect(res.status, `${op} ${JSON.stringify(body)}`).toBe(400);
      }
      expect((await api(gw.url, "POST", `/api/${op}`, { key: KEY, body: { user: "u", channel: "nope.a" } })).status).toBe(404);
    }
  });
});

describe("broadcast and batch", () => {
  it("broadcast publishes one data to many channels, with a result per channel", async () => {
    const c = await connect(gw.wsUrl);
    for (const ch of ["chat.b1", "news.b2"]) expect((await c.request("subscribe", { ch })).ok).toBeDefined();
    const res = await api(gw.url, "POST", "/api/broadcast", {
      key: KEY,
      body: { channels: ["chat.b1", "news.b2", "nope.b3", "chat..b4", 5], data: { v: 1 } },
    });
    expect(res.status).toBe(200);
    expect(res.body.results).toEqual([
      { offset: 1, epoch: expect.any(String) },
      {},
      { error: { code: 404, message: 'unknown namespace "nope"' } },
      { error: { code: 400, message: expect.stringMatching(/empty token/) } },
      { error: { code: 400, message: "channel must be a string" } },
    ]);
    for (const ch of ["chat.b1", "news.b2"]) expect(await c.nextPush((p) => p.push === "pub" && p.ch === ch, ch)).toMatchObject({ data: { v: 1 } });
  });

  it("batch runs commands in order, each with its result or error", async () => {
    const res = await api(gw.url, "POST", "/api/batch", {
      key: KEY,
      body: {
        commands: [
          { op: "publish", params: { channel: "chat.bt", data: 1 } },
          { op: "publish", params: { channel: "chat.bt", data: 2 } },
          { op: "history", params: { channel: "chat.bt", limit: 1, reverse: true } },
          { op: "presence_stats", params: { channel: "news.x" } },
          { op: "info" },
          { op: "batch", params: { commands: [] } },
          "publish",
          { op: "publish", params: [] },
        ],
      },
    });
    expect(res.status).toBe(200);
    const results = res.body.results as Frame[];
    expect(results.slice(0, 4)).toEqual([
      { offset: 1, epoch: expect.any(String) },
      { offset: 2, epoch: expect.any(String) },
      { offset: 2, epoch: expect.any(String), pubs: [{ offset: 2, data: 2 }] },
      { error: { code: 400, message: "namespace news has no presence" } },
    ]);
    for (const r of results.slice(4, 6)) expect(r).toEqual({ error: { code: 400, message: expect.stringMatching(/^op must be one of publish, /) } });
    expect(results[6]).toEqual({ error: { code: 400, message: "a command must be an object {op, params}" } });
    expect(results[7]).toEqual({ error: { code: 400, message: "params must be an object" } });
  });

  it("bounds the lists: 400 past them, 413 past the body size", async () => {
    const channels = Array.from({ length: 1001 }, (_, i) => `public.c${i}`);
    const bad: Array<[string, unknown]> = [
      ["broadcast", { channels: channels, data: 1 }],
      ["broadcast", { channels: [], data: 1 }],
      ["broadcast", { channels: "public.a", data: 1 }],
      ["broadcast", { channels: ["public.a"] }],
      ["batch", { commands: Array.from({ length: 101 }, () => ({ op: "publish", params: { channel: "public.a", data: 1 } })) }],
      ["batch", { commands: [] }],
      ["batch", { commands: { op: "publish" } }],
    ];
    for (const [op, body] of bad) {
      const res = await api(embedded.url, "POST", `/api/${op}`, { key: KEY, body });
      expect(res.status, `${op} ${JSON.stringify(body).slice(0, 80)}`).toBe(400);
      expect(res.body).toMatchObject({ error: { code: 400, message: expect.stringMatching(/^(channels|commands|data)/) } });
    }
    // At the bounds: served.
    const all = await api(embedded.url, "POST", "/api/broadcast", { key: KEY, body: { channels: channels.slice(0, 1000), data: 1 } });
    expect(all.status).toBe(200);
    expect((all.body.results as Frame[]).filter((r) => "offset" in r)).toHaveLength(1000);
    // The body bound (maxFrameSize) holds for a batch as for any body.
    const big = { commands: Array.from({ length: 100 }, () => ({ op: "publish", params: { channel: "chat.a", data: "x".repeat(20) } })) };
    expect((await api(gw.url, "POST", "/api/batch", { key: KEY, body: big })).status).toBe(413);
  });
});

describe("channels and info", () => {
  it("lists active channels with subscriber counts, filtered by pattern, bounded by limit", async () => {
    const a = await connect(gw.wsUrl);
    const b = await connect(gw.wsUrl, undefined, { format: "msgpack" });
    for (const c of [a, b]) expect((await c.request("subscribe", { ch: "chat.ls1" })).ok).toBeDefined();
    expect((await a.request("subscribe", { ch: "chat.ls2" })).ok).toBeDefined();
    expect((await a.request("subscribe", { ch: "news.ls3" })).ok).toBeDefined();
    const all = await api(gw.url, "GET", "/api/channels", { key: KEY });
    expect(all.status).toBe(200);
    expect(all.body.channels).toMatchObject({ "chat.ls1": { subscribers: 2 }, "chat.ls2": { subscribers: 1 }, "news.ls3": { subscribers: 1 } });
    const some = await api(gw.url, "GET", "/api/channels?pattern=*.ls1", { key: KEY });
    expect(some.body).toEqual({ channels: { "chat.ls1": { subscribers: 2 } } });
    const chat = await api(gw.url, "GET", "/api/channels?pattern=chat.*", { key: KEY });
    expect(Object.keys(chat.body.channels as Frame)).toEqual(expect.arrayContaining(["chat.ls1", "chat.ls2"]));
    expect(Object.keys(chat.body.channels as Frame).every((ch) => ch.startsWith("chat."))).toBe(true);
    const one = await api(gw.url, "GET", "/api/channels?pattern=chat.>&limit=1", { key: KEY });
    expect(one.body).toMatchObject({ truncated: true });
    expect(Object.keys(one.body.channels as Frame)).toHaveLength(1);
    // Leaving frees the channel.
    a.close();
    await eventually(async () => {
      const now = await api(gw.url, "GET", "/api/channels?pattern=*.ls1", { key: KEY });
      return JSON.stringify(now.body) === JSON.stringify({ channels: { "chat.ls1": { subscribers: 1 } } }) ? true : undefined;
    }, "chat.ls1 down to one subscriber");
    for (const q of ["pattern=", "pattern=chat.>.x", "pattern=chat..x", "pattern=chat.a*", `pattern=${"a".repeat(256)}`, "limit=0", "limit=1001", "limit=x"]) {
      const res = await api(gw.url, "GET", `/api/channels?${q}`, { key: KEY });
      expect(res.status, q).toBe(400);
      expect(res.body).toMatchObject({ error: { code: 400, message: expect.stringMatching(/^(pattern|limit) must be/) } });
    }
  });

  it("info describes the node", async () => {
    const c = await connect(gw.wsUrl);
    expect((await c.request("subscribe", { ch: "chat.info" })).ok).toBeDefined();
    const res = await api(gw.url, "GET", "/api/info", { key: KEY });
    expect(res.status).toBe(200);
    const nodes = res.body.nodes as Frame[];
    expect(nodes).toHaveLength(1);
    const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    expect(nodes[0]).toEqual({
      node: expect.any(String),
      version,
      uptime: expect.any(Number),
      connections: expect.any(Number),
      subscriptions: expect.any(Number),
      channels: expect.any(Number),
    });
    expect(nodes[0]?.connections).toBeGreaterThanOrEqual(1);
    expect(nodes[0]?.subscriptions).toBeGreaterThanOrEqual(1);
    expect((await api(gw.url, "GET", "/api/info", { key: "wrong-key-1234" , headers: { "x-forwarded-for": "192.0.2.77" } })).status).toBe(401);
  });
});
