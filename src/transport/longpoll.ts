import type { ResolvedChannel } from "../channels.js";
import { corsHeaders, answerPreflight } from "../http/cors.js";
import type { OriginPolicy } from "../http/origin.js";
import { headTooLarge, refuseHead } from "../http/request-head.js";
import { authorize } from "../delivery/access.js";
import { clientInfo } from "../delivery/identity.js";
import { chargeItems } from "../limits/limits.js";
import { BodyTimeout, BodyTooLarge, readBody, Reply } from "../http/respond.js";
import { SessionError, type SessionSigner } from "../http/session-token.js";
import type { FanoutSink, HubSession } from "../hub/hub.js";
import type { Format } from "../protocol/codec.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { pack, unpack } from "../protocol/msgpack.js";
import { encodeChannelPub, encodeObjectWithPubs } from "../protocol/push.js";
import { asPosition, type ClientInfo, type Publication, type StreamPosition } from "../publication.js";
import { Session, type Connection, type Identity, type SessionContext, type StatelessTransport } from "../session.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";

const DEFAULT_TIMEOUT_S = 25;
const MAX_TIMEOUT_S = 60;
/**
 * A long-poll client stays present this long after its last poll ended on this gateway; with
 * the presence grace period its leave is announced within 60 s of it stopping.
 */
const PRESENCE_TTL_MS = 45_000;
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
  /** While reading history, live publications are kept here and merged afterwards. */
  buffering: boolean;
  buffered: Publication[];
  /** Join and leave events of the polled channels, for the answer. */
  presence: Array<{ ch: string; push: "join" | "leave"; info: ClientInfo }>;
  answer: (() => void) | undefined;
}

/** A long-poll client present in a channel on this gateway. */
interface PresentEntry {
  timer: NodeJS.Timeout;
  r: ResolvedChannel;
  info: ClientInfo;
  /** Polls in progress that pin the entry (it may not expire while one is held). */
  held: number;
}

interface PollChannel {
  r: ResolvedChannel;
  /** Position after everything in `entries`; undefined for channels without history. */
  cursor: StreamPosition | undefined;
  recovered?: false;
  /**
   * Set when the channel's continuity was lost: nothing after the break is added, and the poll
   * is answered with the cursor as it stands, so the next poll reads what follows from history.
   * While the poll still buffers, the break lies after the first `brokenAt` buffered items.
   */
  brokenAt?: number;
}

/** Collects a stateless session's replies for one request. */
class Collector implements Connection {
  readonly transport = "longpoll";
  readonly frames: Buffer[] = [];
  constructor(
    readonly format: Format,
    readonly stateless: StatelessTransport,
    readonly budgetKey?: string,
  ) {}
  send(frame: Buffer): void {
    this.frames.push(frame);
  }
  close(): void {}
  join(): void {}
  leave(): void {}
}

/**
 * HTTP long-poll without sticky sessions: `/lp/rpc` runs protocol commands under a signed session
 * (no server-side state), `/lp/poll` answers from history past the client's cursors or holds
 * until a publication arrives. Any replica can answer any request.
 */
export class LongPollTransport implements FanoutSink, StatelessTransport {
  private readonly polls = new Map<string, Set<Poll>>();
  /** Long-poll clients present on this gateway; `held` polls pin the entry (a poll may outlast the TTL). */
  private readonly present = new Map<string, PresentEntry>();
  private accepting = true;
  /** Channels held subscribed after their last poll ended (see keepWarm). */
  private readonly warm = new Map<string, NodeJS.Timeout>();
  /** Polls in progress per session client id, to cap what one session holds. */
  private readonly held = new Map<string, number>();
  /** Presence entries per long-poll client on this gateway (each lives PRESENCE_TTL past its last poll). */
  private readonly presentPerClient = new Map<string, number>();

  constructor(
    private readonly ctx: SessionContext,
    private readonly origins: OriginPolicy,
    private readonly signer: SessionSigner,
  ) {}

  attach(app: TemplatedApp): void {
    app.options("/lp/*", (res, req) => {
      answerPreflight(res, req.getHeader("origin"), req.getHeader("host"), this.origins, "POST, OPTIONS");
    });
    app.post("/lp/rpc", (res, req) => this.request(res, req, (ctx) => this.rpc(ctx)));
    app.post("/lp/poll", (res, req) => this.request(res, req, (ctx) => this.poll(ctx)));
    app.any("/lp/*", (res) => new Reply(res).error(404, "no such long-poll endpoint (POST /lp/rpc, /lp/poll)"));
  }

  // --- StatelessTransport ---------------------------------------------------------------------

  issueSession(identity: Identity): string {
    return this.signer.issue(identity);
  }

  unsubscribe(r: ResolvedChannel, info: ClientInfo): void {
    const key = r.ch + "\u0000" + info.client;
    const p = this.present.get(key);
    if (p) this.dropPresence(key, p);
  }

  // --- requests -------------------------------------------------------------------------------

  private request(
    res: HttpResponse,
    req: HttpRequest,
    handle: (c: RequestContext) => Promise<void>,
  ): void {
    const reply = new Reply(res);
    // Headers can only be read synchronously inside this callback.
    const origin = req.getHeader("origin");
    const cors = corsHeaders(origin, req.getHeader("host"), this.origins);
    const contentType = req.getHeader("content-type").toLowerCase();
    const authorization = req.getHeader("authorization");
    const ip = this.ctx.limits.addresses.of(res, req);
    const tooLarge = headTooLarge(req);
    if (!cors) return reply.error(403, "origin not allowed");
    if (tooLarge) return refuseHead(reply, this.ctx.metrics);
    if (!this.accepting) return reply.error(503, "shutting down");
    const format: Format = contentType.startsWith(MSGPACK) ? "msgpack" : "json";
    const bearer = /^bearer\s+(\S+)$/iu.exec(authorization.trim())?.[1];
    const c: RequestContext = { reply, cors, format, bearer, ip, body: {} };
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
    const conn = new Collector(c.format, this, identity ? undefined : `ip:${c.ip}`);
    const session = new Session(conn, this.ctx, c.bearer, identity);
    session.receive(cmds);
    await session.settled();
    session.closed();
    this.ctx.metrics.longPollRequests.inc({ outcome: "rpc" });
    c.reply.send(200, encodeList(c.format, "replies", conn.frames), contentTypeOf(c.format), c.cors);
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
    // A poll is a command of the session: held or answered at once, it spends the same budget.
    this.ctx.limits.spendSessionCommand(identity.client);
    const held = this.held.get(identity.client) ?? 0;
    if (held >= this.ctx.config.maxHeldPolls) {
      this.ctx.metrics.rateLimited.inc({ kind: "poll" });
      throw new ProtocolError(ErrorCode.RateLimited, `too many polls at once (limit ${this.ctx.config.maxHeldPolls})`, 1);
    }
    this.held.set(identity.client, held + 1);
    try {
      await this.runPoll(c, identity, requested, timeoutS);
    } finally {
      const n = (this.held.get(identity.client) ?? 1) - 1;
      if (n > 0) this.held.set(identity.client, n);
      else this.held.delete(identity.client);
    }
  }

  private async runPoll(
    c: RequestContext,
    identity: Identity,
    requested: Array<[string, unknown]>,
    timeoutS: number,
  ): Promise<void> {
    const info = clientInfo(identity);
    const poll: Poll = {
      format: c.format,
      channels: new Map(),
      entries: [],
      errors: keyedByClient(),
      buffering: true,
      buffered: [],
      presence: [],
      answer: undefined,
    };
    // A malformed cursor makes the whole request malformed (400), like a bad `subs` or `timeout`:
    // only permission and namespace problems are per-channel errors in a 200 answer. (Validated
    // inside the per-channel try, it came back as 200 + errors, answered at once, so a buggy
    // client would re-poll in a tight loop instead of seeing its bug.)
    const cursors = new Map<string, Cursor>();
    for (const [ch, raw] of requested) cursors.set(ch, cursorOf(raw));
    for (const [ch] of requested) {
      try {
        const r = authorize(this.ctx.config.namespaces, identity, ch);
        poll.channels.set(ch, { r, cursor: undefined });
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        poll.errors[ch] = { code: err.code, message: err.message };
      }
    }

    // Join delivery first, then read history: whatever arrives meanwhile is buffered, so the
    // cursor handed back never skips a publication.
    const joined: string[] = [];
    const pinned: ResolvedChannel[] = [];
    let aborted = c.reply.aborted;
    const cleanup = (): void => {
      for (const ch of joined) {
        this.polls.get(ch)?.delete(poll);
        if (this.polls.get(ch)?.size === 0) this.polls.delete(ch);
        this.keepWarm(ch);
      }
      joined.length = 0;
      // The poll is over (answered or abandoned): the client stays present PRESENCE_TTL from now.
      for (const r of pinned) this.release(r, info);
      pinned.length = 0;
    };
    c.reply.onAbort(() => {
      aborted = true;
      poll.answer?.();
    });
    await Promise.all(
      [...poll.channels].map(async ([ch, pc]) => {
        try {
          await this.ctx.hub.subscribe(ch, pc.r.options);
        } catch (err) {
          poll.channels.delete(ch);
          poll.errors[ch] = toError(err);
          return;
        }
        joined.push(ch);
        let set = this.polls.get(ch);
        if (!set) this.polls.set(ch, (set = new Set()));
        set.add(poll);
      }),
    );
    if (aborted) return cleanup();

    let answerNow = Object.keys(poll.errors).length > 0;
    for (const [ch, pc] of poll.channels) {
      try {
        if (await this.touchPresence(pc.r, info)) pinned.push(pc.r);
      } catch (err) {
        poll.channels.delete(ch);
        poll.errors[ch] = toError(err);
        answerNow = true;
        continue;
      }
      const opts = pc.r.options.history;
      if (!opts) continue;
      const cursor = cursors.get(ch) ?? null;
      try {
        const result = await this.ctx.hub.readHistory(ch, opts, cursor ? { since: cursor } : { limit: 0 });
        chargeItems(this.ctx.limits.commandBudget(identity.client), result.reads);
        pc.cursor = result.position;
        if (cursor === null) {
          answerNow = true;
        } else if (!result.complete) {
          pc.recovered = false;
          answerNow = true;
        } else {
          for (const p of result.pubs) poll.entries.push(encodeChannelPub(poll.format, p));
        }
      } catch (err) {
        poll.channels.delete(ch);
        poll.errors[ch] = toError(err);
        answerNow = true;
      }
    }
    // Still `buffering` while the buffer drains: accept() then leaves the break to the index.
    poll.buffered.forEach((p, i) => {
      const at = poll.channels.get(p.ch)?.brokenAt;
      if (at === undefined || i < at) this.accept(poll, p);
    });
    poll.buffering = false;
    poll.buffered = [];
    for (const pc of poll.channels.values()) if (pc.brokenAt !== undefined) answerNow = true;
    if (aborted) return cleanup();

    if (!answerNow && poll.entries.length === 0 && this.accepting) {
      this.ctx.metrics.longPollHeld.inc();
      // A server-side disconnect of the user ends a held poll at once (HubSession); later
      // requests of the session are refused by its revocation.
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
      if (ended) {
        cleanup();
        throw new SessionError("session ended by the server (disconnected)");
      }
    }
    // Only entries that still exist are released: an `unsubscribe` that arrived while this poll
    // was held has already announced the leave, and re-adding the entry here would announce a new
    // join and keep the client listed for another PRESENCE_TTL ("unsubscribe while held").
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

  /** Adds a live publication to a poll if it is past the poll's cursor; answers a held poll soon. */
  private accept(poll: Poll, pub: Publication): void {
    const pc = poll.channels.get(pub.ch);
    if (!pc || (pc.brokenAt !== undefined && !poll.buffering)) return;
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

  /**
   * Pins the client's presence in the channel for the duration of a poll; false if it has none.
   * Throws ProtocolError 429 when the channel's presence is full, or when the client already has
   * maxSubscriptions presence entries here (each poll may name other channels, and every entry
   * outlives its poll).
   */
  private async touchPresence(r: ResolvedChannel, info: ClientInfo): Promise<boolean> {
    if (!r.options.presence) return false;
    const key = r.ch + "\u0000" + info.client;
    if (this.pin(key)) return true;
    const max = this.ctx.config.maxSubscriptions;
    if ((this.presentPerClient.get(info.client) ?? 0) >= max) {
      throw new ProtocolError(ErrorCode.RateLimited, `this session is present in ${max} channels already`);
    }
    await this.ctx.hub.presenceRoom(r.ch);
    if (this.pin(key)) return true; // another poll of the client joined meanwhile
    const entry: PresentEntry = { timer: undefined as unknown as NodeJS.Timeout, r, info, held: 1 };
    entry.timer = setTimeout(() => {
      if (entry.held > 0) return void entry.timer.refresh();
      this.dropPresence(key, entry);
    }, PRESENCE_TTL_MS);
    entry.timer.unref();
    this.present.set(key, entry);
    this.presentPerClient.set(info.client, (this.presentPerClient.get(info.client) ?? 0) + 1);
    this.ctx.hub
      .join(r.ch, info, r.options.joinLeave)
      .catch((err: unknown) => this.ctx.log.warn({ err, ch: r.ch }, "long-poll presence join failed"));
    return true;
  }

  /** Pins an existing entry for one more poll; false if there is none. */
  private pin(key: string): boolean {
    const existing = this.present.get(key);
    if (!existing) return false;
    existing.held++;
    existing.timer.refresh();
    return true;
  }

  private dropPresence(key: string, entry: PresentEntry): void {
    clearTimeout(entry.timer);
    this.present.delete(key);
    const client = entry.info.client;
    const n = (this.presentPerClient.get(client) ?? 1) - 1;
    if (n > 0) this.presentPerClient.set(client, n);
    else this.presentPerClient.delete(client);
    this.ctx.hub.leave(entry.r.ch, entry.info, entry.r.options.joinLeave);
  }

  /** A poll ended: its entry is no longer pinned and lives PRESENCE_TTL from now. */
  private release(r: ResolvedChannel, info: ClientInfo): void {
    const entry = this.present.get(r.ch + "\u0000" + info.client);
    if (!entry) return;
    entry.held = Math.max(0, entry.held - 1);
    entry.timer.refresh();
  }

  // --- FanoutSink -----------------------------------------------------------------------------

  publication(pub: Publication): number {
    const set = this.polls.get(pub.ch);
    if (!set) return 0;
    let n = 0;
    for (const poll of set) {
      if (poll.buffering) poll.buffered.push(pub);
      else this.accept(poll, pub);
      n++;
    }
    return n;
  }

  continuityLost(ch: string): void {
    const set = this.polls.get(ch);
    if (!set) return;
    for (const poll of set) {
      const pc = poll.channels.get(ch);
      if (!pc || pc.brokenAt !== undefined) continue;
      pc.brokenAt = poll.buffered.length;
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
      if (poll.buffering || poll.presence.length >= MAX_EVENTS_PER_ANSWER) continue;
      poll.presence.push({ ch, push, info });
      if (poll.answer) queueMicrotask(() => poll.answer?.());
    }
  }

  /** Answers every held poll now and refuses new requests; presence entries leave with the hub. */
  drain(): void {
    this.accepting = false;
    for (const set of this.polls.values()) for (const poll of set) poll.answer?.();
    for (const [key, p] of this.present) this.dropPresence(key, p);
    for (const [ch, timer] of this.warm) {
      clearTimeout(timer);
      this.ctx.hub.unsubscribe(ch);
    }
    this.warm.clear();
  }

  /**
   * Takes over a finished poll's hold on a channel for pollWarmTime: a client polls again right
   * after an answer, and without this every poll would subscribe and unsubscribe the channel in
   * NATS.
   * One warm hold per channel; a later poll's hold is released and the timer starts again.
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

function cursorOf(raw: unknown): Cursor {
  if (raw === null || raw === undefined) return null;
  const p = asPosition(raw);
  if (p) return p;
  throw new ProtocolError(ErrorCode.BadRequest, "a cursor must be null or {offset: non-negative integer, epoch: string}");
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
