import { isUtf8 } from "node:buffer";
import { Packr, Unpackr } from "msgpackr";

/**
 * Plain MessagePack, readable by any client library: no msgpackr records or extensions, 64-bit
 * integers as numbers (JSON subscribers could not take BigInt anyway).
 */
const packr = new Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true });
const unpackr = new Unpackr({
  useRecords: false,
  mapsAsObjects: true,
  int64AsType: "number",
  structuredClone: false,
  moreTypes: false,
});

/** Input that is not MessagePack the protocol accepts; the message names the first problem. */
export class MsgpackError extends Error {}

/**
 * Containers open at once. Protocol frames are an object holding data that may itself be nested
 * MAX_DATA_DEPTH (128) levels; anything deeper is refused later anyway, this only keeps the
 * scan's own stack small.
 */
const MAX_NESTING = 160;
const MAX_SAFE_HIGH = 0x1f_ffff; // high 32 bits of 2^53 - 1

const rem = new Float64Array(MAX_NESTING);
const isMap = new Uint8Array(MAX_NESTING);

/**
 * Walks `bytes` as a sequence of MessagePack values without allocating anything, before msgpackr
 * sees them: msgpackr pre-allocates arrays and maps from the declared length (a 5-byte array32
 * header costs 256 MB), so every length is checked against the bytes that remain, and the
 * elements declared by all containers together against the message's size (each element takes
 * at least one byte, so honest input never exceeds it). Refused as well, because one of the two
 * wire formats could not carry them and a publication must reach JSON and MessagePack clients
 * alike: extension types (msgpackr's records, BigInt, dates, structured clone), binary, 0xc1,
 * non-finite floats, integers beyond 2^53, invalid UTF-8, map keys other than strings and the key
 * `__proto__` (msgpackr renames it). Returns the number of top-level values.
 */
export function scanMsgpack(bytes: Uint8Array, maxValues: number): number {
  const end = bytes.length;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  let budget = end;
  let values = 0;
  let sp = 0;
  let opened = false;
  const need = (n: number): void => {
    if (n > end - pos) throw new MsgpackError("a length runs past the end of the message");
  };
  const open = (n: number, map: boolean): void => {
    const items = map ? 2 * n : n;
    need(items);
    budget -= items;
    if (budget < 0) throw new MsgpackError("more elements declared than the message can hold");
    if (items === 0) return;
    if (sp === MAX_NESTING) throw new MsgpackError(`nested deeper than ${MAX_NESTING} levels`);
    rem[sp] = items;
    isMap[sp] = map ? 1 : 0;
    sp++;
    opened = true;
  };
  const str = (n: number, key: boolean): void => {
    need(n);
    const s = bytes.subarray(pos, pos + n);
    if (!isUtf8(s)) throw new MsgpackError("a string is not valid UTF-8");
    if (key && n === 9 && Buffer.from(s.buffer, s.byteOffset, 9).toString("latin1") === "__proto__") {
      throw new MsgpackError("__proto__ is not allowed as a map key");
    }
    pos += n;
  };
  while (pos < end) {
    if (++values > maxValues) throw new MsgpackError(`more than ${maxValues} values in one message`);
    do {
      const key = sp > 0 && isMap[sp - 1] === 1 && (rem[sp - 1] as number) % 2 === 0;
      const b = bytes[pos++] as number;
      opened = false;
      if (key && !(b >= 0xa0 && b <= 0xbf) && !(b >= 0xd9 && b <= 0xdb)) {
        throw new MsgpackError("map keys must be strings");
      }
      if (b <= 0x7f || b >= 0xe0) {
        /* fixint */
      } else if (b <= 0x8f) open(b & 0x0f, true);
      else if (b <= 0x9f) open(b & 0x0f, false);
      else if (b <= 0xbf) str(b & 0x1f, key);
      else {
        switch (b) {
          case 0xc0:
          case 0xc2:
          case 0xc3:
            break;
          case 0xca:
            need(4);
            if (!Number.isFinite(view.getFloat32(pos))) throw new MsgpackError("NaN and Infinity are not allowed");
            pos += 4;
            break;
          case 0xcb:
            need(8);
            if (!Number.isFinite(view.getFloat64(pos))) throw new MsgpackError("NaN and Infinity are not allowed");
            pos += 8;
            break;
          case 0xcc:
          case 0xd0:
            need(1);
            pos += 1;
            break;
          case 0xcd:
          case 0xd1:
            need(2);
            pos += 2;
            break;
          case 0xce:
          case 0xd2:
            need(4);
            pos += 4;
            break;
          case 0xcf:
            need(8);
            if (view.getUint32(pos) > MAX_SAFE_HIGH) throw new MsgpackError("integer beyond 2^53");
            pos += 8;
            break;
          case 0xd3: {
            need(8);
            const hi = view.getInt32(pos);
            if (hi > MAX_SAFE_HIGH || hi < -MAX_SAFE_HIGH - 1 || (hi === -MAX_SAFE_HIGH - 1 && view.getUint32(pos + 4) === 0)) {
              throw new MsgpackError("integer beyond 2^53");
            }
            pos += 8;
            break;
          }
          case 0xd9:
            need(1);
            pos += 1;
            str(bytes[pos - 1] as number, key);
            break;
          case 0xda:
            need(2);
            pos += 2;
            str(view.getUint16(pos - 2), key);
            break;
          case 0xdb:
            need(4);
            pos += 4;
            str(view.getUint32(pos - 4), key);
            break;
          case 0xdc:
            need(2);
            pos += 2;
            open(view.getUint16(pos - 2), false);
            break;
          case 0xdd:
            need(4);
            pos += 4;
            open(view.getUint32(pos - 4), false);
            break;
          case 0xde:
            need(2);
            pos += 2;
            open(view.getUint16(pos - 2), true);
            break;
          case 0xdf:
            need(4);
            pos += 4;
            open(view.getUint32(pos - 4), true);
            break;
          case 0xc4:
          case 0xc5:
          case 0xc6:
            throw new MsgpackError("binary values are not allowed (JSON clients could not receive them)");
          case 0xc1:
            throw new MsgpackError("0xc1 is not a MessagePack value");
          default:
            throw new MsgpackError("extension types are not allowed");
        }
      }
      if (opened) continue;
      // A value is complete: close every container it completes.
      while (sp > 0) {
        const left = (rem[sp - 1] as number) - 1;
        rem[sp - 1] = left;
        if (left > 0) break;
        sp--;
      }
    } while (sp > 0 && pos < end);
    if (sp > 0) throw new MsgpackError("the message ends inside a value");
  }
  return values;
}

export function pack(value: unknown): Buffer {
  return packr.pack(value);
}

/** One value; throws MsgpackError for anything scanMsgpack refuses or for more than one value. */
export function unpack(bytes: Buffer | Uint8Array): unknown {
  if (scanMsgpack(bytes, 1) !== 1) throw new MsgpackError("expected one value");
  return unpackr.unpack(bytes);
}

/** Every value in the message, at most `maxValues` of them. */
export function unpackAll(bytes: Buffer | Uint8Array, maxValues: number): unknown[] {
  if (scanMsgpack(bytes, maxValues) === 0) return [];
  return unpackr.unpackMultiple(bytes) as unknown[];
}
