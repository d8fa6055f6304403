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
 */

export type State = "disconnected" | "connecting" | "connected";
export type TransportName = "websocket" | "longpoll";

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
  /** The gateway could not replay everything missed (history too short, or a new epoch). */
  onUnrecovered?: (position: { offset: number; epoch: string }) => void;
  onError?: (err: NatsedgeError) => void;
}

/** Minimal WebSocket surface, satisfied by browsers' WebSocket and by the `ws` package. */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
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
  /** How long a command waits for its reply (ms). */
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
}

/** The reconnect delay for an attempt: uniform in [0, min(max, min * 2^attempt)]. */
export function backoff(attempt: number, min = 500, max = 20_000, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** Seconds since the epoch at which a JWT expires, if it says. */
function tokenExpiry(token: string): number | undefined {
  try {
    const part = (token.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
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
  const unpackr = new m.Unpackr({ useRecords: false });
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
  position: { offset: number; epoch: string } | undefined;
  active = false;

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

  async history(opts: { limit?: number } = {}): Promise<{ pubs: Publication<T>[]; offset: number; epoch: string }> {
    const r = await this.client.command({ op: "history", ch: this.channel, ...opts });
    const pubs = (r.pubs as Frame[]).map((p) => ({ ...p, ch: this.channel }) as Publication<T>);
    return { pubs, offset: r.offset as number, epoch: r.epoch as string };
  }

  unsubscribe(): void {
    this.client.unsubscribe(this as unknown as AnySub);
  }

  /** Delivers a publication once, in order: anything at or before the position was already seen. */
  deliver(p: Publication<T>): void {
    if (p.offset !== undefined && this.position) {
      if (p.offset <= this.position.offset) return;
      this.position = { offset: p.offset, epoch: this.position.epoch };
    }
    this.handlers.onPublication?.(p);
  }
}

type AnySub = Subscription<unknown>;

/** What a transport must do for the client; both speak protocol v1 frames. */
interface Transport {
  readonly name: TransportName;
  send(frames: Frame[]): void;
  close(): void;
}

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
  private nextId = 1;
  private attempt = 0;
  private conn: Transport | undefined;
  private codec: Codec = jsonCodec;
  private token: string | undefined;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private wsRetryTimer: ReturnType<typeof setTimeout> | undefined;
  private wanted = false;
  private websocketFailed = false;

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
    for (const fn of this.listeners.get(event) ?? []) (fn as (a: unknown) => void)(arg);
  }

  async connect(): Promise<void> {
    this.wanted = true;
    if (this.state !== "disconnected") return;
    this.setState("connecting");
    this.emit("connecting");
    try {
      if (this.opts.format === "msgpack" && this.codec === jsonCodec) this.codec = await msgpackCodec();
      if (this.opts.getToken && (this.token === undefined || this.expiresSoon())) this.token = await this.opts.getToken();
      await this.open();
    } catch (err) {
      this.emit("error", err as Error);
      this.lost(0, (err as Error).message, true);
    }
  }

  disconnect(): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.wsRetryTimer);
    this.conn?.close();
    this.lost(1000, "client disconnect", false);
  }

  subscribe<T = unknown>(channel: string, handlers: SubscriptionHandlers<T> = {}): Subscription<T> {
    if (this.subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription<T>(this, channel, handlers);
    this.subs.set(channel, sub as unknown as AnySub);
    if (this.state === "connected") void this.resubscribe(sub as unknown as AnySub);
    return sub;
  }

  /** @internal */
  unsubscribe(sub: AnySub): void {
    if (this.subs.get(sub.channel) !== sub) return;
    this.subs.delete(sub.channel);
    if (this.state === "connected") this.command({ op: "unsubscribe", ch: sub.channel }).catch(() => undefined);
  }

  /** Sends a command and resolves with its `ok` body (rejects with NatsedgeError / timeout). */
  command(cmd: Frame): Promise<Frame> {
    if (this.state !== "connected" || !this.conn) return Promise.reject(new NatsedgeError(503, "not connected"));
    return this.request(this.conn, cmd);
  }

  private request(conn: Transport, cmd: Frame): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new NatsedgeError(408, `${String(cmd.op)} timed out`));
      }, this.opts.timeout);
      this.pending.set(id, { resolve, reject, timer });
      conn.send([{ id, ...cmd }]);
    });
  }

  // --- connecting ---------------------------------------------------------------------------

  private async open(): Promise<void> {
    const url = this.urls[this.urlIndex % this.urls.length] as string;
    const order = this.opts.transports.filter((t) => t !== "websocket" || !this.websocketFailed);
    let lastError: unknown;
    for (const name of order.length > 0 ? order : this.opts.transports) {
      try {
        const conn = name === "websocket" ? await this.openWebSocket(url) : new LongPoll(this, url, this.codec);
        await this.handshake(conn);
        return;
      } catch (err) {
        lastError = err;
        if (err instanceof NatsedgeError && (err.code === 401 || err.code === 403)) break;
        if (name === "websocket") this.websocketFailed = true;
      }
    }
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
      ws.onopen = () => {
        opened = true;
        resolve(conn);
      };
      ws.onerror = () => {
        if (!opened) reject(new Error("websocket failed to open"));
      };
      ws.onmessage = (ev) => {
        if (this.conn === conn || !opened || this.state === "connecting") this.receive(conn, this.codec.decode(ev.data));
      };
      ws.onclose = (ev) => {
        if (!opened) reject(new Error(`websocket closed before open (${ev.code})`));
        else if (this.conn === conn) this.lost(ev.code, ev.reason, this.lastDisconnect?.reconnect ?? ev.code !== 4001);
      };
    });
  }

  private lastDisconnect: { code: number; reason: string; reconnect: boolean } | undefined;

  private async handshake(conn: Transport): Promise<void> {
    this.lastDisconnect = undefined;
    const ok = await this.request(conn, this.token === undefined ? { op: "connect" } : { op: "connect", token: this.token });
    this.conn = conn;
    this.clientId = ok.client as string;
    this.transport = conn.name;
    this.attempt = 0;
    this.setState("connected");
    this.scheduleRefresh();
    if (conn.name === "longpoll") this.scheduleWebSocketRetry();
    this.emit("connected", { client: this.clientId, transport: conn.name });
    await Promise.all([...this.subs.values()].map((s) => this.resubscribe(s)));
  }

  /** (Re)subscribes, resuming from the last position so missed publications arrive first. */
  private async resubscribe(sub: AnySub): Promise<void> {
    const conn = this.conn;
    if (!conn) return;
    try {
      if (conn instanceof LongPoll) {
        conn.add(sub);
        return;
      }
      const cmd: Frame = { op: "subscribe", ch: sub.channel };
      if (sub.position) cmd.since = sub.position;
      const ok = await this.request(conn, cmd);
      this.applySubscribed(sub, ok);
    } catch (err) {
      sub.handlers.onError?.(err instanceof NatsedgeError ? err : new NatsedgeError(500, String(err)));
    }
  }

  /** @internal: a subscribe reply or a long-poll channel state. */
  applySubscribed(sub: AnySub, ok: Frame): void {
    sub.active = true;
    const epoch = ok.epoch as string | undefined;
    const offset = ok.offset as number | undefined;
    if (ok.recovered === false && sub.position && epoch !== undefined && offset !== undefined) {
      sub.position = { offset, epoch };
      sub.handlers.onUnrecovered?.({ offset, epoch });
      return;
    }
    if (!sub.position && epoch !== undefined && offset !== undefined) sub.position = { offset, epoch };
    for (const p of (ok.pubs as Frame[] | undefined) ?? []) sub.deliver({ ...p, ch: sub.channel } as Publication<unknown>);
    if (epoch !== undefined && offset !== undefined && sub.position && offset > sub.position.offset) {
      sub.position = { offset, epoch };
    }
  }

  /** @internal: frames from the current transport. */
  receive(conn: Transport, frames: Frame[]): void {
    for (const f of frames) {
      if (typeof f.id === "number") {
        const p = this.pending.get(f.id);
        if (!p) continue;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        const err = f.error as { code: number; message: string } | undefined;
        if (err) p.reject(new NatsedgeError(err.code, err.message));
        else p.resolve((f.ok ?? {}) as Frame);
        continue;
      }
      this.push(conn, f);
    }
  }

  /** @internal */
  push(conn: Transport, f: Frame): void {
    const sub = typeof f.ch === "string" ? this.subs.get(f.ch) : undefined;
    switch (f.push) {
      case "pub":
        sub?.deliver(f as unknown as Publication<unknown>);
        break;
      case "join":
        sub?.handlers.onJoin?.(f.info as ClientInfo);
        break;
      case "leave":
        sub?.handlers.onLeave?.(f.info as ClientInfo);
        break;
      case "unsub":
        if (sub) {
          sub.active = false;
          sub.handlers.onError?.(new NatsedgeError(f.code as number, String(f.reason)));
        }
        break;
      case "disconnect":
        this.lastDisconnect = { code: f.code as number, reason: String(f.reason), reconnect: f.reconnect !== false };
        if (conn === this.conn && conn.name === "longpoll") this.lost(f.code as number, String(f.reason), f.reconnect !== false);
        break;
    }
  }

  /** @internal: the transport is gone; reconnect with backoff unless told not to. */
  lost(code: number, reason: string, reconnect: boolean): void {
    const wasConnected = this.state !== "disconnected";
    this.conn = undefined;
    this.transport = undefined;
    clearTimeout(this.refreshTimer);
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new NatsedgeError(503, "disconnected"));
      this.pending.delete(id);
    }
    for (const s of this.subs.values()) s.active = false;
    this.setState("disconnected");
    if (wasConnected) this.emit("disconnected", { code, reason, reconnect });
    if (code === 4002 && this.opts.getToken) this.token = undefined; // fetch a fresh one
    if (!reconnect || !this.wanted) {
      this.wanted = this.wanted && reconnect;
      return;
    }
    this.urlIndex++;
    clearTimeout(this.reconnectTimer);
    const delay = backoff(this.attempt++, this.opts.minReconnectDelay, this.opts.maxReconnectDelay);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  private setState(s: State): void {
    this.state = s;
  }

  private expiresSoon(): boolean {
    const exp = this.token === undefined ? undefined : tokenExpiry(this.token);
    return exp !== undefined && exp * 1000 - Date.now() < 10_000;
  }

  /** Refreshes the token on the live connection a little before it expires. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = this.token === undefined ? undefined : tokenExpiry(this.token);
    if (exp === undefined || !this.opts.getToken) return;
    const lifetime = exp * 1000 - Date.now();
    const delay = Math.max(0, Math.min(lifetime - 5_000, lifetime * 0.8));
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
      this.emit("error", err as Error);
    }
  }

  /** On long-poll, try WebSocket again now and then; switch over when it works. */
  private scheduleWebSocketRetry(): void {
    clearTimeout(this.wsRetryTimer);
    if (!this.opts.transports.includes("websocket")) return;
    this.wsRetryTimer = setTimeout(() => {
      if (this.transport !== "longpoll") return;
      const url = this.urls[this.urlIndex % this.urls.length] as string;
      this.openWebSocket(url).then(
        async (ws) => {
          const old = this.conn;
          try {
            await this.handshake(ws);
            this.websocketFailed = false;
            old?.close();
          } catch {
            ws.close();
            this.conn = old;
            this.transport = "longpoll";
            this.scheduleWebSocketRetry();
          }
        },
        () => this.scheduleWebSocketRetry(),
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
        clearTimeout(this.reconnectTimer);
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
  get options(): ClientOptions & { timeout: number } {
    return this.opts;
  }

  /** @internal */
  get subscriptions(): Iterable<AnySub> {
    return this.subs.values();
  }

  /** @internal */
  currentToken(): string | undefined {
    return this.token;
  }
}

/**
 * The long-poll transport: commands go to /lp/rpc under the signed session, and one poll at a
 * time asks /lp/poll for every subscribed channel from its position.
 */
class LongPoll implements Transport {
  readonly name = "longpoll";
  session: string | undefined;
  private closed = false;
  private polling = false;
  private abort: AbortController | undefined;
  private readonly channels = new Set<string>();

  constructor(
    private readonly client: Client,
    private readonly url: string,
    private readonly codec: Codec,
  ) {}

  send(frames: Frame[]): void {
    void this.rpc(frames);
  }

  private async post(path: string, body: Frame, signal?: AbortSignal): Promise<Frame> {
    const res = await fetch(this.url + path, {
      method: "POST",
      headers: { "Content-Type": this.codec.contentType },
      body: this.codec.body(body),
      ...(signal ? { signal } : {}),
    });
    const out = this.codec.parse(await res.arrayBuffer());
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
      const out = await this.post("/lp/rpc", body);
      const replies = out.replies as Frame[];
      for (const r of replies) {
        const ok = r.ok as Frame | undefined;
        if (ok && typeof ok.session === "string") this.session = ok.session;
      }
      this.client.receive(this, replies);
    } catch (err) {
      this.fail(err);
    }
  }

  add(sub: AnySub): void {
    this.channels.add(sub.channel);
    this.abort?.abort(); // re-poll at once with the new channel
    if (!this.polling) void this.loop();
  }

  private async loop(): Promise<void> {
    this.polling = true;
    while (!this.closed) {
      const subs: Record<string, unknown> = {};
      const byChannel = new Map<string, AnySub>();
      for (const s of this.client.subscriptions) {
        if (!this.channels.has(s.channel)) continue;
        subs[s.channel] = s.position ?? null;
        byChannel.set(s.channel, s);
      }
      if (byChannel.size === 0) break;
      this.abort = new AbortController();
      let out: Frame;
      try {
        out = await this.post("/lp/poll", { session: this.session, subs, timeout: 25 }, this.abort.signal);
      } catch (err) {
        if ((err as Error).name === "AbortError" && !this.closed) continue;
        this.fail(err);
        break;
      }
      const states = (out.subs ?? {}) as Record<string, Frame>;
      for (const p of (out.pubs as Frame[] | undefined) ?? []) byChannel.get(p.ch as string)?.deliver(p as unknown as Publication<unknown>);
      for (const [ch, st] of Object.entries(states)) {
        const s = byChannel.get(ch);
        if (s) this.client.applySubscribed(s, st);
      }
      for (const [ch, e] of Object.entries((out.errors ?? {}) as Record<string, { code: number; message: string }>)) {
        byChannel.get(ch)?.handlers.onError?.(new NatsedgeError(e.code, e.message));
        this.channels.delete(ch);
      }
    }
    this.polling = false;
  }

  private fail(err: unknown): void {
    if (this.closed) return;
    this.closed = true;
    this.abort?.abort();
    const code = err instanceof NatsedgeError ? err.code : 0;
    this.client.lost(code === 401 ? 4001 : code, (err as Error).message, code !== 401 || this.client.options.getToken !== undefined);
  }

  close(): void {
    this.closed = true;
    this.abort?.abort();
  }
}
