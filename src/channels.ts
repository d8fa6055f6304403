import type { NamespaceOptions } from "./config/types.js";
import { ErrorCode, ProtocolError } from "./protocol/codes.js";

const MAX_CHANNEL_BYTES = 255;
// Tokens become NATS subject tokens, so wildcards and whitespace would change their meaning.
// Lone surrogates encode to U+FFFD in subjects, so two different names would share one. Control
// characters (C0, DEL, C1 including U+0085 NEL) and the line/paragraph separators are invisible
// in logs and UIs and break line-based tools: names that differ only by them would look the same.
const BAD_TOKEN = /[\s*>\p{Cs}\p{Cc}\u2028\u2029]/u;

export interface ResolvedChannel {
  ch: string;
  namespace: string;
  options: NamespaceOptions;
}

/** Validates a channel name and finds its namespace; throws ProtocolError 400/404. */
export function resolveChannel(
  namespaces: Record<string, NamespaceOptions>,
  ch: unknown,
  field = "ch",
): ResolvedChannel {
  if (typeof ch !== "string") throw new ProtocolError(ErrorCode.BadRequest, `${field} must be a string`);
  if (ch.length === 0) throw new ProtocolError(ErrorCode.BadRequest, `${field} must not be empty`);
  if (Buffer.byteLength(ch, "utf8") > MAX_CHANNEL_BYTES) {
    throw new ProtocolError(ErrorCode.BadRequest, `${field} is longer than ${MAX_CHANNEL_BYTES} bytes`);
  }
  const tokens = ch.split(".");
  // A bare namespace is not a channel: stream subjects and republish mappings are `<ns>.>`.
  if (tokens.length < 2) throw new ProtocolError(ErrorCode.BadRequest, `${field} must be <namespace>.<name>, got ${JSON.stringify(ch)}`);
  for (const t of tokens) {
    if (t === "") throw new ProtocolError(ErrorCode.BadRequest, `${field} ${JSON.stringify(ch)} has an empty token`);
    if (BAD_TOKEN.test(t)) {
      throw new ProtocolError(ErrorCode.BadRequest, `${field} ${JSON.stringify(ch)} contains '*', '>', whitespace or a control character`);
    }
  }
  const namespace = tokens[0] as string;
  const options = Object.hasOwn(namespaces, namespace) ? namespaces[namespace] : undefined;
  if (!options) throw new ProtocolError(ErrorCode.NotFound, `unknown namespace ${JSON.stringify(namespace)}`);
  return { ch, namespace, options };
}

/**
 * The user a personal channel belongs to: everything after the namespace (`user.alice` -> `alice`,
 * `user.tenant.bob` -> `tenant.bob`), so a user named by a trailing token of someone else's id
 * (`com` in `user.alice@example.com`) owns nothing.
 */
export function personalOwner(ch: string): string {
  return ch.slice(ch.indexOf(".") + 1);
}

/** The namespace of an already validated channel: its first token. */
export function namespaceOf(ch: string): string {
  const i = ch.indexOf(".");
  return i < 0 ? ch : ch.slice(0, i);
}

/** Whether any namespace lets clients without a token in; if none does, a token is required to connect. */
export function anonymousAllowed(namespaces: Record<string, NamespaceOptions>): boolean {
  for (const ns in namespaces) if (namespaces[ns]?.anonymous) return true;
  return false;
}
