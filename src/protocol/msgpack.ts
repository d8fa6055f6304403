import { C1, Packr, Unpackr } from "msgpackr";

/**
 * Plain MessagePack, readable by any client library: no msgpackr records or extensions, 64-bit
 * integers as numbers (JSON subscribers could not take BigInt anyway).
 */
const packr = new Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

export function pack(value: unknown): Buffer {
  return packr.pack(value);
}

export function unpack(bytes: Buffer | Uint8Array): unknown {
  return unpackr.unpack(bytes);
}

export function unpackAll(bytes: Buffer | Uint8Array): unknown[] {
  const values = unpackr.unpackMultiple(bytes) as unknown[];
  // 0xc1 is "never used" in MessagePack; msgpackr decodes it to a marker object instead of failing.
  if (values.some((v) => v === C1)) throw new Error("0xc1 is not a MessagePack value");
  return values;
}
