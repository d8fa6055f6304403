import { ErrorCode, ProtocolError } from "./codes.js";
import { pack, unpack } from "./msgpack.js";

/**
 * JSON.parse takes any depth, but JSON.stringify and the MessagePack encoder recurse and overflow
 * the stack at a few thousand levels. Such data would fail in fan-out, after it was stored in
 * history, and break the channel for every subscriber, so it is refused at the door.
 */
export const MAX_DATA_DEPTH = 128;

/**
 * Recursive but bounded: it stops descending at `max`, so it never recurses deeper than the limit
 * it enforces (128 frames is nothing for the stack). About 4x faster than an explicit stack of
 * {value, depth} records, and it runs once per publication on every gateway.
 */
export function nestedDeeperThan(value: unknown, max: number, depth = 0): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (depth >= max) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (nestedDeeperThan(value[i], max, depth + 1)) return true;
    return false;
  }
  const obj = value as Record<string, unknown>;
  for (const k in obj) if (nestedDeeperThan(obj[k], max, depth + 1)) return true;
  return false;
}

/** Walks like nestedDeeperThan and also finds numbers JSON cannot carry (`1e999` parses to Infinity). */
function unportable(value: unknown, depth: number): "deep" | "number" | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : "number";
  if (typeof value !== "object" || value === null) return undefined;
  if (depth >= MAX_DATA_DEPTH) return "deep";
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = unportable(value[i], depth + 1);
      if (p) return p;
    }
    return undefined;
  }
  const obj = value as Record<string, unknown>;
  for (const k in obj) {
    const p = unportable(obj[k], depth + 1);
    if (p) return p;
  }
  return undefined;
}

/**
 * Why data cannot be published, or undefined: every subscriber gets a publication in its own
 * wire format, so data one format cannot carry is refused before it is stored or delivered.
 * MessagePack-only kinds (binary, extensions, big integers) are refused by the decoder already.
 */
export function dataProblem(value: unknown): string | undefined {
  const p = unportable(value, 0);
  if (p === "deep") return `data is nested deeper than ${MAX_DATA_DEPTH} levels`;
  if (p === "number") return "data holds a number JSON cannot represent (NaN or Infinity)";
  return undefined;
}

/**
 * Publication data in whichever encodings have been needed so far. Data a backend sent as JSON
 * stays as those bytes and is spliced into JSON push frames; the other encodings are derived at
 * most once per gateway, never per subscriber.
 */
export class Payload {
  private jsonBytes: Buffer | undefined;
  private msgpackBytes: Buffer | undefined;
  private decoded = false;
  private decodedValue: unknown;

  /** The encoding the data arrived in: the one to forward it in, so nothing is lost in translation. */
  private constructor(readonly origin: "json" | "msgpack") {}

  /** Throws ProtocolError 400 for data that dataProblem refuses. */
  static fromValue(value: unknown, origin: "json" | "msgpack" = "json"): Payload {
    const problem = dataProblem(value);
    if (problem !== undefined) throw new ProtocolError(ErrorCode.BadRequest, problem);
    const p = new Payload(origin);
    p.decoded = true;
    p.decodedValue = value;
    return p;
  }

  /** `bytes` must already be known to be valid JSON (`value` is it parsed, when the caller has it). */
  static fromJson(bytes: Buffer, ...value: [unknown?]): Payload {
    const p = new Payload("json");
    p.jsonBytes = bytes;
    if (value.length === 1) {
      p.decoded = true;
      p.decodedValue = value[0];
    }
    return p;
  }

  /** `bytes` must already be known to be one valid MessagePack value. */
  static fromMsgpack(bytes: Buffer, ...value: [unknown?]): Payload {
    const p = new Payload("msgpack");
    p.msgpackBytes = bytes;
    if (value.length === 1) {
      p.decoded = true;
      p.decodedValue = value[0];
    }
    return p;
  }

  /** The bytes in the payload's own encoding. */
  originBytes(): Buffer {
    return this.origin === "json" ? this.json() : this.msgpack();
  }

  value(): unknown {
    if (!this.decoded) {
      this.decodedValue = this.jsonBytes
        ? JSON.parse(this.jsonBytes.toString("utf8"))
        : unpack(this.msgpackBytes as Buffer);
      this.decoded = true;
    }
    return this.decodedValue;
  }

  json(): Buffer {
    this.jsonBytes ??= Buffer.from(JSON.stringify(this.value()) ?? "null", "utf8");
    return this.jsonBytes;
  }

  msgpack(): Buffer {
    // A copy: msgpackr returns a view into its shared (possibly large) buffer, and this may be kept.
    this.msgpackBytes ??= Buffer.from(pack(this.value()));
    return this.msgpackBytes;
  }
}
