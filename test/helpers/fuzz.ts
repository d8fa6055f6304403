/**
 * Shared pieces of the property-based fuzz tests (test/fuzz-*.test.ts): byte mutations of valid
 * inputs, mostly-plausible protocol commands, the documented error and close codes, and a raw
 * WebSocket client that records what it receives and never throws on it.
 */
import fc from "fast-check";
import { Packr, Unpackr } from "msgpackr";
import WebSocket from "ws";
import { expect } from "vitest";
import { TestClient, type Format, type Frame } from "./client.js";
import type { GatewayProcess } from "./gateway.js";
import { Signal } from "./signal.js";

/** Error codes docs/protocol.md documents for replies; 500 ("unexpected server fault") is a failure. */
export const ERROR_CODES = new Set([400, 401, 403, 404, 409, 413, 429, 503]);
/** Close codes a client can see (docs/protocol.md, "Close codes"); 1006 only in the cases listed there. */
export const CLOSE_CODES = new Set([1000, 1005, 1006, 4000, 4001, 4002, 4003, 4004, 4008, 4029]);
/** HTTP statuses the long-poll endpoints answer with (docs/protocol.md, "HTTP long-poll"). */
export const HTTP_STATUSES = new Set([200, 400, 401, 403, 404, 408, 411, 413, 429, 431, 503]);

export const OPS = ["connect", "subscribe", "unsubscribe", "publish", "presence", "presence_stats", "history", "refresh", "ping"];

/** Test-side codecs, as an ordinary client library would use them. */
export const packr = new Packr({ useRecords: false, largeBigIntToFloat: true } as ConstructorParameters<typeof Packr>[0]);
export const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });
/** For comparing values: 64-bit integers as numbers, as JSON clients get them. */
export const numberUnpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: "number" });

/** JSON text of any value (BigInt as a number literal's digits, nothing at all as null); never throws. */
export function jsonText(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? Number(v) : v)) ?? "null";
  } catch {
    return "null"; // a cycle
  }
}

/**
 * JSON text of a value as both wire formats deliver it, for comparing what a JSON and a MessagePack
 * client received: strings are UTF-8 in MessagePack, so a lone surrogate arrives as U+FFFD, and
 * msgpackr (like other decoders) renames a `__proto__` key that JSON.parse keeps.
 */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "string" ? v.replace(/\p{Cs}/gu, "\ufffd") : typeof v === "bigint" ? Number(v) : v))
    .replaceAll('"__proto__":', '"__proto_":');
}

/** MessagePack of any value, or of null where msgpackr cannot encode it. */
export function msgpackOf(value: unknown): Buffer {
  try {
    return packr.pack(value);
  } catch {
    return packr.pack(null);
  }
}

/** Log lines at level error (50) or fatal (60): an unexpected exception somewhere in the gateway. */
export function severeLogLines(gw: GatewayProcess): string[] {
  return gw.lines.filter((l) => /"level":(50|60)/.test(l)).map((l) => l.slice(0, 500));
}

/**
 * After a fuzz run: the process is alive, logged no error, and a normal client still connects,
 * subscribes to `ch` and receives a publication from a MessagePack publisher.
 */
export async function expectServesNormalClient(gw: GatewayProcess, ch: string, token?: string): Promise<void> {
  expect(gw.proc.exitCode, "the gateway process is alive").toBeNull();
  expect(severeLogLines(gw)).toEqual([]);
  const sub = await TestClient.connect(gw.wsUrl, token);
  const pub = await TestClient.connect(gw.wsUrl, token, { format: "msgpack" });
  try {
    expect((await sub.request("subscribe", { ch })).error).toBeUndefined();
    expect((await pub.request("publish", { ch, data: { after: "fuzz" } })).error).toBeUndefined();
    const push = await sub.nextPush((p) => p.push === "pub" && p.ch === ch, "a publication after the fuzz run");
    expect(push.data).toEqual({ after: "fuzz" });
  } finally {
    sub.terminate();
    pub.terminate();
  }
}

// --- mutations ------------------------------------------------------------------------------------

export interface Mutation {
  kind: "flip" | "set" | "insert" | "delete" | "truncate" | "duplicate";
  /** Position as a fraction of the input (0..65535), so one mutation fits inputs of any length. */
  at: number;
  byte: number;
  len: number;
}

export const mutationsArb: fc.Arbitrary<Mutation[]> = fc.array(
  fc.record({
    kind: fc.constantFrom<Mutation["kind"]>("flip", "set", "insert", "delete", "truncate", "duplicate"),
    at: fc.nat(0xffff),
    byte: fc.nat(255),
    len: fc.integer({ min: 1, max: 16 }),
  }),
  { minLength: 1, maxLength: 5 },
);

/** Applies byte-level mutations to a copy of `input`. */
export function mutate(input: Uint8Array, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(input);
  for (const m of mutations) {
    const pos = Math.floor((m.at / 0x10000) * (b.length + 1));
    switch (m.kind) {
      case "flip":
        if (pos < b.length) b[pos] = (b[pos] as number) ^ (1 << m.byte % 8);
        break;
      case "set":
        if (pos < b.length) b[pos] = m.byte;
        break;
      case "insert":
        b = Buffer.concat([b.subarray(0, pos), Buffer.alloc(m.len, m.byte), b.subarray(pos)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, pos), b.subarray(pos + m.len)]);
        break;
      case "truncate":
        b = b.subarray(0, pos);
        break;
      case "duplicate":
        b = Buffer.concat([b.subarray(0, pos + m.len), b.subarray(pos)]);
        break;
    }
  }
  return Buffer.from(b);
}

/** Valid inputs from `valid`, each mutated. */
export function mutated(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Buffer> {
  return fc.tuple(valid, mutationsArb).map(([v, ms]) => mutate(v, ms));
}

/** A string mutated byte-wise (read back as latin1, so every byte stays a character). */
export function mutatedString(valid: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.tuple(valid, mutationsArb).map(([v, ms]) => mutate(Buffer.from(v, "latin1"), ms).toString("latin1"));
}

// --- commands -------------------------------------------------------------------------------------

/** Any value at all, including what only one wire format carries (undefined, NaN, -0, BigInt). */
export const anyValue = fc.anything({ maxDepth: 3, maxKeys: 4, withBigInt: true, withNullPrototype: true });
export const jsonData = fc.jsonValue({ maxDepth: 4 });

/** A channel name: mostly in the given namespaces, sometimes malformed, sometimes not a string. */
export function channelArb(namespaces: readonly string[]): fc.Arbitrary<unknown> {
  const ns = fc.constantFrom(...namespaces, "nope", "__proto__", "constructor");
  const name = fc.oneof(fc.constantFrom("a", "b", "fuzz", "x.y", "anon"), fc.string({ maxLength: 12 }));
  return fc.oneof(
    { weight: 6, arbitrary: fc.tuple(ns, name).map(([n, c]) => `${n}.${c}`) },
    { weight: 1, arbitrary: fc.string({ maxLength: 300, unit: "binary" }) },
    { weight: 1, arbitrary: fc.constantFrom("", ".", "a.", ".a", "chat", "a..b", "a.*", "a.>", "a.\u0000", "a.\u2028") },
    { weight: 1, arbitrary: anyValue },
  );
}

/** `{offset, epoch}` positions, mostly well-formed, and anything else. */
export const positionArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ offset: fc.oneof(fc.nat(50), fc.integer(), fc.double()), epoch: fc.oneof(fc.string({ maxLength: 70 }), anyValue) }) },
  { weight: 1, arbitrary: anyValue },
);

export interface CommandOptions {
  namespaces: readonly string[];
  /** Valid tokens to choose from (and to mutate). */
  tokens: readonly string[];
}

/**
 * A command frame: mostly a real op with fields that pass validation (valid channels of the
 * namespaces, so the command handlers themselves run), otherwise fields of any type, or junk.
 */
export function commandArb(opts: CommandOptions): fc.Arbitrary<Frame> {
  const token = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...opts.tokens) },
    { weight: 2, arbitrary: mutatedString(fc.constantFrom(...opts.tokens)) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: anyValue },
  );
  const plausible = fc.record(
    {
      id: fc.nat(1000),
      op: fc.constantFrom(...OPS),
      ch: fc.tuple(fc.constantFrom(...opts.namespaces), fc.constantFrom("fuzz", "a", "b")).map(([ns, name]) => `${ns}.${name}`),
      data: jsonData,
      since: fc.record({ offset: fc.nat(30), epoch: fc.string({ maxLength: 12 }) }),
      limit: fc.integer({ min: 0, max: 30 }),
      token,
      idempotencyKey: fc.string({ minLength: 1, maxLength: 8 }),
    },
    { requiredKeys: ["id", "op", "ch"] },
  );
  /** Mostly the plausible kind, now and then anything at all. */
  const mostly = <T>(p: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ weight: 4, arbitrary: p }, { weight: 1, arbitrary: anyValue });
  const odd = fc.record(
    {
      id: mostly(fc.oneof(fc.nat(1000), fc.string({ maxLength: 70 }))),
      op: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(...OPS) }, { weight: 1, arbitrary: fc.string({ maxLength: 10 }) }, { weight: 1, arbitrary: anyValue }),
      ch: channelArb(opts.namespaces),
      data: mostly(jsonData),
      since: positionArb,
      limit: mostly(fc.integer({ min: -2, max: 30 })),
      token,
      idempotencyKey: mostly(fc.string({ maxLength: 130 })),
      junk: mostly(jsonData),
    },
    { requiredKeys: ["op"] },
  );
  return fc.oneof({ weight: 3, arbitrary: plausible }, { weight: 2, arbitrary: odd });
}

// --- a WebSocket client that records everything ------------------------------------------------------

export interface Received {
  frame?: Frame;
  /** Set when a server message did not decode as one frame of the connection's format. */
  undecodable?: string;
}

/**
 * A raw protocol v1 client that records every server message as received and checks it decodes as
 * exactly one frame, without ever throwing from its event handlers.
 */
export class FuzzSocket {
  readonly ws: WebSocket;
  readonly received: Received[] = [];
  readonly opened: Promise<void>;
  closeCode: number | undefined;
  private readonly signal = new Signal();

  constructor(
    url: string,
    readonly format: Format,
  ) {
    this.ws = new WebSocket(url, format === "json" ? "natsedge.v1.json" : "natsedge.v1.msgpack");
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => resolve());
      this.ws.once("error", reject);
      this.ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    this.ws.once("close", (code) => {
      this.closeCode = code;
      this.signal.wake();
    });
    this.ws.on("error", () => undefined);
    this.ws.on("message", (data: Buffer, isBinary) => {
      this.received.push(decodeServerMessage(this.format, data, isBinary));
      this.signal.wake();
    });
  }

  get frames(): Frame[] {
    return this.received.flatMap((r) => (r.frame ? [r.frame] : []));
  }

  send(frames: Frame[]): void {
    if (this.format === "json") this.ws.send(frames.map(jsonText).join("\n"));
    else this.ws.send(Buffer.concat(frames.map(msgpackOf)));
  }

  sendRaw(data: Buffer, binary: boolean): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(data, { binary });
  }

  waitFor<T>(check: () => T | undefined, what: string, timeoutMs = 5_000): Promise<T> {
    return this.signal.until(check, what, timeoutMs, () => `received: ${jsonText(this.received).slice(0, 1000)}`);
  }

  /** The reply to `id`, or "closed" once the server closed the connection. */
  replyOrClose(id: string, timeoutMs = 5_000): Promise<Frame | "closed"> {
    return this.waitFor(
      () => this.frames.find((f) => f.id === id) ?? (this.closeCode !== undefined ? ("closed" as const) : undefined),
      `reply ${id} or close`,
      timeoutMs,
    );
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/**
 * What a connection received is well-formed: every message decodes as one frame, every error
 * code and every disconnect push's code is a documented one (500 is not accepted).
 */
export function expectWellFormed(s: FuzzSocket, label: string, from = 0): void {
  const received = s.received.slice(from);
  for (const r of received) expect(r.undecodable, label).toBeUndefined();
  for (const { frame: f } of received) {
    if (f === undefined) continue;
    const error = f.error as { code?: unknown; message?: unknown } | undefined;
    if (error !== undefined) {
      expect(ERROR_CODES.has(error.code as number), `${label}: error ${jsonText(f)}`).toBe(true);
      expect(typeof error.message, label).toBe("string");
    }
    if (f.push === "disconnect") expect(CLOSE_CODES.has(f.code as number), `${label}: ${jsonText(f)}`).toBe(true);
  }
}

/**
 * One server message as a client library would read it: JSON text (which the SDK in src/client
 * also splits at line breaks, so a raw one inside a frame breaks it) or one MessagePack value.
 */
export function decodeServerMessage(format: Format, data: Buffer, isBinary: boolean): Received {
  try {
    if (isBinary !== (format === "msgpack")) return { undecodable: `a ${isBinary ? "binary" : "text"} message on a ${format} connection` };
    if (format === "msgpack") {
      const values = unpackr.unpackMultiple(data) as unknown[];
      if (values.length !== 1) return { undecodable: `${values.length} MessagePack values in one message` };
      return { frame: values[0] as Frame };
    }
    const text = data.toString("utf8");
    if (/[\r\n]/.test(text)) return { undecodable: `a raw line break in a JSON message: ${JSON.stringify(text.slice(0, 200))}` };
    return { frame: JSON.parse(text) as Frame };
  } catch (err) {
    return { undecodable: `${String(err)}: ${data.subarray(0, 200).toString("hex")}` };
  }
}
