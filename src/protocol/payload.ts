import { pack, unpack } from "./msgpack.js";

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

  private constructor() {}

  static fromValue(value: unknown): Payload {
    const p = new Payload();
    p.decoded = true;
    p.decodedValue = value;
    return p;
  }

  /** `bytes` must already be known to be valid JSON. */
  static fromJson(bytes: Buffer): Payload {
    const p = new Payload();
    p.jsonBytes = bytes;
    return p;
  }

  /** `bytes` must already be known to be one valid MessagePack value. */
  static fromMsgpack(bytes: Buffer): Payload {
    const p = new Payload();
    p.msgpackBytes = bytes;
    return p;
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
    this.msgpackBytes ??= pack(this.value());
    return this.msgpackBytes;
  }
}
