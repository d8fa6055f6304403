import type { ClientInfo, Publication } from "../publication.js";
import type { Format } from "./codec.js";
import { encodeFrame } from "./codec.js";
import { pack } from "./msgpack.js";

/**
 * Push frames for publications are built by splicing the already-encoded data into the frame, so
 * the hot path never re-serialises a payload it only forwards.
 */
export function encodePubPush(format: Format, pub: Publication): Buffer {
  return format === "json" ? pubJson(pub, `{"push":"pub","ch":${JSON.stringify(pub.ch)}`) : pubMsgpack(pub, true);
}

/** A publication naming its channel, without `push` (long-poll and SSE answers). */
export function encodeChannelPub(format: Format, pub: Publication): Buffer {
  if (format === "json") return pubJson(pub, `{"ch":${JSON.stringify(pub.ch)}`);
  const entry = pubMsgpack(pub, false);
  // Prepend the channel to the entry's fixmap: bump the field count, insert the pair.
  return Buffer.concat([Buffer.from([(entry[0] as number) + 1]), pack("ch"), pack(pub.ch), entry.subarray(1)]);
}

/** A publication inside a reply (history, recovery): no `push`/`ch`, same splicing. */
export function encodePubEntry(format: Format, pub: Publication): Buffer {
  return format === "json" ? pubJson(pub, "{") : pubMsgpack(pub, false);
}

function pubJson(pub: Publication, head: string): Buffer {
  let prefix = head;
  if (pub.offset !== undefined) prefix += `${prefix.length > 1 ? "," : ""}"offset":${pub.offset}`;
  prefix += `${prefix.length > 1 ? "," : ""}"data":`;
  const suffix = pub.info ? `,"info":${JSON.stringify(pub.info)}}` : "}";
  return Buffer.concat([Buffer.from(prefix, "utf8"), pub.data.json(), Buffer.from(suffix, "utf8")]);
}

function pubMsgpack(pub: Publication, push: boolean): Buffer {
  const parts: Buffer[] = [];
  let fields = 0;
  const field = (key: string, value: unknown): void => {
    parts.push(pack(key), pack(value));
    fields++;
  };
  if (push) {
    field("push", "pub");
    field("ch", pub.ch);
  }
  if (pub.offset !== undefined) field("offset", pub.offset);
  if (pub.info) field("info", pub.info);
  parts.push(pack("data"), pub.data.msgpack());
  fields++;
  // fixmap header: at most 5 fields here, always < 16.
  return Buffer.concat([Buffer.from([0x80 | fields]), ...parts]);
}

/** A reply frame whose `ok` carries already-encoded publication entries, spliced not re-encoded. */
export function encodeReplyWithPubs(
  format: Format,
  id: unknown,
  ok: Record<string, unknown>,
  pubs: readonly Buffer[],
): Buffer {
  const body = encodeObjectWithPubs(format, ok, pubs);
  if (format === "json") {
    const head = id === undefined ? `{"ok":` : `{"id":${JSON.stringify(id)},"ok":`;
    return Buffer.concat([Buffer.from(head, "utf8"), body, CLOSE_OBJECT]);
  }
  const idParts = id === undefined ? [] : [pack("id"), pack(id)];
  return Buffer.concat([Buffer.from([0x80 | (idParts.length ? 2 : 1)]), ...idParts, pack("ok"), body]);
}

/** `{...fields, pubs: [...]}` with the publication entries spliced in. */
export function encodeObjectWithPubs(format: Format, fields: Record<string, unknown>, pubs: readonly Buffer[]): Buffer {
  if (format === "json") {
    const fieldsJson = JSON.stringify(fields);
    const head = `${fieldsJson.slice(0, -1)}${fieldsJson.length > 2 ? "," : ""}"pubs":[`;
    const parts: Buffer[] = [Buffer.from(head, "utf8")];
    pubs.forEach((p, i) => {
      if (i > 0) parts.push(COMMA);
      parts.push(p);
    });
    parts.push(CLOSE_PUBS);
    return Buffer.concat(parts);
  }
  const entries = Object.entries(fields).filter(([, v]) => v !== undefined);
  const parts: Buffer[] = [mapHeader(entries.length + 1)];
  for (const [k, v] of entries) parts.push(pack(k), pack(v));
  parts.push(pack("pubs"), arrayHeader(pubs.length), ...pubs);
  return Buffer.concat(parts);
}

const COMMA = Buffer.from(",");
const CLOSE_PUBS = Buffer.from("]}");
const CLOSE_OBJECT = Buffer.from("}");

function arrayHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x90 | n]);
  if (n < 0x10000) return Buffer.from([0xdc, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xdd;
  b.writeUInt32BE(n, 1);
  return b;
}

function mapHeader(n: number): Buffer {
  if (n < 16) return Buffer.from([0x80 | n]);
  return Buffer.from([0xde, n >> 8, n & 0xff]);
}

export function encodeJoinLeave(format: Format, kind: "join" | "leave", ch: string, info: ClientInfo): Buffer {
  return encodeFrame(format, { push: kind, ch, info });
}
