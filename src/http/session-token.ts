import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Claims } from "../auth/jwt.js";
import type { Identity } from "../delivery/identity.js";
import { SESSION_TTL_MS } from "../sessions/revocations.js";

/** A session lives until its token's `exp`, at most this long (a revocation must outlive it). */
const SESSION_TTL_S = SESSION_TTL_MS / 1000;
const MAX_SESSION_LENGTH = 8192;

interface SessionPayload {
  c: string;
  u: string;
  /** Expiry, seconds since the epoch. */
  x: number;
  /** Issued, ms since the epoch: a revocation ends the sessions issued up to it. */
  t?: number;
  /** The token's claims that permissions need. */
  ch?: string[];
  i?: unknown;
  e?: number;
}

export class SessionError extends Error {}

/**
 * Signed, self-contained client sessions for the HTTP transports: any replica sharing
 * `sessionSecret` can verify one, so no replica keeps long-poll state and no load balancer needs
 * sticky sessions. `<base64url(JSON)>.<base64url(HMAC-SHA256)>`.
 */
export class SessionSigner {
  private readonly key: Buffer;

  constructor(
    secret: string | undefined,
    /** When a user's sessions were last revoked by a server-side disconnect, if they were. */
    private readonly revokedAt: (user: string) => number | undefined = () => undefined,
  ) {
    // Random per process when unset: fine for one process, useless across replicas (documented).
    this.key = secret === undefined ? randomBytes(32) : Buffer.from(secret, "utf8");
  }

  issue(identity: Identity, now = Date.now()): string {
    const claims = identity.claims;
    const payload: SessionPayload = {
      c: identity.client,
      u: identity.user,
      x: Math.min(claims?.exp ?? Infinity, Math.floor(now / 1000) + SESSION_TTL_S),
      t: now,
    };
    if (claims?.channels !== undefined) payload.ch = claims.channels;
    if (claims?.info !== undefined) payload.i = claims.info;
    if (claims?.exp !== undefined) payload.e = claims.exp;
    const body = Buffer.from(JSON.stringify(payload), "utf8").toString("base64url");
    return `${body}.${this.sign(body)}`;
  }

  /** The identity a session carries; throws SessionError when forged, malformed or expired. */
  verify(session: unknown, now = Date.now()): Identity & { expires: number } {
    if (typeof session !== "string" || session.length === 0 || session.length > MAX_SESSION_LENGTH) {
      throw new SessionError("session missing or malformed");
    }
    const dot = session.indexOf(".");
    const body = session.slice(0, dot);
    const sig = Buffer.from(session.slice(dot + 1), "base64url");
    const expected = Buffer.from(this.sign(body), "base64url");
    if (dot < 1 || sig.length !== expected.length || !timingSafeEqual(sig, expected)) {
      throw new SessionError("session signature invalid");
    }
    let p: SessionPayload;
    try {
      p = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as SessionPayload;
    } catch {
      throw new SessionError("session malformed");
    }
    // Signed is not the same as written by issue(): a body of another shape (JSON `null`, a
    // channels claim that is not a list of strings) must not crash the request or the checks.
    if (
      typeof p !== "object" ||
      p === null ||
      typeof p.c !== "string" ||
      typeof p.u !== "string" ||
      typeof p.x !== "number" ||
      (p.e !== undefined && typeof p.e !== "number") ||
      (p.t !== undefined && typeof p.t !== "number") ||
      (p.ch !== undefined && !(Array.isArray(p.ch) && p.ch.every((c) => typeof c === "string")))
    ) {
      throw new SessionError("session malformed");
    }
    if (p.x * 1000 <= now) throw new SessionError("session expired");
    const revoked = p.u === "" ? undefined : this.revokedAt(p.u);
    if (revoked !== undefined && (p.t ?? 0) <= revoked) throw new SessionError("session ended by the server (disconnected)");
    const identity: Identity & { expires: number } = { client: p.c, user: p.u, expires: p.x };
    if (p.u !== "") {
      const claims: Claims = { sub: p.u };
      if (p.e !== undefined) claims.exp = p.e;
      if (p.ch !== undefined) claims.channels = p.ch;
      if (p.i !== undefined) claims.info = p.i;
      identity.claims = claims;
    }
    return identity;
  }

  private sign(body: string): string {
    return createHmac("sha256", this.key).update(body).digest("base64url");
  }
}
