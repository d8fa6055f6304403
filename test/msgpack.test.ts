/**
 * The bounded MessagePack decoder: every length is checked against the bytes that remain before
 * msgpackr allocates, kinds one wire format cannot carry are refused, and what it accepts decodes
 * to exactly what was encoded. Property-based with fast-check, bounded in runs and time.
 */
import fc from "fast-check";
import { Packr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { MsgpackError, pack, scanMsgpack, unpack, unpackAll } from "../src/protocol/msgpack.js";

const FUZZ = { numRuns: 2_000, interruptAfterTimeLimit: 10_000 };

/**
 * Values both wire formats carry: what JSON.parse can produce (finite numbers, string keys),
 * less the key `__proto__`, which msgpackr would rename and the decoder therefore refuses.
 */
const portable = fc.jsonValue({ maxDepth: 6 }).filter((v) => !JSON.stringify(v).includes('"__proto__":'));

const bigintPackr = new Packr({ useRecords: false, useBigIntExtension: true } as ConstructorParameters<typeof Packr>[0]);
const recordPackr = new Packr({ useRecords: true });

function bytes(...b: number[]): Buffer {
  return Buffer.from(b);
}

/** Calls `f` and says how it ended: the decoder may refuse, but only ever with MsgpackError. */
function outcome(f: () => unknown): "ok" | "refused" {
  try {
    f();
    return "ok";
  } catch (err) {
    if (err instanceof MsgpackError) return "refused";
    throw err;
  }
}

describe("bounded MessagePack decoder", () => {
  it("decodes every JSON-compatible value exactly as encoded", () => {
    fc.assert(
      fc.property(portable, (value) => {
        // JSON.parse turns -0 into 0 only through text; compare through JSON to match what JSON clients see.
        expect(JSON.stringify(unpack(pack(value)))).toBe(JSON.stringify(value));
      }),
      FUZZ,
    );
  });

  it("decodes batches of values back to back", () => {
    fc.assert(
      fc.property(fc.array(portable, { minLength: 1, maxLength: 20 }), (values) => {
        const buf = Buffer.concat(values.map((v) => pack(v)));
        expect(JSON.stringify(unpackAll(buf, 100))).toBe(JSON.stringify(values));
      }),
      FUZZ,
    );
  });

  it("refuses declared lengths the message cannot hold, before allocating", () => {
    const bombs: Array<[string, Buffer]> = [
      ["array32 of 32 M", bytes(0xdd, 0x01, 0xf0, 0x00, 0x00)],
      ["map32 of 4 G", bytes(0xdf, 0xff, 0xff, 0xff, 0xff)],
      ["str32 of 4 GB", bytes(0xdb, 0xff, 0xff, 0xff, 0xff, 0x61)],
      ["array16 promising 65535", Buffer.concat([bytes(0xdc, 0xff, 0xff), Buffer.alloc(100)])],
      // Each level fits on its own; together they declare far more elements than there are bytes.
      ["20 nested array32 headers", Buffer.concat(Array.from({ length: 20 }, () => bytes(0xdd, 0x00, 0x00, 0x00, 0x14)))],
      ["nested map16 headers", Buffer.concat(Array.from({ length: 200 }, () => bytes(0xde, 0x00, 0x02, 0xa1, 0x61)))],
    ];
    const before = process.memoryUsage().rss;
    for (const [what, buf] of bombs) {
      const started = performance.now();
      expect(() => unpackAll(buf, 100), what).toThrow(MsgpackError);
      expect(performance.now() - started, what).toBeLessThan(50);
    }
    expect(process.memoryUsage().rss - before).toBeLessThan(16 * 1024 * 1024);
  });

  it("refuses what one of the two wire formats cannot carry", () => {
    const refused: Array<[string, Buffer]> = [
      ["binary", pack(new Uint8Array([1, 2, 3]))],
      ["BigInt extension", bigintPackr.pack({ n: 2n ** 70n })],
      ["msgpackr record", recordPackr.pack([{ a: 1 }, { a: 2 }])],
      ["timestamp extension", bytes(0xd6, 0xff, 0, 0, 0, 1)],
      ["fixext1", bytes(0xd4, 0x01, 0x00)],
      ["ext8", bytes(0xc7, 0x01, 0x05, 0x00)],
      ["0xc1", bytes(0xc1)],
      ["NaN float64", Buffer.concat([bytes(0xcb), Buffer.from(new Float64Array([NaN]).buffer).reverse()])],
      ["Infinity float32", bytes(0xca, 0x7f, 0x80, 0x00, 0x00)],
      ["uint64 beyond 2^53", bytes(0xcf, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00)],
      ["int64 below -2^53", bytes(0xd3, 0xff, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00)],
      ["integer map key", bytes(0x81, 0x01, 0x02)],
      ["__proto__ key", Buffer.concat([bytes(0x81), pack("__proto__"), bytes(0x80)])],
      ["invalid UTF-8", bytes(0xa2, 0xc3, 0x28)],
      ["truncated", bytes(0x92, 0x01)],
      ["161 nested arrays", Buffer.concat([Buffer.alloc(161, 0x91), bytes(0x01)])],
    ];
    for (const [what, buf] of refused) expect(() => unpack(buf), what).toThrow(MsgpackError);
    // The edges of what is accepted.
    expect(unpack(bytes(0xcf, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))).toBe(Number.MAX_SAFE_INTEGER);
    expect(unpack(bytes(0xd3, 0xff, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01))).toBe(Number.MIN_SAFE_INTEGER);
    expect(unpack(Buffer.concat([Buffer.alloc(160, 0x91), bytes(0x01)]))).toBeDefined();
    expect(unpack(Buffer.concat([bytes(0x81), pack("constructor"), bytes(0x01)]))).toEqual({ constructor: 1 });
  });

  it("never throws anything but MsgpackError on random bytes, and what it accepts re-encodes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (raw) => {
        let values: unknown[] = [];
        if (outcome(() => (values = unpackAll(raw, 100))) === "ok") {
          for (const v of values) expect(() => JSON.stringify(v)).not.toThrow();
        }
      }),
      FUZZ,
    );
  });

  it("never throws anything but MsgpackError on mutated valid messages", () => {
    const mutated = fc
      .tuple(portable, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }))
      .map(([value, edits]) => {
        const buf = Buffer.from(pack(value));
        for (const [at, byte] of edits) if (buf.length > 0) buf[at % buf.length] = byte;
        return buf;
      });
    fc.assert(
      fc.property(mutated, (buf) => {
        let v: unknown;
        if (outcome(() => (v = unpack(buf))) === "ok") expect(() => JSON.stringify(v)).not.toThrow();
      }),
      FUZZ,
    );
  });

  it("counts values and stops at the limit", () => {
    expect(scanMsgpack(Buffer.concat([pack(1), pack("a"), pack([1, 2])]), 3)).toBe(3);
    expect(() => scanMsgpack(Buffer.concat([pack(1), pack(2)]), 1)).toThrow(MsgpackError);
    expect(scanMsgpack(Buffer.alloc(0), 1)).toBe(0);
  });
});
