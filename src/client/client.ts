import { backoff, reconnectDelay } from "./backoff.js";
import { jsonCodec, msgpackCodec, type Codec } from "./codec.js";
import { errorFrom, NatsedgeError } from "./errors.js";
import { LongPoll } from "./longpoll.js";
import {
  applyState,
  deliver,
  Subscription,
  type AnySub,
  type Call,
  type ClientInfo,
  type Position,
  type SubscribeOptions,
  type SubscriptionOwner,
} from "./subscription.js";
import { refreshDelay, tokenExpiry } from "./token.js";
import type { Frame, PolledChannel, Transport, TransportHost, TransportName } from "./transport.js";
import { openWebSocket, type WebSocketCtor } from "./websocket.js";

export type State = "disconnected" | "connecting" | "connected";

export interface ClientOptions {
  /** A JWT, or a function returning one (called again before it expires and after 4002). */
  token?: string;
  getToken?: () => Promise<string> | string;
  /** Transports in order of preference. Default: websocket, then longpoll. */
  transports?: TransportName[];
  format?: "json" | "msgpack";
  /** WebSocket implementation (Node: `import WebSocket from "ws"`). Default: globalThis.WebSocket. */
  WebSocket?: WebSocketCtor;
  /**
   * Window of the first reconnect attempt after a loss (ms): uniform in [0, reconnectJitter).
   * Wider spreads a failed replica's clients thinner (a lower load spike on the replicas that
   * take them) and makes them come back later. See docs/client.md, Reconnecting.
   */
  reconnectJitter?: number;
  /** Backoff of the later attempts: full jitter over an exponentially growing, capped window (ms). */
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  /** How long a command waits for its reply, and for a connection when sent while disconnected (ms). */
  timeout?: number;
  /** While on long-poll, how often to try WebSocket again (ms). */
  websocketRetryInterval?: number;
  /** Connect on construction (default true); otherwise call connect(). */
  autoConnect?: boolean;
  /** Sent with every connect, for a gateway whose connect hook authenticates clients (docs/backend.md). */
  data?: unknown;
}

type Listener = (arg: never) => void;
type Timer = ReturnType<typeof setTimeout>;
interface Pending {
  resolve: (v: Frame) => void;
  reject: (e: Error) => void;
  timer: Timer;
  conn: Transport;
  /**
   * Runs synchronously when the reply arrives, before any later frame is looked at. A subscribe
   * reply must be applied before the live pushes that follow it: `ws` in Node emits every message
   * of a TCP chunk in one go, so a promise continuation would run after those pushes, which would
   * then move the position past the recovered publications and make them look like duplicates.
   */
  apply?: (ok: Frame) => void;
}

interface Queued {
  cmd: Frame;
  resolve: (v: Frame) => void;
  reject: (e: Error) => void;
  timer: Timer;
}

/** The `disconnect` push that announced a transport's end: it says why, and whether to come back. */
interface Hint {
  code: number;
  reason: string;
  reconnect: boolean;
}

/**
 * Default reconnectJitter (ms). A replica's clients all lose it at once; spread over this window
 * they arrive at (clients per replica) / window per second. The value is the measured trade in
 * docs/benchmarks.md (storm): 500 ms raised the spike and brought the clients back later, 5 s
 * spread them thinner and brought them back no sooner.
 */
export const DEFAULT_RECONNECT_JITTER = 2_000;

/** The gateway's default `ping` interval (s), for a connect reply that does not say. */
const PING_S = 25;

/**
 * Live publications held per server-side subscription while history fills its gap: the history
 * read is bounded by `timeout`, and a channel faster than this gives up on the gap instead.
 */
const MAX_HELD = 10_000;

export class Client {
  state: State = "disconnected";
  transport: TransportName | undefined;
  clientId: string | undefined;
  private readonly urls: string[];
  private urlIndex = 0;
  private readonly opts: Required<Omit<ClientOptions, "token" | "getToken" | "WebSocket" | "data">> & ClientOptions;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly subs = new Map<string, AnySub>();
  /** Subscriptions the server made, by channel; kept across reconnects like the app's own. */
  private readonly serverSubs = new Map<string, AnySub>();
  /** Server-side subscriptions the current connection has not made again (yet). */
  private awaitingServer = new Set<AnySub>();
  /**
   * Server-side subscriptions made again with a gap: where the server started them (`at`), and
   * their live publications, held until history has filled the gap.
   */
  private readonly recovering = new Map<AnySub, { at: Position; held: Frame[] }>();
  /** Pushes right behind the connect reply, read before the handshake made their transport current. */
  private early: { conn: Transport; frames: Frame[] } | undefined;
  /** Subscriptions waiting to retry after a transient subscribe error. */
  private readonly retries = new Map<AnySub, Timer>();
  private readonly pending = new Map<number, Pending>();
  private readonly queued = new Set<Queued>();
  private readonly hints = new WeakMap<Transport, Hint>();
  private readonly owner: SubscriptionOwner = {
    command: (cmd) => this.command(cmd),
    unsubscribe: (sub) => this.unsubscribe(sub),
  };
  private nextId = 1;
  private attempt = 0;
  private conn: Transport | undefined;
  private codec: Codec = jsonCodec;
  private token: string | undefined;
  private reconnectTimer: Timer | undefined;
  private refreshTimer: Timer | undefined;
  private wsRetryTimer: Timer | undefined;
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
      reconnectJitter: DEFAULT_RECONNECT_JITTER,
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
  /**
   * A new server-side subscription (the connect hook's channels, the server API's `subscribe`):
   * set its handlers here, before its first publication. Once per subscription, not per reconnect.
   */
  on(event: "serverSubscribed", fn: (sub: Subscription) => void): this;
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

  /** The subscriptions by channel. */
  get subscriptions(): ReadonlyMap<string, Subscription> {
    return this.subs;
  }

  /** The subscriptions the server made, by channel. */
  get serverSubscriptions(): ReadonlyMap<string, Subscription> {
    return this.serverSubs;
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

  /**
   * Calls `method` on the backend through the gateway's rpc hook and resolves with the backend's
   * `data`. Rejects with NatsedgeError: 404 when the gateway has no rpc hook, the backend's own
   * refusal (400, 401, 403, 404, 429), or 503 with `retryAfter` when the backend could not answer.
   */
  async rpc<T = unknown>(method: string, data?: unknown): Promise<T> {
    const ok = await this.command(data === undefined ? { op: "rpc", method } : { op: "rpc", method, data });
    return ok.data as T;
  }

  subscribe<T = unknown>(channel: string, handlers: SubscribeOptions<T> = {}): Subscription<T> {
    if (this.subs.has(channel) || this.serverSubs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription<T>(this.owner, channel, handlers) as unknown as AnySub;
    this.subs.set(channel, sub);
    this.resubscribe(sub);
    return sub as unknown as Subscription<T>;
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

  private emit(event: string, arg?: unknown): void {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        (fn as (a: unknown) => void)(arg);
      } catch (err) {
        if (event !== "error") this.emit("error", err);
      }
    }
  }

  /**
   * Runs an application callback. One that throws must not break the client: it ran inside a
   * socket handler (an uncaught exception in Node) or halfway through a batch of frames.
   */
  private readonly call: Call = (fn, arg) => {
    try {
      fn?.(arg);
    } catch (err) {
      this.emit("error", err);
    }
  };

  /** The map a subscription is registered in. */
  private registry(sub: AnySub): Map<string, AnySub> {
    return sub.server ? this.serverSubs : this.subs;
  }

  /** Still registered: not unsubscribed or ended meanwhile. */
  private owns(sub: AnySub): boolean {
    return this.registry(sub).get(sub.channel) === sub;
  }

  private allSubs(): AnySub[] {
    return [...this.subs.values(), ...this.serverSubs.values()];
  }

  /** Takes a subscription out of the client: no more pushes, retries or recovery for it. */
  private forget(sub: AnySub): void {
    this.registry(sub).delete(sub.channel);
    this.cancelRetry(sub);
    this.awaitingServer.delete(sub);
    this.recovering.delete(sub);
  }

  private unsubscribe(sub: AnySub): void {
    if (!this.owns(sub)) return;
    this.forget(sub);
    sub.active = false;
    this.conn?.unfollow?.(sub.channel);
    if (this.state === "connected") this.command({ op: "unsubscribe", ch: sub.channel }).catch(() => undefined);
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
        await this.handshake(name === "websocket" ? await this.openWebSocket(url) : new LongPoll(url, this.codec, this.attach));
        // Only now is WebSocket known to be blocked rather than the gateway being down: a
        // client whose gateway merely restarted must not sit on long-poll for a whole
        // websocketRetryInterval.
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
    return openWebSocket(url, this.opts, this.codec, this.attach);
  }

  /** The seam a transport reports to: every call is about that transport. */
  private readonly attach = (conn: Transport): TransportHost => ({
    receive: (frames) => this.receive(conn, frames),
    closed: (code, reason) => this.closed(conn, code, reason),
    polls: (channels) => {
      const out: PolledChannel[] = [];
      for (const sub of this.allSubs()) {
        const ch = sub.channel;
        if (!channels.has(ch)) continue;
        out.push({
          ch,
          since: sub.position ?? null,
          ...(sub.token === undefined ? {} : { token: sub.token }),
          answer: (state) => this.applySubscribed(sub, state),
          refuse: (err) => this.subscribeFailed(sub, err),
        });
      }
      return out;
    },
  });

  /**
   * Authenticates a new transport and makes it current. `replacing` is the transport it takes
   * over from (long-poll, when WebSocket comes back), undefined for a fresh connect.
   */
  private async handshake(conn: Transport, replacing?: Transport): Promise<void> {
    let ok: Frame;
    try {
      const cmd: Frame = this.token === undefined ? { op: "connect" } : { op: "connect", token: this.token };
      if (this.opts.data !== undefined) cmd.data = this.opts.data;
      ok = await this.request(conn, cmd, () => (this.early = { conn, frames: [] }));
      // disconnect() during the handshake, or the connection was lost and replaced meanwhile.
      if (!this.wanted || this.conn !== replacing) throw new NatsedgeError(503, "disconnected");
    } catch (err) {
      if (this.early?.conn === conn) this.early = undefined;
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
    // Long-poll needs no keepalive: every poll is answered within its timeout or fails.
    if (conn.name === "longpoll") this.scheduleWebSocketRetry(conn);
    else this.keepalive(conn, typeof ok.ping === "number" && ok.ping > 0 ? ok.ping : PING_S);
    if (conn.follow) {
      // Long-poll holds no subscriptions: the connect hook's channels are the client's to poll.
      const named = Array.isArray(ok.channels) ? ok.channels : [];
      for (const ch of named) if (typeof ch === "string") this.serverSubscribed({ ch });
      conn.follow(this.allSubs().map((s) => s.channel));
    } else {
      for (const s of this.subs.values()) {
        s.active = false;
        this.resubscribe(s);
      }
      this.awaitServer(conn);
    }
    this.emit("connected", { client: this.clientId, transport: conn.name });
    const early = this.early;
    this.early = undefined;
    if (early?.conn === conn) for (const f of early.frames) this.push(f);
    for (const q of this.queued) {
      clearTimeout(q.timer);
      this.request(conn, q.cmd).then(q.resolve, q.reject);
    }
    this.queued.clear();
  }

  // --- subscriptions ------------------------------------------------------------------------

  /**
   * After a reconnect, the connect hook makes its channels again (`sub` pushes), the server API's
   * are gone. Commands are answered in order and the hook's pushes come before the reply to any
   * later command, so what has not come back by the reply to a `ping` the SDK subscribes itself,
   * from its position, like its own subscriptions.
   */
  private awaitServer(conn: Transport): void {
    this.awaitingServer = new Set(this.serverSubs.values());
    if (this.awaitingServer.size === 0) return;
    this.request(conn, { op: "ping" }).then(
      () => {
        if (conn !== this.conn) return;
        const left = this.awaitingServer;
        this.awaitingServer = new Set();
        for (const s of left) this.resubscribe(s);
      },
      (err: NatsedgeError) => err.code === 408 && this.drop(conn, "ping timed out"),
    );
  }

  /** (Re)subscribes on the current connection, resuming from the last position. */
  private resubscribe(sub: AnySub): void {
    const conn = this.conn;
    this.cancelRetry(sub);
    if (this.state !== "connected" || !conn) return;
    if (conn.follow) return conn.follow([sub.channel]);
    const cmd: Frame = { op: "subscribe", ch: sub.channel };
    if (sub.position) cmd.since = sub.position;
    if (sub.token !== undefined) cmd.token = sub.token;
    this.request(conn, cmd, (ok) => this.applySubscribed(sub, ok)).catch((err: NatsedgeError) => {
      // Unanswered: the gateway may still have subscribed (a retry would get 409), so start over
      // on a new connection, which resubscribes everything from the positions.
      if (err.code === 408) this.drop(conn, "subscribe timed out");
      else if (conn === this.conn) this.subscribeFailed(sub, err);
    });
  }

  private cancelRetry(sub: AnySub): void {
    clearTimeout(this.retries.get(sub));
    this.retries.delete(sub);
  }

  /**
   * A subscribe failed. Transient errors (503 broker unavailable or moving too fast, 429) are
   * retried with backoff, and no sooner than a `retryAfter` the gateway gave (within
   * maxReconnectDelay); anything else ends the subscription, so that it does not fail again on
   * every reconnect.
   */
  private subscribeFailed(sub: AnySub, err: NatsedgeError): void {
    if (!this.owns(sub)) return;
    // The server made this subscription while ours was on its way: it is there, keep it.
    if (err.code === 409 && sub.active) return;
    sub.active = false;
    this.recovering.delete(sub);
    if (err.code === 429 || err.code === 503) {
      const { minReconnectDelay: min, maxReconnectDelay: max } = this.opts;
      const asked = Math.min(max, (err.retryAfter ?? 0) * 1000);
      this.retries.set(
        sub,
        setTimeout(() => this.resubscribe(sub), Math.max(asked, min + backoff(2, min, max))),
      );
    } else {
      this.forget(sub);
    }
    this.call(sub.handlers.onError, err);
  }

  private applySubscribed(sub: AnySub, ok: Frame): void {
    if (!this.owns(sub)) return; // unsubscribed while the reply was on its way
    applyState(sub, ok, this.call);
  }

  // --- frames from transports ---------------------------------------------------------------

  /** Replies from any open transport; pushes only from the current one. */
  private receive(conn: Transport, frames: Frame[]): void {
    this.lastSeen = Date.now();
    for (const f of frames) {
      const p = typeof f.id === "number" ? this.pending.get(f.id) : undefined;
      if (p) {
        this.pending.delete(f.id as number);
        clearTimeout(p.timer);
        const err = f.error as { code: number; message: string } | undefined;
        if (err) p.reject(errorFrom(err));
        else {
          const ok = (f.ok ?? {}) as Frame;
          p.apply?.(ok);
          p.resolve(ok);
        }
      } else if (f.push === "disconnect") {
        this.hints.set(conn, { code: f.code as number, reason: String(f.reason), reconnect: f.reconnect !== false });
      } else if (conn === this.conn) {
        this.push(f);
      } else if (this.early?.conn === conn) {
        this.early.frames.push(f);
      }
    }
  }

  private push(f: Frame): void {
    if (typeof f.ch !== "string") return;
    if (f.push === "sub") return this.serverSubscribed(f);
    const sub = this.subs.get(f.ch) ?? this.serverSubs.get(f.ch);
    if (!sub) return;
    if (f.push === "pub") this.publication(sub, f);
    else if (f.push === "join") this.call(sub.handlers.onJoin, f.info as ClientInfo);
    else if (f.push === "leave") this.call(sub.handlers.onLeave, f.info as ClientInfo);
    else if (f.push === "unsub" && f.resubscribe === true) {
      // The gateway could not prove that its next publication follows the last one delivered
      // and has dropped the subscription: resuming from the position either recovers exactly
      // or answers recovered:false.
      sub.active = false;
      this.recovering.delete(sub);
      this.resubscribe(sub);
    } else if (f.push === "unsub") {
      this.subscribeFailed(sub, errorFrom({ code: f.code as number, message: String(f.reason), retryAfter: f.retryAfter }));
    }
  }

  private publication(sub: AnySub, f: Frame): void {
    const r = this.recovering.get(sub);
    if (!r) return deliver(sub, f, this.call);
    r.held.push(f);
    if (r.held.length >= MAX_HELD) this.recovered(sub, undefined);
  }

  /**
   * The server made a subscription (`sub` push; on long-poll, a channel of the connect reply).
   * A new one becomes a Subscription and is announced; one the client already had, from before a
   * reconnect, continues from its position.
   */
  private serverSubscribed(f: Frame): void {
    const ch = f.ch as string;
    if (this.subs.has(ch)) return; // the app's own subscription carries the channel
    const at = typeof f.offset === "number" && typeof f.epoch === "string" ? { offset: f.offset, epoch: f.epoch } : undefined;
    const known = this.serverSubs.get(ch);
    if (!known) {
      const sub = new Subscription(this.owner, ch, {}, true) as AnySub;
      sub.position = at;
      this.serverSubs.set(ch, sub);
      this.emit("serverSubscribed", sub);
      // On long-poll the first poll answer makes it active; on WebSocket this push did.
      if (f.push === "sub" && this.owns(sub)) applyState(sub, at ?? {}, this.call);
      return;
    }
    if (f.push !== "sub") return;
    this.awaitingServer.delete(known);
    this.cancelRetry(known);
    this.recover(known, at);
  }

  /**
   * A server-side subscription made again on a new connection starts at the channel's position
   * (`at`), not at the client's: read what lies between from history, holding the live
   * publications meanwhile, and deliver both merged by offset.
   */
  private recover(sub: AnySub, at: Position | undefined): void {
    const from = sub.position;
    const conn = this.conn;
    if (!at || !from || !conn || at.epoch !== from.epoch || at.offset <= from.offset) {
      this.recovering.delete(sub);
      return applyState(sub, at ? { ...at, recovered: at.epoch === from?.epoch } : {}, this.call);
    }
    this.recovering.set(sub, { at, held: [] });
    this.request(conn, { op: "history", ch: sub.channel, since: from }).then(
      (ok) => conn === this.conn && this.recovered(sub, ok),
      () => conn === this.conn && this.recovered(sub, undefined),
    );
  }

  /**
   * The gap's history read answered (`ok`) or failed (undefined: the history no longer reaches
   * back, the channel is not readable by this client's token, the broker failed): the held
   * publications follow; without the gap filled, the app hears onUnrecovered.
   */
  private recovered(sub: AnySub, ok: Frame | undefined): void {
    const r = this.recovering.get(sub);
    if (!r || !this.owns(sub)) return;
    this.recovering.delete(sub);
    // History holds everything after the client's position up to at least `at`; the held
    // publications everything after `at`: delivered in offset order, each once.
    const pubs = ok ? [...((ok.pubs as Frame[] | undefined) ?? []), ...r.held] : r.held;
    applyState(sub, { ...r.at, recovered: ok !== undefined, pubs }, this.call);
  }

  /** A transport ended. Its outstanding commands fail; if it was current, reconnect. */
  private closed(conn: Transport, code: number, reason: string): void {
    const hint = this.hints.get(conn);
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
    for (const s of this.allSubs()) {
      s.active = false;
      this.cancelRetry(s);
    }
    this.recovering.clear();
    this.awaitingServer.clear();
    this.early = undefined;
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
    const { reconnectJitter: jitter, minReconnectDelay: min, maxReconnectDelay: max } = this.opts;
    const delay = reconnectDelay(this.attempt++, { jitter, min, max });
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  // --- tokens, keepalive, fallback ----------------------------------------------------------

  private expiresSoon(): boolean {
    const exp = tokenExpiry(this.token);
    return exp !== undefined && exp * 1000 - Date.now() < 10_000;
  }

  /** Refreshes the token on the live connection a little before it expires. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    const exp = tokenExpiry(this.token);
    if (exp === undefined || !this.opts.getToken) return;
    const delay = refreshDelay(exp * 1000 - Date.now());
    if (delay !== undefined) this.refreshTimer = setTimeout(() => void this.refresh(), delay);
  }

  private async refresh(): Promise<void> {
    try {
      const token = await (this.opts.getToken as () => Promise<string> | string)();
      await this.command({ op: "refresh", token });
      this.token = token;
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
}
