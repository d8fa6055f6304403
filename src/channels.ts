import type { NamespaceOptions } from "./config/types.js";
import { ErrorCode, ProtocolError } from "./protocol/codes.js";

const MAX_CHANNEL_BYTES = 255;
// Tokens become NATS subject tokens, so wildcards and whitespace would change their meaning.
// Lone surrogates encode to U+FFFD in subjects, so two different names would share one.
const BAD_TOKEN = /[\s*>\p{Cs}]/u;

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
      throw new ProtocolError(ErrorCode.BadRequest, `${field} ${JSON.stringify(ch)} contains '*', '>' or whitespace`);
    }
  }
  const namespace = tokens[0] as string;
  const options = Object.hasOwn(namespaces, namespace) ? namespaces[namespace] : undefined;
  if (!options) throw new ProtocolError(ErrorCode.NotFound, `unknown namespace ${JSON.stringify(namespace)}`);
  return { ch, namespace, options };
}

/** The user a personal channel belongs to: its last token (`user.alice` -> `alice`). */
export function personalOwner(ch: string): string {
  return ch.slice(ch.lastIndexOf(".") + 1);
}

/** The namespace of an already validated channel: its first token. */
export function namespaceOf(ch: string): string {
  const i = ch.indexOf(".");
  return i < 0 ? ch : ch.slice(0, i);
}
