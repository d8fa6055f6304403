import { createHmac, generateKeyPairSync, type KeyObject } from "node:crypto";
import {
  exportJWK,
  exportSPKI,
  generateKeyPair,
  jwtVerify,
  SignJWT,
  type CryptoKey,
  type JWTPayload,
} from "jose";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import type { AuthConfig } from "../src/config/types.js";
import { readCookie } from "../src/auth/cookie.js";
import { AuthError, TokenVerifier, type Claims } from "../src/auth/jwt.js";
import { isValidPattern, matchesAny, matchesPattern } from "../src/auth/patterns.js";

const SECRET = "a-test-secret-that-is-at-least-32-bytes-long";
const secretKey = new TextEncoder().encode(SECRET);

interface Pair {
  publicKey: CryptoKey;
  privateKey: CryptoKey;
  pem: string;
}

let rsa: Pair;
let rsa2: Pair;
let ec: Pair;
let ed: Pair;

async function pair(alg: string): Promise<Pair> {
  const keys = await generateKeyPair(alg, { extractable: true });
  return { ...keys, pem: await exportSPKI(keys.publicKey) };
}

beforeAll(async () => {
  [rsa, rsa2, ec, ed] = await Promise.all([
    pair("RS256"),
    pair("RS256"),
    pair("ES256"),
    pair("EdDSA"),
  ]);
});

const now = () => Math.floor(Date.now() / 1000);

interface SignOptions {
  alg?: string;
  kid?: string;
}

function sign(
  payload: JWTPayload,
  key: CryptoKey | KeyObject | Uint8Array = secretKey,
  { alg = "HS256", kid }: SignOptions = {},
): Promise<string> {
  // Gateways require exp by default; "exp" in payload (even undefined) leaves it as given.
  const claims = "exp" in payload ? payload : { ...payload, exp: now() + 3600 };
  return new SignJWT(claims)
    .setProtectedHeader({ alg, typ: "JWT", ...(kid !== undefined && { kid }) })
    .sign(key);
}

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

async function rejection(verifier: TokenVerifier, token: string): Promise<AuthError> {
  const err: unknown = await verifier.verify(token).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof AuthError)) throw new Error(`expected an AuthError, got ${String(err)}`);
  return err;
}

async function expectInvalid(verifier: TokenVerifier, token: string, message?: RegExp) {
  const err = await rejection(verifier, token);
  expect(err.reason).toBe("invalid");
  if (message) expect(err.message).toMatch(message);
}

describe("TokenVerifier: key sources", () => {
  it("accepts HS256 with the shared secret", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    const exp = now() + 60;
    const claims = await v.verify(await sign({ sub: "alice", exp, info: { name: "A" } }));
    expect(claims).toEqual<Claims>({ sub: "alice", exp, info: { name: "A" } });
  });

  it("accepts RS256 with an RSA PEM key", async () => {
    const v = new TokenVerifier({ publicKey: rsa.pem });
    const token = await sign({ sub: "bob" }, rsa.privateKey, { alg: "RS256" });
    expect(await v.verify(token)).toEqual({ sub: "bob", exp: expect.any(Number) });
  });

  it("accepts ES256 with a P-256 PEM key", async () => {
    const v = new TokenVerifier({ publicKey: ec.pem });
    const token = await sign({ sub: "carol" }, ec.privateKey, { alg: "ES256" });
    expect((await v.verify(token)).sub).toBe("carol");
  });

  it("accepts EdDSA with an Ed25519 PEM key", async () => {
    const v = new TokenVerifier({ publicKey: ed.pem });
    const token = await sign({ sub: "dave" }, ed.privateKey, { alg: "EdDSA" });
    expect((await v.verify(token)).sub).toBe("dave");
  });

  it("caches the imported PEM key across verifications", async () => {
    const v = new TokenVerifier({ publicKey: rsa.pem });
    const tokens = await Promise.all(
      ["a", "b", "c"].map((sub) => sign({ sub }, rsa.privateKey, { alg: "RS256" })),
    );
    const subs = await Promise.all(tokens.map(async (t) => (await v.verify(t)).sub));
    expect(subs).toEqual(["a", "b", "c"]);
  });

  it("accepts RSA and EC keys from a JWKS, selected by kid", async () => {
    const jwks = {
      keys: [
        { ...(await exportJWK(rsa.publicKey)), kid: "r1", use: "sig" },
        { ...(await exportJWK(ec.publicKey)), kid: "e1" },
        { ...(await exportJWK(ed.publicKey)), kid: "d1" },
      ],
    };
    const v = new TokenVerifier({ jwks });
    const rs = await sign({ sub: "r" }, rsa.privateKey, { alg: "RS256", kid: "r1" });
    const es = await sign({ sub: "e" }, ec.privateKey, { alg: "ES256", kid: "e1" });
    const eddsa = await sign({ sub: "d" }, ed.privateKey, { alg: "EdDSA", kid: "d1" });
    expect((await v.verify(rs)).sub).toBe("r");
    expect((await v.verify(es)).sub).toBe("e");
    expect((await v.verify(eddsa)).sub).toBe("d");

    const unknownKid = await sign({ sub: "r" }, rsa.privateKey, { alg: "RS256", kid: "nope" });
    await expectInvalid(v, unknownKid, /no key matches/);
  });

  it("tries every JWKS key when several match and the token has no kid", async () => {
    const jwks = {
      keys: [{ ...(await exportJWK(rsa2.publicKey)) }, { ...(await exportJWK(rsa.publicKey)) }],
    };
    const v = new TokenVerifier({ jwks });
    expect((await v.verify(await sign({ sub: "x" }, rsa.privateKey, { alg: "RS256" }))).sub).toBe(
      "x",
    );
    const other = await generateKeyPair("RS256");
    const forged = await sign({ sub: "x" }, other.privateKey, { alg: "RS256" });
    await expectInvalid(v, forged, /signature/);
  });

  it("rejects HS256 tokens against a JWKS even if it holds an oct key", async () => {
    const jwks = { keys: [{ kty: "oct", k: Buffer.from(SECRET).toString("base64url") }] };
    const v = new TokenVerifier({ jwks });
    await expectInvalid(v, await sign({ sub: "x" }), /algorithm not allowed/);
  });

  it("dispatches on alg when several key sources are configured", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET, publicKey: ec.pem });
    expect((await v.verify(await sign({ sub: "h" }))).sub).toBe("h");
    const es = await sign({ sub: "e" }, ec.privateKey, { alg: "ES256" });
    expect((await v.verify(es)).sub).toBe("e");
  });

  it("refuses unusable configurations at construction", () => {
    expect(() => new TokenVerifier({})).toThrow(/no key source/);
    expect(() => new TokenVerifier({ hmacSecret: "" })).toThrow(/empty/);
    expect(() => new TokenVerifier({ publicKey: "not a pem" })).toThrow(/PEM/);
    expect(() => new TokenVerifier({ jwks: { keys: "x" } as unknown as NonNullable<AuthConfig["jwks"]> })).toThrow(
      /JWKS/,
    );
    const small = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
    const smallPem = small.export({ type: "spki", format: "pem" }).toString();
    expect(() => new TokenVerifier({ publicKey: smallPem })).toThrow(/2048/);
    const remote = { url: "https://idp.test/jwks", cooldown: 30_000, maxAge: 600_000 };
    const jwks = { keys: [{ kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }] };
    expect(() => new TokenVerifier({ jwks, jwksUrl: remote })).toThrow(/jwks and jwksUrl/);
    // Nothing is fetched before a token or start(): the allowlist is known from the source alone.
    expect(new TokenVerifier({ jwksUrl: remote }).algorithms).toEqual(new TokenVerifier({ jwks }).algorithms);
    const k256 = generateKeyPairSync("ec", { namedCurve: "secp256k1" }).publicKey;
    const k256Pem = k256.export({ type: "spki", format: "pem" }).toString();
    expect(() => new TokenVerifier({ publicKey: k256Pem })).toThrow(/P-256, P-384 or P-521/);
  });
});

/** A key pair for `alg` with its public half as PEM and as a JWK. */
async function keysFor(alg: string): Promise<Pair & { jwk: Record<string, unknown> }> {
  const keys = await pair(alg);
  return { ...keys, jwk: { ...(await exportJWK(keys.publicKey)) } };
}

describe("TokenVerifier: algorithms", () => {
  // Each algorithm with the key it is signed with; the same key type always yields the same list.
  const SIGNED: readonly string[] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];

  it("accepts every HMAC algorithm with the shared secret", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    expect(v.algorithms).toEqual(["HS256", "HS384", "HS512"]);
    for (const alg of ["HS256", "HS384", "HS512"]) {
      expect((await v.verify(await sign({ sub: alg }, secretKey, { alg }))).sub, alg).toBe(alg);
    }
  });

  it("derives the allowlist from the PEM key's type and curve", async () => {
    const lists: Record<string, readonly string[]> = {};
    for (const alg of SIGNED) {
      const keys = await pair(alg);
      const v = new TokenVerifier({ publicKey: keys.pem });
      lists[alg] = v.algorithms;
      const token = await sign({ sub: alg }, keys.privateKey, { alg });
      expect((await v.verify(token)).sub, alg).toBe(alg);
    }
    expect(lists.RS256).toEqual(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]);
    expect(lists.ES256).toEqual(["ES256"]);
    expect(lists.ES384).toEqual(["ES384"]);
    expect(lists.ES512).toEqual(["ES512"]);
    expect(lists.EdDSA).toEqual(["EdDSA", "Ed25519"]);
  });

  it("accepts every asymmetric algorithm from a JWKS, never HMAC", async () => {
    const keys = await Promise.all(SIGNED.map(async (alg) => ({ alg, ...(await keysFor(alg)) })));
    const v = new TokenVerifier({ jwks: { keys: keys.map(({ alg, jwk }) => ({ ...jwk, kid: alg })) } });
    expect(v.algorithms.filter((alg) => alg.startsWith("HS") || alg === "none")).toEqual([]);
    for (const { alg, privateKey } of keys) {
      expect((await v.verify(await sign({ sub: alg }, privateKey, { alg, kid: alg }))).sub, alg).toBe(alg);
    }
  });

  it("refuses a token whose algorithm does not fit the key", async () => {
    const p384 = await keysFor("ES384");
    // The right key bytes, the wrong curve's algorithm: ES256 is not derived from a P-384 key.
    await expectInvalid(new TokenVerifier({ publicKey: p384.pem }), await sign({ sub: "x" }, ec.privateKey, { alg: "ES256" }), /algorithm not allowed/);
    await expectInvalid(new TokenVerifier({ publicKey: ed.pem }), await sign({ sub: "x" }, rsa.privateKey, { alg: "RS256" }), /algorithm not allowed/);
    // One RSA key pair signing with both paddings (a CryptoKey is bound to one of them).
    const rsaBoth = generateKeyPairSync("rsa", { modulusLength: 2048 });
    await expectInvalid(new TokenVerifier({ hmacSecret: SECRET }), await sign({ sub: "x" }, rsaBoth.privateKey, { alg: "PS256" }), /algorithm not allowed/);
    // HS384 keyed with the PEM text: HMAC never uses a public key.
    await expectInvalid(new TokenVerifier({ publicKey: rsa.pem }), await sign({ sub: "x" }, new TextEncoder().encode(rsa.pem), { alg: "HS384" }), /algorithm not allowed/);

    // In a JWKS the key's own `alg` narrows further: an RS256 key does not verify PS256.
    const rsJwk = { ...(await exportJWK(rsaBoth.publicKey)), kid: "r", alg: "RS256" };
    const v = new TokenVerifier({ jwks: { keys: [rsJwk, { ...p384.jwk, kid: "p" }] } });
    expect((await v.verify(await sign({ sub: "rs" }, rsaBoth.privateKey, { alg: "RS256", kid: "r" }))).sub).toBe("rs");
    await expectInvalid(v, await sign({ sub: "x" }, rsaBoth.privateKey, { alg: "PS256", kid: "r" }), /no key matches/);
    // A P-384 key is not offered for ES256 or ES512.
    await expectInvalid(v, await sign({ sub: "x" }, ec.privateKey, { alg: "ES256", kid: "p" }), /no key matches/);
    expect((await v.verify(await sign({ sub: "ok" }, p384.privateKey, { alg: "ES384", kid: "p" }))).sub).toBe("ok");
  });
});

describe("TokenVerifier: rejections", () => {
  it("rejects a token signed by another key", async () => {
    await expectInvalid(
      new TokenVerifier({ hmacSecret: SECRET }),
      await sign({ sub: "x" }, new TextEncoder().encode("some-other-secret-of-enough-length!!")),
      /signature/,
    );
    await expectInvalid(
      new TokenVerifier({ publicKey: rsa.pem }),
      await sign({ sub: "x" }, rsa2.privateKey, { alg: "RS256" }),
      /signature/,
    );
  });

  it("rejects alg none", async () => {
    const unsigned = `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ sub: "x" })}.`;
    for (const auth of [{ hmacSecret: SECRET }, { publicKey: rsa.pem }, { publicKey: ec.pem }]) {
      await expectInvalid(new TokenVerifier(auth), unsigned, /algorithm not allowed/);
    }
  });

  it("rejects HS256 signed with the public key against an RSA verifier (alg confusion)", async () => {
    const forged = await sign({ sub: "x" }, new TextEncoder().encode(rsa.pem));
    await expectInvalid(new TokenVerifier({ publicKey: rsa.pem }), forged, /algorithm/);
  });

  it("rejects an algorithm the key type does not allow", async () => {
    const es = await sign({ sub: "x" }, ec.privateKey, { alg: "ES256" });
    await expectInvalid(new TokenVerifier({ publicKey: rsa.pem }), es, /algorithm/);
    const rs = await sign({ sub: "x" }, rsa.privateKey, { alg: "RS256" });
    await expectInvalid(new TokenVerifier({ publicKey: ec.pem }), rs, /algorithm/);
    // Rejected by the allowlist before the (bogus) signature is looked at.
    const es512 = `${b64url({ alg: "ES512" })}.${b64url({ sub: "x" })}.${"A".repeat(342)}`;
    await expectInvalid(new TokenVerifier({ publicKey: rsa.pem }), es512, /algorithm not allowed/);
  });

  it("reports an expired token as expired", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    const err = await rejection(v, await sign({ sub: "x", exp: now() - 30 }));
    expect(err.reason).toBe("expired");
    expect(err).toBeInstanceOf(Error);
  });

  it("requires exp unless requireExp is false", async () => {
    const never = await sign({ sub: "x", exp: undefined });
    await expect(new TokenVerifier({ hmacSecret: SECRET }).verify(never)).rejects.toThrow('token has no "exp" claim');
    await expect(new TokenVerifier({ hmacSecret: SECRET, requireExp: true }).verify(never)).rejects.toThrow(AuthError);
    expect(await new TokenVerifier({ hmacSecret: SECRET, requireExp: false }).verify(never)).toEqual({ sub: "x" });
  });

  it("rejects a token that is not yet valid", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    await expectInvalid(v, await sign({ sub: "x", nbf: now() + 60 }), /not yet valid \(nbf\)/);
    expect((await v.verify(await sign({ sub: "x", nbf: now() - 1 }))).sub).toBe("x");
  });

  it("checks audience and issuer when configured", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET, audience: "edge", issuer: "https://idp" });
    const ok = await sign({ sub: "x", aud: ["other", "edge"], iss: "https://idp" });
    expect((await v.verify(ok)).sub).toBe("x");
    await expectInvalid(v, await sign({ sub: "x", aud: "other", iss: "https://idp" }), /audience/);
    await expectInvalid(v, await sign({ sub: "x", aud: "edge", iss: "https://evil" }), /issuer/);
    await expectInvalid(v, await sign({ sub: "x", iss: "https://idp" }), /"aud"/);
  });

  it("ignores aud and iss when not configured", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    expect((await v.verify(await sign({ sub: "x", aud: "any", iss: "any" }))).sub).toBe("x");
  });

  it("requires a non-empty, bounded sub", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    await expectInvalid(v, await sign({}), /"sub"/);
    await expectInvalid(v, await sign({ sub: "" }), /"sub"/);
    await expectInvalid(v, await sign({ sub: 42 } as unknown as JWTPayload), /"sub"/);
    await expectInvalid(v, await sign({ sub: "x".repeat(257) }), /"sub"/);
    expect((await v.verify(await sign({ sub: "x".repeat(256) }))).sub).toHaveLength(256);
  });

  it("rejects a non-numeric exp", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    await expectInvalid(v, await sign({ sub: "x", exp: "soon" } as unknown as JWTPayload), /"exp"/);
  });

  it("validates the channels claim", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    const ok = await v.verify(await sign({ sub: "x", channels: ["chat.*", "news.>", "a"] }));
    expect(ok.channels).toEqual(["chat.*", "news.>", "a"]);
    expect((await v.verify(await sign({ sub: "x", channels: [] }))).channels).toEqual([]);

    for (const channels of ["chat.*", ["chat..a"], ["a.>.b"], [""], [1], { a: 1 }, null]) {
      await expectInvalid(v, await sign({ sub: "x", channels }), /"channels"/);
    }
    const many = Array.from({ length: 257 }, (_, i) => `c${i}`);
    await expectInvalid(v, await sign({ sub: "x", channels: many }), /"channels"/);
    expect((await v.verify(await sign({ sub: "x", channels: many.slice(1) }))).channels).toHaveLength(
      256,
    );
  });

  it("bounds the info claim", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    expect((await v.verify(await sign({ sub: "x", info: null }))).info).toBeNull();
    // JSON encoding of a string adds two quote bytes.
    expect((await v.verify(await sign({ sub: "x", info: "y".repeat(4094) }))).info).toHaveLength(
      4094,
    );
    await expectInvalid(v, await sign({ sub: "x", info: "y".repeat(4095) }), /"info"/);
  });

  it("rejects oversized tokens before parsing", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    const big = await sign({ sub: "x", pad: "p".repeat(16 * 1024) });
    await expectInvalid(v, big, /16 KiB/);
    await expectInvalid(v, "a".repeat(16 * 1024 + 1), /16 KiB/);
  });

  it("rejects garbage", async () => {
    const v = new TokenVerifier({ hmacSecret: SECRET });
    const garbage = [
      "",
      "abc",
      "a.b",
      "a.b.c",
      "...",
      "a.b.c.d",
      "😀.😀.😀",
      `${b64url({ alg: "HS256" })}.not-json.sig`,
      `${b64url({ alg: "HS256" })}.${b64url([1, 2])}.sig`,
      `${b64url("str")}.${b64url({ sub: "x" })}.sig`,
      `${b64url({ typ: "JWT" })}.${b64url({ sub: "x" })}.sig`,
    ];
    for (const token of garbage) await expectInvalid(v, token);
    await expectInvalid(v, 42 as unknown as string);
  });
});

describe("TokenVerifier: HS* tokens verified in place", () => {
  const config = { hmacSecret: SECRET, audience: "app", issuer: "idp" };

  it("refuses another spelling of a valid signature", async () => {
    const v = new TokenVerifier(config);
    const token = await sign({ sub: "u", aud: "app", iss: "idp" });
    expect((await v.verify(token)).sub).toBe("u");
    // Node's base64url decoder would skip the junk and padding; the signature is compared as text.
    for (const other of [`${token}=`, `${token}A`, `${token.slice(0, -1)}${token.endsWith("A") ? "B" : "A"}`, `${token.slice(0, -2)}!${token.slice(-2)}`]) {
      await expectInvalid(v, other, /signature|malformed|invalid/);
    }
  });

  it("accepts and refuses exactly what jose's own verification does", async () => {
    const v = new TokenVerifier(config);
    const options = { algorithms: ["HS256", "HS384", "HS512"], clockTolerance: 0, requiredClaims: ["exp"], audience: "app", issuer: "idp" };
    const t = now();
    const claim = <T>(values: T[]) => fc.option(fc.constantFrom(...values), { nil: undefined });
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          alg: fc.constantFrom("HS256", "HS384", "HS512"),
          header: fc.constantFrom({}, { typ: "JWT" }, { kid: "k1" }, { crit: ["b64"], b64: true }, { crit: ["x"], x: 1 }),
          exp: claim<unknown>([t - 10, t, t + 3600, "soon", null]),
          nbf: claim<unknown>([t - 10, t + 3600, "now"]),
          iat: claim<unknown>([t - 10, "then"]),
          aud: claim<unknown>(["app", "other", ["x", "app"], [], 7]),
          iss: claim<unknown>(["idp", "evil"]),
          flip: fc.constantFrom("none", "signature", "payload"),
        }),
        async (c) => {
          const payload: Record<string, unknown> = { sub: "u" };
          for (const k of ["exp", "nbf", "iat", "aud", "iss"] as const) if (c[k] !== undefined) payload[k] = c[k];
          const head = b64url({ alg: c.alg, ...c.header });
          const body = b64url(payload);
          const hash = `sha${c.alg.slice(2)}`;
          const signedBody = c.flip === "payload" ? b64url({ ...payload, sub: "v" }) : body;
          let sig = createHmac(hash, secretKey).update(`${head}.${signedBody}`).digest("base64url");
          if (c.flip === "signature") sig = `${sig.slice(0, 5)}${sig[5] === "A" ? "B" : "A"}${sig.slice(6)}`;
          const token = `${head}.${body}.${sig}`;
          const jose = await jwtVerify(token, secretKey, options).then(
            (r) => r.payload.sub,
            () => "refused",
          );
          const ours = await v.verify(token).then(
            (r) => r.sub,
            (e: unknown) => {
              expect(e).toBeInstanceOf(AuthError);
              return "refused";
            },
          );
          expect(ours).toBe(jose);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("patterns", () => {
  it("validates NATS-style patterns", () => {
    for (const p of ["a", "chat.room1", "chat.*", "chat.>", ">", "*", "*.*.>", "ünï.cödé", "a-b_c:d"]) {
      expect(isValidPattern(p), p).toBe(true);
    }
    for (const p of [
      "",
      ".",
      "a.",
      ".a",
      "a..b",
      "a.>.b",
      ">.a",
      "a.b*",
      "a.>b",
      "a b",
      "a.\tb",
      "a\nb",
      "a\u0000b",
      "a.\ud800",
      "x".repeat(256),
      "é".repeat(128),
    ]) {
      expect(isValidPattern(p), JSON.stringify(p)).toBe(false);
    }
    expect(isValidPattern("x".repeat(255))).toBe(true);
  });

  it("matches * against exactly one token", () => {
    expect(matchesPattern("chat.*", "chat.a")).toBe(true);
    expect(matchesPattern("chat.*", "chat.a.b")).toBe(false);
    expect(matchesPattern("chat.*", "chat")).toBe(false);
    expect(matchesPattern("*.a", "x.a")).toBe(true);
    expect(matchesPattern("*.a", "x.b")).toBe(false);
  });

  it("matches > against one or more trailing tokens", () => {
    expect(matchesPattern("chat.>", "chat.a")).toBe(true);
    expect(matchesPattern("chat.>", "chat.a.b")).toBe(true);
    expect(matchesPattern("chat.>", "chat")).toBe(false);
    expect(matchesPattern("chat.>", "news.a")).toBe(false);
    expect(matchesPattern(">", "anything.at.all")).toBe(true);
    expect(matchesPattern(">", "x")).toBe(true);
  });

  it("matches literals exactly", () => {
    expect(matchesPattern("chat.room", "chat.room")).toBe(true);
    expect(matchesPattern("chat.room", "chat.room2")).toBe(false);
    expect(matchesPattern("chat.room", "chat")).toBe(false);
    expect(matchesPattern("chat", "chat.room")).toBe(false);
  });

  it("never matches an invalid channel or through an invalid pattern", () => {
    expect(matchesPattern(">", "")).toBe(false);
    expect(matchesPattern("chat.*", "chat.")).toBe(false);
    expect(matchesPattern("a.>.b", "a.x.b")).toBe(false);
    expect(matchesPattern("a..b", "a..b")).toBe(false);
    expect(matchesPattern("a b", "a b")).toBe(false);
  });

  it("treats wildcard channels as the set of channels they denote", () => {
    expect(matchesPattern("chat.*", "chat.*")).toBe(true);
    expect(matchesPattern("chat.>", "chat.*")).toBe(true);
    expect(matchesPattern("chat.>", "chat.>")).toBe(true);
    expect(matchesPattern("chat.*", "chat.>")).toBe(false);
    expect(matchesPattern("chat.a", "chat.*")).toBe(false);
  });

  it("matchesAny", () => {
    expect(matchesAny(["news.*", "chat.>"], "chat.a.b")).toBe(true);
    expect(matchesAny(["news.*", "chat.>"], "sport.a")).toBe(false);
    expect(matchesAny([], "chat.a")).toBe(false);
  });
});

describe("readCookie", () => {
  it("reads plain, quoted and percent-encoded values", () => {
    const header = 'a=1; token=abc.def.ghi; q="quoted value"; p=hello%20world; e=';
    expect(readCookie(header, "token")).toBe("abc.def.ghi");
    expect(readCookie(header, "a")).toBe("1");
    expect(readCookie(header, "q")).toBe("quoted value");
    expect(readCookie(header, "p")).toBe("hello world");
    expect(readCookie(header, "e")).toBe("");
    expect(readCookie(header, "missing")).toBeUndefined();
  });

  it("is exact about names and takes the first occurrence", () => {
    expect(readCookie("xtoken=1; token=2", "token")).toBe("2");
    expect(readCookie("Token=1", "token")).toBeUndefined();
    expect(readCookie("token=1; token=2", "token")).toBe("1");
    expect(readCookie("  token = spaced ;", "token")).toBe("spaced");
    expect(readCookie("t=a=b", "t")).toBe("a=b");
  });

  it("never throws on garbage", () => {
    expect(readCookie(undefined, "t")).toBeUndefined();
    expect(readCookie("", "t")).toBeUndefined();
    expect(readCookie(";;;", "t")).toBeUndefined();
    expect(readCookie("t", "t")).toBeUndefined();
    expect(readCookie("t=%E0%A4%A", "t")).toBe("%E0%A4%A");
    expect(readCookie("t=100%", "t")).toBe("100%");
    expect(readCookie('t="', "t")).toBe('"');
    expect(readCookie("t=v", "")).toBeUndefined();
  });
});
