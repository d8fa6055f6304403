import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { Claims } from "../auth/jwt.js";
import { resolveChannel, type ResolvedChannel } from "../channels.js";
import type { ClientRequest } from "../hooks/request.js";
import type { HubSession } from "../hub/hub.js";
import type { TokenBucket } from "../limits/bucket.js";
import { chargeItems } from "../limits/limits.js";
import { encodeFrame, type Format } from "../protocol/codec.js";
import { CloseCode, ErrorCode, ProtocolError } from "../protocol/codes.js";
import { encodePubEntry, encodeReplyWithPubs } from "../protocol/push.js";
import type { ClientInfo } from "../publication.js";
import { traced, type Span } from "../tracing/tracer.js";
import { allowed, checkAccess } from "./access.js";
import { authenticate, describeConnect, refreshClaims } from "./authenticate.js";
import { catchUp } from "./catch-up.js";
import { permitSubscribe } from "./subscribe-permit.js";
import { ALREADY_SENT, channelCommand, CommandQueue, sendError, sendOk, type Caller, type Reply } from "./commands.js";
import type { DeliveryContext } from "./context.js";
import { idOf, optionalPosition, optionalString, requiredString, type Frame } from "./frames.js";
import { clientInfo, type Identity } from "./identity.js";
import { SubscriptionTable } from "./subscription-table.js";

/** What a connection-holding transport offers a session: frames out, and channel fan-out. */
export interface Connection {
  readonly format: Format;
  /** Sends one encoded frame. */
  send(frame: Buffer): void;
  close(code: number, reason: string): void;
  /** Starts delivering the channel's fan-out to this connection. */
  join(ch: string): void;
  leave(ch: string): void;
}

/** Optional fields are set only when they differ from the common case: most subscriptions have neither. */
interface Subscription extends ResolvedChannel {
  active: boolean;
  /**
   * How the client appears in this channel's presence when that is not the session's own info:
   * set by the subscribe hook, or kept from before a refresh changed the session's info.
   */
  info?: ClientInfo;
  /** Granted by the backend (connect hook, server API, subscription token): the token's channels do not limit it. */
  byServer?: true;
}

/** Sends a subscription's first answer: a reply to the command, or a `sub` push for a server-side one. */
type Answer = (ok: Record<string, unknown>, entries: Buffer[] | undefined) => void;

/**
 * One connected client's protocol state (a WebSocket today): authentication, subscriptions with
 * recovery, presence, token expiry. Channel commands and catch-up are the delivery core's, shared
 * with the request/response transports.
 */
export class Session implements HubSession, Caller {
  readonly client = randomUUID();
  user = "";
  readonly budget: TokenBucket | undefined;
  private claims: Claims | undefined;
  /** The claims came from the connect hook: at their expiry the refresh hook is asked for more. */
  private claimsByHook = false;
  private connected = false;
  private ended = false;
  private closing = false;
  private readonly subs = new SubscriptionTable<Subscription>();
  /** The token's `exp` this session is scheduled to expire at. */
  private expiresAt: number | undefined;
  /** Only while commands are in flight: an idle connection holds no queue, promise or closure. */
  private commands: CommandQueue | undefined;
  /** Counted in the user's connections across the cluster (removed when closed). */
  private countedForUser = false;

  constructor(
    private readonly conn: Connection,
    private readonly ctx: DeliveryContext,
    /** A token the transport found outside the protocol (a cookie, an Authorization header). */
    private readonly ambientToken?: string,
    readonly request: ClientRequest = { transport: "websocket" },
  ) {
    this.budget = ctx.limits.commandBudget();
  }

  get format(): Format {
    return this.conn.format;
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
    if (this.ended) return;
    const queue = (this.commands ??= new CommandQueue(this.ctx, this.conn, this.budget, (cmd) => this.dispatch(cmd)));
    if (!queue.receive(frames)) this.disconnect(CloseCode.RateLimited, "rate limited", true);
    void queue.settled().then(() => {
      if (this.commands === queue && queue.idle) this.commands = undefined;
    });
  }

  /** Resolves once every command received so far has been answered. */
  settled(): Promise<void> {
    return this.commands?.settled() ?? Promise.resolve();
  }

  /** A transport-level refusal (e.g. an oversized message) reported like any command error. */
  refuse(err: ProtocolError): void {
    if (!this.ended) sendError(this.ctx, this.conn, undefined, err);
  }

  private dispatch(cmd: Frame): Promise<Reply> | Reply {
    if (cmd.op === "connect") return traced(this.ctx.tracer, "connect", cmd, (span) => this.connect(cmd, span));
    if (!this.connected) throw new ProtocolError(ErrorCode.Unauthenticated, "connect first");
    switch (cmd.op) {
      case "subscribe":
        return traced(this.ctx.tracer, "subscribe", cmd, (span) => this.subscribe(cmd, span));
      case "unsubscribe":
        return this.unsubscribe(cmd);
      case "refresh":
        return this.refresh(cmd);
      default:
        return channelCommand(this.ctx, this, cmd);
    }
  }

  // --- connect / refresh --------------------------------------------------------------------

  private async connect(cmd: Frame, span: Span | undefined): Promise<Reply> {
    if (this.connected) throw new ProtocolError(ErrorCode.BadRequest, "already connected");
    const token = optionalString(cmd, "token") ?? this.ambientToken;
    let channels: string[] | undefined;
    try {
      const who = await authenticate(this.ctx, this.client, token, this.request, cmd.data, span?.context);
      this.claims = who.claims;
      this.claimsByHook = who.byHook === true;
      channels = who.channels;
    } catch (err) {
      // A hook that could not answer: the client may try to connect again on this connection.
      if (!(err instanceof ProtocolError) || err.code === ErrorCode.Unavailable) throw err;
      // Answered, then closed: an unauthenticated connection has nothing else to do.
      span?.fail(err);
      sendError(this.ctx, this.conn, idOf(cmd), err);
      this.disconnect(CloseCode.Unauthorized, err.message, false);
      return ALREADY_SENT;
    }
    if (this.claims) {
      this.user = this.claims.sub;
      try {
        await this.ctx.limits.users.add(this.info);
      } catch (err) {
        // At the limit: refused and closed. A backend failure (503) is answered like any failed
        // command, and the client may try to connect again.
        if (!(err instanceof ProtocolError) || err.code !== ErrorCode.RateLimited) throw err;
        sendError(this.ctx, this.conn, idOf(cmd), err);
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
    if (this.ended) return {};
    describeConnect(span, "websocket", this.client, this.user);
    this.connected = true;
    this.ctx.hub.register(this);
    this.ctx.events.clientConnected(this.info, "websocket");
    const ok = { client: this.client, user: this.user, node: this.ctx.node, ping: Math.round(this.ctx.config.pingInterval / 1000) };
    if (!channels) return ok;
    // The reply first, then each server-side subscription's `sub` push; later commands wait.
    sendOk(this.conn, idOf(cmd), ok);
    for (const ch of channels) await this.subscribeForServer(ch);
    return ALREADY_SENT;
  }

  private async refresh(cmd: Frame): Promise<Reply> {
    this.applyClaims(await refreshClaims(this.ctx, this.identity, optionalString(cmd, "token"), this.request));
    return {};
  }

  private applyClaims(claims: Claims): void {
    const before = this.info;
    this.claims = claims;
    this.armExpiry();
    // Presence entries made with the old info leave with it, so the leave matches the join.
    const infoChanged = !isDeepStrictEqual(before.info, this.info.info);
    // A narrower token takes effect at once: subscriptions it no longer allows end now.
    for (const sub of this.subs.values()) {
      if (!sub.byServer && !allowed(this.identity, sub)) {
        this.dropSubscription(sub.ch, sub);
        this.conn.send(encodeFrame(this.conn.format, { push: "unsub", ch: sub.ch, code: 403, reason: "not allowed by token" }));
      } else if (infoChanged && sub.info === undefined && sub.options.presence) {
        sub.info = before;
      }
    }
  }

  /**
   * The token expired (called by the context's expiry schedule). At the expiry of backend-issued
   * claims the backend is asked to extend them; refused or failed, the client goes.
   */
  expired(): void {
    this.expiresAt = undefined; // the schedule has let go of this session already
    if (this.ended || this.closing) return;
    if (!this.claimsByHook || !this.ctx.hooks.refreshes) return this.disconnect(CloseCode.TokenExpired, "token expired", true);
    refreshClaims(this.ctx, this.identity, undefined, this.request).then(
      (claims) => {
        if (!this.ended) this.applyClaims(claims);
      },
      (err: unknown) => {
        if (!(err instanceof ProtocolError)) this.ctx.log.error({ err }, "refresh hook failed");
        this.disconnect(CloseCode.TokenExpired, "token expired", true);
      },
    );
  }

  private armExpiry(): void {
    this.disarmExpiry();
    const exp = this.claims?.exp;
    if (exp === undefined) return;
    this.expiresAt = exp;
    this.ctx.tokenExpiry.add(this, exp);
  }

  private disarmExpiry(): void {
    if (this.expiresAt === undefined) return;
    this.ctx.tokenExpiry.remove(this, this.expiresAt);
    this.expiresAt = undefined;
  }

  // --- channels -----------------------------------------------------------------------------

  private async subscribe(cmd: Frame, span: Span | undefined): Promise<Reply> {
    const r = resolveChannel(this.ctx.config.namespaces, cmd.ch);
    span?.set("natsedge.channel", r.ch);
    const since = optionalPosition(cmd, "since");
    const token = optionalString(cmd, "token");
    // Permissions answer before the subscription state does: a channel the token does not allow
    // is 403 even while a server-made subscription to it exists (409 otherwise).
    if (token === undefined) checkAccess(this.identity, r);
    if (this.subs.has(r.ch)) throw new ProtocolError(ErrorCode.AlreadySubscribed, `already subscribed to ${r.ch}`);
    if (this.subs.size >= this.ctx.config.maxSubscriptions) {
      throw new ProtocolError(ErrorCode.RateLimited, `subscription limit (${this.ctx.config.maxSubscriptions}) reached`);
    }
    const permit = await permitSubscribe(this.ctx, this.identity, r, this.request, cmd.data, token, span?.context);
    if (this.subs.has(r.ch)) throw new ProtocolError(ErrorCode.AlreadySubscribed, `already subscribed to ${r.ch}`);
    const info = permit.info === undefined ? undefined : { ...this.info, info: permit.info };
    return this.attach(
      r,
      since,
      info,
      (ok, entries) => {
        if (since) span?.set("natsedge.recovered", ok.recovered === true);
        if (entries) this.conn.send(encodeReplyWithPubs(this.conn.format, idOf(cmd), ok, entries));
        else sendOk(this.conn, idOf(cmd), ok);
      },
      permit.signed,
    );
  }

  /**
   * A subscription the backend asked for (the connect hook, the server API's `subscribe`): no
   * access check (the backend decided), answered with a `sub` push, or an `unsub` push saying why
   * it could not be made. One that exists already is left as it is.
   */
  private async subscribeForServer(ch: string): Promise<void> {
    try {
      const r = resolveChannel(this.ctx.config.namespaces, ch);
      if (this.subs.has(r.ch)) return;
      if (this.subs.size >= this.ctx.config.maxSubscriptions) {
        throw new ProtocolError(ErrorCode.RateLimited, `subscription limit (${this.ctx.config.maxSubscriptions}) reached`);
      }
      await this.attach(
        r,
        undefined,
        undefined,
        (ok, entries) => {
          this.conn.send(encodeFrame(this.conn.format, { push: "sub", ch: r.ch, ...ok }));
          for (const e of entries ?? []) this.conn.send(e);
        },
        true,
      );
    } catch (err) {
      if (this.ended) return;
      const e = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.Internal, "internal error");
      if (!(err instanceof ProtocolError)) this.ctx.log.error({ err, ch }, "server-side subscribe failed");
      this.conn.send(encodeFrame(this.conn.format, { push: "unsub", ch, code: e.code, reason: e.message }));
    }
  }

  /**
   * Subscribes with recovery and starts live delivery; `answer` goes out before the first live
   * publication. `info` is the client's presence info in this channel when not the session's own.
   */
  private async attach(
    r: ResolvedChannel,
    since: ReturnType<typeof optionalPosition>,
    info: ClientInfo | undefined,
    answer: Answer,
    byServer = false,
  ): Promise<Reply> {
    const sub: Subscription = { ch: r.ch, namespace: r.namespace, options: r.options, active: false };
    if (info) sub.info = info;
    if (byServer) sub.byServer = true;
    this.subs.set(sub);
    const hub = this.ctx.hub;
    try {
      if (r.options.presence) await hub.presenceRoom(r.ch);
      await hub.subscribe(r.ch, r.options);
    } catch (err) {
      if (this.subs.get(r.ch) === sub) this.subs.delete(r.ch);
      throw err;
    }
    let ok: Record<string, unknown> = {};
    let entries: Buffer[] | undefined;
    try {
      const opts = r.options.history;
      if (opts) {
        const caught = await catchUp(hub, r.ch, opts, since);
        chargeItems(this.budget, caught.reads);
        ok = { offset: caught.position.offset, epoch: caught.position.epoch };
        if (since) {
          ok.recovered = caught.recovered;
          entries = caught.pubs.map((p) => encodePubEntry(this.conn.format, p));
          this.ctx.metrics.recoveries.inc({ result: caught.recovered ? "recovered" : "not_recovered", source: caught.source });
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
    answer(ok, entries);
    this.conn.join(r.ch);
    sub.active = true;
    this.ctx.metrics.subscriptions.inc();
    if (r.options.presence) {
      hub.join(r.ch, info ?? this.info, r.options.joinLeave).catch((err: unknown) => this.ctx.log.warn({ err, ch: r.ch }, "presence join failed"));
    }
    return ALREADY_SENT;
  }

  private unsubscribe(cmd: Frame): Reply {
    const ch = requiredString(cmd, "ch", 1024);
    const sub = this.subs.get(ch);
    if (sub) this.dropSubscription(ch, sub);
    return {};
  }

  /**
   * Server API `subscribe`, reaching this connection through the hub. A name no namespace takes
   * can only come from a malformed control message (the API checks names): it is dropped.
   */
  subscribeByServer(ch: string): void {
    if (!this.connected || this.ended || this.closing) return;
    try {
      resolveChannel(this.ctx.config.namespaces, ch);
    } catch {
      return;
    }
    void this.subscribeForServer(ch);
  }

  /** Server API `unsubscribe`: ends an active subscription, whoever made it. */
  unsubscribeByServer(ch: string, reason: string): void {
    const sub = this.subs.get(ch);
    if (this.ended || !sub?.active) return;
    this.dropSubscription(ch, sub);
    this.conn.send(encodeFrame(this.conn.format, { push: "unsub", ch, code: ErrorCode.Forbidden, reason }));
  }

  /**
   * The hub cannot prove that the channel's next publication follows the last one delivered: the
   * subscription ends here and the client is told to subscribe again with `since`, which
   * recovers exactly from history or answers recovered:false. A subscribe still in progress
   * needs no signal: its catch-up lines history up with live delivery itself.
   */
  continuityLost(ch: string, reason: string): void {
    const sub = this.subs.get(ch);
    if (this.ended || !sub?.active) return;
    this.dropSubscription(ch, sub);
    this.conn.send(encodeFrame(this.conn.format, { push: "unsub", ch, code: ErrorCode.InsufficientState, reason, resubscribe: true }));
  }

  private dropSubscription(ch: string, sub: Subscription): void {
    this.subs.delete(ch);
    if (!sub.active) return; // the pending subscribe notices and cleans up
    this.conn.leave(ch);
    this.releaseSubscription(sub);
  }

  private releaseSubscription(sub: Subscription): void {
    this.ctx.hub.unsubscribe(sub.ch);
    this.ctx.metrics.subscriptions.dec();
    if (sub.options.presence) this.ctx.hub.leave(sub.ch, sub.info ?? this.info, sub.options.joinLeave);
  }

  // --- lifecycle ----------------------------------------------------------------------------

  /** Tells the client why, then closes; cleanup follows in closed(). */
  disconnect(code: number, reason: string, reconnect: boolean): void {
    if (this.ended || this.closing) return;
    this.closing = true;
    this.conn.send(encodeFrame(this.conn.format, { push: "disconnect", code, reason, reconnect }));
    this.conn.close(code, reason);
  }

  /** The transport reports the connection gone (for any reason), with its close code and reason. */
  closed(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.commands) this.commands.ended = true;
    this.disarmExpiry();
    for (const sub of this.subs.values()) {
      if (!sub.active) continue;
      this.conn.leave(sub.ch);
      this.releaseSubscription(sub);
    }
    this.subs.clear();
    if (this.connected) this.ctx.hub.unregister(this);
    if (this.countedForUser) this.ctx.limits.users.remove(this.info);
    if (this.connected) this.ctx.events.clientDisconnected(this.info, "websocket", code, reason);
  }
}
