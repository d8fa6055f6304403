import * as errors from "jose/errors";
import { createLocalJWKSet } from "jose/jwks/local";
import type { JSONWebKeySet, JWTVerifyGetKey } from "jose";
import type { RemoteJwks } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";

/** What caused a fetch: the label of natsedge_jwks_fetches_total. */
type FetchReason = "startup" | "max_age" | "unknown_kid";

/** A real JWKS is a few KiB (tens with x5c chains); anything far larger is not one. */
export const JWKS_MAX_BYTES = 256 * 1024;
/** Covers the whole exchange, body included: a server trickling bytes cannot hold a fetch open. */
export const JWKS_TIMEOUT_MS = 5_000;
const STARTUP_FIRST_RETRY_MS = 250;

/**
 * The identity provider's JWKS, fetched over HTTP(S) and held in memory.
 *
 * Not jose's createRemoteJWKSet, which would do most of this: it reads the body without a size
 * limit, fails every verification once its cache is older than its max age while the provider is
 * down (instead of keeping the last good keys), and counts its cooldown from the last success
 * only, so while the provider fails every token with an unknown `kid` causes another request.
 *
 * Here a fetch happens: at start-up (the gateway waits for the first key set, see start()); every
 * `maxAge` on a timer, so that added and removed keys take effect without traffic and without a
 * restart; and when a token names a `kid` the set does not hold, at most once per `cooldown`
 * counted from the last attempt, successful or not. A failed or refused fetch keeps the keys held.
 */
export class RemoteKeySet {
  #keys: JWTVerifyGetKey | undefined;
  #kids: string[] = [];
  #fetchedAt = 0;
  #attemptedAt = Number.NEGATIVE_INFINITY;
  #pending: Promise<boolean> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(
    private readonly options: RemoteJwks,
    private readonly log: Logger,
    private readonly metrics?: Metrics,
  ) {}

  /**
   * Resolves once a key set is held, retrying with backoff (up to the cooldown) until then: a
   * gateway without keys would refuse every client with 4001, which tells clients not to
   * reconnect. Then keeps the keys fresh on a timer until close().
   */
  async start(): Promise<void> {
    for (let delay = STARTUP_FIRST_RETRY_MS; !(await this.#refresh("startup")); ) {
      if (this.#closed) return;
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, this.options.cooldown);
    }
    this.#schedule(this.options.maxAge);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    try {
      return await this.#lookup(header, token);
    } catch (err) {
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      // A fetch already under way is joined whatever the cooldown: it costs the provider nothing more.
      const coolingDown = Date.now() - this.#attemptedAt < this.options.cooldown;
      if (this.#pending === undefined && coolingDown) throw err;
      await this.#refresh("unknown_kid");
      return this.#lookup(header, token);
    }
  };

  #lookup: JWTVerifyGetKey = (header, token) => {
    if (this.#keys === undefined) throw new errors.JWKSNoMatchingKey();
    return this.#keys(header, token);
  };

  #schedule(delay: number): void {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    // unref: the timer alone must not keep a process alive that has nothing else to do.
    this.#timer = setTimeout(() => void this.#tick(), delay).unref();
  }

  async #tick(): Promise<void> {
    const { maxAge, cooldown } = this.options;
    // An unknown-key fetch may have renewed the keys since this timer was set.
    const due = this.#fetchedAt + maxAge - Date.now();
    if (due > 0) return this.#schedule(due);
    const ok = await this.#refresh("max_age");
    this.#schedule(ok ? maxAge : Math.min(cooldown, maxAge));
  }

  /** One fetch at a time; callers arriving meanwhile share its outcome. */
  #refresh(reason: FetchReason): Promise<boolean> {
    this.#pending ??= this.#fetch(reason).finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  async #fetch(reason: FetchReason): Promise<boolean> {
    const { url } = this.options;
    this.#attemptedAt = Date.now();
    try {
      const jwks = await fetchJwks(url);
      // Validates the set's shape; each key is imported (and checked) when a token first needs it.
      this.#keys = createLocalJWKSet(jwks);
      const kids = jwks.keys.map((key) => (typeof key.kid === "string" ? key.kid : "(no kid)"));
      const changed = kids.join("\n") !== this.#kids.join("\n");
      this.#kids = kids;
      this.#fetchedAt = Date.now();
      this.metrics?.jwksFetches.inc({ reason, result: "ok" });
      this.metrics?.jwksLoadedAt.set(this.#fetchedAt / 1000);
      this.log[changed ? "info" : "debug"]({ url, reason, kids }, "JWKS loaded");
      return true;
    } catch (err) {
      this.metrics?.jwksFetches.inc({ reason, result: "failed" });
      const held = this.#keys === undefined ? undefined : Date.now() - this.#fetchedAt;
      this.log.warn(
        { url, reason, err: err instanceof Error ? err.message : String(err), keysAgeMs: held },
        held === undefined ? "JWKS fetch failed; no keys yet" : "JWKS fetch failed; keeping the keys held",
      );
      return false;
    }
  }
}

async function fetchJwks(url: string): Promise<JSONWebKeySet> {
  const res = await fetch(url, {
    // A redirect could lead anywhere; the configured URL is the one trusted.
    redirect: "manual",
    signal: AbortSignal.timeout(JWKS_TIMEOUT_MS),
    headers: { accept: "application/jwk-set+json, application/json" },
  });
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`HTTP ${res.status} (expected 200)`);
  }
  if (Number(res.headers.get("content-length") ?? 0) > JWKS_MAX_BYTES) {
    await res.body?.cancel();
    throw new Error(`response larger than ${JWKS_MAX_BYTES} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Counted while reading: Content-Length may be absent (chunked) or wrong.
  for await (const chunk of res.body ?? []) {
    size += chunk.byteLength;
    // Leaving the loop cancels the body stream, which ends the download.
    if (size > JWKS_MAX_BYTES) throw new Error(`response larger than ${JWKS_MAX_BYTES} bytes`);
    chunks.push(chunk);
  }
  let jwks: unknown;
  try {
    jwks = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    throw new Error("response is not JSON");
  }
  if (!isJwks(jwks)) throw new Error('response is not a JWKS: a JSON object whose "keys" is a non-empty array of objects');
  return jwks;
}

function isJwks(value: unknown): value is JSONWebKeySet {
  if (typeof value !== "object" || value === null) return false;
  const { keys } = value as { keys?: unknown };
  // An empty set would refuse every token: more likely a provider's glitch than a wish.
  return Array.isArray(keys) && keys.length > 0 && keys.every((key) => typeof key === "object" && key !== null && !Array.isArray(key));
}
