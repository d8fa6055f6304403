import { MAX_TOKEN_LENGTH } from "../auth/jwt.js";
import { resolveChannel, type ResolvedChannel } from "../channels.js";
import { catchUp } from "../delivery/catch-up.js";
import type { DeliveryContext } from "../delivery/context.js";
import { clientInfo, type Identity } from "../delivery/identity.js";
import { PolledPresence } from "../delivery/polled-presence.js";
import { permitSubscribe } from "../delivery/subscribe-permit.js";
import { answerPreflight, corsHeaders } from "../http/cors.js";
import type { OriginPolicy } from "../http/origin.js";
import { headTooLarge, refuseHead } from "../http/request-head.js";
import { BodyTimeout, BodyTooLarge, readBody, Reply } from "../http/respond.js";
import { SessionError, type SessionSigner } from "../http/session-token.js";
import { clientRequest, type ClientRequest } from "../hooks/request.js";
import type { FanoutSink, HubSession } from "../hub/hub.js";
import { chargeItems } from "../limits/limits.js";
import type { Format } from "../protocol/codec.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { pack, unpack } from "../protocol/msgpack.js";
import { encodeChannelPub, encodeObjectWithPubs } from "../protocol/push.js";
import { asPosition, type ClientInfo, type Publication, type StreamPosition } from "../publication.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";
import { RpcRequest, type RpcHost } from "./longpoll-rpc.js";

const DEFAULT_TIMEOUT_S = 25;
const MAX_TIMEOUT_S = 60;
const MSGPACK = "application/msgpack";
/** Join/leave events one poll answer carries at most (the per-channel event budget bounds them too). */
const MAX_EVENTS_PER_ANSWER = 100;

type Cursor = StreamPosition | null;

/** One held or answering poll. */
interface Poll {
  format: Format;
  channels: Map<string, PollChannel>;
  /** Publication entries for the answer, in delivery order. */
  entries: Buffer[];
  errors: Record<string, { code: number; message: string }>;
  /** Join and leave events of the polled channels, for the answer. */
  presence: Array<{ ch: string; push: "join" | "leave"; info: ClientInfo }>;
  answer: (() => void) | undefined;
}

interface PollChannel {
  r: ResolvedChannel;
  /** How the client appears in the channel's presence (the subscribe hook may set its info). */
  info: ClientInfo;
  /** Position after everything in `entries`; undefined for channels without history. */
  cursor: StreamPosition | undefined;
  recovered?: false;
  /**
   * The channel's continuity was lost: nothing more is added, and the poll is answered with the
   * cursor as it stands, so the next poll reads what follows from history.
   */
  broken?: true;
}

/**
 * HTTP long-poll without sticky sessions: `/lp/rpc` runs protocol commands under a signed session
 * (no server-side state), `/lp/poll` answers from history past the client's cursors or holds
 * until a publication arrives. Any replica can answer any request. Authorization, catch-up and
 * presence are the delivery core's; this adapts them to requests and cursors.
 */
export class LongPollTransport implements FanoutSink, RpcHost {
  /** Polls taking each channel's live delivery. */
  private readonly polls = new Map<string, Set<Poll>>();
  private readonly presence: PolledPresence;
  private accepting = true;
  /** Channels held subscribed after their last poll ended (see keepWarm). */
  private readonly warm = new Map<string, NodeJS.Timeout>();
  /** Polls in progress per session client id, to cap what one session holds. */
  private readonly held = new Map<string, number>();

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly origins: OriginPolicy,
    private readonly signer: SessionSigner,
  ) {
    this.presence = new PolledPresence(ctx.hub, ctx.log, ctx.config.maxSubscriptions);
  }

  attach(app: TemplatedApp): void {
    app.options("/lp/*", (res, req) => {
      answerPreflight(res, req.getHeader("origin"), req.getHeader("host"), this.origins, "POST, OPTIONS");
    });
    app.post("/lp/rpc", (res, req) => this.request(res, req, (ctx) => this.rpc(ctx)));
    app.post("/lp/poll", (res, req) => this.request(res, req, (ctx) => this.poll(ctx)));
    app.any("/lp/*", (res) => new Reply(res).error(404, "no such long-poll endpoint (POST /lp/rpc, /lp/poll)"));
  }

  // --- RpcHost --------------------------------------------------------------------------------

  issueSession(identity: Identity): string {
    return this.signer.issue(identity);
  }

  unsubscribe(r: ResolvedChannel, info: ClientInfo): void {
    this.presence.leave(r, info);
  }

  // --- requests -------------------------------------------------------------------------------

  private request(res: HttpResponse, req: HttpRequest, handle: (c: RequestContext) => Promise<void>): void {
    const reply = new Reply(res);
    // Headers can only be read synchronously inside this callback.
    const origin = req.getHeader("origin");
    const cors = corsHeaders(origin, req.getHeader("host"), this.origins);
    const contentType = req.getHeader("content-type").toLowerCase();
    const authorization = req.getHeader("authorization");
    const request = clientRequest("longpoll", this.ctx.config.hooks, (name) => req.getHeader(name));
    const ip = this.ctx.limits.addresses.of(res, req);
    const tooLarge = headTooLarge(req);
    if (!cors) return reply.error(403, "origin not allowed");
    if (tooLarge) return refuseHead(reply, this.ctx.metrics);
    if (!this.accepting) return reply.error(503, "shutting down");
    const format: Format = contentType.startsWith(MSGPACK) ? "msgpack" : "json";
    const bearer = /^bearer\s+(\S+)$/iu.exec(authorization.trim())?.[1];
    const c: RequestContext = { reply, cors, format, bearer, ip, request, body: {} };
    const started = performance.now();
    void (async () => {
      try {
        const { config, metrics } = this.ctx;
        c.body = decodeBody(await readBody(reply, config.maxFrameSize, config.bodyTimeout, metrics), format);
        await handle(c);
      } catch (err) {
        this.ctx.metrics.longPollRequests.inc({ outcome: "error" });
        if (err instanceof BodyTooLarge) return this.fail(c, new ProtocolError(ErrorCode.TooLarge, err.message));
        if (err instanceof BodyTimeout) return this.fail(c, new ProtocolError(ErrorCode.Timeout, err.message));
        if (err instanceof SessionError) return this.fail(c, new ProtocolError(ErrorCode.Unauthenticated, err.message));
        if (err instanceof ProtocolError) return this.fail(c, err);
        this.ctx.log.error({ err }, "long-poll request failed");
        this.fail(c, new ProtocolError(ErrorCode.Internal, "internal error"));
      } finally {
        this.ctx.metrics.longPollDuration.observe((performance.now() - started) / 1000);
      }
    })();
  }

  private fail(c: RequestContext, err: ProtocolError): void {
    const headers = err.retryAfter === undefined ? c.cors : { ...c.cors, "Retry-After": String(err.retryAfter) };
    c.reply.send(err.code, encode(c.format, { error: err.toJSON() }), contentTypeOf(c.format), headers);
  }

  private async rpc(c: RequestContext): Promise<void> {
    const cmds = c.body.cmds;
    if (!Array.isArray(cmds) || cmds.length === 0 || cmds.length > 100) {
      throw new ProtocolError(ErrorCode.BadRequest, "cmds must be an array of 1 to 100 command frames");
    }
    const identity = c.body.session === undefined ? undefined : this.signer.verify(c.body.session);
    if (!identity) {
      // A request without a session starts one: it counts like a new connection.
      const refusal = this.ctx.limits.connections.admitSession(c.ip);
      if (refusal) throw new ProtocolError(refusal.status, refusal.message, refusal.retryAfter);
    }
    const frames = await new RpcRequest(this.ctx, c.format, this, identity, c.bearer, c.ip, c.request).run(cmds);
    this.ctx.metrics.longPollRequests.inc({ outcome: "rpc" });
    c.reply.send(200, encodeList(c.format, "replies", frames), contentTypeOf(c.format), c.cors);
  }

  private async poll(c: RequestContext): Promise<void> {
    const identity = this.signer.verify(c.body.session);
    const subs = c.body.subs;
    if (typeof subs !== "object" || subs === null || Array.isArray(subs)) {
      throw new ProtocolError(ErrorCode.BadRequest, "subs must be an object of channel -> cursor");
    }
    const requested = Object.entries(subs as Record<string, unknown>);
    const max = this.ctx.config.maxSubscriptions;
    if (requested.length === 0 || requested.length > max) {
      throw new ProtocolError(ErrorCode.BadRequest, `subs must name 1 to ${max} channels`);
    }
    const timeoutS = timeoutOf(c.body.timeout);
    // A malformed cursor makes the whole request malformed (400), like a bad `subs` or `timeout`:
    // only permission and namespace problems are per-channel errors in a 200 answer, so a buggy
    // client sees its bug instead of re-polling in a tight loop.
    const cursors = new Map<string, Cursor>();
    const tokens = new Map<string, string>();
    for (const [ch, raw] of requested) {
      const { cursor, token } = cursorOf(raw);
      cursors.set(ch, cursor);
      if (token !== undefined) tokens.set(ch, token);
    }
    // A poll is a command of the session: held or answered at once, it spends the same budget.
    this.ctx.limits.spendSessionCommand(identity.client);
    const held = this.held.get(identity.client) ?? 0;
    if (held >= this.ctx.config.maxHeldPolls) {
      this.ctx.metrics.rateLimited.inc({ kind: "poll" });
      throw new ProtocolError(ErrorCode.RateLimited, `too many polls at once (limit ${this.ctx.config.maxHeldPolls})`, 1);
    }
    this.held.set(identity.client, held + 1);
    try {
      await this.runPoll(c, identity, cursors, tokens, timeoutS);
    } finally {
      const n = (this.held.get(identity.client) ?? 1) - 1;
      if (n > 0) this.held.set(identity.client, n);
      else this.held.delete(identity.client);
    }
  }

  private async runPoll(
    c: RequestContext,
    identity: Identity,
    cursors: Map<string, Cursor>,
    tokens: Map<string, string>,
    timeoutS: number,
  ): Promise<void> {
    const info = clientInfo(identity);
    const poll: Poll = { format: c.format, channels: new Map(), entries: [], errors: keyedByClient(), presence: [], answer: undefined };
    await Promise.all(
      [...cursors.keys()].map(async (ch) => {
        try {
          const r = resolveChannel(this.ctx.config.namespaces, ch);
          const permit = await permitSubscribe(this.ctx, identity, r, c.request, undefined, tokens.get(ch));
          const chInfo = permit.info === undefined ? info : { ...info, info: permit.info };
          poll.channels.set(ch, { r, cursor: undefined, info: chInfo });
        } catch (err) {
          if (!(err instanceof ProtocolError)) throw err;
          poll.errors[ch] = err.toJSON();
        }
      }),
    );
    let aborted = c.reply.aborted;
    c.reply.onAbort(() => {
      aborted = true;
      poll.answer?.();
    });
    // Channels whose hub subscription this poll holds, and presence entries it pins: both are
    // handed back when the poll ends, answered or abandoned.
    const subscribed: string[] = [];
    const pinned: ResolvedChannel[] = [];
    const cleanup = (): void => {
      for (const ch of subscribed) {
        const set = this.polls.get(ch);
        if (set?.delete(poll) && set.size === 0) this.polls.delete(ch);
        this.keepWarm(ch);
      }
      subscribed.length = 0;
      for (const r of pinned) this.presence.release(r, info);
      pinned.length = 0;
    };
    const fail = (ch: string, err: unknown): void => {
      poll.channels.delete(ch);
      poll.errors[ch] = toError(err);
    };

    await Promise.all(
      [...poll.channels].map(async ([ch, pc]) => {
        try {
          await this.ctx.hub.subscribe(ch, pc.r.options);
        } catch (err) {
          return fail(ch, err);
        }
        subscribed.push(ch);
        // Without history there is no cursor to line up: live delivery starts now.
        if (!pc.r.options.history) this.take(ch, poll);
      }),
    );
    let answerNow = Object.keys(poll.errors).length > 0;
    for (const [ch, pc] of poll.channels) {
      if (aborted) break;
      try {
        if (await this.presence.pin(pc.r, pc.info)) pinned.push(pc.r);
        const opts = pc.r.options.history;
        if (!opts) continue;
        const cursor = cursors.get(ch) ?? null;
        const caught = await catchUp(this.ctx.hub, ch, opts, cursor ?? undefined);
        chargeItems(this.ctx.limits.commandBudget(identity.client), caught.reads);
        pc.cursor = caught.position;
        if (cursor === null) answerNow = true;
        else if (!caught.recovered) {
          pc.recovered = false;
          answerNow = true;
        } else for (const p of caught.pubs) poll.entries.push(this.entryFor(p, poll.format));
      } catch (err) {
        fail(ch, err);
        answerNow = true;
        continue;
      }
      // Nothing awaited since the catch-up: live delivery takes over exactly at the cursor.
      this.take(ch, poll);
    }
    if (aborted) return cleanup();
    for (const pc of poll.channels.values()) if (pc.broken) answerNow = true;

    if (!answerNow && poll.entries.length === 0 && this.accepting) {
      if (await this.hold(poll, identity, timeoutS)) {
        cleanup();
        throw new SessionError("session ended by the server (disconnected)");
      }
    }
    cleanup();
    if (aborted) return;
    this.ctx.metrics.longPollRequests.inc({ outcome: poll.entries.length > 0 ? "data" : answerNow ? "position" : "timeout" });
    const subsOut = keyedByClient<Record<string, unknown>>();
    for (const [ch, pc] of poll.channels) {
      subsOut[ch] = pc.cursor ? { offset: pc.cursor.offset, epoch: pc.cursor.epoch } : {};
      if (pc.recovered === false) subsOut[ch].recovered = false;
    }
    const fields: Record<string, unknown> = { subs: subsOut };
    if (Object.keys(poll.errors).length > 0) fields.errors = poll.errors;
    if (poll.presence.length > 0) fields.presence = poll.presence;
    c.reply.send(200, encodeObjectWithPubs(poll.format, fields, poll.entries), contentTypeOf(poll.format), c.cors);
  }

  /**
   * Holds a poll until something arrives, its timeout, an abort or a drain. True when a
   * server-side disconnect of the user ended it (later requests are refused by the revocation).
   */
  private async hold(poll: Poll, identity: Identity, timeoutS: number): Promise<boolean> {
    this.ctx.metrics.longPollHeld.inc();
    let ended = false;
    const holder: HubSession = {
      user: identity.user,
      disconnect: () => {
        ended = true;
        poll.answer?.();
      },
    };
    if (identity.user !== "") this.ctx.hub.register(holder);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => poll.answer?.(), timeoutS * 1000);
      poll.answer = () => {
        poll.answer = undefined;
        clearTimeout(timer);
        resolve();
      };
    });
    if (identity.user !== "") this.ctx.hub.unregister(holder);
    this.ctx.metrics.longPollHeld.dec();
    return ended;
  }

  /** The poll takes the channel's live delivery from now on. */
  private take(ch: string, poll: Poll): void {
    let set = this.polls.get(ch);
    if (!set) this.polls.set(ch, (set = new Set()));
    set.add(poll);
  }

  /** Adds a live publication to a poll if it is past the poll's cursor; answers a held poll soon. */
  private accept(poll: Poll, pub: Publication): void {
    const pc = poll.channels.get(pub.ch);
    if (!pc || pc.broken) return;
    if (pub.offset !== undefined && pc.cursor) {
      if (pub.offset <= pc.cursor.offset) return;
      pc.cursor = { offset: pub.offset, epoch: pc.cursor.epoch };
    }
    poll.entries.push(this.entryFor(pub, poll.format));
    // Answer after the current burst: publications delivered in the same tick share one answer.
    if (poll.answer) queueMicrotask(() => poll.answer?.());
  }

  private readonly encoded = new WeakMap<Publication, Partial<Record<Format, Buffer>>>();

  /** One encoding per publication per format, however many polls take it. */
  private entryFor(pub: Publication, format: Format): Buffer {
    let cache = this.encoded.get(pub);
    if (!cache) this.encoded.set(pub, (cache = {}));
    return (cache[format] ??= encodeChannelPub(format, pub));
  }

  // --- FanoutSink -----------------------------------------------------------------------------

  publication(pub: Publication): number {
    const set = this.polls.get(pub.ch);
    if (!set) return 0;
    for (const poll of set) this.accept(poll, pub);
    return set.size;
  }

  continuityLost(ch: string): void {
    const set = this.polls.get(ch);
    if (!set) return;
    for (const poll of set) {
      const pc = poll.channels.get(ch);
      if (!pc || pc.broken) continue;
      pc.broken = true;
      poll.answer?.();
    }
  }

  join(ch: string, info: ClientInfo): void {
    this.presenceEvent("join", ch, info);
  }

  leave(ch: string, info: ClientInfo): void {
    this.presenceEvent("leave", ch, info);
  }

  /**
   * A join or leave in a channel a poll holds goes into its answer (answered soon, like a
   * publication). Between polls there is no one to tell: like live delivery without history,
   * events that happen while no poll is held are not kept.
   */
  private presenceEvent(push: "join" | "leave", ch: string, info: ClientInfo): void {
    const set = this.polls.get(ch);
    if (!set) return;
    for (const poll of set) {
      if (poll.presence.length >= MAX_EVENTS_PER_ANSWER) continue;
      poll.presence.push({ ch, push, info });
      if (poll.answer) queueMicrotask(() => poll.answer?.());
    }
  }

  /** Answers every held poll now and refuses new requests; presence entries leave with the hub. */
  drain(): void {
    this.accepting = false;
    for (const set of this.polls.values()) for (const poll of set) poll.answer?.();
    this.presence.clear();
    for (const [ch, timer] of this.warm) {
      clearTimeout(timer);
      this.ctx.hub.unsubscribe(ch);
    }
    this.warm.clear();
  }

  /**
   * Takes over a finished poll's hold on a channel for pollWarmTime: a client polls again right
   * after an answer, and without this every poll would subscribe and unsubscribe the channel in
   * NATS. One warm hold per channel; a later poll's hold is released and the timer starts again.
   */
  private keepWarm(ch: string): void {
    const timer = this.warm.get(ch);
    if (timer) {
      this.ctx.hub.unsubscribe(ch);
      timer.refresh();
      return;
    }
    const t = setTimeout(() => {
      this.warm.delete(ch);
      this.ctx.hub.unsubscribe(ch);
    }, this.ctx.config.pollWarmTime);
    t.unref();
    this.warm.set(ch, t);
  }
}

interface RequestContext {
  reply: Reply;
  cors: Record<string, string>;
  format: Format;
  bearer: string | undefined;
  /** The client's address, for per-address limits. */
  ip: string;
  /** Forwarded to backend hooks. */
  request: ClientRequest;
  body: Record<string, unknown>;
}

function decodeBody(bytes: Buffer, format: Format): Record<string, unknown> {
  let value: unknown;
  try {
    if (format === "msgpack") {
      value = unpack(bytes);
    } else {
      value = JSON.parse(bytes.toString("utf8"));
    }
  } catch {
    throw new ProtocolError(ErrorCode.BadRequest, `body must be one ${format === "json" ? "JSON" : "MessagePack"} object`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(ErrorCode.BadRequest, "body must be an object");
  }
  return value as Record<string, unknown>;
}

/**
 * An object whose keys are client-chosen channel names: without a prototype, a key such as
 * `__proto__` is an ordinary property instead of replacing the object's prototype (which made a
 * channel's error vanish from the answer).
 */
function keyedByClient<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** A channel's entry in `subs`: its cursor, and the subscription token that may come with it. */
function cursorOf(raw: unknown): { cursor: Cursor; token?: string } {
  if (raw === null || raw === undefined) return { cursor: null };
  const fail = (): never => {
    throw new ProtocolError(
      ErrorCode.BadRequest,
      "a cursor must be null, {offset: non-negative integer, epoch: string}, or either with token: a subscription token",
    );
  };
  if (typeof raw !== "object" || Array.isArray(raw)) return fail();
  const { token, ...position } = raw as Record<string, unknown>;
  if (token !== undefined && (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_LENGTH)) return fail();
  const cursor = Object.keys(position).length === 0 ? null : (asPosition(position) ?? fail());
  return token === undefined ? { cursor } : { cursor, token };
}

function timeoutOf(raw: unknown): number {
  if (raw === undefined) return DEFAULT_TIMEOUT_S;
  if (typeof raw !== "number" || !Number.isFinite(raw) || raw < 0) {
    throw new ProtocolError(ErrorCode.BadRequest, "timeout must be a number of seconds >= 0");
  }
  return Math.min(raw, MAX_TIMEOUT_S);
}

function toError(err: unknown): { code: number; message: string } {
  if (err instanceof ProtocolError) return { code: err.code, message: err.message };
  return { code: 500, message: "internal error" };
}

function encode(format: Format, value: unknown): Buffer {
  return format === "json" ? Buffer.from(JSON.stringify(value), "utf8") : pack(value);
}

/** `{<key>: [frame, ...]}` with already-encoded frames spliced in. */
function encodeList(format: Format, key: string, frames: Buffer[]): Buffer {
  if (format === "json") {
    const parts: Buffer[] = [Buffer.from(`{${JSON.stringify(key)}:[`)];
    frames.forEach((f, i) => {
      if (i > 0) parts.push(Buffer.from(","));
      parts.push(f);
    });
    parts.push(Buffer.from("]}"));
    return Buffer.concat(parts);
  }
  const n = frames.length;
  const header = n < 16 ? Buffer.from([0x90 | n]) : Buffer.from([0xdc, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([0x81]), pack(key), header, ...frames]);
}

function contentTypeOf(format: Format): string {
  return format === "json" ? "application/json" : MSGPACK;
}
