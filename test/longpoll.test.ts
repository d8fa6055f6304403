/**
 * HTTP long-poll (`POST /lp/rpc`, `POST /lp/poll`) against one real gateway on the memory broker:
 * signed sessions, batched commands, cursors and recovery, held polls and their latency, per
 * channel errors, malformed bodies, CORS, clean-up of aborted polls, presence of long-poll
 * clients, and publications crossing between WebSocket and long-poll clients.
 */
import { Packr, Unpackr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { api, TestClient, type Format, type Frame } from "./helpers/client.js";
import { metricValue } from "./helpers/gateway.js";
import { eventually } from "./helpers/signal.js";
import { ok, useGateway } from "./helpers/suite.js";
import { signToken } from "./helpers/tokens.js";

const API_KEY = "longpoll-test-api-key-0123456789";
const JWT_SECRET = "longpoll-test-jwt-hmac-secret-0123456789";
const SESSION_SECRET = "longpoll-test-session-secret-0123456789abcdef";
const ORIGIN = "https://app.example.com";
const MAX_SUBS = 4;
const MAX_FRAME = 4096;

const CONFIG = `
apiKey: ${API_KEY}
sessionSecret: "${SESSION_SECRET}"
presenceGrace: 0s
# Channels stay subscribed this long after their last poll; short, so tests see them released.
pollWarmTime: 1s
commandRate: 0
maxSubscriptions: ${MAX_SUBS}
maxFrameSize: ${MAX_FRAME}
allowedOrigins: ["${ORIGIN}"]
auth:
  hmacSecret: "${JWT_SECRET}"
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  tiny: { history: { size: 3, ttl: 5m }, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
  secure: { history: { size: 10, ttl: 5m }, clientPublish: true }
  user: { personal: true, history: { size: 10, ttl: 5m }, clientPublish: true }
`;

const FORMATS: Format[] = ["json", "msgpack"];
const MSGPACK = "application/msgpack";
const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

const shared = useGateway({ config: { yaml: CONFIG } });

let seq = 0;
const chan = (ns: string): string => `${ns}.lp${++seq}-${process.pid}`;
const sign = (sub: string, extra: Record<string, unknown> = {}): Promise<string> => signToken({ sub, ...extra }, JWT_SECRET);

// --- HTTP plumbing ------------------------------------------------------------------------------

interface HttpResult {
  status: number;
  headers: Headers;
  body: Frame;
  ms: number;
}

interface PostOptions {
  format?: Format;
  headers?: Record<string, string>;
  /** Sent as is instead of encoding `body`. */
  raw?: string | Buffer;
  signal?: AbortSignal;
}

function encodeBody(format: Format, body: unknown): Buffer {
  return format === "json" ? Buffer.from(JSON.stringify(body), "utf8") : packr.pack(body);
}

async function post(path: string, body: unknown, opts: PostOptions = {}): Promise<HttpResult> {
  const format = opts.format ?? "json";
  const started = performance.now();
  const res = await fetch(shared.gw.url + path, {
    method: "POST",
    headers: { "content-type": format === "json" ? "application/json" : MSGPACK, ...opts.headers },
    body: opts.raw ?? encodeBody(format, body),
    signal: opts.signal,
  });
  const bytes = Buffer.from(await res.arrayBuffer());
  const ms = performance.now() - started;
  const type = res.headers.get("content-type") ?? "";
  let decoded: Frame;
  if (type.startsWith(MSGPACK)) {
    decoded = unpackr.unpack(bytes) as Frame;
  } else {
    try {
      decoded = JSON.parse(bytes.toString("utf8")) as Frame;
    } catch {
      decoded = { raw: bytes.toString("utf8") };
    }
  }
  return { status: res.status, headers: res.headers, body: decoded, ms };
}

/** POST /lp/rpc; fails the test unless the request itself succeeded (commands may still fail). */
async function rpc(cmds: Frame[], opts: PostOptions & { session?: string } = {}): Promise<Frame[]> {
  const body: Frame = { cmds };
  if (opts.session !== undefined) body.session = opts.session;
  const res = await post("/lp/rpc", body, opts);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const replies = res.body.replies as Frame[];
  expect(Array.isArray(replies)).toBe(true);
  return replies;
}

/** One command's `ok`, failing the test on an error reply. */
async function rpc1(op: string, args: Frame, session: string, format: Format = "json"): Promise<Frame> {
  const [reply] = await rpc([{ id: 1, op, ...args }], { session, format });
  return ok(reply as Frame);
}

async function connect(format: Format = "json", token?: string): Promise<{ session: string; client: string; user: string }> {
  const [reply] = await rpc([{ id: 1, op: "connect", ...(token === undefined ? {} : { token }) }], { format });
  const hello = ok(reply as Frame);
  return { session: hello.session as string, client: hello.client as string, user: hello.user as string };
}

interface Cursor {
  offset: number;
  epoch: string;
}

interface PollAnswer {
  subs: Record<string, { offset?: number; epoch?: string; recovered?: boolean }>;
  pubs: Frame[];
  errors?: Record<string, { code: number; message: string }>;
  presence?: Frame[];
}

async function pollRaw(
  session: string,
  subs: Record<string, Cursor | null>,
  opts: PostOptions & { timeout?: number } = {},
): Promise<HttpResult> {
  const body: Frame = { session, subs };
  if (opts.timeout !== undefined) body.timeout = opts.timeout;
  return post("/lp/poll", body, opts);
}

async function poll(
  session: string,
  subs: Record<string, Cursor | null>,
  opts: PostOptions & { timeout?: number } = {},
): Promise<PollAnswer & { ms: number }> {
  const res = await pollRaw(session, subs, opts);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { ...(res.body as unknown as PollAnswer), ms: res.ms };
}

async function apiPublish(ch: string, data: unknown): Promise<Cursor> {
  const res = await api(shared.gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body as unknown as Cursor;
}

/** A series on the admin /metrics: `name` or `name{label="value"}`. */
const metric = (series: string): Promise<number> => metricValue(shared.gw, series);

const waitMetric = (name: string, want: number, timeoutMs = 10_000): Promise<number> =>
  eventually(async () => ((await metric(name)) === want ? want : undefined), `${name} == ${want}`, timeoutMs, 20);

const cursorOf = (a: PollAnswer, ch: string): Cursor => {
  const s = a.subs[ch];
  expect(s, `no cursor for ${ch} in ${JSON.stringify(a)}`).toBeDefined();
  return { offset: s?.offset as number, epoch: s?.epoch as string };
};

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

// --- tests --------------------------------------------------------------------------------------

describe("POST /lp/rpc", () => {
  it.each(FORMATS)("connect without a token returns an anonymous signed session (%s)", async (format) => {
    const [reply] = await rpc([{ id: 7, op: "connect" }], { format });
    expect(reply).toEqual({
      id: 7,
      ok: { client: expect.any(String), user: "", node: expect.any(String), ping: expect.any(Number), session: expect.any(String) },
    });
    const session = ((reply as Frame).ok as Frame).session as string;
    expect(session).toMatch(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    // The session is usable at once.
    expect(await rpc1("ping", {}, session, format)).toEqual({});
  });

  it.each(FORMATS)("connect with a JWT in the token field and in Authorization: Bearer (%s)", async (format) => {
    const byField = await connect(format, await sign("alice"));
    expect(byField.user).toBe("alice");

    const [viaHeader] = await rpc([{ id: 1, op: "connect" }], {
      format,
      headers: { authorization: `Bearer ${await sign("bob")}` },
    });
    const hello = ok(viaHeader as Frame);
    expect(hello.user).toBe("bob");
    expect(typeof hello.session).toBe("string");

    // The session carries the identity: a token-only namespace works without resending the token.
    const ch = chan("secure");
    expect(await rpc1("publish", { ch, data: { by: "bob" } }, hello.session as string, format)).toMatchObject({ offset: 1 });

    // A bad token is a command error (no session), not an HTTP error.
    const [bad] = await rpc([{ id: 1, op: "connect", token: "not.a.jwt" }], { format });
    expect((bad as Frame).error).toMatchObject({ code: 401 });
    expect((bad as Frame).ok).toBeUndefined();
  });

  it.each(FORMATS)("connect + publish + presence + history in ONE request answer in order (%s)", async (format) => {
    const ch = chan("chat");
    const replies = await rpc(
      [
        { id: 1, op: "connect" },
        { id: 2, op: "publish", ch, data: { text: "first" } },
        { id: "three", op: "presence", ch },
        { id: 4, op: "publish", ch, data: { text: "second" } },
        { id: 5, op: "history", ch },
      ],
      { format },
    );
    expect(replies.map((r) => r.id)).toEqual([1, 2, "three", 4, 5]);
    const hello = ok(replies[0] as Frame);
    expect(typeof hello.session).toBe("string");
    expect(ok(replies[1] as Frame)).toEqual({ offset: 1, epoch: expect.any(String) });
    expect(ok(replies[2] as Frame)).toEqual({ clients: {} });
    expect(ok(replies[3] as Frame)).toMatchObject({ offset: 2 });
    const history = ok(replies[4] as Frame);
    expect(history).toEqual({
      offset: 2,
      epoch: (ok(replies[1] as Frame) as Frame).epoch,
      pubs: [
        { offset: 1, data: { text: "first" }, info: { client: hello.client, user: "" } },
        { offset: 2, data: { text: "second" }, info: { client: hello.client, user: "" } },
      ],
    });
  });

  it("commands before connect and without a session are refused", async () => {
    const [reply] = await rpc([{ id: 1, op: "ping" }]);
    expect((reply as Frame).error).toMatchObject({ code: 401 });
  });

  it.each(FORMATS)("publish / presence / history / unsubscribe / refresh over a session (%s)", async (format) => {
    const ch = chan("chat");
    const { session, client } = await connect(format, await sign("dave"));
    expect(await rpc1("publish", { ch, data: [1, 2, 3] }, session, format)).toMatchObject({ offset: 1 });
    expect(await rpc1("presence", { ch }, session, format)).toEqual({ clients: {} });
    expect(await rpc1("history", { ch, limit: 1 }, session, format)).toMatchObject({
      offset: 1,
      pubs: [{ offset: 1, data: [1, 2, 3], info: { client, user: "dave" } }],
    });
    // Over long-poll a channel is subscribed by polling it.
    const [sub] = await rpc([{ id: 1, op: "subscribe", ch }], { session, format });
    expect((sub as Frame).error).toMatchObject({ code: 400 });
    expect(await rpc1("unsubscribe", { ch }, session, format)).toEqual({});

    // refresh hands out a new session for the same client and user.
    const refreshed = await rpc1("refresh", { token: await sign("dave", { exp: Math.floor(Date.now() / 1000) + 7200 }) }, session, format);
    expect(typeof refreshed.session).toBe("string");
    expect(refreshed.session).not.toBe(session);
    const after = await rpc1("publish", { ch, data: "after refresh" }, refreshed.session as string, format);
    expect(after).toMatchObject({ offset: 2 });
    const hist = await rpc1("history", { ch, limit: 1 }, refreshed.session as string, format);
    expect((hist.pubs as Frame[])[0]).toMatchObject({ info: { client, user: "dave" } });

    // Another user's token cannot refresh this session.
    const [other] = await rpc([{ id: 1, op: "refresh", token: await sign("eve") }], { session, format });
    expect((other as Frame).error).toMatchObject({ code: 403 });

    // Anonymous sessions cannot refresh at all.
    const anon = await connect(format);
    const [refused] = await rpc([{ id: 1, op: "refresh", token: await sign("dave") }], { session: anon.session, format });
    expect((refused as Frame).error).toMatchObject({ code: 400 });
  });

  it("a forged session is 401 on rpc and poll", async () => {
    const { session } = await connect("json", await sign("frank"));
    const [body, sig] = session.split(".") as [string, string];
    const payload = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Frame;
    const forgedBody = Buffer.from(JSON.stringify({ ...payload, u: "admin" }), "utf8").toString("base64url");
    const forgeries = [
      `${forgedBody}.${sig}`, // another user under the old signature
      `${body}.${Buffer.alloc(32, 1).toString("base64url")}`, // another signature
      `${body}.`,
      "no-dot-at-all",
      "",
    ];
    for (const forged of forgeries) {
      const r = await post("/lp/rpc", { session: forged, cmds: [{ id: 1, op: "ping" }] });
      expect(r.status, forged).toBe(401);
      expect(r.body).toMatchObject({ error: { code: 401 } });
      const p = await pollRaw(forged, { [chan("chat")]: null }, { timeout: 0 });
      expect(p.status, forged).toBe(401);
    }
    // Poll requires a session.
    const none = await post("/lp/poll", { subs: { [chan("chat")]: null } });
    expect(none.status).toBe(401);
    // The genuine one still works.
    expect(await rpc1("ping", {}, session)).toEqual({});
  });

  it("a session expires with its token (401 afterwards)", async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const { session } = await connect("json", await sign("grace", { exp }));
    expect(await rpc1("ping", {}, session)).toEqual({});
    const ch = chan("chat");
    // Bounded: the token expires within 2 s; allow 8.
    const status = await eventually(
      async () => {
        const s = (await post("/lp/rpc", { session, cmds: [{ id: 1, op: "ping" }] })).status;
        return s !== 200 ? s : undefined;
      },
      "the session to be refused",
      8_000,
      100,
    );
    expect(status).toBe(401);
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000);
    const p = await pollRaw(session, { [ch]: null }, { timeout: 0 });
    expect(p.status).toBe(401);
    expect(p.body).toMatchObject({ error: { code: 401, message: expect.stringContaining("expired") } });
  });
});

describe("POST /lp/poll", () => {
  it.each(FORMATS)("a null cursor answers at once with the channel's position (%s)", async (format) => {
    const ch = chan("chat");
    const { session } = await connect(format);
    await apiPublish(ch, "one");
    const pos = await apiPublish(ch, "two");
    const a = await poll(session, { [ch]: null }, { format });
    expect(a.subs).toEqual({ [ch]: { offset: 2, epoch: pos.epoch } });
    expect(a.pubs).toEqual([]);
    expect(a.errors).toBeUndefined();
    // Not held (the default timeout is 25 s).
    expect(a.ms).toBeLessThan(5_000);
  });

  it.each(FORMATS)("a cursor behind answers at once with the missed publications in order (%s)", async (format) => {
    const ch = chan("chat");
    const { session } = await connect(format);
    const first = await poll(session, { [ch]: null }, { format });
    const start = cursorOf(first, ch);
    expect(start.offset).toBe(0);
    for (let i = 1; i <= 5; i++) await apiPublish(ch, { i });
    const a = await poll(session, { [ch]: start }, { format });
    expect(a.pubs).toEqual([1, 2, 3, 4, 5].map((i) => ({ ch, offset: i, data: { i } })));
    expect(a.subs[ch]).toEqual({ offset: 5, epoch: start.epoch });
    expect(a.ms).toBeLessThan(5_000);
    // The returned cursor is where the next poll continues: nothing again, so it holds until timeout.
    const b = await poll(session, { [ch]: cursorOf(a, ch) }, { format, timeout: 0 });
    expect(b.pubs).toEqual([]);
    expect(b.subs[ch]).toEqual({ offset: 5, epoch: start.epoch });
  });

  it("a held poll is answered when a publication arrives (latency over 50 polls)", async () => {
    const ch = chan("chat");
    const { session } = await connect("json");
    const publisher = shared.track(await TestClient.connect(shared.gw.wsUrl));
    let cursor = cursorOf(await poll(session, { [ch]: null }), ch);
    const fromReturn: number[] = [];
    const fromCall: number[] = [];
    const N = 50;
    for (let i = 1; i <= N; i++) {
      let answeredAt = 0;
      const pending = poll(session, { [ch]: cursor }, { timeout: 20 }).then((a) => {
        answeredAt = performance.now();
        return a;
      });
      // Publish only once the poll is held (a signal, not a sleep).
      await waitMetric("natsedge_longpoll_held", 1);
      const calledAt = performance.now();
      const reply = await publisher.request("publish", { ch, data: { i } });
      const returnedAt = performance.now();
      expect(ok(reply)).toMatchObject({ offset: i });
      const a = await pending;
      expect(a.pubs).toEqual([{ ch, offset: i, data: { i }, info: { client: expect.any(String), user: "" } }]);
      expect(a.subs[ch]).toEqual({ offset: i, epoch: cursor.epoch });
      cursor = cursorOf(a, ch);
      fromReturn.push(answeredAt - returnedAt);
      fromCall.push(answeredAt - calledAt);
      // Generous sanity cap only: the number that matters is printed below.
      expect(answeredAt - calledAt).toBeLessThan(1_000);
    }
    const r = [...fromReturn].sort((x, y) => x - y);
    const c = [...fromCall].sort((x, y) => x - y);
    console.log(
      `held-poll answer latency over ${N} polls (memory broker, JSON): ` +
        `from publish reply: p50 ${percentile(r, 50).toFixed(2)} ms, p99 ${percentile(r, 99).toFixed(2)} ms, max ${(r.at(-1) as number).toFixed(2)} ms; ` +
        `from publish call: p50 ${percentile(c, 50).toFixed(2)} ms, p99 ${percentile(c, 99).toFixed(2)} ms, max ${(c.at(-1) as number).toFixed(2)} ms`,
    );
    await waitMetric("natsedge_longpoll_held", 0);
  });

  it("a held MessagePack poll over several channels answers with just what arrived", async () => {
    const a = chan("chat");
    const b = chan("live"); // no history: no cursor, the poll simply holds
    const { session } = await connect("msgpack");
    const start = cursorOf(await poll(session, { [a]: null }, { format: "msgpack" }), a);
    const pending = poll(session, { [a]: start, [b]: null }, { format: "msgpack", timeout: 20 });
    await waitMetric("natsedge_longpoll_held", 1);
    await apiPublish(b, { bin: "live" });
    const ans = await pending;
    expect(ans.pubs).toEqual([{ ch: b, data: { bin: "live" } }]);
    expect(ans.subs).toEqual({ [a]: { offset: 0, epoch: start.epoch }, [b]: {} });
  });

  it("a poll times out after `timeout` seconds with no publications", async () => {
    const ch = chan("chat");
    const { session } = await connect();
    const start = cursorOf(await poll(session, { [ch]: null }), ch);
    const a = await poll(session, { [ch]: start }, { timeout: 1 });
    expect(a.pubs).toEqual([]);
    expect(a.subs[ch]).toEqual({ offset: 0, epoch: start.epoch });
    expect(a.ms).toBeGreaterThanOrEqual(950);
    expect(a.ms).toBeLessThan(5_000);
    expect(await metric('natsedge_longpoll_requests_total{outcome="timeout"}')).toBeGreaterThanOrEqual(1);
  });

  it.each(FORMATS)("a cursor out of the retained history gets recovered:false and the position (%s)", async (format) => {
    const ch = chan("tiny"); // history size 3
    const { session } = await connect(format);
    const start = cursorOf(await poll(session, { [ch]: null }, { format }), ch);
    let last: Cursor = start;
    for (let i = 1; i <= 10; i++) last = await apiPublish(ch, { i });
    expect(last.offset).toBe(10);
    const behind = await poll(session, { [ch]: { offset: 1, epoch: start.epoch } }, { format });
    expect(behind.subs[ch]).toEqual({ offset: 10, epoch: start.epoch, recovered: false });
    expect(behind.pubs).toEqual([]);
    const ahead = await poll(session, { [ch]: { offset: 99, epoch: start.epoch } }, { format });
    expect(ahead.subs[ch]).toEqual({ offset: 10, epoch: start.epoch, recovered: false });
    // Still in range: the last 3 are retained.
    const inRange = await poll(session, { [ch]: { offset: 7, epoch: start.epoch } }, { format });
    expect(inRange.pubs.map((p) => p.offset)).toEqual([8, 9, 10]);
    expect(inRange.subs[ch]).toEqual({ offset: 10, epoch: start.epoch });
  });

  it("a cursor from another epoch gets recovered:false", async () => {
    const ch = chan("chat");
    const { session } = await connect();
    const pos = await apiPublish(ch, "x");
    const a = await poll(session, { [ch]: { offset: 0, epoch: "not-the-epoch" } });
    expect(a.subs[ch]).toEqual({ offset: 1, epoch: pos.epoch, recovered: false });
    expect(a.pubs).toEqual([]);
  });

  it.each(FORMATS)("permission errors are per channel; the other channels in the poll still work (%s)", async (format) => {
    const good = chan("chat");
    const start = await apiPublish(good, "before");
    await apiPublish(good, "missed");
    const secure = chan("secure");
    const anon = await connect(format);
    const a = await poll(anon.session, { "nowhere.x": null, [secure]: null, [good]: { offset: start.offset, epoch: start.epoch } }, { format });
    expect(a.errors).toEqual({
      "nowhere.x": { code: 404, message: expect.any(String) },
      [secure]: { code: 401, message: expect.any(String) },
    });
    expect(a.pubs).toEqual([{ ch: good, offset: 2, data: "missed" }]);
    expect(a.subs).toEqual({ [good]: { offset: 2, epoch: start.epoch } });

    const alice = await connect(format, await sign("alice"));
    const b = await poll(alice.session, { "user.bob": null, "user.alice": null, [good]: { offset: 2, epoch: start.epoch } }, { format });
    expect(b.errors).toEqual({ "user.bob": { code: 403, message: expect.any(String) } });
    expect(b.subs).toEqual({ "user.alice": { offset: expect.any(Number), epoch: expect.any(String) }, [good]: { offset: 2, epoch: start.epoch } });
    // A channel error answers at once, so a live publication on a good channel is delivered by the next poll.
    const pending = poll(alice.session, { [good]: cursorOf(b, good) }, { format, timeout: 20 });
    await waitMetric("natsedge_longpoll_held", 1);
    await apiPublish(good, "live");
    expect((await pending).pubs).toEqual([{ ch: good, offset: 3, data: "live" }]);
  });

  it("more channels than maxSubscriptions, or none, is 400", async () => {
    const { session } = await connect();
    const subs: Record<string, null> = {};
    for (let i = 0; i <= MAX_SUBS; i++) subs[chan("chat")] = null;
    const r = await pollRaw(session, subs);
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ error: { code: 400 } });
    expect((await pollRaw(session, {})).status).toBe(400);
    // Exactly the limit is fine.
    delete subs[Object.keys(subs)[0] as string];
    expect((await pollRaw(session, subs, { timeout: 0 })).status).toBe(200);
  });

  it("garbage bodies are 400, oversized bodies 413", async () => {
    const { session } = await connect();
    const ch = chan("chat");
    const cases: Array<{ what: string; path: string; raw: string | Buffer; format?: Format }> = [
      { what: "invalid JSON", path: "/lp/poll", raw: "{not json" },
      { what: "empty body", path: "/lp/poll", raw: "" },
      { what: "JSON array", path: "/lp/poll", raw: JSON.stringify([{ session, subs: { [ch]: null } }]) },
      { what: "JSON string", path: "/lp/rpc", raw: JSON.stringify("hello") },
      { what: "JSON null", path: "/lp/rpc", raw: "null" },
      { what: "invalid MessagePack", path: "/lp/poll", raw: Buffer.from([0xc1]), format: "msgpack" },
      { what: "truncated MessagePack", path: "/lp/poll", raw: packr.pack({ session, subs: { [ch]: null } }).subarray(0, 10), format: "msgpack" },
      {
        what: "two MessagePack values",
        path: "/lp/poll",
        raw: Buffer.concat([packr.pack({ session, subs: { [ch]: null } }), packr.pack({})]),
        format: "msgpack",
      },
      { what: "MessagePack array", path: "/lp/rpc", raw: packr.pack([1, 2]), format: "msgpack" },
      { what: "missing subs", path: "/lp/poll", raw: JSON.stringify({ session }) },
      { what: "subs an array", path: "/lp/poll", raw: JSON.stringify({ session, subs: [ch] }) },
      { what: "subs a string", path: "/lp/poll", raw: JSON.stringify({ session, subs: ch }) },
      { what: "cursor a number", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: 5 } }) },
      { what: "cursor a string", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: "5" } }) },
      { what: "cursor offset a string", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: { offset: "1", epoch: "e" } } }) },
      { what: "cursor offset negative", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: { offset: -1, epoch: "e" } } }) },
      { what: "cursor offset fractional", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: { offset: 1.5, epoch: "e" } } }) },
      { what: "cursor without epoch", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: { offset: 1 } } }) },
      { what: "cursor epoch a number", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: { offset: 1, epoch: 7 } } }) },
      { what: "negative timeout", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: null }, timeout: -1 }) },
      { what: "timeout a string", path: "/lp/poll", raw: JSON.stringify({ session, subs: { [ch]: null }, timeout: "5" }) },
      { what: "missing cmds", path: "/lp/rpc", raw: JSON.stringify({ session }) },
      { what: "cmds an object", path: "/lp/rpc", raw: JSON.stringify({ session, cmds: { op: "ping" } }) },
      { what: "empty cmds", path: "/lp/rpc", raw: JSON.stringify({ session, cmds: [] }) },
      { what: "101 cmds", path: "/lp/rpc", raw: JSON.stringify({ cmds: Array.from({ length: 101 }, () => ({ op: "ping" })) }) },
    ];
    for (const c of cases) {
      const r = await post(c.path, undefined, { raw: c.raw, format: c.format ?? "json" });
      expect(r.status, `${c.what}: ${JSON.stringify(r.body)}`).toBe(400);
      expect(r.body, c.what).toMatchObject({ error: { code: 400, message: expect.any(String) } });
    }

    const big = "x".repeat(MAX_FRAME + 100);
    for (const path of ["/lp/rpc", "/lp/poll"]) {
      const r = await post(path, undefined, { raw: JSON.stringify({ session, subs: { [ch]: null }, cmds: [{ op: "ping" }], pad: big }) });
      expect(r.status, path).toBe(413);
    }
    // The gateway is unharmed.
    expect(await rpc1("ping", {}, session)).toEqual({});
    expect(await metric('natsedge_longpoll_requests_total{outcome="error"}')).toBeGreaterThanOrEqual(cases.length);
  });

  it("CORS: preflight for allowed origins only; answers carry the CORS headers and Cache-Control: no-store", async () => {
    const preflight = (origin: string): Promise<Response> =>
      fetch(`${shared.gw.url}/lp/poll`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
      });
    const allowed = await preflight(ORIGIN);
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(allowed.headers.get("access-control-allow-credentials")).toBe("true");
    expect(allowed.headers.get("access-control-allow-methods")).toContain("POST");
    expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("content-type");
    expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect(allowed.headers.get("vary")).toBe("Origin");
    const rpcPreflight = await fetch(`${shared.gw.url}/lp/rpc`, { method: "OPTIONS", headers: { origin: ORIGIN } });
    expect(rpcPreflight.status).toBe(204);

    const refused = await preflight("https://evil.example.net");
    expect(refused.status).toBe(403);
    expect(refused.headers.get("access-control-allow-origin")).toBeNull();

    // Real requests from the allowed origin: success and error answers both carry the headers.
    const [hello] = await rpc([{ id: 1, op: "connect" }], { headers: { origin: ORIGIN } });
    const session = ok(hello as Frame).session as string;
    const good = await pollRaw(session, { [chan("chat")]: null }, { headers: { origin: ORIGIN } });
    expect(good.status).toBe(200);
    expect(good.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(good.headers.get("cache-control")).toBe("no-store");
    const bad = await post("/lp/poll", undefined, { raw: "{", headers: { origin: ORIGIN } });
    expect(bad.status).toBe(400);
    expect(bad.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(bad.headers.get("cache-control")).toBe("no-store");

    // Another origin is refused outright; no Origin at all (not a browser) is served without CORS headers.
    const evil = await pollRaw(session, { [chan("chat")]: null }, { headers: { origin: "https://evil.example.net" } });
    expect(evil.status).toBe(403);
    expect(evil.headers.get("access-control-allow-origin")).toBeNull();
    const evilRpc = await post("/lp/rpc", { cmds: [{ op: "connect" }] }, { headers: { origin: "https://evil.example.net" } });
    expect(evilRpc.status).toBe(403);
    const plain = await pollRaw(session, { [chan("chat")]: null });
    expect(plain.status).toBe(200);
    expect(plain.headers.get("access-control-allow-origin")).toBeNull();
    expect(plain.headers.get("cache-control")).toBe("no-store");
  });

  it("a client that goes away mid-poll is cleaned up at once", async () => {
    // Earlier tests leave nothing behind: no held poll, no channel subscription.
    await waitMetric("natsedge_longpoll_held", 0);
    await waitMetric("natsedge_channels", 0);
    const { session } = await connect();
    const a = chan("chat");
    const b = chan("live");
    const abort = new AbortController();
    const pending = poll(session, { [a]: { offset: 0, epoch: cursorOf(await poll(session, { [a]: null }), a).epoch }, [b]: null }, {
      timeout: 30,
      signal: abort.signal,
    }).catch((err: unknown) => err);
    await waitMetric("natsedge_longpoll_held", 1);
    expect(await metric("natsedge_channels")).toBe(2);
    const abortedAt = Date.now();
    abort.abort();
    expect((await pending) as Error).toMatchObject({ name: "AbortError" });
    await waitMetric("natsedge_longpoll_held", 0, 5_000);
    // "At once": well before the poll's 30 s timeout; the channels stay warm for pollWarmTime.
    expect(Date.now() - abortedAt).toBeLessThan(3_000);
    await waitMetric("natsedge_channels", 0, 5_000);
    // A publication after the abort goes nowhere and breaks nothing.
    await apiPublish(a, "after abort");
    expect(await rpc1("ping", {}, session)).toEqual({});
  });

  it("successive polls keep the channel subscribed (one broker subscription), released after pollWarmTime", async () => {
    const { session } = await connect();
    const ch = chan("chat");
    const before = await metric("natsedge_channel_subscribes_total");
    let cursor = cursorOf(await poll(session, { [ch]: null }), ch);
    for (let i = 1; i <= 5; i++) {
      await apiPublish(ch, { i });
      const a = await poll(session, { [ch]: cursor }, { timeout: 5 });
      expect(a.pubs).toEqual([{ ch, offset: i, data: { i } }]);
      cursor = cursorOf(a, ch);
    }
    expect((await metric("natsedge_channel_subscribes_total")) - before).toBe(1);
    const warmUntil = Date.now();
    await waitMetric("natsedge_channels", 0, 5_000);
    expect(Date.now() - warmUntil).toBeGreaterThanOrEqual(500);
  });

  it("a held poll is answered with the join and leave of others in its channels", async () => {
    const ch = chan("chat");
    const lp = await connect();
    const start = cursorOf(await poll(lp.session, { [ch]: null }), ch);
    const pending = poll(lp.session, { [ch]: start }, { timeout: 10 });
    await waitMetric("natsedge_longpoll_held", 1);
    const ws = shared.track(await TestClient.connect(shared.gw.wsUrl, await sign("dora")));
    ok(await ws.request("subscribe", { ch }));
    const answer = await pending;
    expect(answer.pubs).toEqual([]);
    expect(answer.presence).toEqual([{ ch, push: "join", info: { client: expect.any(String), user: "dora" } }]);
    // The leave, in the next held poll.
    const next = poll(lp.session, { [ch]: cursorOf(answer, ch) }, { timeout: 10 });
    await waitMetric("natsedge_longpoll_held", 1);
    ok(await ws.request("unsubscribe", { ch }));
    expect((await next).presence).toEqual([{ ch, push: "leave", info: { client: expect.any(String), user: "dora" } }]);
  });

  it("a long-poll client is present while it polls: join on first poll, listed, leave on unsubscribe", async () => {
    const ch = chan("chat");
    const ws = shared.track(await TestClient.connect(shared.gw.wsUrl));
    ok(await ws.request("subscribe", { ch }));
    const lp = await connect("json", await sign("carol", { info: { name: "Carol" } }));
    const start = cursorOf(await poll(lp.session, { [ch]: null }), ch);
    const isCarol = (p: Frame): boolean => (p.info as Frame | undefined)?.client === lp.client;
    const join = await ws.nextPush((p) => p.push === "join" && isCarol(p), "join of the long-poll client");
    expect(join).toEqual({ push: "join", ch, info: { client: lp.client, user: "carol", info: { name: "Carol" } } });

    // Listed while a poll is held.
    const pending = poll(lp.session, { [ch]: start }, { timeout: 1 });
    await waitMetric("natsedge_longpoll_held", 1);
    const listed = await rpc1("presence", { ch }, lp.session);
    expect((listed.clients as Frame)[lp.client]).toEqual({ user: "carol", info: { name: "Carol" } });
    await pending;

    // Stopping (unsubscribe) announces the leave at once instead of after the presence TTL.
    expect(await rpc1("unsubscribe", { ch }, lp.session)).toEqual({});
    const leave = await ws.nextPush((p) => p.push === "leave" && isCarol(p), "leave of the long-poll client");
    expect(leave).toMatchObject({ push: "leave", ch, info: { client: lp.client, user: "carol" } });
    const after = await rpc1("presence", { ch }, lp.session);
    expect((after.clients as Frame)[lp.client]).toBeUndefined();
    // Exactly one join and one leave for it: polling again while present is not news.
    expect(ws.pushes.filter((p) => (p.push === "join" || p.push === "leave") && isCarol(p))).toEqual([]);
  });

  it("unsubscribe while held: the leave stands when that poll ends (no new join)", async () => {
    const ch = chan("chat");
    const ws = shared.track(await TestClient.connect(shared.gw.wsUrl));
    ok(await ws.request("subscribe", { ch }));
    const lp = await connect("json", await sign("heidi"));
    const isHeidi = (p: Frame): boolean => (p.info as Frame | undefined)?.client === lp.client;
    const start = cursorOf(await poll(lp.session, { [ch]: null }), ch);
    await ws.nextPush((p) => p.push === "join" && isHeidi(p), "join");
    const pending = poll(lp.session, { [ch]: start }, { timeout: 1 });
    await waitMetric("natsedge_longpoll_held", 1);
    expect(await rpc1("unsubscribe", { ch }, lp.session)).toEqual({});
    await ws.nextPush((p) => p.push === "leave" && isHeidi(p), "leave");
    await pending;
    // A marker publication orders the check: anything the poll's end caused arrived before it.
    ok(await ws.request("publish", { ch, data: "marker" }));
    await ws.nextPush((p) => p.push === "pub" && p.data === "marker", "marker");
    expect(ws.pushes.filter((p) => (p.push === "join" || p.push === "leave") && isHeidi(p))).toEqual([]);
    expect((ok(await ws.request("presence", { ch })).clients as Frame)[lp.client]).toBeUndefined();
  });

  it.each(FORMATS)("WebSocket and long-poll clients see each other's publications (%s)", async (format) => {
    const ch = chan("chat");
    const ws = shared.track(await TestClient.connect(shared.gw.wsUrl, undefined, { format }));
    const wsId = ok(ws.replies.get(1) as Frame).client as string;
    ok(await ws.request("subscribe", { ch }));
    const lp = await connect(format);
    let cursor = cursorOf(await poll(lp.session, { [ch]: null }, { format }), ch);

    // WebSocket -> long-poll (held poll).
    const pending = poll(lp.session, { [ch]: cursor }, { format, timeout: 20 });
    await waitMetric("natsedge_longpoll_held", 1);
    ok(await ws.request("publish", { ch, data: { from: "ws" } }));
    const got = await pending;
    expect(got.pubs).toEqual([{ ch, offset: 1, data: { from: "ws" }, info: { client: wsId, user: "" } }]);
    cursor = cursorOf(got, ch);

    // Long-poll -> WebSocket, and the long-poll client's own next poll sees it too.
    expect(await rpc1("publish", { ch, data: { from: "lp", bytes: [1, 2, 3] } }, lp.session, format)).toMatchObject({ offset: 2 });
    const push = await ws.nextPush((p) => p.push === "pub" && p.offset === 2, "the long-poll publication");
    expect(push).toEqual({ push: "pub", ch, offset: 2, data: { from: "lp", bytes: [1, 2, 3] }, info: { client: lp.client, user: "" } });
    const own = await poll(lp.session, { [ch]: cursor }, { format });
    expect(own.pubs).toEqual([{ ch, offset: 2, data: { from: "lp", bytes: [1, 2, 3] }, info: { client: lp.client, user: "" } }]);
  });
});
