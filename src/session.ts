import { randomUUID } from "node:crypto";
import type { Claims, TokenVerifier } from "./auth/jwt.js";
import { AuthError } from "./auth/jwt.js";
import { anonymousAllowed, resolveChannel, type ResolvedChannel } from "./channels.js";
import { allowed, checkAccess } from "./delivery/access.js";
import { clientInfo, type Identity } from "./delivery/identity.js";
import type { Config } from "./config/types.js";
import { MAX_HISTORY_LIMIT } from "./history/history.js";
import type { Hub, HubSession } from "./hub/hub.js";
import type { TokenBucket } from "./limits/bucket.js";
import { chargeItems, type Limits } from "./limits/limits.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import { encodeFrame, type Format } from "./protocol/codec.js";
import { CloseCode, ErrorCode, ProtocolError } from "./protocol/codes.js";
import { Payload } from "./protocol/payload.js";
import { encodePubEntry, encodeReplyWithPubs } from "./protocol/push.js";
import { asPosition, type ClientInfo, type Publication, type StreamPosition } from "./publication.js";

/** What a transport offers a session: a way to send frames and to join channel fan-out. */
export interface Connection {
  readonly format: Format;
  readonly transport: string;
  /** Sends one encoded frame. */
  send(frame: Buffer): void;
  close(code: number, reason: string): void;
  /** Starts delivering the channel's fan-out to this connection. */
  join(ch: string): void;
  leave(ch: string): void;
  /** Present for request/response transports, which keep no per-client state between requests. */
  readonly stateless?: StatelessTransport;
  /**
   * For a stateless transport's request without a session: the key (the client's address) its
   * command budget is kept under, so batching commands into many such requests buys nothing.
   */
  readonly budgetKey?: string;
}

export type { Identity } from "./delivery/identity.js";

/**
 * What a stateless transport (long-poll) does instead of holding a connection: it hands the
 * client a signed session carrying its identity, and manages channel membership per request.
 */
export interface StatelessTransport {
  issueSession(identity: Identity): string;
  /** The client asked to leave a channel it was polling (presence leave now, not at timeout). */
  unsubscribe(r: ResolvedChannel, info: ClientInfo): void;
}

export interface SessionContext {
  config: Config;
  hub: Hub;
  limits: Limits;
  verifier: TokenVerifier | undefined;
  metrics: Metrics;
  log: Logger;
  node: string;
}

interface Subscription {
  resolved: ResolvedChannel;
  active: boolean;
}

type Frame = Record<string, unknown>;
type Reply = Record<string, unknown> | Buffer;

const MAX_ID_LENGTH = 64;
const MAX_IDEMPOTENCY_KEY = 128;
// setTimeout fires at once for delays past 2^31-1 ms; longer token lifetimes re-arm instead.
const MAX_TIMER = 2_147_483_647;

/**
 * One client's protocol state, independent of the transport: authentication, subscriptions,
 * permissions, and the command ops of protocol v1. Commands of one client run strictly in order.
 */
export class Session implements HubSession {
  readonly client: string;
  user = "";
  private claims: Claims | undefined;
  private connected = false;
  private ended = false;
  private closing = false;
  private readonly subs = new Map<string, Subscription>();
  private expiryTimer: NodeJS.Timeout | undefined;
  private queue: Promise<void> = Promise.resolve();
  private readonly budget: TokenBucket | undefined;
  private rejected = 0;
  /** Counted in the user's connections across the cluster (removed when closed). */
  private countedForUser = false;

  constructor(
    private readonly conn: Connection,
    private readonly ctx: SessionContext,
    /** A token the transport found outside the protocol (a cookie, an Authorization header). */
    private readonly ambientToken?: string,
    /** An identity already established (a stateless transport's verified session). */
    identity?: Identity,
  ) {
    this.client = identity?.client ?? randomUUID();
    this.budget = ctx.limits.commandBudget(identity?.client ?? conn.budgetKey);
    if (identity) {
      this.user = identity.user;
      this.claims = identity.claims;
      this.connected = true;
    }
  }

  get identity(): Identity {
    return this.claims ? { client: this.client, user: this.user, claims: this.claims } : { client: this.client, user: this.user };
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get info(): ClientInfo {
    return clientInfo(this.identity);
  }

  /** Queues decoded frames from one transport message; replies go out in command order. */
  receive(frames: unknown[]): void {
    for (const frame of frames) {
      if (this.ended) return;
      if (!this.admit()) {
        this.sendError(idOf(frame), new ProtocolError(ErrorCode.RateLimited, "too many commands", this.budget?.retryAfter()));
        if (++this.rejected > 2 * this.ctx.config.commandRate) {
          this.disconnect(CloseCode.RateLimited, "rate limited", true);
          return;
        }
        continue;
      }
      this.rejected = 0;
      this.queue = this.queue.then(() => this.run(frame));
    }
  }

  /** The command budget: `commandRate` per second, bursts of twice that. */
  private admit(): boolean {
    if (!this.budget || this.budget.take()) return true;
    this.ctx.metrics.rateLimited.inc({ kind: "command" });
    return false;
  }

  /** Commands that read much (history, recovery, presence lists) cost more than one token. */
  private charge(items: number): void {
    chargeItems(this.budget, items);
  }

  private async run(frame: unknown): Promise<void> {
    if (this.ended) return;
    const id = idOf(frame);
    try {
      const cmd = validateFrame(frame);
      const reply = await this.dispatch(cmd);
      if (this.ended || reply === ALREADY_SENT) return;
      if (Buffer.isBuffer(reply)) this.conn.send(reply);
      else this.conn.send(encodeFrame(this.conn.format, id === undefined ? { ok: reply } : { id, ok: reply }));
    } catch (err) {
      if (this.ended) return;
      if (err instanceof ProtocolError) {
        this.sendError(id, err);
      } else {
        this.ctx.log.error({ err, client: this.client }, "command failed");
        this.sendError(id, new ProtocolError(ErrorCode.Internal, "internal error"));
      }
    }
  }

  /** A transport-level refusal (e.g. an oversized message) reported like any command error. */
  refuse(err: ProtocolError): void {
    if (!this.ended) this.sendError(undefined, err);
  }

  private sendError(id: unknown, err: ProtocolError): void {
    this.ctx.metrics.errors.inc({ code: String(err.code) });
    const error = err.toJSON();
    this.conn.send(encodeFrame(this.conn.format, id === undefined ? { error } : { id, error }));
  }

  private dispatch(cmd: Frame): Promise<Reply> | Reply {
    const op = cmd.op as string;
    if (op === "connect") return this.connect(cmd);
    if (!this.connected) throw new ProtocolError(ErrorCode.Unauthenticated, "connect first");
    switch (op) {
      case "subscribe":
        return this.subscribe(cmd);
      case "unsubscribe":
        return this.unsubscribe(cmd);
      case "publish":
        return this.publish(cmd);
      case "presence":
        return this.presence(cmd);
      case "presence_stats":
        return this.presenceStats(cmd);
      case "history":
        return this.history(cmd);
      case "refresh":
        return this.refresh(cmd);
      case "ping":
        return {};
      default:
        throw new ProtocolError(ErrorCode.BadRequest, `unknown op ${JSON.stringify(op)}`);
    }
  }

  // --- connect / refresh --------------------------------------------------------------------

  private async connect(cmd: Frame): Promise<Reply> {
    if (this.connected) throw new ProtocolError(ErrorCode.BadRequest, "already connected");
    const token = optionalString(cmd, "token") ?? this.ambientToken;
    try {
      if (token !== undefined) this.claims = await this.verify(token);
      else if (!anonymousAllowed(this.ctx.config.namespaces)) {
        throw new ProtocolError(ErrorCode.Unauthenticated, "a token is required: no namespace allows anonymous clients");
      }
    } catch (err) {
      if (!(err instanceof ProtocolError) || this.conn.stateless) throw err;
      // Answered, then closed: an unauthenticated connection has nothing else to do.
      this.sendError(idOf(cmd), err);
      this.disconnect(CloseCode.Unauthorized, err.message, false);
      return ALREADY_SENT;
    }
    if (this.claims) {
      this.user = this.claims.sub;
      if (!this.conn.stateless) {
        try {
          await this.ctx.limits.users.add(this.info);
        } catch (err) {
          // At the limit: refused and closed. A backend failure (503) is answered like any
          // failed command, and the client may try to connect again.
          if (!(err instanceof ProtocolError) || err.code !== ErrorCode.RateLimited) throw err;
          this.sendError(idOf(cmd), err);
          this.ctx.metrics.connectionsRefused.inc({ reason: "per_user" });
          this.disconnect(CloseCode.RateLimited, err.message, true);
          return ALREADY_SENT;
        }
        this.countedForUser = true;
        if (this.ended) {
          this.ctx.limits.users.remove(this.info);
          return {};
        }
        this.armExpiry();
      }
    }
    if (this.ended) return {};
    this.connected = true;
    const ok: Record<string, unknown> = {
      client: this.client,
      user: this.user,
      node: this.ctx.node,
      ping: Math.round(this.ctx.config.pingInterval / 1000),
    };
    if (this.conn.stateless) ok.session = this.conn.stateless.issueSession(this.identity);
    else this.ctx.hub.register(this);
    return ok;
  }

  private async verify(token: string): Promise<Claims> {
    const verifier = this.ctx.verifier;
    if (!verifier) throw new ProtocolError(ErrorCode.Unauthenticated, "this gateway has no token keys configured");
    try {
      return await verifier.verify(token);
    } catch (err) {
      if (err instanceof AuthError) throw new ProtocolError(ErrorCode.Unauthenticated, err.message);
      throw err;
    }
  }

  private async refresh(cmd: Frame): Promise<Reply> {
    const token = requiredString(cmd, "token", 16384);
    if (this.user === "") {
      throw new ProtocolError(ErrorCode.BadRequest, "an anonymous connection cannot refresh; reconnect with a token");
    }
    const claims = await this.verify(token);
    if (claims.sub !== this.user) throw new ProtocolError(ErrorCode.Forbidden, "refresh token is for another user");
    this.claims = claims;
    if (this.conn.stateless) return { session: this.conn.stateless.issueSession(this.identity) };
    this.armExpiry();
    // A narrower token takes effect at once: subscriptions it no longer allows end now.
    for (const [ch, sub] of this.subs) {
      if (!allowed(this.identity, sub.resolved)) {
        this.dropSubscription(ch, sub);
        this.conn.send(encodeFrame(this.conn.format, { push: "unsub", ch, code: 403, reason: "not allowed by token" }));
      }
    }
    return {};
  }

  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    const exp = this.claims?.exp;
    if (exp === undefined) return;
    const delay = exp * 1000 - Date.now();
    if (delay > MAX_TIMER) {
      this.expiryTimer = setTimeout(() => this.armExpiry(), MAX_TIMER);
      return;
    }
    this.expiryTimer = setTimeout(
      () => this.disconnect(CloseCode.TokenExpired, "token expired", true),
      Math.max(0, delay),
    );
  }

  // --- channels -----------------------------------------------------------------------------

  /** Resolves once every command received so far has been answered. */
  settled(): Promise<void> {
    return this.queue;
  }

  private resolve(cmd: Frame): ResolvedChannel {
    return resolveChannel(this.ctx.config.namespaces, cmd.ch);
  }

  private checkAccess(r: ResolvedChannel): void {
    checkAccess(this.identity, r);
  }

  private async subscribe(cmd: Frame): Promise<Reply> {
    if (this.conn.stateless) {
      throw new ProtocolError(ErrorCode.BadRequest, "over long-poll, channels are subscribed by polling them (/lp/poll)");
    }
    const r = this.resolve(cmd);
    this.checkAccess(r);
    const since = optionalPosition(cmd, "since");
    if (this.subs.has(r.ch)) throw new ProtocolError(ErrorCode.AlreadySubscribed, `already subscribed to ${r.ch}`);
    if (this.subs.size >= this.ctx.config.maxSubscriptions) {
      throw new ProtocolError(ErrorCode.RateLimited, `subscription limit (${this.ctx.config.maxSubscriptions}) reached`);
    }
    const sub: Subscription = { resolved: r, active: false };
    this.subs.set(r.ch, sub);
    const hub = this.ctx.hub;
    if (r.options.presence) {
      try {
        await hub.presenceRoom(r.ch);
      } catch (err) {
        if (this.subs.get(r.ch) === sub) this.subs.delete(r.ch);
        throw err;
      }
    }
    try {
      await hub.subscribe(r.ch, r.options);
    } catch (err) {
      if (this.subs.get(r.ch) === sub) this.subs.delete(r.ch);
      throw err;
    }
    let ok: Record<string, unknown> = {};
    let pubs: Publication[] = [];
    try {
      const historyOpts = r.options.history;
      if (historyOpts) {
        const recovery = await this.recover(r, historyOpts, since);
        pubs = recovery.pubs;
        this.charge(recovery.reads);
        ok = { offset: recovery.position.offset, epoch: recovery.position.epoch };
        if (since) {
          ok.recovered = recovery.recovered;
          this.ctx.metrics.recoveries.inc({ result: recovery.recovered ? "recovered" : "not_recovered" });
        }
      } else if (since) {
        ok = { recovered: false };
      }
    } catch (err) {
      if (this.subs.get(r.ch) === sub) this.subs.delete(r.ch);
      hub.unsubscribe(r.ch);
      throw err;
    }
    // From here to join() nothing awaits: no publication can slip between the reply and live delivery.
    if (this.ended || this.subs.get(r.ch) !== sub) {
      hub.unsubscribe(r.ch);
      return ok;
    }
    const reply =
      since && r.options.history
        ? encodeReplyWithPubs(this.conn.format, idOf(cmd), ok, pubs.map((p) => encodePubEntry(this.conn.format, p)))
        : ok;
    if (Buffer.isBuffer(reply)) this.conn.send(reply);
    else {
      const id = idOf(cmd);
      this.conn.send(encodeFrame(this.conn.format, id === undefined ? { ok: reply } : { id, ok: reply }));
    }
    this.conn.join(r.ch);
    sub.active = true;
    this.ctx.metrics.subscriptions.inc();
    if (r.options.presence) {
      this.ctx.hub
        .join(r.ch, this.info, r.options.joinLeave)
        .catch((err: unknown) => this.ctx.log.warn({ err, ch: r.ch }, "presence join failed"));
    }
    return ALREADY_SENT;
  }

  /**
   * Reads what the client missed and lines it up with what this gateway has already delivered
   * live, so recovered publications and live pushes meet without a gap or a duplicate.
   */
  private async recover(
    r: ResolvedChannel,
    opts: NonNullable<ResolvedChannel["options"]["history"]>,
    since: StreamPosition | undefined,
  ): Promise<{ pubs: Publication[]; position: StreamPosition; recovered: boolean; reads: number }> {
    const hub = this.ctx.hub;
    let reads = 0;
    for (let attempt = 0; attempt < 3; attempt++) {
      const result = await hub.readHistory(r.ch, opts, since ? { since } : { limit: 0 });
      reads += result.reads;
      const top = result.position.offset;
      const live = hub.lastOffset(r.ch) ?? top;
      const recovered = since !== undefined && result.complete;
      let pubs = recovered ? result.pubs : [];
      if (live < top) {
        // History is ahead of live delivery: the rest will arrive as pushes.
        pubs = pubs.filter((p) => (p.offset as number) <= live);
        return { pubs, position: { offset: live, epoch: result.position.epoch }, recovered, reads };
      }
      const extra = hub.recentAfter(r.ch, top);
      if (extra) {
        return {
          pubs: recovered ? pubs.concat(extra) : pubs,
          position: { offset: live, epoch: result.position.epoch },
          recovered,
          reads,
        };
      }
    }
    throw new ProtocolError(ErrorCode.Unavailable, "channel is moving too fast to recover; retry");
  }

  private unsubscribe(cmd: Frame): Reply {
    if (this.conn.stateless) {
      const r = this.resolve(cmd);
      this.checkAccess(r);
      this.conn.stateless.unsubscribe(r, this.info);
      return {};
    }
    const ch = requiredString(cmd, "ch", 1024);
    const sub = this.subs.get(ch);
    if (sub) this.dropSubscription(ch, sub);
    return {};
  }

  /**
   * The hub cannot prove that the channel's next publication follows the last one delivered: the
   * subscription ends here and the client is told to subscribe again with `since`, which
   * recovers exactly from history or answers recovered:false. A subscribe still in progress
   * needs no signal: it lines history up with live delivery itself.
   */
  continuityLost(ch: string, reason: string): void {
    const sub = this.subs.get(ch);
    if (this.ended || !sub?.active) return;
    this.dropSubscription(ch, sub);
    this.conn.send(
      encodeFrame(this.conn.format, { push: "unsub", ch, code: ErrorCode.InsufficientState, reason, resubscribe: true }),
    );
  }

  private dropSubscription(ch: string, sub: Subscription): void {
    this.subs.delete(ch);
    if (!sub.active) return; // the pending subscribe notices and cleans up
    this.conn.leave(ch);
    this.releaseSubscription(sub);
  }

  private releaseSubscription(sub: Subscription): void {
    const r = sub.resolved;
    this.ctx.hub.unsubscribe(r.ch);
    this.ctx.metrics.subscriptions.dec();
    if (r.options.presence) this.ctx.hub.leave(r.ch, this.info, r.options.joinLeave);
  }

  // --- publish / presence / history --------------------------------------------------------

  private async publish(cmd: Frame): Promise<Reply> {
    const r = this.resolve(cmd);
    this.checkAccess(r);
    if (!r.options.clientPublish) {
      throw new ProtocolError(ErrorCode.Forbidden, `namespace ${r.namespace} does not allow client publish`);
    }
    if (!Object.hasOwn(cmd, "data") || cmd.data === undefined) {
      throw new ProtocolError(ErrorCode.BadRequest, "data is required");
    }
    const idempotencyKey = optionalString(cmd, "idempotencyKey", MAX_IDEMPOTENCY_KEY);
    const pub: Publication = {
      ch: r.ch,
      data: Payload.fromValue(cmd.data, this.conn.format),
      info: { client: this.client, user: this.user },
      ts: Date.now(),
    };
    const result = await this.ctx.hub.publish(pub, { history: r.options.history, idempotencyKey }, "client");
    return result.offset === undefined ? {} : { offset: result.offset, epoch: result.epoch };
  }

  private presenceChannel(cmd: Frame): ResolvedChannel {
    const r = this.resolve(cmd);
    this.checkAccess(r);
    if (!r.options.presence) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no presence`);
    return r;
  }

  private async presence(cmd: Frame): Promise<Reply> {
    const clients = await this.ctx.hub.presenceOf(this.presenceChannel(cmd).ch);
    this.charge(Object.keys(clients).length);
    return { clients };
  }

  private async presenceStats(cmd: Frame): Promise<Reply> {
    const stats = await this.ctx.hub.presenceStats(this.presenceChannel(cmd).ch);
    return { clients: stats.clients, users: stats.users };
  }

  private async history(cmd: Frame): Promise<Reply> {
    const r = this.resolve(cmd);
    this.checkAccess(r);
    const opts = r.options.history;
    if (!opts) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no history`);
    const limit = optionalInteger(cmd, "limit", 1, MAX_HISTORY_LIMIT);
    const since = optionalPosition(cmd, "since");
    const reverse = cmd.reverse;
    if (reverse !== undefined && typeof reverse !== "boolean") {
      throw new ProtocolError(ErrorCode.BadRequest, "reverse must be true or false");
    }
    const result = await this.ctx.hub.readHistory(r.ch, opts, {
      limit,
      since,
      reverse: reverse === true,
    });
    this.charge(result.reads);
    if (since && !result.complete) {
      throw new ProtocolError(
        ErrorCode.BadRequest,
        "since is outside the retained history or from another epoch; read without since",
      );
    }
    return encodeReplyWithPubs(
      this.conn.format,
      idOf(cmd),
      { offset: result.position.offset, epoch: result.position.epoch },
      result.pubs.map((p) => encodePubEntry(this.conn.format, p)),
    );
  }

  // --- lifecycle ----------------------------------------------------------------------------

  /** Tells the client why, then closes; cleanup follows in closed(). */
  disconnect(code: number, reason: string, reconnect: boolean): void {
    if (this.ended || this.closing) return;
    this.closing = true;
    this.conn.send(encodeFrame(this.conn.format, { push: "disconnect", code, reason, reconnect }));
    this.conn.close(code, reason);
  }

  /** The transport reports the connection gone (for any reason). */
  closed(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.expiryTimer);
    for (const sub of this.subs.values()) {
      if (sub.active) this.releaseSubscription(sub);
    }
    this.subs.clear();
    if (this.connected) this.ctx.hub.unregister(this);
    if (this.countedForUser) this.ctx.limits.users.remove(this.info);
  }
}

/** Marker: the op sent its own reply (spliced bytes) and nothing more is to be sent. */
const ALREADY_SENT = Buffer.alloc(0);

function idOf(frame: unknown): unknown {
  if (typeof frame !== "object" || frame === null) return undefined;
  const id = (frame as Frame).id;
  if (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) return id;
  if (typeof id === "string" && id.length <= MAX_ID_LENGTH) return id;
  return undefined;
}

function validateFrame(frame: unknown): Frame {
  if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
    throw new ProtocolError(ErrorCode.BadRequest, "a frame must be an object");
  }
  const f = frame as Frame;
  if (f.id !== undefined && idOf(f) === undefined) {
    throw new ProtocolError(ErrorCode.BadRequest, `id must be a non-negative integer or a string of at most ${MAX_ID_LENGTH} characters`);
  }
  if (typeof f.op !== "string") throw new ProtocolError(ErrorCode.BadRequest, "op must be a string");
  return f;
}

function optionalString(cmd: Frame, key: string, max = 16384): string | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length === 0 || v.length > max) {
    throw new ProtocolError(ErrorCode.BadRequest, `${key} must be a non-empty string of at most ${max} characters`);
  }
  return v;
}

function requiredString(cmd: Frame, key: string, max: number): string {
  const v = optionalString(cmd, key, max);
  if (v === undefined) throw new ProtocolError(ErrorCode.BadRequest, `${key} is required`);
  return v;
}

function optionalInteger(cmd: Frame, key: string, min: number, max: number): number | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new ProtocolError(ErrorCode.BadRequest, `${key} must be an integer from ${min} to ${max}`);
  }
  return v;
}

function optionalPosition(cmd: Frame, key: string): StreamPosition | undefined {
  const v = cmd[key];
  if (v === undefined) return undefined;
  const p = asPosition(v);
  if (!p) throw new ProtocolError(ErrorCode.BadRequest, `${key} must be {offset: non-negative integer, epoch: string}`);
  return p;
}
