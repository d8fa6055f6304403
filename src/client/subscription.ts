import type { NatsedgeError } from "./errors.js";
import type { Frame } from "./transport.js";

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

/** `client.subscribe`'s options: the handlers, and a subscription token when the channel needs one. */
export interface SubscribeOptions<T = unknown> extends SubscriptionHandlers<T> {
  /**
   * A subscription token from the backend (docs/protocol.md, "Subscription tokens"), sent with
   * every subscribe of the channel, reconnects and polls included; set a fresh one with
   * `sub.token = …` before it expires.
   */
  token?: string;
}

/** What a subscription needs from its client. */
export interface SubscriptionOwner {
  command(cmd: Frame): Promise<Frame>;
  unsubscribe(sub: AnySub): void;
}

/** Runs an application callback; one that throws must not break the client. */
export type Call = <A>(fn: ((a: A) => void) | undefined, arg: A) => void;

/** A subscription handle; it outlives reconnects and transport switches. */
export class Subscription<T = unknown> {
  /** Position after the last publication delivered (history channels). */
  position: Position | undefined;
  /** Subscribed on the current connection (false while reconnecting). */
  active = false;
  readonly handlers: SubscriptionHandlers<T>;
  /** The subscription token sent with every subscribe of the channel, if it needs one. */
  token: string | undefined;

  constructor(
    private readonly owner: SubscriptionOwner,
    readonly channel: string,
    handlers: SubscriptionHandlers<T>,
    /** Made by the server (the connect hook, the server API), not by `client.subscribe`. */
    readonly server = false,
  ) {
    const { token, ...rest } = handlers as SubscribeOptions<T>;
    this.handlers = rest;
    this.token = token;
  }

  /** Adds or replaces handlers: how an app handles a server-side subscription it is given. */
  setHandlers(handlers: SubscriptionHandlers<T>): this {
    Object.assign(this.handlers, handlers);
    return this;
  }

  publish(data: T, idempotencyKey?: string): Promise<{ offset?: number; epoch?: string }> {
    const cmd: Frame = { op: "publish", ch: this.channel, data };
    if (idempotencyKey !== undefined) cmd.idempotencyKey = idempotencyKey;
    return this.owner.command(cmd);
  }

  async presence(): Promise<Record<string, { user: string; info?: unknown }>> {
    return (await this.owner.command({ op: "presence", ch: this.channel })).clients as Record<
      string,
      { user: string; info?: unknown }
    >;
  }

  async presenceStats(): Promise<{ clients: number; users: number }> {
    return (await this.owner.command({ op: "presence_stats", ch: this.channel })) as { clients: number; users: number };
  }

  /**
   * Retained publications, oldest first: the newest `limit`, or (with `since`) those after it.
   * `reverse` is passed to the gateway as the command's `reverse` field.
   */
  async history(opts: { limit?: number; since?: Position; reverse?: boolean } = {}): Promise<{ pubs: Publication<T>[] } & Position> {
    const cmd: Frame = { op: "history", ch: this.channel };
    // Only the options given: a field left undefined would reach a MessagePack gateway as nil.
    for (const [k, v] of Object.entries(opts)) if (v !== undefined) cmd[k] = v;
    const r = await this.owner.command(cmd);
    const pubs = (r.pubs as Frame[]).map((p) => ({ ...p, ch: this.channel }) as Publication<T>);
    return { pubs, offset: r.offset as number, epoch: r.epoch as string };
  }

  unsubscribe(): void {
    this.owner.unsubscribe(this as unknown as AnySub);
  }
}

export type AnySub = Subscription<unknown>;

/** Delivers a publication once, in order: anything at or before the position was already seen. */
export function deliver(sub: AnySub, f: Frame, call: Call): void {
  const offset = f.offset as number | undefined;
  if (offset !== undefined && sub.position) {
    if (offset <= sub.position.offset) return;
    sub.position = { offset, epoch: sub.position.epoch };
  }
  const p: Publication = { ch: sub.channel, data: f.data };
  if (offset !== undefined) p.offset = offset;
  if (f.info) p.info = f.info as Publication["info"];
  call(sub.handlers.onPublication, p);
}

/**
 * A subscribe reply (WebSocket) or a poll answer for one channel (long-poll). Both carry the
 * channel position after `pubs`; a poll answer may also hold live publications.
 */
export function applyState(sub: AnySub, ok: Frame, call: Call): void {
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
    if (had) call(sub.handlers.onUnrecovered, sub.position);
  }
  for (const p of pubs) deliver(sub, p, call);
  if (epoch !== undefined && offset !== undefined && sub.position && offset > sub.position.offset) {
    sub.position = { offset, epoch };
  }
  if (!sub.active) {
    sub.active = true;
    call(sub.handlers.onSubscribed, undefined);
  }
}
