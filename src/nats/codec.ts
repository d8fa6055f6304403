import { headers as natsHeaders, type MsgHdrs } from "nats";
import { MAX_INFO_DEPTH } from "../auth/jwt.js";
import { dataProblem, nestedDeeperThan, Payload } from "../protocol/payload.js";
import { pack, unpack } from "../protocol/msgpack.js";
import type { ClientInfo, Publication } from "../publication.js";
import { formatTraceparent, parseTraceparent, TRACEPARENT } from "../tracing/context.js";

/**
 * How publications and presence events look on NATS. The body of a publication is the data itself
 * (JSON, or MessagePack with `Content-Type: application/msgpack`) so backends can publish with any
 * NATS client; gateway metadata rides in headers.
 */
export const H = {
  contentType: "Content-Type",
  event: "Natsedge-Event",
  ts: "Natsedge-Ts",
  client: "Natsedge-Client",
  user: "Natsedge-User",
  sequence: "Nats-Sequence",
  lastSequence: "Nats-Last-Sequence",
  timestamp: "Nats-Time-Stamp",
} as const;

export const MSGPACK = "application/msgpack";
/** A join/leave event is a client id, a user id and at most a token's info claim. */
const MAX_EVENT_BYTES = 8192;

export function encodePublication(pub: Publication): { body: Buffer; headers: MsgHdrs } {
  const h = natsHeaders();
  h.set(H.ts, String(pub.ts));
  if (pub.data.origin === "msgpack") h.set(H.contentType, MSGPACK);
  if (pub.info) {
    h.set(H.client, pub.info.client);
    h.set(H.user, encodeURIComponent(pub.info.user));
  }
  if (pub.trace) h.set(TRACEPARENT, formatTraceparent(pub.trace));
  return { body: pub.data.originBytes(), headers: h };
}

export function encodeEvent(kind: "join" | "leave", info: ClientInfo): { body: Buffer; headers: MsgHdrs } {
  const h = natsHeaders();
  h.set(H.event, kind);
  return { body: pack(info), headers: h };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Validates and wraps a message body; undefined when it is not one valid JSON / MessagePack value. */
export function decodePayload(data: Uint8Array, contentType: string | undefined): Payload | undefined {
  try {
    if (contentType !== undefined && contentType.toLowerCase().startsWith(MSGPACK)) {
      // A copy: the message may be retained (recent buffer), and must not pin the read chunk.
      const bytes = Buffer.from(data);
      const value = unpack(bytes);
      if (dataProblem(value) !== undefined) return undefined;
      return Payload.fromMsgpack(bytes, value);
    }
    // JSON.parse skips a byte order mark, but spliced into a push frame it would make the frame
    // unparsable for every JSON client: it is dropped from the forwarded bytes too.
    const bytes = Buffer.from(hasBom(data) ? data.subarray(3) : data);
    const value: unknown = JSON.parse(utf8.decode(bytes));
    // Deeper data would overflow the encoders in fan-out: refused like any invalid payload.
    if (dataProblem(value) !== undefined) return undefined;
    blankLineBreaks(bytes);
    return Payload.fromJson(bytes, value);
  } catch {
    return undefined;
  }
}

/**
 * Pretty-printed JSON spliced into a push frame would put line breaks into a server message, and
 * clients that read JSON messages line by line (the SDK's decoder does) would get pieces of a
 * frame. In valid JSON a raw CR or LF can only be whitespace between tokens (inside strings they
 * must be escaped, and UTF-8 never uses those bytes within a character), so a space replaces it
 * without changing the value or the rest of the bytes.
 */
function blankLineBreaks(bytes: Buffer): void {
  if (!bytes.includes(0x0a) && !bytes.includes(0x0d)) return;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x0a || bytes[i] === 0x0d) bytes[i] = 0x20;
}

function hasBom(data: Uint8Array): boolean {
  return data.length >= 3 && data[0] === 0xef && data[1] === 0xbb && data[2] === 0xbf;
}

/** A publication from a NATS message (live or stored); undefined when the payload is invalid. */
export function decodePublication(
  ch: string,
  data: Uint8Array,
  h: MsgHdrs | undefined,
  position?: { offset: number; prev?: number; time?: number },
): Publication | undefined {
  const payload = decodePayload(data, h?.get(H.contentType) || undefined);
  if (!payload) return undefined;
  const tsHeader = Number(h?.get(H.ts));
  const pub: Publication = {
    ch,
    data: payload,
    ts: Number.isFinite(tsHeader) && tsHeader > 0 ? tsHeader : (position?.time ?? Date.now()),
  };
  const client = h?.get(H.client);
  if (client) pub.info = { client, user: safeDecode(h?.get(H.user) ?? "") };
  if (position) {
    pub.offset = position.offset;
    if (position.prev !== undefined) pub.prev = position.prev;
  }
  return pub;
}

/** With tracing on: the publisher's trace context, when the message carries a valid one. */
export function readTrace(pub: Publication, h: MsgHdrs | undefined): void {
  const trace = parseTraceparent(h?.get(TRACEPARENT));
  if (trace) pub.trace = trace;
}

export function decodeEvent(data: Uint8Array): ClientInfo | undefined {
  try {
    if (data.byteLength > MAX_EVENT_BYTES) return undefined;
    const v = unpack(data) as Partial<ClientInfo> | null;
    if (!v || typeof v.client !== "string" || typeof v.user !== "string") return undefined;
    // Anyone who may publish to a channel subject can send an event: bound it like a token's info.
    if (nestedDeeperThan(v.info, MAX_INFO_DEPTH)) return undefined;
    const info: ClientInfo = { client: v.client, user: v.user };
    if (v.info !== undefined) info.info = v.info;
    return info;
  } catch {
    return undefined;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
