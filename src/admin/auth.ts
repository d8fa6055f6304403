import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readCookie } from "../auth/cookie.js";
import { BucketMap } from "../limits/bucket.js";

export const ADMIN_COOKIE = "natsedge_admin";
/** How long a console login lasts. */
export const LOGIN_TTL_MS = 8 * 60 * 60 * 1000;
/** Wrong secrets one address may try per minute before it is refused without checking. */
export const LOGIN_FAILURES_PER_MINUTE = 5;
const LOGIN_ADDRESSES = 10_000;

/** A logged-in console: its id and the token it must send with every POST. */
export interface AdminLogin {
  id: string;
  csrf: string;
}

/**
 * The console's login: the admin secret, compared in constant time, buys a cookie that is signed
 * with a key derived from that secret, so every replica with the same secret accepts it and
 * changing the secret logs everyone out. The CSRF token is derived from the login id with the
 * same key: nothing is stored, and a page on another origin can read neither.
 */
export class AdminAuth {
  private readonly secretDigest: Buffer;
  private readonly key: Buffer;
  private readonly failures = new BucketMap(LOGIN_FAILURES_PER_MINUTE / 60, LOGIN_FAILURES_PER_MINUTE, LOGIN_ADDRESSES);

  constructor(
    secret: string,
    private readonly secureCookie: boolean,
  ) {
    this.secretDigest = digest(secret);
    this.key = createHmac("sha256", secret).update("natsedge admin console login").digest();
  }

  /** Seconds to wait while `ip` has used up its wrong secrets, else undefined. */
  refused(ip: string): number | undefined {
    const bucket = this.failures.get(ip);
    return bucket.available() ? undefined : bucket.retryAfter();
  }

  /**
   * Checks a presented secret, counting a wrong one against `ip`. The budget is looked at again
   * here, not only when the request arrived: logins sent in parallel all pass that first look
   * before any of them has failed.
   */
  check(secret: string, ip: string): "ok" | "wrong" | "refused" {
    const bucket = this.failures.get(ip);
    if (!bucket.available()) return "refused";
    // Digests have equal length, so the comparison time says nothing about the secret.
    if (timingSafeEqual(digest(secret), this.secretDigest)) return "ok";
    bucket.take();
    return "wrong";
  }

  /** A new login's Set-Cookie value. */
  login(now = Date.now()): string {
    const expires = now + LOGIN_TTL_MS;
    const id = randomBytes(16).toString("base64url");
    const body = `${expires}.${id}`;
    return this.cookie(`${body}.${this.sign(body)}`, Math.floor(LOGIN_TTL_MS / 1000));
  }

  logout(): string {
    return this.cookie("", 0);
  }

  /** The login a Cookie header carries, if it is one this secret signed and it has not expired. */
  verify(cookieHeader: string, now = Date.now()): AdminLogin | undefined {
    const value = readCookie(cookieHeader, ADMIN_COOKIE);
    const parts = value?.split(".");
    if (parts?.length !== 3) return undefined;
    const [expires, id, sig] = parts as [string, string, string];
    if (!/^[0-9]{1,15}$/u.test(expires) || Number(expires) <= now) return undefined;
    if (!sameText(sig, this.sign(`${expires}.${id}`))) return undefined;
    return { id, csrf: this.sign(`csrf.${id}`) };
  }

  /** Whether `header` is the login's CSRF token. */
  csrfMatches(login: AdminLogin, header: string): boolean {
    return sameText(header, login.csrf);
  }

  private sign(text: string): string {
    return createHmac("sha256", this.key).update(text).digest("base64url");
  }

  private cookie(value: string, maxAge: number): string {
    const secure = this.secureCookie ? "; Secure" : "";
    return `${ADMIN_COOKIE}=${value}; Path=/admin; Max-Age=${maxAge}; HttpOnly; SameSite=Strict${secure}`;
  }
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function sameText(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}
