import { matchesAny } from "../auth/patterns.js";
import { personalOwner, resolveChannel, type ResolvedChannel } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Identity } from "./identity.js";

/**
 * Who may use which channel, the same for every transport: anonymous clients only in
 * `anonymous` namespaces, personal channels only by their owner, and a token's `channels` claim
 * when it has one. Throws ProtocolError 401/403 with the reason.
 */
export function checkAccess(identity: Identity, r: ResolvedChannel): void {
  if (identity.user === "" && !r.options.anonymous) {
    throw new ProtocolError(ErrorCode.Unauthenticated, `channel ${r.ch} requires a token`);
  }
  if (r.options.personal && personalOwner(r.ch) !== identity.user) {
    throw new ProtocolError(ErrorCode.Forbidden, `channel ${r.ch} is another user's personal channel`);
  }
  const patterns = identity.claims?.channels;
  if (patterns !== undefined && !matchesAny(patterns, r.ch)) {
    throw new ProtocolError(ErrorCode.Forbidden, `token does not allow channel ${r.ch}`);
  }
}

/** Whether the identity may still use a channel it holds (after a narrower token, say). */
export function allowed(identity: Identity, r: ResolvedChannel): boolean {
  try {
    checkAccess(identity, r);
    return true;
  } catch {
    return false;
  }
}

/** Validates a channel name, finds its namespace and checks access: ProtocolError 400/401/403/404. */
export function authorize(namespaces: Record<string, NamespaceOptions>, identity: Identity, ch: unknown, field = "ch"): ResolvedChannel {
  const r = resolveChannel(namespaces, ch, field);
  checkAccess(identity, r);
  return r;
}
