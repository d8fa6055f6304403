/**
 * NATS-style channel patterns: `.`-separated tokens, where `*` stands for exactly one token and a
 * trailing `>` for one or more. Channels are checked with the same grammar, so a concrete channel
 * is simply a pattern without wildcards.
 */

const MAX_PATTERN_BYTES = 255;

// Control characters are rejected along with whitespace because they have no business in a subject
// and confuse logs; lone surrogates because UTF-8 encoding turns them all into U+FFFD, which would
// let two distinct JS strings alias the same NATS subject and slip past a permission check.
const FORBIDDEN_IN_LITERAL = /[\s*>\p{Cc}\p{Cs}]/u;

export function isValidPattern(p: string): boolean {
  // UTF-8 never uses fewer bytes than UTF-16 code units, so `length` is a cheap early reject.
  if (typeof p !== "string" || p.length === 0 || p.length > MAX_PATTERN_BYTES) return false;
  if (Buffer.byteLength(p, "utf8") > MAX_PATTERN_BYTES) return false;
  const tokens = p.split(".");
  const last = tokens.length - 1;
  return tokens.every(
    (t, i) =>
      t === "*" || (t === ">" && i === last) || (t.length > 0 && !FORBIDDEN_IN_LITERAL.test(t)),
  );
}

/**
 * True when every channel `channel` can denote is allowed by `pattern`. For a concrete channel this
 * is ordinary wildcard matching; a wildcard channel (a wildcard subscription) only matches a
 * pattern that is at least as broad, so `chat.*` does not grant `chat.>`.
 */
export function matchesPattern(pattern: string, channel: string): boolean {
  return isValidPattern(channel) && covers(pattern, channel);
}

export function matchesAny(patterns: readonly string[], channel: string): boolean {
  return isValidPattern(channel) && patterns.some((p) => covers(p, channel));
}

/**
 * `channel` must already be valid. The pattern needs no validation: every token of a valid channel
 * is non-empty and clean, so a malformed pattern token (empty, with whitespace, `>` not last, ...)
 * can never equal it, and a pattern that covers a valid channel is itself no longer than it.
 */
function covers(pattern: string, channel: string): boolean {
  const p = pattern.split(".");
  const c = channel.split(".");
  for (let i = 0; i < p.length; i++) {
    const pt = p[i];
    if (pt === ">") return i === p.length - 1 && c.length > i;
    const ct = c[i];
    if (ct === undefined) return false;
    if (pt === "*") {
      if (ct === ">") return false;
    } else if (pt !== ct) {
      return false;
    }
  }
  return c.length === p.length;
}
