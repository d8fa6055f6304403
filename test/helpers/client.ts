import { Packr, Unpackr } from "msgpackr";
import WebSocket from "ws";
import { Signal } from "./signal.js";

export type Format = "json" | "msgpack";
export type Frame = Record<string, unknown>;

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * The frames in one WebSocket message: MessagePack values back to back in a binary message,
 * newline-separated JSON in a text message (empty lines skipped).
 */
export function decodeMessage(data: Buffer, isBinary: boolean): Frame[] {
  if (isBinary) return unpackr.unpackMultiple(data) as Frame[];
  return data
    .toString()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Frame);
}

export interface ClientOptions {
  format?: Format;
  /** Offer no subprotocol at all (JSON by default on the server). */
  noProtocol?: boolean;
  headers?: Record<string, string>;
  /** CA certificates trusted for wss:// URLs. */
  ca?: string | Buffer;
}

/**
 * A real WebSocket client speaking protocol v1, for tests: request/reply by id, a queue of
 * pushes to wait on, every frame in arrival order, and the close code.
 */
export class TestClient {
  readonly ws: WebSocket;
  readonly format: Format;
  readonly pushes: Frame[] = [];
  readonly replies = new Map<unknown, Frame>();
  /** Every frame received since the socket opened, in arrival order (replies without an id too). */
  readonly frames: Frame[] = [];
  private recordings: Frame[][] = [];
  private nextId = 1;
  private readonly signal = new Signal();
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly opened: Promise<void>;

  constructor(url: string, opts: ClientOptions = {}) {
    this.format = opts.format ?? "json";
    const protocol = opts.noProtocol ? undefined : this.format === "json" ? "natsedge.v1.json" : "natsedge.v1.msgpack";
    this.ws = new WebSocket(url, protocol, { headers: opts.headers, ca: opts.ca });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once("open", () => resolve());
      this.ws.once("error", reject);
      this.ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    this.closed = new Promise((resolve) => {
      this.ws.once("close", (code, reason) => {
        resolve({ code, reason: reason.toString() });
        this.wake();
      });
    });
    this.ws.on("error", () => undefined);
    this.ws.on("message", (data: Buffer, isBinary) => {
      const frames = decodeMessage(data, isBinary);
      this.frames.push(...frames);
      for (const r of this.recordings) r.push(...frames);
      for (const f of frames) {
        if ("push" in f) this.pushes.push(f);
        else this.replies.set(f.id, f);
      }
      this.wake();
    });
  }

  /** A new array that receives every frame arriving from now on, in arrival order. */
  record(): Frame[] {
    const seen: Frame[] = [];
    this.recordings.push(seen);
    return seen;
  }

  static async connect(url: string, token?: string, opts: ClientOptions = {}): Promise<TestClient> {
    const c = new TestClient(url, opts);
    await c.opened;
    const reply = await c.request("connect", token === undefined ? {} : { token });
    if (!reply.ok) throw new Error(`connect failed: ${JSON.stringify(reply)}`);
    return c;
  }

  private wake(): void {
    this.signal.wake();
  }

  /** Waits until `check` returns a value (re-checked on every incoming message). */
  waitFor<T>(check: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    return this.signal.until(check, what, timeoutMs, () => `pushes: ${JSON.stringify(this.pushes).slice(0, 2000)}`);
  }

  send(frame: Frame | Frame[]): void {
    const frames = Array.isArray(frame) ? frame : [frame];
    if (this.format === "json") this.ws.send(frames.map((f) => JSON.stringify(f)).join("\n"));
    else this.ws.send(Buffer.concat(frames.map((f) => packr.pack(f))));
  }

  sendRaw(data: string | Buffer): void {
    this.ws.send(data);
  }

  async request(op: string, args: Frame = {}, timeoutMs = 10_000): Promise<Frame> {
    const id = this.nextId++;
    this.send({ id, op, ...args });
    return this.waitFor(() => this.replies.get(id), `reply to ${op} #${id}`, timeoutMs);
  }

  /** Resolves with the first push matching `pred` not yet taken by an earlier call. */
  async nextPush(pred: (p: Frame) => boolean, what = "push", timeoutMs = 10_000): Promise<Frame> {
    return this.waitFor(() => {
      const i = this.pushes.findIndex(pred);
      if (i < 0) return undefined;
      return this.pushes.splice(i, 1)[0];
    }, what, timeoutMs);
  }

  pubs(ch: string): Frame[] {
    return this.pushes.filter((p) => p.push === "pub" && p.ch === ch);
  }

  close(): void {
    this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export async function api(
  baseUrl: string,
  method: "GET" | "POST",
  pathAndQuery: string,
  opts: { key?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.key !== undefined) headers.authorization = `apikey ${opts.key}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(baseUrl + pathAndQuery, {
    method,
    headers,
    body: opts.body === undefined ? undefined : typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body),
  });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    body = { raw: text };
  }
  // Not enumerable, so tests can still compare {status, body} with toEqual.
  return Object.defineProperty({ status: res.status, body }, "headers", { value: res.headers, enumerable: false }) as {
    status: number;
    body: Record<string, unknown>;
    headers: Headers;
  };
}
