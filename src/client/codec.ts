import type { Frame } from "./transport.js";

/** Protocol v1 frames to and from the wire: WebSocket messages and long-poll bodies. */
export interface Codec {
  encode(frames: Frame[]): string | Uint8Array;
  decode(data: unknown): Frame[];
  contentType: string;
  body(value: Frame): string | Uint8Array;
  parse(body: ArrayBuffer): Frame;
}

export const jsonCodec: Codec = {
  encode: (frames) => frames.map((f) => JSON.stringify(f)).join("\n"),
  decode: (data) =>
    String(data)
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Frame),
  contentType: "application/json",
  body: (v) => JSON.stringify(v),
  parse: (b) => JSON.parse(new TextDecoder().decode(b)) as Frame,
};

/**
 * Imported only when asked for, so that the JSON build has no dependency. The options are the
 * gateway's (src/protocol/msgpack.ts): plain MessagePack without extension types, which it
 * refuses (close 4004), so `undefined` goes out as nil; and 64-bit integers, as a backend may
 * pack even small ones, come in as numbers rather than BigInt.
 */
export async function msgpackCodec(): Promise<Codec> {
  const m = (await import("msgpackr")) as unknown as {
    Packr: new (o: object) => { pack(v: unknown): Uint8Array };
    Unpackr: new (o: object) => { unpackMultiple(b: Uint8Array): unknown[]; unpack(b: Uint8Array): unknown };
  };
  const packr = new m.Packr({ useRecords: false, moreTypes: false, encodeUndefinedAsNil: true });
  const unpackr = new m.Unpackr({
    useRecords: false,
    mapsAsObjects: true,
    int64AsType: "number",
    structuredClone: false,
    moreTypes: false,
  });
  const bytes = (d: unknown): Uint8Array =>
    d instanceof Uint8Array ? d : new Uint8Array(d instanceof ArrayBuffer ? d : (d as { buffer: ArrayBuffer }).buffer);
  return {
    encode: (frames) => {
      const parts = frames.map((f) => packr.pack(f));
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) {
        out.set(p, at);
        at += p.length;
      }
      return out;
    },
    decode: (data) => unpackr.unpackMultiple(bytes(data)) as Frame[],
    contentType: "application/msgpack",
    body: (v) => packr.pack(v),
    parse: (b) => unpackr.unpack(new Uint8Array(b)) as Frame,
  };
}
