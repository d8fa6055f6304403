/**
 * Property-based fuzzing of the in-process decoders every untrusted byte goes through: WebSocket
 * frames, NATS payloads and presence events, long-poll sessions and client JWTs. Each may refuse
 * its input, but only with its own error type, and what it accepts must be usable downstream.
 * (The MessagePack scanner itself is fuzzed in test/msgpack.test.ts.)
 */
import { createHmac, generateKeyPairSync } from "node:crypto";
import fc from "fast-check";
import { exportJWK, importJWK } from "jose";
import { headers as natsHeaders, type MsgHdrs } from "nats";
import { describe, expect, it } from "vitest";
import { AuthError, TokenVerifier } from "../src/auth/jwt.js";
import { SessionError, SessionSigner } from "../src/http/session-token.js";
import { decodeEvent, decodePayload, decodePublication, H, MSGPACK } from "../src/nats/codec.js";
import { decodeFrames, type Format } from "../src/protocol/codec.js";
import { FrameError } from "../src/protocol/codes.js";
import { encodeJoinLeave, encodePubPush } from "../src/protocol/push.js";
import { anyValue, canonical, commandArb, decodeServerMessage, jsonData, jsonText, msgpackOf, mutate, mutated, mutatedString, mutationsArb, numberUnpackr, packr } from "./helpers/fuzz.js";
import { signToken } from "./helpers/tokens.js";

const FUZZ = { numRuns: 400, interruptAfterTimeLimit: 3_000 };
const ASYNC_FUZZ = { numRuns: 200, interruptAfterTimeLimit: 3_000 };
const SECRET = "fuzz-decoders-hmac-secret-0123456789abcdef";
const FORMATS: Format[] = ["json", "msgpack"];

/** Runs `f`; true if it returned, false if it threw an instance of `allowed`; rethrows anything else. */
function refusedOnlyWith(allowed: new (...args: never[]) => Error, f: () => unknown): boolean {
  try {
    f();
    return true;
  } catch (err) {
    if (err instanceof allowed) return false;
    throw err;
  }
}

async function refusedOnlyWithAsync(allowed: new (...args: never[]) => Error, f: () => Promise<unknown>): Promise<boolean> {
  try {
    await f();
    return true;
  } catch (err) {
    if (err instanceof allowed) return false;
    throw err;
  }
}

const commands = commandArb({ namespaces: ["chat", "live"], tokens: ["a.b.c"] });

/** Valid encodings of 1 to 5 commands in one message. */
function encodedBatch(format: Format): fc.Arbitrary<Uint8Array> {
  return fc.array(commands, { minLength: 1, maxLength: 5 }).map((frames) => {
    return format === "json" ? Buffer.from(frames.map(jsonText).join("\n")) : Buffer.concat(frames.map(msgpackOf));
  });
}

describe("decodeFrames", () => {
  for (const format of FORMATS) {
    it(`${format}: random bytes and mutated frames give 1 to 100 frames or a FrameError`, () => {
      const input = fc.oneof(fc.uint8Array({ maxLength: 600 }), mutated(encodedBatch(format)), encodedBatch(format));
      fc.assert(
        fc.property(input, (bytes) => {
          let frames: unknown[] = [];
          if (refusedOnlyWith(FrameError, () => (frames = decodeFrames(format, bytes)))) {
            expect(frames.length).toBeGreaterThanOrEqual(1);
            expect(frames.length).toBeLessThanOrEqual(100);
            // Whatever decodes can be answered: the session echoes ids and stringifies ops.
            for (const f of frames) expect(() => JSON.stringify(f)).not.toThrow();
          }
        }),
        FUZZ,
      );
    });
  }

  it("decodes every valid JSON batch to exactly what was sent", () => {
    fc.assert(
      fc.property(fc.array(fc.dictionary(fc.string({ maxLength: 8 }), jsonData, { maxKeys: 4 }), { minLength: 1, maxLength: 100 }), (frames) => {
        const bytes = Buffer.from(frames.map((f) => JSON.stringify(f)).join("\n"));
        expect(JSON.stringify(decodeFrames("json", bytes))).toBe(JSON.stringify(frames));
      }),
      FUZZ,
    );
  });
});

// --- NATS payloads and events ---------------------------------------------------------------------

const contentTypes = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom(MSGPACK, "APPLICATION/MSGPACK; charset=x", "application/json", "text/plain", "", "application/msgpackx"),
  fc.string({ maxLength: 30 }),
);

/** Bodies a backend might publish: valid JSON (compact and pretty), MessagePack, with a BOM, and garbage. */
const payloadBytes = fc.oneof(
  fc.uint8Array({ maxLength: 400 }),
  jsonData.map((v) => Buffer.from(JSON.stringify(v))),
  jsonData.map((v) => Buffer.from(JSON.stringify(v, null, 2))),
  jsonData.map((v) => Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify(v))])),
  anyValue.map(msgpackOf),
  mutated(jsonData.map((v) => Buffer.from(JSON.stringify(v)))),
  mutated(jsonData.map((v) => packr.pack(v))),
);

/** Header values nats.js accepts (no CR/LF), with the gateway's own header names among them. */
function headersArb(): fc.Arbitrary<MsgHdrs | undefined> {
  const value = fc.oneof(fc.string({ maxLength: 40 }), fc.integer().map(String), fc.constantFrom("join", "leave", "%", "%E0%A4%A", "1e999", "-1", "NaN"));
  const name = fc.constantFrom(H.contentType, H.ts, H.client, H.user, H.event, "Natsedge-Whatever", "X-Other");
  return fc.option(fc.array(fc.tuple(name, value), { maxLength: 6 })).map((pairs) => {
    if (pairs === null) return undefined;
    const h = natsHeaders();
    for (const [k, v] of pairs) {
      try {
        h.set(k, v);
      } catch {
        /* a value nats.js refuses could not arrive over NATS either */
      }
    }
    return h;
  });
}

describe("NATS codec", () => {
  it("decodePayload: undefined or a payload both wire formats can carry", () => {
    fc.assert(
      fc.property(payloadBytes, contentTypes, (bytes, contentType) => {
        const payload = decodePayload(bytes, contentType);
        if (payload === undefined) return;
        const json = payload.json().toString("utf8");
        // It is spliced into JSON frames: one line (see decodeServerMessage), one value.
        expect(json).not.toMatch(/[\r\n]/);
        // Both formats carry the same value.
        expect(canonical(numberUnpackr.unpack(payload.msgpack()))).toBe(canonical(JSON.parse(json)));
      }),
      FUZZ,
    );
  });

  it("decodePublication: undefined or a publication whose push frames decode in both formats", () => {
    const position = fc.option(fc.record({ offset: fc.nat(), prev: fc.option(fc.nat(), { nil: undefined }), time: fc.option(fc.integer(), { nil: undefined }) }), { nil: undefined });
    fc.assert(
      fc.property(payloadBytes, headersArb(), position, (bytes, h, pos) => {
        const pub = decodePublication("chat.fuzz", bytes, h, pos);
        if (pub === undefined) return;
        expect(Number.isFinite(pub.ts)).toBe(true);
        for (const format of FORMATS) {
          const r = decodeServerMessage(format, encodePubPush(format, pub), format === "msgpack");
          expect(r.undecodable, format).toBeUndefined();
          expect(r.frame).toMatchObject({ push: "pub", ch: "chat.fuzz" });
        }
      }),
      FUZZ,
    );
  });

  it("decodeEvent: undefined or client info whose join frames decode in both formats", () => {
    const info = fc.record({ client: fc.oneof(fc.string(), anyValue), user: fc.oneof(fc.string(), anyValue), info: fc.oneof(jsonData, anyValue) }, { requiredKeys: [] });
    const packed = info.map(msgpackOf);
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), packed, mutated(packed)), (bytes) => {
        const event = decodeEvent(bytes);
        if (event === undefined) return;
        expect(typeof event.client).toBe("string");
        expect(typeof event.user).toBe("string");
        for (const format of FORMATS) {
          const r = decodeServerMessage(format, encodeJoinLeave(format, "join", "chat.fuzz", event), format === "msgpack");
          expect(r.undecodable, format).toBeUndefined();
        }
      }),
      FUZZ,
    );
  });
});

// --- long-poll sessions ---------------------------------------------------------------------------

describe("SessionSigner.verify", () => {
  const signer = new SessionSigner(SECRET);
  const sessions = fc
    .record({ client: fc.uuid(), user: fc.string({ maxLength: 20 }), exp: fc.option(fc.integer({ min: 2_000_000_000, max: 3_000_000_000 }), { nil: undefined }) })
    .map(({ client, user, exp }) => ({
      identity: user === "" ? { client, user } : { client, user, claims: exp === undefined ? { sub: user } : { sub: user, exp } },
    }))
    .map(({ identity }) => ({ identity, session: signer.issue(identity) }));

  it("refuses random and mutated sessions with SessionError only; a mutation that passes names the same client", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.record({ original: fc.constant(undefined), input: fc.oneof(fc.string({ maxLength: 300 }), anyValue) }),
          sessions.map((s) => ({ original: s, input: s.session })),
          fc.tuple(sessions, mutationsArb).map(([s, ms]) => ({ original: s, input: mutate(Buffer.from(s.session, "latin1"), ms).toString("latin1") })),
        ),
        ({ original, input }) => {
          let identity: ReturnType<SessionSigner["verify"]> | undefined;
          if (refusedOnlyWith(SessionError, () => (identity = signer.verify(input)))) {
            // Only the signer can make a session; what verifies carries who it was issued to.
            expect(original, `accepted ${jsonText(input)}`).toBeDefined();
            expect(identity?.client).toBe(original?.identity.client);
            expect(identity?.user).toBe(original?.identity.user);
          }
        },
      ),
      FUZZ,
    );
  });

  it("refuses correctly signed bodies of any shape with SessionError only", () => {
    // A body signed with the right secret but not written by issue() (another version, a leaked
    // secret): the checks after the signature must hold up too.
    const body = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
      fc.record({ c: anyValue, u: anyValue, x: fc.oneof(fc.integer(), fc.double(), anyValue), ch: anyValue, i: anyValue, e: anyValue }, { requiredKeys: [] }).map(jsonText),
      fc.string({ maxLength: 60 }),
    );
    fc.assert(
      fc.property(body, (text) => {
        const b = Buffer.from(text, "utf8").toString("base64url");
        const session = `${b}.${createHmac("sha256", SECRET).update(b).digest("base64url")}`;
        let identity: ReturnType<SessionSigner["verify"]> | undefined;
        if (refusedOnlyWith(SessionError, () => (identity = signer.verify(session, 0)))) {
          expect(typeof identity?.client).toBe("string");
          expect(typeof identity?.user).toBe("string");
          const channels = identity?.claims?.channels;
          if (channels !== undefined) expect(Array.isArray(channels) && channels.every((c) => typeof c === "string")).toBe(true);
        }
      }),
      FUZZ,
    );
  });
});

// --- client JWTs ----------------------------------------------------------------------------------

const b64json = (v: unknown): string => Buffer.from(jsonText(v)).toString("base64url");

/** A compact JWS with any header and payload, HMAC-signed with `secret`. */
function hmacJws(header: unknown, payload: unknown, secret: string): string {
  const input = `${b64json(header)}.${b64json(payload)}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

describe("TokenVerifier.verify", () => {
  const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });

  it("refuses random, mutated and oddly shaped tokens with AuthError only", async () => {
    const jwk = { ...(await exportJWK(await importJWK(ec.publicKey.export({ format: "jwk" }) as Parameters<typeof importJWK>[0], "ES256"))), kid: "k1" };
    const verifiers = [
      new TokenVerifier({ hmacSecret: SECRET, requireExp: true }),
      new TokenVerifier({ hmacSecret: SECRET, requireExp: false, audience: "aud", issuer: "iss" }),
      new TokenVerifier({ jwks: { keys: [jwk, { ...jwk, kid: "k2" }] }, publicKey: ec.publicKey.export({ format: "pem", type: "spki" }).toString() }),
    ];
    const valid = await Promise.all([
      signToken({ sub: "alice" }, SECRET),
      signToken({ sub: "bob", channels: ["chat.*"], info: { name: "B" } }, SECRET),
      signToken({ sub: "carol", aud: "aud", iss: "iss", exp: undefined }, SECRET),
    ]);
    const deep = fc.integer({ min: 1, max: 200 }).map((d) => JSON.parse("[".repeat(d) + "]".repeat(d)) as unknown);
    const oddClaims = fc.record(
      {
        sub: fc.oneof(fc.string({ maxLength: 300 }), anyValue),
        exp: fc.oneof(fc.integer(), fc.double(), anyValue),
        nbf: fc.oneof(fc.integer(), anyValue),
        iat: fc.oneof(fc.integer(), anyValue),
        aud: fc.oneof(fc.constant("aud"), fc.array(fc.string()), anyValue),
        iss: fc.oneof(fc.constant("iss"), anyValue),
        channels: fc.oneof(fc.array(fc.string({ maxLength: 10 }), { maxLength: 5 }), anyValue),
        info: fc.oneof(jsonData, anyValue, deep),
      },
      { requiredKeys: [] },
    );
    // Mostly claims a verifier accepts, with an odd channels or info claim now and then.
    const plausibleClaims = fc.record(
      {
        sub: fc.string({ minLength: 1, maxLength: 300 }),
        exp: fc.integer({ min: 2_000_000_000, max: 3_000_000_000 }),
        aud: fc.constant("aud"),
        iss: fc.constant("iss"),
        channels: fc.array(fc.oneof(fc.constantFrom("chat.*", "a.>", "*", "chat.a"), fc.string({ maxLength: 10 })), { maxLength: 5 }),
        info: fc.oneof(jsonData, deep),
      },
      { requiredKeys: ["sub", "exp", "aud", "iss"] },
    );
    const claims = fc.oneof({ weight: 3, arbitrary: plausibleClaims }, { weight: 1, arbitrary: oddClaims });
    const oddHeader = fc.record(
      {
        alg: fc.oneof(fc.constantFrom("HS256", "HS512", "none", "RS256", "ES256", "EdDSA", "Ed25519"), anyValue),
        typ: fc.oneof(fc.constant("JWT"), anyValue),
        kid: fc.oneof(fc.constantFrom("k1", "k2", "k3"), anyValue),
        crit: fc.oneof(fc.constant(["b64"]), anyValue),
        b64: fc.oneof(fc.boolean(), anyValue),
      },
      { requiredKeys: [] },
    );
    // Mostly a header the verifier accepts, so the claims behind it get checked too.
    const header = fc.oneof({ weight: 3, arbitrary: fc.constant({ alg: "HS256", typ: "JWT" }) }, { weight: 1, arbitrary: oddHeader });
    const token = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.array(fc.base64String({ maxLength: 40 }), { minLength: 1, maxLength: 4 }).map((parts) => parts.join(".")),
      mutatedString(fc.constantFrom(...valid)),
      { weight: 4, arbitrary: fc.tuple(header, claims).map(([h, c]) => hmacJws(h, c, SECRET)) },
      fc.tuple(header, claims).map(([h, c]) => hmacJws(h, c, "some-other-secret-0123456789abcdef")),
      fc.constantFrom(...valid),
    );
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(token, fc.nat(verifiers.length - 1), async (t, which) => {
        const verifier = verifiers[which] as TokenVerifier;
        let result: Awaited<ReturnType<TokenVerifier["verify"]>> | undefined;
        if (await refusedOnlyWithAsync(AuthError, async () => (result = await verifier.verify(t)))) {
          accepted++;
          expect(typeof result?.sub).toBe("string");
          if (result?.channels !== undefined) expect(result.channels.every((c) => typeof c === "string")).toBe(true);
          // The info claim goes out in join/leave pushes in both formats.
          for (const format of FORMATS) {
            const frame = encodeJoinLeave(format, "join", "chat.x", { client: "c", user: result?.sub ?? "", info: result?.info });
            expect(decodeServerMessage(format, frame, format === "msgpack").undecodable).toBeUndefined();
          }
        }
      }),
      ASYNC_FUZZ,
    );
    // Not only refusals: enough tokens got through for the claim checks to have been exercised.
    expect(accepted).toBeGreaterThan(10);
  });
});
