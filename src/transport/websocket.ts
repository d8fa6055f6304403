import { readCookie } from "../auth/cookie.js";
import { clientRequest, type ClientRequest } from "../hooks/request.js";
import type { FanoutSink } from "../hub/hub.js";
import type { OriginPolicy } from "../http/origin.js";
import { headTooLarge, refuseHead } from "../http/request-head.js";
import { Reply } from "../http/respond.js";
import { decodeFrames, SUBPROTOCOLS, type Format } from "../protocol/codec.js";
import { CloseCode, ErrorCode, FrameError, ProtocolError } from "../protocol/codes.js";
import { encodeJoinLeave, encodePubPush } from "../protocol/push.js";
import type { ClientInfo, Publication } from "../publication.js";
import type { DeliveryContext } from "../delivery/context.js";
import { Session, type Connection } from "../delivery/session.js";
import { loadUws, type TemplatedApp, type WebSocket } from "../uws.js";

interface UserData {
  format: Format;
  token: string | undefined;
  /** Headers and cookies forwarded to backend hooks, read at the upgrade (the only time they can be). */
  request: ClientRequest;
  /** The client's address, whose connection slot the socket holds. */
  ip: string;
  conn?: WsConnection;
}

/** RFC 6455 4.2.1: the key is 16 random bytes, base64-encoded (24 characters, "==" at the end). */
const WEBSOCKET_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

/** uWS topics are per wire format, so each publication is encoded once per format, not per socket. */
const TOPIC_PREFIX: Record<Format, string> = { json: "j:", msgpack: "m:" };
const FORMATS: Format[] = ["json", "msgpack"];

/**
 * Local connections per channel, so the fan-out can check exactly the sockets it grew, and the
 * bytes fanned out since it last did: checking every subscriber after every publication would put
 * a JS loop over sockets back on the hot path that native topics removed.
 */
type Members = Map<string, { conns: Set<WsConnection>; bytesSinceCheck: number }>;

/** A client that has not sent `connect` by then is holding a socket for nothing. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How often outbound buffers are checked for slow consumers that never drain. */
const SLOW_CONSUMER_SWEEP_MS = 1_000;

class WsConnection implements Connection {
  readonly transport = "websocket";
  closed = false;
  session!: Session;
  private readonly channels = new Set<string>();

  constructor(
    private readonly ws: WebSocket<UserData>,
    readonly format: Format,
    private readonly backpressureLimit: number,
    private readonly members: Members,
  ) {}

  /** A large reply (history, recovery) may sit in the buffer for a while without the client being slow. */
  private replyAllowance = 0;

  send(frame: Buffer): void {
    if (this.closed) return;
    this.ws.cork(() => {
      this.ws.send(frame, this.format === "msgpack", false);
    });
    if (frame.byteLength > this.replyAllowance) this.replyAllowance = frame.byteLength;
    this.checkBackpressure();
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.ws.end(code, reason.slice(0, 120));
  }

  join(ch: string): void {
    if (this.closed) return;
    this.ws.subscribe(TOPIC_PREFIX[this.format] + ch);
    this.channels.add(ch);
    let m = this.members.get(ch);
    if (!m) this.members.set(ch, (m = { conns: new Set(), bytesSinceCheck: 0 }));
    m.conns.add(this);
  }

  leave(ch: string): void {
    if (this.closed) return;
    this.ws.unsubscribe(TOPIC_PREFIX[this.format] + ch);
    this.forget(ch);
  }

  /** Called once the socket is gone: uWS drops its topics, this drops the member entries. */
  forgetAll(): void {
    for (const ch of this.channels) this.forget(ch);
  }

  private forget(ch: string): void {
    this.channels.delete(ch);
    const m = this.members.get(ch);
    if (!m) return;
    m.conns.delete(this);
    if (m.conns.size === 0) this.members.delete(ch);
  }

  /** Past the limit a client is told it is too slow and closed, before memory grows further. */
  checkBackpressure(): void {
    if (this.closed) return;
    const buffered = this.ws.getBufferedAmount();
    if (buffered > this.backpressureLimit + this.replyAllowance) {
      this.session.disconnect(CloseCode.SlowConsumer, "slow consumer", true);
    } else if (buffered < this.backpressureLimit) {
      this.replyAllowance = 0;
    }
  }
}

/**
 * WebSocket transport at /ws on uWebSockets.js. Publications fan out through uWS native topics:
 * one encode per format and one native call per publication, whatever the subscriber count.
 */
export class WebSocketTransport implements FanoutSink {
  private readonly connections = new Set<WsConnection>();
  private readonly members: Members = new Map();
  /**
   * Apps with open sockets, and how many: topics are per app, and after a certificate reload the
   * previous app keeps its clients while the new one takes new connections.
   */
  private readonly apps = new Map<TemplatedApp, number>();
  private readonly sweeper: NodeJS.Timeout;
  private accepting = true;

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly origins: OriginPolicy,
  ) {
    this.sweeper = setInterval(() => {
      for (const c of this.connections) c.checkBackpressure();
    }, SLOW_CONSUMER_SWEEP_MS);
    this.sweeper.unref();
  }

  get size(): number {
    return this.connections.size;
  }

  attach(app: TemplatedApp): void {
    const { config, metrics, limits } = this.ctx;
    const uws = loadUws();
    const limit = config.backpressureLimit;
    // uWS idle timeouts tick in 4 s steps and must be at least 8 s; pings go out before it fires.
    const idleTimeout = Math.max(8, Math.round((2 * config.pingInterval) / 4000) * 4);
    app.ws<UserData>("/ws", {
      compression: uws.DISABLED,
      // Up to twice the limit a message is read and refused with a 413 reply the client can act
      // on; beyond that uWS drops the connection without reading it.
      maxPayloadLength: 2 * config.maxFrameSize,
      idleTimeout,
      sendPingsAutomatically: true,
      // The hard cap: past four times the limit uWS itself drops the socket (1006, no close
      // frame), so memory stays bounded whatever happens; the checks on send, drain, every half
      // limit of fan-out and the 1 s sweep close a slow client with 4008 well before that.
      maxBackpressure: 4 * limit + config.maxFrameSize,
      closeOnBackpressureLimit: 1,
      upgrade: (res, req, context) => {
        const origin = req.getHeader("origin");
        const host = req.getHeader("host");
        const key = req.getHeader("sec-websocket-key");
        const offered = req.getHeader("sec-websocket-protocol");
        const extensions = req.getHeader("sec-websocket-extensions");
        const cookieName = config.auth?.cookie;
        const token = cookieName ? readCookie(req.getHeader("cookie"), cookieName) : undefined;
        const version = req.getHeader("sec-websocket-version");
        const request = clientRequest("websocket", config.hooks, (name) => req.getHeader(name));
        const ip = limits.addresses.of(res, req);
        const reply = new Reply(res);
        if (headTooLarge(req)) return refuseHead(reply, metrics);
        if (!this.accepting) return reply.error(503, "shutting down");
        if (!this.origins.allows(origin, host)) return reply.error(403, "origin not allowed");
        if (version !== "13") {
          metrics.httpRefused.inc({ reason: "bad_upgrade" });
          return reply.error(426, "unsupported WebSocket version: use 13", { "Sec-WebSocket-Version": "13" });
        }
        if (!WEBSOCKET_KEY.test(key)) {
          metrics.httpRefused.inc({ reason: "bad_upgrade" });
          return reply.error(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded");
        }
        const refusal = limits.connections.admit(ip);
        if (refusal) return reply.error(refusal.status, refusal.message, { "Retry-After": String(refusal.retryAfter) });
        let format: Format = "json";
        let protocol = "";
        if (offered !== "") {
          const match = offered
            .split(",")
            .map((p) => p.trim())
            .find((p) => Object.hasOwn(SUBPROTOCOLS, p));
          if (!match) {
            metrics.httpRefused.inc({ reason: "bad_upgrade" });
            return reply.error(400, "unsupported subprotocol: offer natsedge.v1.json or natsedge.v1.msgpack");
          }
          protocol = match;
          format = SUBPROTOCOLS[match] as Format;
        }
        // uWS calls open() from within upgrade(): the slot is counted there, before any other
        // upgrade can be admitted.
        res.upgrade<UserData>({ format, token, request, ip }, key, protocol, extensions, context);
      },
      open: (ws) => {
        const data = ws.getUserData();
        const conn = new WsConnection(ws, data.format, limit, this.members);
        conn.session = new Session(conn, this.ctx, data.token, data.request);
        data.conn = conn;
        this.connections.add(conn);
        limits.connections.opened(data.ip);
        this.apps.set(app, (this.apps.get(app) ?? 0) + 1);
        metrics.connections.inc({ transport: "websocket" });
        setTimeout(() => {
          if (!conn.closed && !conn.session.isConnected) {
            conn.session.disconnect(CloseCode.Unauthorized, "no connect command in time", false);
          }
        }, CONNECT_TIMEOUT_MS).unref();
      },
      message: (ws, message, isBinary) => {
        const conn = ws.getUserData().conn as WsConnection;
        if (message.byteLength > config.maxFrameSize) {
          conn.session.refuse(new ProtocolError(ErrorCode.TooLarge, `message larger than ${config.maxFrameSize} bytes`));
          return;
        }
        if (isBinary !== (conn.format === "msgpack")) {
          conn.session.disconnect(
            CloseCode.ProtocolViolation,
            conn.format === "json" ? "expected text frames" : "expected binary frames",
            false,
          );
          return;
        }
        let frames: unknown[];
        try {
          // The message buffer is only valid during this callback; decoding copies what it keeps.
          frames = decodeFrames(conn.format, conn.format === "json" ? new Uint8Array(message) : new Uint8Array(message.slice(0)));
        } catch (err) {
          if (!(err instanceof FrameError)) throw err;
          conn.session.disconnect(CloseCode.ProtocolViolation, err.message, false);
          return;
        }
        conn.session.receive(frames);
      },
      drain: (ws) => {
        ws.getUserData().conn?.checkBackpressure();
      },
      close: (ws, code) => {
        const data = ws.getUserData();
        const conn = data.conn as WsConnection;
        limits.connections.closed(data.ip);
        conn.closed = true;
        this.connections.delete(conn);
        const open = (this.apps.get(app) ?? 1) - 1;
        if (open > 0) this.apps.set(app, open);
        else this.apps.delete(app);
        conn.forgetAll();
        conn.session.closed();
        metrics.connections.dec({ transport: "websocket" });
        metrics.disconnects.inc({ code: String(code) });
      },
    });
    // uWS hands a GET of /ws that is not an upgrade it accepts (no or a malformed
    // Sec-WebSocket-Key, no Upgrade header) to the HTTP routes: answered here as RFC 6455 asks.
    app.get("/ws", (res, req) => {
      const reply = new Reply(res);
      if (headTooLarge(req)) return refuseHead(reply, metrics);
      metrics.httpRefused.inc({ reason: "bad_upgrade" });
      if (req.getHeader("sec-websocket-version") !== "13") {
        return reply.error(426, "a WebSocket upgrade (version 13) is required here", { "Sec-WebSocket-Version": "13", Upgrade: "websocket" });
      }
      reply.error(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded");
    });
  }

  publication(pub: Publication): number {
    let sent = 0;
    let bytes = 0;
    for (const format of FORMATS) {
      const fanned = this.fanOut(format, pub.ch, () => encodePubPush(format, pub));
      sent += fanned.sent;
      bytes = Math.max(bytes, fanned.bytes);
    }
    if (sent > 0) this.checkChannel(pub.ch, bytes);
    return sent;
  }

  /** Publishes to the channel's topic in every app that has subscribers; encodes only if one has. */
  private fanOut(format: Format, ch: string, encode: () => Uint8Array): { sent: number; bytes: number } {
    const topic = TOPIC_PREFIX[format] + ch;
    let sent = 0;
    let frame: Uint8Array | undefined;
    for (const app of this.apps.keys()) {
      const n = app.numSubscribers(topic);
      if (n === 0) continue;
      frame ??= encode();
      app.publish(topic, frame, format === "msgpack", false);
      sent += n;
    }
    return { sent, bytes: frame?.byteLength ?? 0 };
  }

  /**
   * A publisher outruns the 1 s sweep easily, and a client that stopped reading would reach the
   * uWS hard cap and be dropped silently (1006) instead of being told 4008. So a channel's
   * subscribers are checked each time another half limit of bytes has been fanned out to them:
   * nobody grows by more than that unseen, and the cost per byte delivered stays constant.
   */
  private checkChannel(ch: string, bytes: number): void {
    const m = this.members.get(ch);
    if (!m) return;
    m.bytesSinceCheck += bytes;
    if (m.bytesSinceCheck < this.ctx.config.backpressureLimit / 2) return;
    m.bytesSinceCheck = 0;
    for (const c of m.conns) c.checkBackpressure();
  }

  continuityLost(ch: string, reason: string): void {
    const m = this.members.get(ch);
    if (!m) return;
    // Copied: each session's leave() removes it from the set.
    for (const c of [...m.conns]) c.session.continuityLost(ch, reason);
  }

  join(ch: string, info: ClientInfo): void {
    this.presenceEvent("join", ch, info);
  }

  leave(ch: string, info: ClientInfo): void {
    this.presenceEvent("leave", ch, info);
  }

  private presenceEvent(kind: "join" | "leave", ch: string, info: ClientInfo): void {
    for (const format of FORMATS) this.fanOut(format, ch, () => encodeJoinLeave(format, kind, ch, info));
  }

  /**
   * Refuses new connections and asks every client to reconnect elsewhere, spread over the drain
   * period so the other replicas see a ramp rather than a thundering herd.
   */
  async drain(periodMs: number): Promise<void> {
    this.accepting = false;
    clearInterval(this.sweeper);
    const all = [...this.connections];
    for (const c of all) {
      setTimeout(() => {
        if (!c.closed) c.session.disconnect(CloseCode.Shutdown, "server shutting down", true);
      }, Math.random() * periodMs);
    }
    const deadline = Date.now() + periodMs + 2_000;
    while (this.connections.size > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

