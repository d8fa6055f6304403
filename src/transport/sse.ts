import { randomUUID } from "node:crypto";
import { readCookie } from "../auth/cookie.js";
import { MAX_TOKEN_LENGTH } from "../auth/jwt.js";
import { decodeJwt } from "jose/jwt/decode";
import { resolveChannel, type ResolvedChannel } from "../channels.js";
import { catchUp } from "../delivery/catch-up.js";
import type { DeliveryContext } from "../delivery/context.js";
import { clientInfo, type Identity } from "../delivery/identity.js";
import { authenticate, describeConnect } from "../delivery/authenticate.js";
import { permitSubscribe } from "../delivery/subscribe-permit.js";
import { traced } from "../tracing/tracer.js";
import { clientRequest, type ClientRequest } from "../hooks/request.js";
import { corsHeaders } from "../http/cors.js";
import { headTooLarge, refuseHead } from "../http/request-head.js";
import type { OriginPolicy } from "../http/origin.js";
import { Reply } from "../http/respond.js";
import { SessionError, type SessionSigner } from "../http/session-token.js";
import type { FanoutSink, HubSession } from "../hub/hub.js";
import { CloseCode, ErrorCode, ProtocolError } from "../protocol/codes.js";
import { encodeChannelPub } from "../protocol/push.js";
import type { ClientInfo, Publication, StreamPosition } from "../publication.js";
import type { HttpResponse, TemplatedApp } from "../uws.js";

const HEARTBEAT_MS = 15_000;
/** Browsers reconnect after this long (the `retry:` field), plus our jitter hint. */
const RETRY_MS = 2_000;
const MAX_EVENT_ID = 4096;
/** `"<ch>":[<offset>,"<epoch>"],` beyond the channel name, at most (16-digit offset, 16-char epoch). */
const CURSOR_JSON_BYTES = 41;
// setTimeout fires at once for delays past 2^31-1 ms.
const MAX_TIMER = 2_147_483_647;
const EVENT_PUB = Buffer.from("event: pub\ndata: ");
const EVENT_END = Buffer.from("\n\n");


class SseStream implements HubSession {
  closed = false;
  /** Bytes uWS could not write yet; past the limit the stream is a slow consumer. */
  backlog = 0;
  readonly cursors = new Map<string, StreamPosition | undefined>();
  expiry: NodeJS.Timeout | undefined;
  /** A session's own expiry (seconds), when the stream was opened with one. */
  expires: number | undefined;
  /** How the client appears in a channel's presence where the subscribe hook gave it other info. */
  readonly channelInfo = new Map<string, ClientInfo>();
  /**
   * Called once the stream has ended itself (server disconnect, token expiry, slow consumer).
   * uWS reports only client aborts (onAborted), not a response we end, so without this those
   * streams kept their channel subscriptions, presence and connection gauge forever.
   */
  onEnd: (() => void) | undefined;
  /** Why the server ended the stream; a stream the client dropped has no close handshake (1006). */
  ending = { code: 1006, reason: "" };

  constructor(
    readonly res: HttpResponse,
    readonly identity: Identity,
    readonly info: ClientInfo,
    readonly channels: ResolvedChannel[],
    private readonly limit: number,
    /** The client's address, whose connection slot the stream holds. */
    readonly ip: string,
  ) {}

  get user(): string {
    return this.identity.user;
  }

  infoIn(ch: string): ClientInfo {
    return this.channelInfo.get(ch) ?? this.info;
  }

  /** Writes one whole event (or several pieces) in one corked send. */
  write(...parts: Array<string | Buffer>): void {
    if (this.closed) return;
    this.res.cork(() => {
      for (const text of parts) {
        if (!this.res.write(text)) this.backlog += typeof text === "string" ? Buffer.byteLength(text) : text.byteLength;
      }
    });
    if (this.backlog > this.limit) this.disconnect(CloseCode.SlowConsumer, "slow consumer", true);
  }

  private id: string | undefined;

  /** Positions changed: the next event id is computed afresh. */
  setCursor(ch: string, position: StreamPosition | undefined): void {
    this.cursors.set(ch, position);
    this.id = undefined;
  }

  /** The id names every channel's position, so a reconnect to any replica resumes exactly here. */
  eventId(): string {
    if (this.id === undefined) {
      const ids: Record<string, [number, string]> = {};
      for (const [ch, c] of this.cursors) if (c) ids[ch] = [c.offset, c.epoch];
      this.id = Buffer.from(JSON.stringify(ids), "utf8").toString("base64url");
    }
    return this.id;
  }

  disconnect(code: number, reason: string, reconnect: boolean): void {
    if (this.closed) return;
    // Closed before the farewell is written, and written without write(): write() calls
    // disconnect() for a slow consumer, and the farewell going through write() again recursed
    // until the stack overflowed and the process died (test/sse.test.ts, "SSE slow consumer").
    this.closed = true;
    this.ending = { code, reason };
    const bye = `event: disconnect\ndata: ${JSON.stringify({ code, reason, reconnect })}\n\n`;
    this.res.cork(() => this.res.end(bye));
    this.onEnd?.();
  }
}

/**
 * Server-Sent Events for clients that only listen (a plain browser EventSource, no SDK):
 * `GET /sse?ch=a&ch=b`. Event ids carry every channel's cursor, so the browser's automatic
 * reconnect (Last-Event-ID) resumes from the right place on whichever replica it lands.
 */
export class SseTransport implements FanoutSink {
  private readonly streams = new Map<string, Set<SseStream>>();
  private readonly all = new Set<SseStream>();
  private readonly heartbeat: NodeJS.Timeout;
  private accepting = true;

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly origins: OriginPolicy,
    private readonly signer: SessionSigner,
  ) {
    this.heartbeat = setInterval(() => {
      for (const s of this.all) s.write(": hb\n\n");
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  get size(): number {
    return this.all.size;
  }

  attach(app: TemplatedApp): void {
    app.get("/sse", (res, req) => {
      const reply = new Reply(res);
      const origin = req.getHeader("origin");
      const cors = corsHeaders(origin, req.getHeader("host"), this.origins);
      const query = new URLSearchParams(req.getQuery() ?? "");
      const lastEventId = req.getHeader("last-event-id") || query.get("lastEventId") || "";
      const bearer = /^bearer\s+(\S+)$/iu.exec(req.getHeader("authorization").trim())?.[1];
      const cookieName = this.ctx.config.auth?.cookie;
      const cookie = cookieName ? readCookie(req.getHeader("cookie"), cookieName) : undefined;
      const { limits, metrics } = this.ctx;
      const ip = limits.addresses.of(res, req);
      const tooLarge = headTooLarge(req);
      if (!cors) return reply.error(403, "origin not allowed");
      if (tooLarge) return refuseHead(reply, metrics);
      if (!this.accepting) return reply.error(503, "shutting down");
      const refusal = limits.connections.admit(ip);
      if (refusal) return reply.error(refusal.status, refusal.message, { ...cors, "Retry-After": String(refusal.retryAfter) });
      // The slot is taken now, so concurrent opens from one address cannot all pass the check;
      // a stream gives it back when it closes, a refused open at once.
      limits.connections.opened(ip);
      const token = query.get("token") ?? bearer ?? cookie;
      const request = clientRequest("sse", this.ctx.config.hooks, (name) => req.getHeader(name));
      void this.open(reply, cors, query, lastEventId, token, ip, request).then(
        (opened) => {
          if (!opened) limits.connections.closed(ip);
        },
        (err: unknown) => {
          limits.connections.closed(ip);
          if (err instanceof SessionError) return reply.send(401, errorJson(401, err.message), "application/json", cors);
          if (err instanceof ProtocolError) {
            const headers = err.retryAfter === undefined ? cors : { ...cors, "Retry-After": String(err.retryAfter) };
            return reply.send(err.code, JSON.stringify({ error: err.toJSON() }), "application/json", headers);
          }
          this.ctx.log.error({ err }, "SSE request failed");
          reply.send(500, errorJson(500, "internal error"), "application/json", cors);
        },
      );
    });
  }

  /** Resolves true once a stream owns the response (and the client's connection slot). */
  private async open(
    reply: Reply,
    cors: Record<string, string>,
    query: URLSearchParams,
    lastEventId: string,
    token: string | undefined,
    ip: string,
    request: ClientRequest,
  ): Promise<boolean> {
    const identity = await this.identify(query.get("session"), token, request);
    if (query.get("session") !== null) {
      // A session's streams spend its command budget, like its polls.
      this.ctx.limits.spendSessionCommand(identity.client);
    }
    const info = clientInfo(identity);
    const names = query.getAll("ch");
    const max = this.ctx.config.maxSubscriptions;
    if (names.length === 0 || names.length > max || new Set(names).size !== names.length) {
      throw new ProtocolError(ErrorCode.BadRequest, `give 1 to ${max} distinct ch parameters`);
    }
    const channels = names.map((ch) => resolveChannel(this.ctx.config.namespaces, ch));
    const tokens = subscriptionTokens(query.getAll("subtoken"), names.length);
    // Asked before the 200: a refusal is the request's answer, not a stream that ends at once.
    const grants = await Promise.all(channels.map((r) => permitSubscribe(this.ctx, identity, r, request, undefined, tokens.get(r.ch))));
    // Event ids carry every history channel's cursor; an id the resume could not take back would
    // silently restart from now, so such a stream is refused up front.
    const idBudget = channels.reduce((n, r) => n + (r.options.history ? Buffer.byteLength(r.ch) + CURSOR_JSON_BYTES : 0), 2);
    if (Math.ceil((idBudget * 4) / 3) > MAX_EVENT_ID) {
      throw new ProtocolError(ErrorCode.BadRequest, "too many or too long history channels for one SSE stream: open several");
    }
    const parsed = parseEventId(lastEventId);
    const resume = parsed ?? new Map<string, StreamPosition>();
    for (const r of channels) if (r.options.presence) await this.ctx.hub.presenceRoom(r.ch);
    await this.ctx.limits.users.add(info).catch((err: unknown) => {
      if (err instanceof ProtocolError) this.ctx.metrics.connectionsRefused.inc({ reason: "per_user" });
      throw err;
    });
    if (reply.aborted) {
      this.ctx.limits.users.remove(info);
      return false;
    }

    const stream = new SseStream(reply.res, identity, info, channels, this.ctx.config.backpressureLimit, ip);
    if ("expires" in identity && typeof identity.expires === "number") stream.expires = identity.expires;
    grants.forEach((grant, i) => {
      const r = channels[i];
      if (r && grant.info !== undefined) stream.channelInfo.set(r.ch, { ...info, info: grant.info });
    });
    stream.onEnd = () => this.close(stream);
    reply.done = true; // the stream owns the response from here on
    reply.onAbort(() => this.close(stream));
    reply.res.cork(() => {
      reply.res.writeStatus("200 OK");
      reply.res.writeHeader("Content-Type", "text/event-stream; charset=utf-8");
      reply.res.writeHeader("Cache-Control", "no-cache, no-store");
      reply.res.writeHeader("X-Accel-Buffering", "no");
      for (const [k, v] of Object.entries(cors)) reply.res.writeHeader(k, v);
      reply.res.write(`retry: ${RETRY_MS}\n\n`);
    });
    // With an onWritable handler uWS leaves draining its buffer to us: a write (an SSE comment)
    // flushes it. Backlog only counts down when a write went through completely.
    reply.res.onWritable(() => {
      if (stream.closed) return true;
      if (reply.res.write(":\n")) stream.backlog = 0;
      return true;
    });
    this.all.add(stream);
    this.ctx.metrics.connections.inc({ transport: "sse" });
    this.ctx.hub.register(stream);
    this.ctx.events.clientConnected(info, "sse");
    this.armExpiry(stream);

    // Every resumed channel keeps its cursor in the event ids from the start, so a stream that
    // breaks mid-replay resumes the channels not yet replayed from where they were.
    for (const r of channels) stream.setCursor(r.ch, resume.get(r.ch));
    const subs: Record<string, Record<string, unknown>> = {};
    for (const r of channels) {
      try {
        await this.ctx.hub.subscribe(r.ch, r.options);
      } catch (err) {
        stream.disconnect(CloseCode.Shutdown, (err as Error).message, true);
        return true;
      }
      const opts = r.options.history;
      const since = resume.get(r.ch);
      let caught;
      try {
        caught = opts ? await catchUp(this.ctx.hub, r.ch, opts, since) : undefined;
      } catch (err) {
        // The 200 is already sent: tell the client to come back (and resume) rather than leave a
        // stream open that never says `subscribed`.
        this.ctx.hub.unsubscribe(r.ch);
        this.ctx.log.warn({ err, ch: r.ch }, "SSE history read failed");
        stream.disconnect(CloseCode.Shutdown, "history unavailable, reconnect", true);
        return true;
      }
      if (stream.closed) {
        // Not in `streams` yet, so close() cannot release this channel's hub subscription.
        this.ctx.hub.unsubscribe(r.ch);
        return true;
      }
      // Nothing awaited since the catch-up: live delivery takes over exactly at its position.
      let set = this.streams.get(r.ch);
      if (!set) this.streams.set(r.ch, (set = new Set()));
      set.add(stream);
      if (caught) {
        if (parsed === undefined || (since && !caught.recovered)) {
          stream.setCursor(r.ch, caught.position);
          stream.write(`id: ${stream.eventId()}\nevent: reset\ndata: ${JSON.stringify({ ch: r.ch, ...caught.position, recovered: false })}\n\n`);
        } else {
          stream.setCursor(r.ch, since ?? caught.position);
          for (const p of caught.pubs) this.deliver(stream, p);
          const reached = stream.cursors.get(r.ch) as StreamPosition;
          if (reached.offset < caught.position.offset) stream.setCursor(r.ch, caught.position);
        }
        subs[r.ch] = { ...(stream.cursors.get(r.ch) as StreamPosition) };
      } else {
        subs[r.ch] = {};
      }
      if (r.options.presence) {
        this.ctx.hub.join(r.ch, stream.infoIn(r.ch), r.options.joinLeave).catch((err: unknown) => this.ctx.log.warn({ err, ch: r.ch }, "SSE presence join failed"));
      }
    }
    // The browser only remembers ids of events: this one gives even a quiet stream a resume point.
    stream.write(`id: ${stream.eventId()}\nevent: subscribed\ndata: ${JSON.stringify({ subs })}\n\n`);
    return true;
  }

  /**
   * A stream has no connect command: the connect hook sees the forwarded headers and cookies only,
   * and the channels it names are not added (a stream's channels are in its URL).
   */
  private async identify(session: string | null, token: string | undefined, request: ClientRequest): Promise<Identity> {
    if (session !== null) return this.signer.verify(session);
    const client = randomUUID();
    return traced(this.ctx.tracer, "connect", {}, async (span) => {
      const { claims } = await authenticate(this.ctx, client, token, request, undefined, span?.context);
      const identity: Identity = claims ? { client, user: claims.sub, claims } : { client, user: "" };
      describeConnect(span, "sse", client, identity.user);
      return identity;
    });
  }

  /** Ends the stream when its token (or session) expires; long lifetimes re-arm past setTimeout's range. */
  private armExpiry(stream: SseStream, expires = stream.identity.claims?.exp ?? stream.expires): void {
    if (expires === undefined) return;
    const delay = expires * 1000 - Date.now();
    if (delay > MAX_TIMER) {
      stream.expiry = setTimeout(() => this.armExpiry(stream, expires), MAX_TIMER);
      return;
    }
    stream.expiry = setTimeout(() => stream.disconnect(CloseCode.TokenExpired, "token expired", true), Math.max(0, delay));
  }

  /** Writes a publication if it is past the stream's cursor for its channel. */
  private deliver(stream: SseStream, pub: Publication): void {
    const cursor = stream.cursors.get(pub.ch);
    if (pub.offset !== undefined && cursor) {
      if (pub.offset <= cursor.offset) return;
      stream.setCursor(pub.ch, { offset: pub.offset, epoch: cursor.epoch });
    }
    stream.write(`id: ${stream.eventId()}\n`, this.eventFor(pub));
  }

  private readonly events = new WeakMap<Publication, Buffer>();

  /**
   * The event without its id line, built once per publication for every stream. Push data never
   * spans lines (payloads are re-serialised or have raw line breaks blanked when they enter, see
   * nats/codec.ts), so it is one `data:` line as it is.
   */
  private eventFor(pub: Publication): Buffer {
    let event = this.events.get(pub);
    if (!event) {
      event = Buffer.concat([EVENT_PUB, encodeChannelPub("json", pub), EVENT_END]);
      this.events.set(pub, event);
    }
    return event;
  }

  private close(stream: SseStream): void {
    if (!this.all.delete(stream)) return;
    stream.closed = true;
    clearTimeout(stream.expiry);
    this.ctx.hub.unregister(stream);
    this.ctx.metrics.connections.dec({ transport: "sse" });
    this.ctx.limits.connections.closed(stream.ip);
    this.ctx.limits.users.remove(stream.info);
    this.ctx.events.clientDisconnected(stream.info, "sse", stream.ending.code, stream.ending.reason);
    for (const r of stream.channels) {
      const set = this.streams.get(r.ch);
      if (!set?.delete(stream)) continue;
      if (set.size === 0) this.streams.delete(r.ch);
      this.ctx.hub.unsubscribe(r.ch);
      if (r.options.presence) this.ctx.hub.leave(r.ch, stream.infoIn(r.ch), r.options.joinLeave);
    }
  }

  publication(pub: Publication): number {
    const set = this.streams.get(pub.ch);
    if (!set) return 0;
    for (const s of set) this.deliver(s, pub);
    return set.size;
  }

  /**
   * A stream cannot be told to resubscribe one channel: it ends, and the browser reconnects at
   * once with the id of the last event it got, which replays exactly from history (or `reset`).
   */
  continuityLost(ch: string, reason: string): void {
    const set = this.streams.get(ch);
    if (!set) return;
    for (const s of [...set]) s.disconnect(CloseCode.InsufficientState, reason, true);
  }

  join(ch: string, info: ClientInfo): void {
    this.presenceEvent("join", ch, info);
  }

  leave(ch: string, info: ClientInfo): void {
    this.presenceEvent("leave", ch, info);
  }

  private presenceEvent(kind: "join" | "leave", ch: string, info: ClientInfo): void {
    const set = this.streams.get(ch);
    if (!set) return;
    const text = `event: ${kind}\ndata: ${JSON.stringify({ ch, info })}\n\n`;
    for (const s of set) s.write(text);
  }

  /** Asks every stream to reconnect elsewhere, spread over the drain period. */
  async drain(periodMs: number): Promise<void> {
    this.accepting = false;
    clearInterval(this.heartbeat);
    for (const s of [...this.all]) {
      setTimeout(() => {
        s.disconnect(CloseCode.Shutdown, "server shutting down", true);
        this.close(s);
      }, Math.random() * periodMs);
    }
    const deadline = Date.now() + periodMs + 1_000;
    while (this.all.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The positions an event id carries, or undefined when it is not an id this gateway wrote: such a
 * resume cannot be honoured, and every history channel is told so with `reset`.
 */
function parseEventId(id: string): Map<string, StreamPosition> | undefined {
  const out = new Map<string, StreamPosition>();
  if (id === "") return out;
  if (id.length > MAX_EVENT_ID) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(id, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return undefined;
  for (const [ch, pos] of Object.entries(v)) {
    if (!Array.isArray(pos) || !Number.isSafeInteger(pos[0]) || (pos[0] as number) < 0 || typeof pos[1] !== "string") {
      return undefined;
    }
    out.set(ch, { offset: pos[0] as number, epoch: pos[1] });
  }
  return out;
}

function errorJson(code: number, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/**
 * `subtoken` parameters: subscription tokens, each for the channel its `channel` claim names (a
 * URL cannot pair parameters more simply). The claim is only read here, to route the token; the
 * permission check verifies each one fully. At most one per channel of the stream.
 */
function subscriptionTokens(raw: string[], max: number): Map<string, string> {
  const out = new Map<string, string>();
  if (raw.length > max) throw new ProtocolError(ErrorCode.BadRequest, "more subtoken parameters than ch parameters");
  for (const token of raw) {
    let channel: unknown;
    try {
      channel = token.length <= MAX_TOKEN_LENGTH ? decodeJwt(token).channel : undefined;
    } catch {
      channel = undefined;
    }
    if (typeof channel !== "string") throw new ProtocolError(ErrorCode.Unauthenticated, "a subtoken is not a subscription token");
    if (out.has(channel)) throw new ProtocolError(ErrorCode.BadRequest, `two subscription tokens for ${channel}`);
    out.set(channel, token);
  }
  return out;
}
