/**
 * natsedge client SDK for browsers and Node 20. One ES module, no runtime dependencies in the
 * JSON build; MessagePack (msgpackr) is imported only when asked for.
 *
 *   const client = new Client("wss://chat.example.com", { getToken });
 *   const room = client.subscribe("chat.lobby", { onPublication: (p) => show(p.data) });
 *   await room.publish({ text: "hi" });
 *
 * Transports: WebSocket first; when it cannot connect, HTTP long-poll with the same API and the
 * same recovery, trying WebSocket again periodically. After any reconnect every subscription is
 * resumed from its last offset, delivering missed publications in order, without duplicates,
 * before new ones; `recovered:false` is surfaced so the app can reload its state.
 * Reference: docs/client.md.
 */

export type State = "disconnected" | "connecting" | "connected";
export type TransportName = "websocket" | "longpoll";

export interface Position {
  offset: number;
  epoch: string;
}

export interface Publication<T = unknown> {
  ch: string;
  data: T;
  offset?: number;
  info?: { client: string; user: string };
}

export interface ClientInfo {
  client: string;
  user: string;
  info?: unknown;
}

export interface SubscriptionHandlers<T = unknown> {
  onPublication?: (p: Publication<T>) => void;
  onJoin?: (info: ClientInfo) => void;
  onLeave?: (info: ClientInfo) => void;
  /**
   * The subscription is active: after the first subscribe and again after every reconnect or
   * transport switch, once the publications missed meanwhile have been delivered.
   */
  onSubscribed?: () => void;
  /**
   * The gateway could not replay everything missed (history too short, or a new epoch): reload
   * the channel's state. Delivery continues with the publications after `position`.
   */
  onUnrecovered?: (position: Position) => void;
  /** The subscription failed or was ended by the server; it is no longer registered. */
  onError?: (err: NatsedgeError) => void;
}

/** Minimal WebSocket surface, satisfied by browsers' WebSocket and by the `ws` package. */
export interface WebSocketLike {
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: never) => void) | null;
  onclose: ((ev: never) => void) | null;
  onerror: ((ev: never) => void) | null;
  onmessage: ((ev: never) => void) | null;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** A JWT, or a function returning one (called again before it expires and after 4002). */
  token?: string;
  getToken?: () => Promise<string> | string;
  /** Transports in order of preference. Default: websocket, then longpoll. */
  transports?: TransportName[];
  format?: "json" | "msgpack";
  /** WebSocket implementation (Node: `import WebSocket from "ws"`). Default: globalThis.WebSocket. */
  WebSocket?: WebSocketCtor;
  /** Reconnect backoff: full jitter over an exponentially growing, capped window (ms). */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** How long a command waits for its reply, and for a connection when sent while disconnected (ms). */
  timeout?: number;
  /** While on long-poll, how often to try WebSocket again (ms). */
  websocketRetryInterval?: number;
  /** Connect on construction (default true); otherwise call connect(). */
  autoConnect?: boolean;
}

export class NatsedgeError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

type Listener = (arg: never) => void;
type Frame = Record<string, unknown>;
interface Pending {
  resolve: (v: Frame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
  conn: Transport;
  /**
   * Runs synchronously when the reply arrives, before any later frame is looked at. A subscribe
   * reply must be applied before the live pushes that follow it: `ws` in Node emits every message
   * of a TCP chunk in one go, so a promise continuation would run after those pushes, which would
   * then move the position past the recovered publications and make them look like duplicates.
   */
  apply?: (ok: Frame) => void;
}

/** The reconnect delay for an attempt: uniform in [0, min(max, min * 2^attempt)]. */
export function backoff(attempt: number, min = 500, max = 20_000, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Seconds since the epoch at which a JWT expires, if it says. */
function tokenExpiry(token: string | undefined): number | undefined {
  try {
    const part = (token?.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
    const exp = (JSON.parse(atob(part)) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

interface Codec {
  encode(frames: Frame[]): string | Uint8Array;
  decode(data: unknown): Frame[];
  contentType: string;
  body(value: Frame): string | Uint8Array;
  parse(body: ArrayBuffer): Frame;
}

const jsonCodec: Codec = {
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

async function msgpackCodec(): Promise<Codec> {
  const m = (await import("msgpackr")) as unknown as {
    Packr: new (o: object) => { pack(v: unknown): Uint8Array };
    Unpackr: new (o: object) => { unpackMultiple(b: Uint8Array): unknown[]; unpack(b: Uint8Array): unknown };
  };
  const packr = new m.Packr({ useRecords: false });
  const unpackr = new m.Unpackr({ useRecords: false, mapsAsObjects: true });
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

/** A subscription handle; it outlives reconnects and transport switches. */
export class Subscription<T = unknown> {
  /** Position after the last publication delivered (history channels). */
  position: Position | undefined;
  /** Subscribed on the current connection (false while reconnecting). */
  active = false;
  /** @internal: a retry after a transient subscribe error. */
  retry: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly client: Client,
    readonly channel: string,
    readonly handlers: SubscriptionHandlers<T>,
  ) {}

  publish(data: T, idempotencyKey?: string): Promise<{ offset?: number; epoch?: string }> {
    const cmd: Frame = { op: "publish", ch: this.channel, data };
    if (idempotencyKey !== undefined) cmd.idempotencyKey = idempotencyKey;
    return this.client.command(cmd);
  }

  async presence(): Promise<Record<string, { user: string; info?: unknown }>> {
    return (await this.client.command({ op: "presence", ch: this.channel })).clients as Record<
      string,
      { user: string; info?: unknown }
    >;
  }

  async presenceStats(): Promise<{ clients: number; users: number }> {
    return (await this.client.command({ op: "presence_stats", ch: this.channel })) as { clients: number; users: number };
  }

  /** Retained publications, oldest first: the newest `limit`, or (with `since`) those after it. */
  async history(opts: { limit?: number; since?: Position } = {}): Promise<{ pubs: Publication<T>[] } & Position> {
    const r = await this.client.command({ op: "history", ch: this.channel, ...opts });
    const pubs = (r.pubs as Frame[]).map((p) => ({ ...p, ch: this.channel }) as Publication<T>);
    return { pubs, offset: r.offset as number, epoch: r.epoch as string };
  }

  unsubscribe(): void {
    this.client.unsubscribe(this as unknown as AnySub);
  }

  /** @internal: delivers a publication once, in order: anything at or before the position was already seen. */
  deliver(f: Frame): void {
    const offset = f.offset as number | undefined;
    if (offset !== undefined && this.position) {
      if (offset <= this.position.offset) return;
      this.position = { offset, epoch: this.position.epoch };
    }
    const p = { ch: this.channel, data: f.data } as Publication<T>;
    if (offset !== undefined) p.offset = offset;
    if (f.info) p.info = f.info as Publication["info"];
    this.client.call(this.handlers.onPublication, p);
  }
}

type AnySub = Subscription<unknown>;

/** What a transport must do for the client; both speak protocol v1 frames. */
interface Transport {
  readonly name: TransportName;
  send(frames: Frame[]): void;
  close(): void;
  /** The `disconnect` push that announced the close, if any. */
  hint?: { code: number; reason: string; reconnect: boolean };
}

interface Queued {
  cmd: Frame;
  resolve: (v: Frame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const POLL_S = 25;

export class Client {
  state: State = "disconnected";
  transport: TransportName | undefined;
  clientId: string | undefined;
  private readonly urls: string[];
  private urlIndex = 0;
  private readonly opts: Required<Omit<ClientOptions, "token" | "getToken" | "WebSocket">> & ClientOptions;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly subs = new Map<string, AnySub>();
  private readonly pending = new Map<number, Pending>();
  private readonly queued = new Set<Queued>();
  private nextId = 1;
  private attempt = 0;
  private conn: Transport | undefined;
  private codec: Codec = jsonCodec;
  private token: string | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private wsRetryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private lastSeen = 0;
  private wanted = false;
  /** WebSocket failed where long-poll then worked: go straight to long-poll until a retry succeeds. */
  private websocketBlocked = false;

  constructor(url: string | string[], opts: ClientOptions = {}) {
    this.urls = (Array.isArray(url) ? url : [url]).map((u) => u.replace(/\/+$/, ""));
    this.opts = {
      transports: ["websocket", "longpoll"],
      format: "json",
      minReconnectDelay: 500,
      maxReconnectDelay: 20_000,
      timeout: 10_000,
      websocketRetryInterval: 60_000,
      autoConnect: true,
      ...opts,
    };
    this.token = opts.token;
    this.watchBrowser();
    if (this.opts.autoConnect) void this.connect();
  }

  on(event: "connecting", fn: () => void): this;
  on(event: "connected", fn: (e: { client: string; transport: TransportName }) => void): this;
  on(event: "disconnected", fn: (e: { code: number; reason: string; reconnect: boolean }) => void): this;
  on(event: "error", fn: (e: Error) => void): this;
  on(event: string, fn: Listener): this {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return this;
  }

  off(event: string, fn: Listener): this {
    this.listeners.get(event)?.delete(fn);
    return this;
  }

  private emit(event: string, arg?: unknown): void {
    for (const fn of this.listeners.get(event) ?? []) this.call(fn as (a: unknown) => void, arg, event === "error");
  }

  /**
   * @internal: runs an application callback. One that throws must not break the client: it ran
   * inside a socket handler (an uncaught exception in Node) or halfway through a batch of frames.
   */
  call<A>(fn: ((a: A) => void) | undefined, arg: A, quiet?: boolean): void {
    try {
      fn?.(arg);
    } catch (err) {
      if (!quiet) this.emit("error", err);
    }
  }

  async connect(): Promise<void> {
    this.wanted = true;
    if (this.state !== "disconnected") return;
    clearTimeout(this.reconnectTimer);
    this.state = "connecting";
    this.emit("connecting");
    try {
      if (this.opts.format === "msgpack" && this.codec === jsonCodec) this.codec = await msgpackCodec();
      if (this.opts.getToken && (this.token === undefined || this.expiresSoon())) this.token = await this.opts.getToken();
      await this.open();
    } catch (err) {
      // Only if this attempt still owns the state: disconnect() may have been called meanwhile,
      // and a second lost() would arm a second reconnect timer and grow the backoff twice.
      if (this.state !== "connecting") return;
      const auth = err instanceof NatsedgeError && (err.code === 401 || err.code === 403);
      this.emit("error", err as Error);
      // A rejected token: with getToken, fetch another and retry; a fixed token will not improve.
      if (auth && this.opts.getToken) this.token = undefined;
      this.lost(auth ? 4001 : 0, (err as Error).message, !auth || !!this.opts.getToken);
    }
  }

  disconnect(): void {
    this.wanted = false;
    const conn = this.conn;
    this.lost(1000, "client disconnect", false);
    conn?.close();
  }

  subscribe<T = unknown>(channel: string, handlers: SubscriptionHandlers<T> = {}): Subscription<T> {
    if (this.subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription<T>(this, channel, handlers) as unknown as AnySub;
    this.subs.set(channel, sub);
    this.resubscribe(sub);
    return sub as unknown as Subscription<T>;
  }

  /** @internal */
  unsubscribe(sub: AnySub): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    clearTimeout(sub.retry);
    sub.active = false;
    if (this.conn instanceof LongPoll) this.conn.remove(sub.channel);
    if (this.state === "connected") this.command({ op: "unsubscribe", ch: sub.channel }).catch(() => undefined);
  }

  /**
   * Sends a command and resolves with its `ok` body (rejects with NatsedgeError). While the
   * client is (re)connecting the command waits up to `timeout` for the connection instead of
   * failing at once, so a publish made during a reconnect or a transport switch is not lost.
   */
  command(cmd: Frame): Promise<Frame> {
    if (this.state === "connected" && this.conn) return this.request(this.conn, cmd);
    if (!this.wanted) return Promise.reject(new NatsedgeError(503, "not connected"));
    return new Promise((resolve, reject) => {
      const q: Queued = {
        cmd,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.queued.delete(q);
          reject(new NatsedgeError(503, "not connected"));
        }, this.opts.timeout),
      };
      this.queued.add(q);
    });
  }

  private request(conn: Transport, cmd: Frame, apply?: (ok: Frame) => void): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new NatsedgeError(408, `${String(cmd.op)} timed out`));
      }, this.opts.timeout);
      this.pending.set(id, { resolve, reject, timer, conn, apply });
      conn.send([{ id, ...cmd }]);
    });
  }

  // --- connecting ---------------------------------------------------------------------------

  private async open(): Promise<void> {
    const url = this.urls[this.urlIndex % this.urls.length] as string;
    let lastError: unknown = new Error("no transport");
    let websocketFailed = false;
    for (const name of this.opts.transports) {
      if (name === "websocket" && this.websocketBlocked) continue;
      try {
        await this.handshake(name === "websocket" ? await this.openWebSocket(url) : new LongPoll(this, url, this.codec));
        // Only now is WebSocket known to be blocked rather than the gateway being down: marking
        // it on every failure sent a client whose gateway merely restarted to long-poll for a
        // whole websocketRetryInterval.
        if (websocketFailed) this.websocketBlocked = true;
        return;
      } catch (err) {
        lastError = err;
        if (err instanceof NatsedgeError && (err.code === 401 || err.code === 403)) break;
        if (name === "websocket") websocketFailed = true;
      }
    }
    this.websocketBlocked = false; // nothing worked: the gateway is unreachable, not WebSocket
    throw lastError;
  }

  private openWebSocket(url: string): Promise<Transport> {
    const Ctor = this.opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) return Promise.reject(new Error("no WebSocket implementation"));
    const wsUrl = url.replace(/^http/, "ws") + "/ws";
    const proto = this.opts.format === "msgpack" ? "natsedge.v1.msgpack" : "natsedge.v1.json";
    return new Promise((resolve, reject) => {
      const ws = new Ctor(wsUrl, proto);
      ws.binaryType = "arraybuffer";
      let opened = false;
      const conn: Transport = {
        name: "websocket",
        send: (frames) => ws.send(this.codec.encode(frames)),
        close: () => ws.close(1000),
      };
      // An upgrade that never completes (a proxy holding it) must not stall the fallback.
      const timer = setTimeout(() => {
        reject(new Error("websocket open timed out"));
        ws.close();
      }, this.opts.timeout);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        resolve(conn);
      };
      ws.onerror = () => reject(new Error("websocket failed to open"));
      // Every message is read, also from a socket that is not current yet: the connect reply of
      // the WebSocket retried while on long-poll arrives while long-poll is still current (it
      // used to be dropped, so the client never returned to WebSocket).
      ws.onmessage = (ev: { data: unknown }) => this.receive(conn, this.codec.decode(ev.data));
      ws.onclose = (ev: { code: number; reason: string }) => {
        clearTimeout(timer);
        if (!opened) reject(new Error(`websocket closed before open (${ev.code})`));
        else this.closed(conn, ev.code, ev.reason);
      };
    });
  }

  /**
   * Authenticates a new transport and makes it current. `replacing` is the transport it takes
   * over from (long-poll, when WebSocket comes back), undefined for a fresh connect.
   */
  private async handshake(conn: Transport, replacing?: Transport): Promise<void> {
    let ok: Frame;
    try {
      ok = await this.request(conn, this.token === undefined ? { op: "connect" } : { op: "connect", token: this.token });
      // disconnect() during the handshake, or the connection was lost and replaced meanwhile.
      if (!this.wanted || this.conn !== replacing) throw new NatsedgeError(503, "disconnected");
    } catch (err) {
      conn.close();
      throw err;
    }
    this.conn = conn;
    // Stop the old transport before resubscribing here: this one resumes every channel from
    // the last delivered position, and an old long-poll still answering would deliver too.
    replacing?.close();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.wsRetryTimer);
    this.clientId = ok.client as string;
    this.transport = conn.name;
    this.attempt = 0;
    this.state = "connected";
    this.scheduleRefresh();
    if (conn instanceof LongPoll) {
      this.scheduleWebSocketRetry(conn);
      conn.add([...this.subs.keys()]);
    } else {
      for (const s of this.subs.values()) {
        s.active = false;
        this.resubscribe(s);
      }
      this.keepalive(conn, typeof ok.ping === "number" && ok.ping > 0 ? ok.ping : POLL_S);
    }
    this.emit("connected", { client: this.clientId, transport: conn.name });
    for (const q of this.queued) {
      clearTimeout(q.timer);
      this.request(conn, q.cmd).then(q.resolve, q.reject);
    }
    this.queued.clear();
  }

  /** (Re)subscribes on the current connection, resuming from the last position. */
  private resubscribe(sub: AnySub): void {
    const conn = this.conn;
    clearTimeout(sub.retry);
    if (this.state !== "connected" || !conn) return;
    if (conn instanceof LongPoll) return conn.add([sub.channel]);
    const cmd: Frame = { op: "subscribe", ch: sub.channel };
    if (sub.position) cmd.since = sub.position;
    this.request(conn, cmd, (ok) => this.applySubscribed(sub, ok)).catch((err: NatsedgeError) => {
      // Unanswered: the gateway may still have subscribed (a retry would get 409), so start over
      // on a new connection, which resubscribes everything from the positions.
      if (err.code === 408) this.drop(conn, "subscribe timed out");
      else if (conn === this.conn) this.subscribeFailed(sub, err);
    });
  }

  /**
   * @internal: a subscribe failed. Transient errors (503 broker unavailable or moving too fast,
   * 429) are retried with backoff; anything else ends the subscription, which used to stay
   * registered and fail again on every reconnect.
   */
  subscribeFailed(sub: AnySub, err: NatsedgeError): void {
    if (this.subs.get(sub.channel) !== sub) return;
    sub.active = false;
    if (err.code === 429 || err.code === 503) {
      const { minReconnectDelay: min, maxReconnectDelay: max } = this.opts;
      sub.retry = setTimeout(() => this.resubscribe(sub), min + backoff(2, min, max));
    } else {
      this.subs.delete(sub.channel);
    }
    this.call(sub.handlers.onError, err);
  }

  /**
   * @internal: a subscribe reply (WebSocket) or a poll answer for one channel (long-poll).
   * Both carry the channel position after `pubs`; a poll answer may also hold live publications.
   */
  applySubscribed(sub: AnySub, ok: Frame): void {
    if (this.subs.get(sub.channel) !== sub) return; // unsubscribed while the reply was on its way
    const pubs = (ok.pubs as Frame[] | undefined) ?? [];
    const epoch = ok.epoch as string | undefined;
    const offset = ok.offset as number | undefined;
    const had = sub.position;
    const fresh = !had || ok.recovered === false || (epoch !== undefined && epoch !== had.epoch);
    if (fresh && epoch !== undefined && offset !== undefined) {
      // Start just before the first publication in hand (a poll answer can already hold live
      // ones), else at the channel position. The old position must not be kept: in a new epoch
      // offsets restart, and lower ones would be dropped as duplicates.
      const first = pubs[0]?.offset as number | undefined;
      sub.position = { offset: first === undefined ? offset : first - 1, epoch };
      if (had) this.call(sub.handlers.onUnrecovered, sub.position);
    }
    for (const p of pubs) sub.deliver(p);
    if (epoch !== undefined && offset !== undefined && sub.position && offset > sub.position.offset) {
      sub.position = { offset, epoch };
    }
    if (!sub.active) {
      sub.active = true;
      this.call(sub.handlers.onSubscribed, undefined);
    }
  }

  /** @internal: frames from a transport (replies from any open one, pushes from the current one). */
  receive(conn: Transport, frames: Frame[]): void {
    this.lastSeen = Date.now();
    for (const f of frames) {
      const p = typeof f.id === "number" ? this.pending.get(f.id) : undefined;
      if (p) {
        this.pending.delete(f.id as number);
        clearTimeout(p.timer);
        const err = f.error as { code: number; message: string } | undefined;
        if (err) p.reject(new NatsedgeError(err.code, err.message));
        else {
          const ok = (f.ok ?? {}) as Frame;
          p.apply?.(ok);
          p.resolve(ok);
        }
      } else if (f.push === "disconnect") {
        conn.hint = { code: f.code as number, reason: String(f.reason), reconnect: f.reconnect !== false };
        // A long-poll session has no socket to close: the push is the end of it.
        if (conn instanceof LongPoll) conn.fail(new NatsedgeError(f.code as number, String(f.reason)));
      } else if (conn === this.conn) {
        this.push(f);
      }
    }
  }

  private push(f: Frame): void {
    const sub = typeof f.ch === "string" ? this.subs.get(f.ch) : undefined;
    if (!sub) return;
    if (f.push === "pub") sub.deliver(f);
    else if (f.push === "join") this.call(sub.handlers.onJoin, f.info as ClientInfo);
    else if (f.push === "leave") this.call(sub.handlers.onLeave, f.info as ClientInfo);
    else if (f.push === "unsub") this.subscribeFailed(sub, new NatsedgeError(f.code as number, String(f.reason)));
  }

  /** @internal: a transport ended. Its outstanding commands fail; if it was current, reconnect. */
  closed(conn: Transport, code: number, reason: string): void {
    const hint = conn.hint;
    if (conn === this.conn) {
      this.lost(hint?.code ?? code, hint?.reason ?? reason, hint ? hint.reconnect : ![4001, 4003, 4004].includes(code));
    }
    for (const [id, p] of this.pending) {
      if (p.conn !== conn) continue;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.reject(new NatsedgeError(503, "disconnected"));
    }
  }

  /** The connection is gone; reconnect with backoff unless told not to. */
  private lost(code: number, reason: string, reconnect: boolean): void {
    const wasConnected = this.state !== "disconnected";
    this.conn = undefined;
    this.transport = undefined;
    clearTimeout(this.refreshTimer);
    clearTimeout(this.wsRetryTimer);
    clearInterval(this.pingTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new NatsedgeError(503, "disconnected"));
      this.pending.delete(id);
    }
    for (const s of this.subs.values()) {
      s.active = false;
      clearTimeout(s.retry);
    }
    this.state = "disconnected";
    // A 4002 (token expired) or a 4001 with getToken: fetch a fresh token for the next attempt.
    if ((code === 4002 || code === 4001) && this.opts.getToken) {
      this.token = undefined;
      reconnect = true;
    }
    if (!reconnect) this.wanted = false;
    if (!this.wanted) {
      for (const q of this.queued) {
        clearTimeout(q.timer);
        q.reject(new NatsedgeError(503, "not connected"));
      }
      this.queued.clear();
    }
    if (wasConnected) this.emit("disconnected", { code, reason, reconnect: this.wanted });
    clearTimeout(this.reconnectTimer);
    if (!this.wanted) return;
    this.urlIndex++;
    const delay = backoff(this.attempt++, this.opts.minReconnectDelay, this.opts.maxReconnectDelay);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  private expiresSoon(): boolean {
    const exp = tokenExpiry(this.token);
    return exp !== undefined && exp * 1000 - Date.now() < 10_000;
  }

  /** Refreshes the token on the live connection a little before it expires. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (exp === undefined || !this.opts.getToken) return;
    const lifetime = exp * 1000 - Date.now();
    // At 80% of the lifetime, or 5 s before exp when that is sooner (lifetimes under 25 s), but
    // never before half-way and 1 s: the old max(0, min(lifetime - 5 s, 0.8 lifetime)) was 0 for
    // tokens of 5 s or less, and every new short token was refreshed again at once, in a loop.
    const delay = Math.max(1000, lifetime / 2, Math.min(lifetime - 5_000, lifetime * 0.8));
    if (delay >= lifetime) return; // too late: the gateway ends it (4002) and we reconnect with a new one
    this.refreshTimer = setTimeout(() => void this.refresh(), Math.min(delay, 2_147_483_647));
  }

  private async refresh(): Promise<void> {
    try {
      const token = await (this.opts.getToken as () => Promise<string> | string)();
      const ok = await this.command({ op: "refresh", token });
      this.token = token;
      if (this.conn instanceof LongPoll && typeof ok.session === "string") this.conn.session = ok.session;
      this.scheduleRefresh();
    } catch (err) {
      // The gateway keeps the old token until its exp, then closes with 4002: we reconnect then.
      this.emit("error", err as Error);
    }
  }

  /**
   * Browsers cannot see WebSocket pings, so a dead path (Wi-Fi switch, sleep) would go unnoticed:
   * send `ping` when nothing arrived for `ping` seconds and drop the socket if it goes unanswered.
   */
  private keepalive(conn: Transport, seconds: number): void {
    clearInterval(this.pingTimer);
    this.lastSeen = Date.now();
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastSeen < seconds * 1000) return;
      this.lastSeen = Date.now(); // one ping at a time
      this.request(conn, { op: "ping" }).catch((err: NatsedgeError) => err.code === 408 && this.drop(conn, "ping timed out"));
    }, seconds * 500);
  }

  /** Gives up on a connection that stopped answering (a dead socket can look open for minutes). */
  private drop(conn: Transport, reason: string): void {
    if (conn !== this.conn) return;
    conn.close();
    this.closed(conn, 1006, reason);
  }

  /** On long-poll, try WebSocket again now and then; switch over when it works. */
  private scheduleWebSocketRetry(lp: Transport): void {
    clearTimeout(this.wsRetryTimer);
    if (!this.opts.transports.includes("websocket")) return;
    this.wsRetryTimer = setTimeout(() => {
      if (this.conn !== lp) return;
      const url = this.urls[this.urlIndex % this.urls.length] as string;
      this.openWebSocket(url)
        .then((ws) => this.handshake(ws, lp))
        .then(
          () => (this.websocketBlocked = false),
          () => this.conn === lp && this.scheduleWebSocketRetry(lp),
        );
    }, this.opts.websocketRetryInterval);
  }

  /** Browser hints: come back at once when the network or the tab does. */
  private watchBrowser(): void {
    const g = globalThis as {
      addEventListener?: (t: string, f: () => void) => void;
      document?: { visibilityState?: string; addEventListener?: (t: string, f: () => void) => void };
    };
    const now = (): void => {
      if (this.wanted && this.state === "disconnected") {
        this.attempt = 0;
        void this.connect();
      }
    };
    g.addEventListener?.("online", now);
    g.document?.addEventListener?.("visibilitychange", () => {
      if (g.document?.visibilityState === "visible") now();
    });
  }

  /** @internal */
  get subscriptions(): Map<string, AnySub> {
    return this.subs;
  }
}

/**
 * The long-poll transport: commands go to /lp/rpc under the signed session, and one poll at a
 * time asks /lp/poll for every subscribed channel from its position.
 */
class LongPoll implements Transport {
  readonly name = "longpoll";
  session: string | undefined;
  hint: Transport["hint"];
  private closed = false;
  private polling = false;
  private sending = false;
  private readonly outbox: Frame[] = [];
  private abort: AbortController | undefined;
  private readonly channels = new Set<string>();

  constructor(
    private readonly client: Client,
    private readonly url: string,
    private readonly codec: Codec,
  ) {}

  /**
   * Commands go out one request at a time, batched while one is in flight. Each used to get its
   * own request, and parallel HTTP requests can run in any order: two quick publishes could
   * land swapped, which cannot happen on WebSocket.
   */
  send(frames: Frame[]): void {
    this.outbox.push(...frames);
    if (!this.sending) void this.flush();
  }

  private async flush(): Promise<void> {
    this.sending = true;
    while (this.outbox.length > 0) await this.rpc(this.outbox.splice(0, 100));
    this.sending = false;
  }

  private async post(path: string, body: Frame, signal?: AbortSignal): Promise<Frame> {
    const res = await fetch(this.url + path, {
      method: "POST",
      headers: { "Content-Type": this.codec.contentType },
      body: this.codec.body(body),
      ...(signal ? { signal } : {}),
    });
    let out: Frame = {};
    try {
      out = this.codec.parse(await res.arrayBuffer());
    } catch {
      if (res.ok) throw new NatsedgeError(502, "unreadable long-poll answer");
    }
    if (!res.ok) {
      const e = out.error as { code: number; message: string } | undefined;
      throw new NatsedgeError(e?.code ?? res.status, e?.message ?? `HTTP ${res.status}`);
    }
    return out;
  }

  private async rpc(frames: Frame[]): Promise<void> {
    try {
      const body: Frame = { cmds: frames };
      if (this.session !== undefined) body.session = this.session;
      const replies = (await this.post("/lp/rpc", body)).replies as Frame[];
      for (const r of replies) {
        const ok = r.ok as Frame | undefined;
        if (ok && typeof ok.session === "string") this.session = ok.session;
      }
      this.client.receive(this, replies);
    } catch (err) {
      this.outbox.length = 0; // their commands fail with the transport
      this.fail(err);
    }
  }

  add(channels: string[]): void {
    for (const ch of channels) this.channels.add(ch);
    this.repoll();
  }

  remove(ch: string): void {
    if (this.channels.delete(ch)) this.repoll();
  }

  /** Ends the held poll so the next one names the current channel set. */
  private repoll(): void {
    this.abort?.abort();
    if (!this.polling && !this.closed) void this.loop();
  }

  private async loop(): Promise<void> {
    this.polling = true;
    // Bounded by the transport's life: it ends when closed, failed or left without channels.
    while (!this.closed) {
      const subs: Record<string, unknown> = {};
      const polled = new Map<string, AnySub>();
      for (const [ch, s] of this.client.subscriptions) {
        if (!this.channels.has(ch)) continue;
        subs[ch] = s.position ?? null;
        polled.set(ch, s);
      }
      if (polled.size === 0) break;
      const abort = (this.abort = new AbortController());
      // A poll the network silently lost would otherwise hang forever.
      const timer = setTimeout(() => abort.abort(), (POLL_S + 15) * 1000);
      let out: Frame;
      try {
        out = await this.post("/lp/poll", { session: this.session, subs, timeout: POLL_S }, abort.signal);
      } catch (err) {
        if (!this.closed && abort.signal.aborted) continue;
        this.fail(err);
        break;
      } finally {
        clearTimeout(timer);
      }
      // Closed meanwhile (switched to WebSocket): what this answer holds, the new transport
      // recovers from the positions, so delivering it here could only duplicate.
      if (this.closed) break;
      const pubs = new Map<string, Frame[]>();
      for (const p of (out.pubs as Frame[] | undefined) ?? []) {
        const ch = p.ch as string;
        pubs.set(ch, [...(pubs.get(ch) ?? []), p]);
      }
      for (const [ch, st] of Object.entries((out.subs ?? {}) as Record<string, Frame>)) {
        const s = polled.get(ch);
        if (s) this.client.applySubscribed(s, { ...st, pubs: pubs.get(ch) });
      }
      for (const [ch, e] of Object.entries((out.errors ?? {}) as Record<string, { code: number; message: string }>)) {
        this.channels.delete(ch);
        const s = polled.get(ch);
        if (s) this.client.subscribeFailed(s, new NatsedgeError(e.code, e.message));
      }
    }
    this.polling = false;
  }

  /** @internal */
  fail(err: unknown): void {
    if (this.closed) return;
    this.stop();
    // An HTTP 401 here is the signed session (expired, or from a replica with another
    // sessionSecret), not the token: a new connect makes a new session. It used to stop
    // anonymous clients for good.
    this.client.closed(this, err instanceof NatsedgeError ? err.code : 0, (err as Error).message);
  }

  /**
   * Leaves for good (switch to WebSocket, disconnect()): the gateway keeps a long-poll client in
   * presence for a while after its last poll, so say goodbye to every channel instead of
   * lingering there next to the new connection.
   */
  close(): void {
    if (!this.closed && this.session !== undefined && this.channels.size > 0) {
      this.send([...this.channels].map((ch) => ({ op: "unsubscribe", ch })));
    }
    this.stop();
  }

  private stop(): void {
    this.closed = true;
    this.abort?.abort();
  }
}
