import { nestedDeeperThan } from "../protocol/payload.js";
import { createHmac, createPublicKey, timingSafeEqual, type KeyObject } from "node:crypto";
// jose by subpath: its index loads ~45 modules, and start-up time is how long a restarted replica
// refuses its reconnecting clients.
import { decodeProtectedHeader } from "jose/decode/protected_header";
import * as errors from "jose/errors";
import { createLocalJWKSet } from "jose/jwks/local";
import { UnsecuredJWT } from "jose/jwt/unsecured";
import { jwtVerify } from "jose/jwt/verify";
import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from "jose";
import type { AuthConfig } from "../config/types.js";
import { createLogger, type Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { RemoteKeySet } from "./jwks.js";
import { isValidPattern } from "./patterns.js";

export interface Claims {
  sub: string;
  /** Expiry, seconds since the epoch (the JWT `exp`). */
  exp?: number;
  /** Channel patterns the token grants (see patterns.ts). */
  channels?: string[];
  /** Opaque client info, any JSON value. */
  info?: unknown;
}

/**
 * A subscription token: the backend lets one user (`sub`; `""` for any anonymous client)
 * subscribe to one channel until `exp`, whatever the connection's own permissions say.
 */
export interface SubscriptionClaims {
  sub: string;
  channel: string;
  exp: number;
  info?: unknown;
}

export type AuthErrorReason = "expired" | "invalid";

export class AuthError extends Error {
  override readonly name = "AuthError";

  constructor(
    /** "expired" lets a client refresh its token instead of giving up. */
    readonly reason: AuthErrorReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Checked before any parsing: bounds the work an unauthenticated client can cause. */
export const MAX_TOKEN_LENGTH = 16 * 1024;
export const MAX_SUB_LENGTH = 256;
export const MAX_CHANNEL_PATTERNS = 256;
export const MAX_INFO_DEPTH = 32;
export const MAX_INFO_BYTES = 4096;

// Every algorithm the verifier accepts is listed here, derived from the kind of key configured:
// the explicit allowlist is what rejects `alg: none`, and HS* signed with a public key's text
// (HMAC only ever uses the shared secret, and a JWKS never supplies one).
const HMAC_ALGS = ["HS256", "HS384", "HS512"] as const;
const isHmacAlg = (alg: unknown): alg is (typeof HMAC_ALGS)[number] => HMAC_ALGS.some((hs) => hs === alg);
/** The header of an unsecured JWT, under which jose checks the claims of an HS* token we verified. */
const NONE_HEADER = Buffer.from(JSON.stringify({ alg: "none" })).toString("base64url");
// One RSA key verifies both paddings; PSS is the stronger, PKCS#1 v1.5 what most IdPs still use.
const RSA_ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] as const;
// An EC key fixes its algorithm through its curve (RFC 7518 3.4).
const EC_ALGS: Readonly<Record<string, readonly [string]>> = {
  prime256v1: ["ES256"],
  secp384r1: ["ES384"],
  secp521r1: ["ES512"],
};
// jose accepts both the legacy and the fully-specified (RFC 9864) name for Ed25519 signatures.
const ED25519_ALGS = ["EdDSA", "Ed25519"] as const;
// A JWKS may hold any of these; jose then matches each token to keys of the fitting type and
// curve (and the key's own `alg`, when it names one).
const JWKS_ALGS = [...RSA_ALGS, ...Object.values(EC_ALGS).flat(), ...ED25519_ALGS];

interface PemKey {
  algs: readonly [string, ...string[]];
  key: KeyObject;
}

/**
 * Verifies client JWTs against the configured key sources. Several sources may be configured at
 * once; the token's `alg` picks the source (and with both a PEM key and a JWKS, a token carrying a
 * `kid` goes to the JWKS). Throws a plain Error at construction for an unusable configuration.
 *
 * Clock tolerance is 0: a token is expired from the second its `exp` is reached and valid from the
 * second of its `nbf`. Token issuers should leave a margin for clock skew themselves.
 */
export class TokenVerifier {
  readonly #secret: Uint8Array | undefined;
  readonly #pem: PemKey | undefined;
  readonly #jwks: JWTVerifyGetKey | undefined;
  readonly #remote: RemoteKeySet | undefined;
  readonly #options: JWTVerifyOptions;
  /** Every `alg` a token may carry; anything else is refused before a key is looked up. */
  readonly algorithms: readonly string[];

  constructor(auth: AuthConfig, log: Logger = createLogger("silent"), metrics?: Metrics) {
    if (auth.hmacSecret !== undefined) {
      if (auth.hmacSecret === "") throw new Error("auth: hmacSecret must not be empty");
      this.#secret = new TextEncoder().encode(auth.hmacSecret);
    }
    if (auth.publicKey !== undefined) this.#pem = parsePem(auth.publicKey);
    if (auth.jwks !== undefined) {
      try {
        this.#jwks = createLocalJWKSet(auth.jwks as JSONWebKeySet);
      } catch (err) {
        throw new Error(`auth: invalid JWKS: ${messageOf(err)}`, { cause: err });
      }
    }
    if (auth.jwksUrl !== undefined) {
      if (this.#jwks) throw new Error("auth: jwks and jwksUrl cannot both be set");
      this.#remote = new RemoteKeySet(auth.jwksUrl, log, metrics);
      this.#jwks = this.#remote.getKey;
    }

    const algorithms: string[] = [
      ...(this.#secret ? HMAC_ALGS : []),
      ...(this.#pem ? this.#pem.algs : []),
      ...(this.#jwks ? JWKS_ALGS : []),
    ];
    if (algorithms.length === 0) throw new Error("auth: no key source configured");
    this.algorithms = [...new Set(algorithms)];
    this.#options = {
      algorithms: [...this.algorithms],
      clockTolerance: 0,
      ...(auth.requireExp !== false && { requiredClaims: ["exp"] }),
      ...(auth.audience !== undefined && { audience: auth.audience }),
      ...(auth.issuer !== undefined && { issuer: auth.issuer }),
    };
  }

  /** Resolves once every key source can verify tokens: a remote JWKS has been fetched. */
  async start(): Promise<void> {
    await this.#remote?.start();
  }

  /** Stops refreshing a remote JWKS. */
  close(): void {
    this.#remote?.close();
  }

  /** A connection token. One with a `channel` claim is a subscription token and is refused here. */
  async verify(token: string): Promise<Claims> {
    return toClaims(await this.#payload(token));
  }

  /** A subscription token: `channel` and `exp` are required (see SubscriptionClaims). */
  async verifySubscription(token: string): Promise<SubscriptionClaims> {
    return toSubscriptionClaims(await this.#payload(token));
  }

  async #payload(token: string): Promise<JWTPayload> {
    // Tokens arrive from the wire, so the declared type is not trusted.
    if (typeof token !== "string" || token.length === 0) {
      throw new AuthError("invalid", "token missing");
    }
    if (token.length > MAX_TOKEN_LENGTH) {
      throw new AuthError("invalid", "token larger than 16 KiB");
    }
    try {
      return await this.#verifyJws(token);
    } catch (err) {
      throw toAuthError(err);
    }
  }

  async #verifyJws(token: string): Promise<JWTPayload> {
    const hmac = this.#verifyHmac(token);
    if (hmac) return hmac;
    try {
      return (await jwtVerify(token, this.#getKey, this.#options)).payload;
    } catch (err) {
      if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw err;
      // Several JWKS keys fit and no `kid` tells them apart (typically during key rotation):
      // the token is valid if any of them verifies it.
      for await (const key of err) {
        try {
          return (await jwtVerify(token, key, this.#options)).payload;
        } catch (inner) {
          if (!(inner instanceof errors.JWSSignatureVerificationFailed)) throw inner;
        }
      }
      throw new errors.JWSSignatureVerificationFailed();
    }
  }

  /**
   * An HS* token, verified in place: jose verifies HMACs through WebCrypto, a job on the libuv
   * thread pool per token that cost 100-150 µs of the event loop's time under a reconnect storm
   * (against ~5 µs here). The claims are then checked by jose itself, as those of an unsecured JWT
   * with the same payload. Undefined for any other token, and for headers with `crit` or `b64`,
   * which jose decides on.
   */
  #verifyHmac(token: string): JWTPayload | undefined {
    const secret = this.#secret;
    if (!secret) return undefined;
    const dot1 = token.indexOf(".");
    const dot2 = token.indexOf(".", dot1 + 1);
    if (dot1 === -1 || dot2 === -1 || token.includes(".", dot2 + 1)) return undefined;
    let header;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      return undefined; // jose says what is wrong with it
    }
    const { alg } = header;
    if (!isHmacAlg(alg) || Object.hasOwn(header, "crit") || Object.hasOwn(header, "b64")) return undefined;
    // HS256 -> sha256. Compared as canonical base64url text, so that no other spelling of the signature passes.
    const expected = Buffer.from(createHmac(`sha${alg.slice(2)}`, secret).update(token.slice(0, dot2)).digest("base64url"));
    const given = Buffer.from(token.slice(dot2 + 1));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new errors.JWSSignatureVerificationFailed();
    return UnsecuredJWT.decode(`${NONE_HEADER}.${token.slice(dot1 + 1, dot2)}.`, this.#options).payload;
  }

  // Only reached for an allowlisted `alg`: jose checks the allowlist before resolving the key.
  readonly #getKey: JWTVerifyGetKey = async (header, token) => {
    const { alg, kid } = header;
    if (this.#secret && isHmacAlg(alg)) return this.#secret;
    const pem = this.#pem;
    const pemFits = pem !== undefined && alg !== undefined && pem.algs.includes(alg);
    if (this.#jwks && (!pemFits || kid !== undefined)) return this.#jwks(header, token);
    // A KeyObject, unlike a CryptoKey, is not bound to one algorithm: one key serves RS* and PS*.
    if (pemFits) return pem.key;
    throw new errors.JOSEAlgNotAllowed("no key configured for this algorithm");
  };
}

/** Works out which algorithm a PEM key is for, so a token can only use that one. */
function parsePem(pem: string): PemKey {
  let key;
  try {
    // Also accepts certificates, PKCS#1 and private keys; only the public half is kept.
    key = createPublicKey(pem);
  } catch (err) {
    throw new Error(`auth: publicKey is not a valid PEM key: ${messageOf(err)}`, { cause: err });
  }
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "rsa":
      // jose refuses shorter RSA keys at verification time; fail at startup instead.
      if ((details.modulusLength ?? 0) < 2048) {
        throw new Error("auth: RSA publicKey must be at least 2048 bits");
      }
      return { algs: RSA_ALGS, key };
    case "ec": {
      const algs = EC_ALGS[details.namedCurve ?? ""];
      if (algs === undefined) {
        throw new Error(`auth: EC publicKey must use P-256, P-384 or P-521, not ${details.namedCurve ?? "unknown"}`);
      }
      return { algs, key };
    }
    case "ed25519":
      return { algs: ED25519_ALGS, key };
    default:
      throw new Error(`auth: unsupported publicKey type ${key.asymmetricKeyType ?? "unknown"}`);
  }
}

function toAuthError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  const fail = (message: string) => new AuthError("invalid", message, { cause: err });
  if (err instanceof errors.JWTExpired) {
    return new AuthError("expired", "token expired", { cause: err });
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.reason === "missing") return fail(`token has no "${err.claim}" claim`);
    if (err.reason === "invalid") return fail(`token "${err.claim}" claim is malformed`);
    switch (err.claim) {
      case "nbf":
        return fail("token not yet valid (nbf)");
      case "aud":
        return fail("token audience mismatch");
      case "iss":
        return fail("token issuer mismatch");
      default:
        return fail(`token "${err.claim}" claim rejected`);
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed || err instanceof errors.JOSENotSupported) {
    return fail("token algorithm not allowed");
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return fail("token signature invalid");
  if (err instanceof errors.JWKSNoMatchingKey) return fail("no key matches the token");
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) {
    return fail("malformed token");
  }
  // Anything else (e.g. a key that does not fit the algorithm) is still the token's fault as far
  // as the client is concerned; the cause is kept for logs.
  return fail("invalid token");
}

/** Signature and times are already checked; this enforces the shape the gateway relies on. */
function toClaims(payload: JWTPayload): Claims {
  const fail = (message: string) => new AuthError("invalid", message);
  const { sub, exp } = payload;
  if (typeof sub !== "string" || sub.length === 0) {
    throw fail('token "sub" claim must be a non-empty string');
  }
  if (sub.length > MAX_SUB_LENGTH) {
    throw fail(`token "sub" claim longer than ${MAX_SUB_LENGTH} characters`);
  }
  // A subscription token names one channel for one user; connecting with it would make a grant
  // for one channel into a whole session.
  if (Object.hasOwn(payload, "channel")) throw fail('a subscription token (with a "channel" claim) cannot connect');
  const claims: Claims = { sub };
  // jose has already rejected a non-numeric exp.
  if (exp !== undefined) claims.exp = exp;

  if (Object.hasOwn(payload, "channels")) {
    const { channels } = payload;
    if (!Array.isArray(channels)) throw fail('token "channels" claim must be an array');
    if (channels.length > MAX_CHANNEL_PATTERNS) {
      throw fail(`token "channels" claim has more than ${MAX_CHANNEL_PATTERNS} patterns`);
    }
    const patterns: unknown[] = channels;
    const bad = patterns.findIndex((p) => typeof p !== "string" || !isValidPattern(p));
    if (bad !== -1) throw fail(`token "channels" claim has an invalid pattern at index ${bad}`);
    claims.channels = patterns as string[];
  }

  const info = infoOf(payload, fail);
  if (info !== undefined) claims.info = info;
  return claims;
}

/** Signature and times are already checked; a subscription token must name its channel and expire. */
function toSubscriptionClaims(payload: JWTPayload): SubscriptionClaims {
  const fail = (message: string) => new AuthError("invalid", message);
  const { sub, exp, channel } = payload as JWTPayload & { channel?: unknown };
  if (typeof sub !== "string" || sub.length > MAX_SUB_LENGTH) {
    throw fail(`subscription token "sub" claim must be a string of at most ${MAX_SUB_LENGTH} characters ("" for anonymous clients)`);
  }
  if (typeof channel !== "string" || channel.length === 0 || channel.length > MAX_CHANNEL_CLAIM) {
    throw fail(`subscription token "channel" claim must be a channel name of 1 to ${MAX_CHANNEL_CLAIM} characters`);
  }
  if (exp === undefined) throw fail('subscription token must have an "exp" claim');
  const claims: SubscriptionClaims = { sub, channel, exp };
  const info = infoOf(payload, fail);
  if (info !== undefined) claims.info = info;
  return claims;
}

const MAX_CHANNEL_CLAIM = 1024;

function infoOf(payload: JWTPayload, fail: (message: string) => AuthError): unknown {
  if (Object.hasOwn(payload, "info")) {
    // Checked first: a deeply nested value fits in 4 KiB but overflows the encoders' stacks.
    if (nestedDeeperThan(payload.info, MAX_INFO_DEPTH)) {
      throw fail(`token "info" claim is nested deeper than ${MAX_INFO_DEPTH} levels`);
    }
    const size = Buffer.byteLength(JSON.stringify(payload.info), "utf8");
    if (size > MAX_INFO_BYTES) {
      throw fail(`token "info" claim larger than ${MAX_INFO_BYTES} bytes`);
    }
    return payload.info;
  }
  return undefined;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
