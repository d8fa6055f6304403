/**
 * Property-based fuzzing of a real gateway process (memory mode) through its client-facing
 * inputs: WebSocket sessions in both subprotocols (mostly-plausible commands, mutated and random
 * messages) and long-poll bodies. Rate limits are off so the fuzz reaches the command handlers.
 * The process must stay up with bounded memory, answer only with documented error and close
 * codes (500 counts as a failure), and still serve a normal client afterwards.
 */
import { isUtf8 } from "node:buffer";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Format, Frame } from "./helpers/client.js";
import {
  anyValue,
  channelArb,
  CLOSE_CODES,
  commandArb,
  ERROR_CODES,
  expectServesNormalClient,
  expectWellFormed,
  FuzzSocket,
  HTTP_STATUSES,
  jsonData,
  jsonText,
  msgpackOf,
  mutated,
  mutatedString,
  positionArb,
  unpackr,
} from "./helpers/fuzz.js";
import { rssKiB, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { signToken } from "./helpers/tokens.js";

const SECRET = "fuzz-gateway-hmac-secret-0123456789abcdef";
const MAX_FRAME = 4096;
const NAMESPACES = ["chat", "live", "room", "secure", "user", "ro"];
const CONFIG = `
apiKey: fuzz-gateway-api-key-0123456789abcdef
sessionSecret: fuzz-gateway-session-secret-0123456789
commandRate: 0
connectRate: 0
maxConnectionsPerIp: 0
maxConnectionsPerUser: 0
presenceGrace: 0s
maxFrameSize: ${MAX_FRAME}
maxSubscriptions: 8
maxPresenceMembers: 4
maxHeldPolls: 100
auth:
  hmacSecret: "${SECRET}"
namespaces:
  chat: { history: { size: 20, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
  room: { presence: true, clientPublish: true, anonymous: true }
  secure: { history: { size: 5, ttl: 5m }, clientPublish: true }
  user: { personal: true, clientPublish: true }
  ro: { history: { size: 5, ttl: 5m }, anonymous: true }
`;
/** Growth of the gateway's RSS over one fuzz run that counts as a leak. */
const RSS_BOUND_KIB = 64 * 1024;
const MSGPACK = "application/msgpack";

let gw: GatewayProcess;
let tokens: string[];
/** Subscribed to the fuzzed channels throughout: what they receive must stay well-formed. */
let watchers: FuzzSocket[] = [];

beforeAll(async () => {
  gw = await startGateway({ config: { yaml: CONFIG } });
  const now = Math.floor(Date.now() / 1000);
  tokens = await Promise.all([
    signToken({ sub: "fuzz" }, SECRET),
    signToken({ sub: "fuzz", channels: ["chat.*", "user.fuzz"], info: { name: "F" } }, SECRET),
    signToken({ sub: "other" }, SECRET),
    signToken({ sub: "late", exp: now - 10 }, SECRET),
    signToken({ sub: "fuzz", exp: now + 3 }, SECRET),
  ]);
  watchers = [];
  for (const format of ["json", "msgpack"] as const) {
    const w = new FuzzSocket(gw.wsUrl, format);
    watchers.push(w);
    await w.opened;
    w.send([{ id: "c", op: "connect", token: tokens[0] }, ...["chat.fuzz", "live.fuzz", "room.fuzz", "secure.fuzz", "user.fuzz"].map((ch) => ({ id: ch, op: "subscribe", ch }))]);
    await w.waitFor(() => (w.frames.some((f) => f.id === "user.fuzz") ? true : undefined), "watcher subscribed");
  }
});

afterAll(async () => {
  for (const w of watchers) w.terminate();
  await gw?.stop();
});

// --- WebSocket ------------------------------------------------------------------------------------

type Message = { kind: "frames"; frames: Frame[] } | { kind: "raw"; bytes: Buffer; binary: boolean };

/**
 * A session's messages: a few batches of commands, then perhaps one hostile message (mutated,
 * random, oversized), which usually ends the session, so it comes last.
 */
function messagesArb(format: Format): fc.Arbitrary<Message[]> {
  const command = commandArb({ namespaces: NAMESPACES, tokens });
  const frames = fc.array(command, { minLength: 1, maxLength: 4 });
  const encode = (fs: Frame[]): Buffer => (format === "json" ? Buffer.from(fs.map(jsonText).join("\n")) : Buffer.concat(fs.map(msgpackOf)));
  const binary = format === "msgpack";
  const hostile = fc.oneof(
    { weight: 4, arbitrary: mutated(frames.map(encode)).map((bytes): Message => ({ kind: "raw", bytes, binary })) },
    { weight: 1, arbitrary: fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.boolean()).map(([b, bin]): Message => ({ kind: "raw", bytes: Buffer.from(b), binary: bin })) },
    // Over maxFrameSize (413), and now and then over twice that (the socket is dropped).
    {
      weight: 1,
      arbitrary: fc.integer({ min: MAX_FRAME + 1, max: 2 * MAX_FRAME + 200 }).map((n): Message => ({ kind: "raw", bytes: encode([{ id: "big", op: "publish", ch: "live.fuzz", data: "x".repeat(n) }]), binary })),
    },
  );
  return fc
    .tuple(fc.array(frames.map((fs): Message => ({ kind: "frames", frames: fs })), { minLength: 1, maxLength: 5 }), fc.option(hostile, { freq: 3, nil: undefined }))
    .map(([batches, last]) => (last === undefined ? batches : [...batches, last]));
}

/** How a session starts: connect anonymously, with token i (valid, narrower, another user, expired, expiring) or garbage, or not at all. */
const connectArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant<"anonymous" | "garbage" | "none" | number>("anonymous") },
  { weight: 3, arbitrary: fc.oneof(fc.nat(4), fc.constant("garbage" as const)) },
  { weight: 1, arbitrary: fc.constant("none" as const) },
);

describe("WebSocket sessions under random commands and bytes", () => {
  for (const format of ["json", "msgpack"] as const) {
    it(`${format}: only documented error and close codes, and the process stays up`, async () => {
      const before = rssKiB(gw.proc.pid as number);
      let runs = 0;
      const closes = new Map<number, number>();
      const replies = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(connectArb, messagesArb(format), async (connect, messages) => {
          runs++;
          const s = new FuzzSocket(gw.wsUrl, format);
          try {
            await s.opened;
            if (connect === "anonymous") s.send([{ id: "c", op: "connect" }]);
            else if (connect !== "none") s.send([{ id: "c", op: "connect", token: connect === "garbage" ? "garbage" : tokens[connect] }]);
            // 1006 is documented for two inputs only: a text message that is not UTF-8, and a
            // message over twice maxFrameSize.
            let may1006 = false;
            for (const m of messages) {
              if (m.kind === "frames") s.send(m.frames);
              else {
                s.sendRaw(m.bytes, m.binary);
                if ((!m.binary && !isUtf8(m.bytes)) || m.bytes.length > 2 * MAX_FRAME) may1006 = true;
              }
            }
            if (s.closeCode === undefined) s.send([{ id: "probe", op: "ping" }]);
            const outcome = await s.replyOrClose("probe");
            const label = `${format}: ${jsonText(messages).slice(0, 300)}`;
            expectWellFormed(s, label);
            for (const f of s.frames) {
              const kind = f.ok !== undefined ? `ok` : f.error !== undefined ? String((f.error as Frame).code) : `push ${String(f.push)}`;
              replies.set(kind, (replies.get(kind) ?? 0) + 1);
            }
            if (outcome === "closed") {
              const code = s.closeCode as number;
              closes.set(code, (closes.get(code) ?? 0) + 1);
              expect(CLOSE_CODES.has(code), `${label}: close ${code}`).toBe(true);
              if (code === 1006) expect(may1006, `${label}: 1006`).toBe(true);
              if (code >= 4000) {
                // The disconnect push goes out right before the close, with the same code.
                expect(s.frames.at(-1), label).toMatchObject({ push: "disconnect", code });
              }
            }
          } finally {
            s.terminate();
          }
        }),
        { numRuns: 800, interruptAfterTimeLimit: 8_000 },
      );
      const grown = rssKiB(gw.proc.pid as number) - before;
      console.log(
        `${format} WebSocket fuzz: ${runs} sessions, frames ${JSON.stringify(Object.fromEntries(replies))}, ` +
          `closes ${JSON.stringify(Object.fromEntries(closes))}, RSS +${grown} KiB`,
      );
      expect(grown).toBeLessThan(RSS_BOUND_KIB);
      expect(gw.proc.exitCode).toBeNull();
    });
  }

  it("the watchers saw only well-formed messages and were never disconnected", () => {
    for (const w of watchers) {
      expect(w.closeCode, w.format).toBeUndefined();
      expectWellFormed(w, `watcher ${w.format}`);
      expect(w.frames.filter((f) => f.push === "pub").length, w.format).toBeGreaterThan(0);
    }
  });
});

// --- long-poll ------------------------------------------------------------------------------------

interface LpRequest {
  path: string;
  contentType: string | undefined;
  body: Buffer;
}

describe("long-poll bodies", () => {
  let sessions: string[] = [];

  beforeAll(async () => {
    sessions = [];
    for (const token of [undefined, tokens[0]]) {
      const res = await fetch(`${gw.url}/lp/rpc`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(token && { authorization: `Bearer ${token}` }) },
        body: JSON.stringify({ cmds: [{ id: 1, op: "connect" }] }),
      });
      const body = (await res.json()) as { replies: Array<{ ok: { session: string } }> };
      sessions.push(body.replies[0]?.ok.session as string);
    }
  });

  function requestArb(): fc.Arbitrary<LpRequest> {
    const session = fc.oneof(
      { weight: 6, arbitrary: fc.nat(1).map((i) => sessions[i] as string) },
      { weight: 1, arbitrary: mutatedString(fc.nat(1).map((i) => sessions[i] as string)) },
      { weight: 1, arbitrary: fc.string({ maxLength: 50 }) },
      { weight: 1, arbitrary: anyValue },
    );
    // Numbers only from 0 to 0.05 (or of the wrong kind), so that polls are not held.
    const timeout = fc.oneof(
      { weight: 3, arbitrary: fc.constant(0) },
      { weight: 2, arbitrary: fc.double({ min: 0, max: 0.05, noNaN: true }) },
      { weight: 1, arbitrary: fc.constantFrom(-1, "0", null, true, Number.NaN, Infinity) },
    );
    const channel = channelArb(NAMESPACES).map((c) => (typeof c === "string" ? c : jsonText(c)));
    const cmds = fc.oneof(
      { weight: 4, arbitrary: fc.array(commandArb({ namespaces: NAMESPACES, tokens }), { minLength: 1, maxLength: 5 }) },
      { weight: 1, arbitrary: fc.array(anyValue, { maxLength: 3 }) },
      { weight: 1, arbitrary: anyValue },
    );
    const subs = fc.oneof(
      { weight: 4, arbitrary: fc.dictionary(channel, fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: positionArb }), { minKeys: 1, maxKeys: 4 }) },
      { weight: 1, arbitrary: anyValue },
    );
    // Mostly the fields each endpoint needs (without a session /lp/rpc starts one), sometimes the other's.
    const rpcBody = fc.record({ session, cmds, subs, timeout, junk: jsonData }, { requiredKeys: ["cmds"] });
    const pollBody = fc.record({ session, cmds, subs, timeout, junk: jsonData }, { requiredKeys: ["session", "subs", "timeout"] });
    const contentType = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom<string | undefined>("application/json", MSGPACK) },
      { weight: 2, arbitrary: fc.constantFrom<string | undefined>("APPLICATION/MSGPACK; x=1", "text/plain", undefined) },
      { weight: 1, arbitrary: fc.string({ maxLength: 20 }).filter((s) => /^[\x21-\x7e]*$/.test(s)) },
    );
    const pathAndBody = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(fc.constant("/lp/rpc"), rpcBody) },
      { weight: 6, arbitrary: fc.tuple(fc.constant("/lp/poll"), pollBody) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom("/lp/rpc", "/lp/poll"), fc.oneof(rpcBody, pollBody)) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom("/lp/other", "/lp/"), rpcBody) },
    );
    return fc.tuple(pathAndBody, contentType, fc.nat(19), fc.uint8Array({ maxLength: 300 })).chain(([[p, b], ct, kind, raw]) => {
      const msgpack = ct?.toLowerCase().startsWith(MSGPACK) ?? false;
      const encoded = msgpack ? msgpackOf(b) : Buffer.from(jsonText(b));
      if (kind < 15) return fc.constant({ path: p, contentType: ct, body: encoded });
      if (kind < 19) return mutated(fc.constant(encoded)).map((m) => ({ path: p, contentType: ct, body: m }));
      return fc.constant({ path: p, contentType: ct, body: Buffer.from(raw) });
    });
  }

  /** Decodes an answer by its Content-Type. */
  function decodeAnswer(contentType: string | null, bytes: Buffer): Frame {
    return (contentType?.startsWith(MSGPACK) ? unpackr.unpack(bytes) : JSON.parse(bytes.toString("utf8"))) as Frame;
  }

  it("answers only with documented statuses and well-formed bodies, and the process stays up", async () => {
    const before = rssKiB(gw.proc.pid as number);
    const statuses = new Map<number | string, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb(), { minLength: 1, maxLength: 6 }), async (requests) => {
        // A batch in parallel: a poll that a mutation made wait is let go after a second.
        await Promise.all(
          requests.map(async (r) => {
            const label = `${r.path} ${r.contentType ?? "(no content type)"} ${r.body.subarray(0, 200).toString("latin1")}`;
            let res: Response;
            try {
              res = await fetch(gw.url + r.path, {
                method: "POST",
                headers: r.contentType === undefined ? {} : { "content-type": r.contentType },
                body: r.body,
                signal: AbortSignal.timeout(1_000),
              });
            } catch (err) {
              // Only a poll may be held (until a publication or its timeout).
              expect(r.path, `${label}: ${String(err)}`).toBe("/lp/poll");
              statuses.set("held", (statuses.get("held") ?? 0) + 1);
              return;
            }
            const bytes = Buffer.from(await res.arrayBuffer());
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            expect(HTTP_STATUSES.has(res.status), `${label}: status ${res.status}`).toBe(true);
            let answer: Frame = {};
            expect(() => (answer = decodeAnswer(res.headers.get("content-type"), bytes)), `${label}: answer ${bytes.toString("latin1").slice(0, 200)}`).not.toThrow();
            if (res.status !== 200) {
              expect(answer, label).toMatchObject({ error: { code: res.status, message: expect.any(String) } });
              return;
            }
            const codes: unknown[] = [];
            for (const reply of (answer.replies as Frame[] | undefined) ?? []) if (reply.error) codes.push((reply.error as Frame).code);
            for (const error of Object.values((answer.errors as Record<string, Frame> | undefined) ?? {})) codes.push(error.code);
            for (const code of codes) expect(ERROR_CODES.has(code as number), `${label}: ${jsonText(answer).slice(0, 300)}`).toBe(true);
          }),
        );
      }),
      { numRuns: 300, interruptAfterTimeLimit: 8_000 },
    );
    const grown = rssKiB(gw.proc.pid as number) - before;
    console.log(`long-poll fuzz: statuses ${JSON.stringify(Object.fromEntries(statuses))}, RSS +${grown} KiB`);
    expect(grown).toBeLessThan(RSS_BOUND_KIB);
    expect(statuses.get(200) ?? 0).toBeGreaterThan(0);
  });
});

describe("after the fuzz", () => {
  it("the process still serves a normal client", async () => {
    await expectServesNormalClient(gw, "chat.after");
  });
});
