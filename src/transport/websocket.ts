import { readCookie } from "../auth/cookie.js";
import type { FanoutSink } from "../hub.js";
import type { OriginPolicy } from "../http/origin.js";
import { decodeFrames, SUBPROTOCOLS, type Format } from "../protocol/codec.js";
import { CloseCode, FrameError } from "../protocol/codes.js";
import { encodeJoinLeave, encodePubPush } from "../protocol/push.js";
import type { ClientInfo, Publication } from "../publication.js";
import { Session, type Connection, type SessionContext } from "../session.js";
import { loadUws, type TemplatedApp, type WebSocket } from "../uws.js";

interface UserData {
  format: Format;
  token: string | undefined;
  conn?: WsConnection;
}

/** uWS topics are per wire format, so each publication is encoded once per format, not per socket. */
const TOPIC_PREFIX: Record<Format, string> = { json: "j:", msgpack: "m:" };
const FORMATS: Format[] = ["json", "msgpack"];

/** A client that has not sent `connect` by then is holding a socket for nothing. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How often outbound buffers are checked for slow consumers that never drain. */
const SLOW_CONSUMER_SWEEP_MS = 1_000;

class WsConnection implements Connection {
  readonly transport = "websocket";
  closed = false;
  session!: Session;

  constructor(
    private readonly ws: WebSocket<UserData>,
    readonly format: Format,
    private readonly backpressureLimit: number,
  ) {}

  send(frame: Buffer): void {
    if (this.closed) return;
    this.ws.cork(() => {
      this.ws.send(frame, this.format === "msgpack", false);
    });
    this.checkBackpressure();
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.ws.end(code, reason.slice(0, 120));
  }

  join(ch: string): void {
    if (!this.closed) this.ws.subscribe(TOPIC_PREFIX[this.format] + ch);
  }

  leave(ch: string): void {
    if (!this.closed) this.ws.unsubscribe(TOPIC_PREFIX[this.format] + ch);
  }

  /** Past the limit a client is told it is too slow and closed, before memory grows further. */
  checkBackpressure(): void {
    if (!this.closed && this.ws.getBufferedAmount() > this.backpressureLimit) {
      this.session.disconnect(CloseCode.SlowConsumer, "slow consumer", true);
    }
  }
}

/**
 * WebSocket transport at /ws on uWebSockets.js. Publications fan out through uWS native topics:
 * one encode per format and one native call per publication, whatever the subscriber count.
 */
export class WebSocketTransport implements FanoutSink {
  private readonly connections = new Set<WsConnection>();
  private readonly sweeper: NodeJS.Timeout;
  private accepting = true;

  constructor(
    private readonly app: TemplatedApp,
    private readonly ctx: SessionContext,
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

  attach(): void {
    const { config, metrics } = this.ctx;
    const uws = loadUws();
    const limit = config.backpressureLimit;
    // uWS idle timeouts tick in 4 s steps and must be at least 8 s; pings go out before it fires.
    const idleTimeout = Math.max(8, Math.round((2 * config.pingInterval) / 4000) * 4);
    this.app.ws<UserData>("/ws", {
      compression: uws.DISABLED,
      maxPayloadLength: config.maxFrameSize,
      idleTimeout,
      sendPingsAutomatically: true,
      // The hard cap: past twice the limit uWS itself drops the socket, so memory stays bounded
      // even for a client that stopped reading entirely (the 4008 path needs some progress).
      maxBackpressure: 2 * limit + config.maxFrameSize,
      closeOnBackpressureLimit: 1,
      upgrade: (res, req, context) => {
        const origin = req.getHeader("origin");
        const host = req.getHeader("host");
        const key = req.getHeader("sec-websocket-key");
        const offered = req.getHeader("sec-websocket-protocol");
        const extensions = req.getHeader("sec-websocket-extensions");
        const cookieName = config.auth?.cookie;
        const token = cookieName ? readCookie(req.getHeader("cookie"), cookieName) : undefined;
        if (!this.accepting) {
          res.writeStatus("503 Service Unavailable").end("shutting down");
          return;
        }
        if (!this.origins.allows(origin, host)) {
          res.writeStatus("403 Forbidden").end("origin not allowed");
          return;
        }
        let format: Format = "json";
        let protocol = "";
        if (offered !== "") {
          const match = offered
            .split(",")
            .map((p) => p.trim())
            .find((p) => Object.hasOwn(SUBPROTOCOLS, p));
          if (!match) {
            res.writeStatus("400 Bad Request").end("unsupported subprotocol: offer natsedge.v1.json or natsedge.v1.msgpack");
            return;
          }
          protocol = match;
          format = SUBPROTOCOLS[match] as Format;
        }
        res.upgrade<UserData>({ format, token }, key, protocol, extensions, context);
      },
      open: (ws) => {
        const data = ws.getUserData();
        const conn = new WsConnection(ws, data.format, limit);
        conn.session = new Session(conn, this.ctx, data.token);
        data.conn = conn;
        this.connections.add(conn);
        metrics.connections.inc({ transport: "websocket" });
        setTimeout(() => {
          if (!conn.closed && !conn.session.isConnected) {
            conn.session.disconnect(CloseCode.Unauthorized, "no connect command in time", false);
          }
        }, CONNECT_TIMEOUT_MS).unref();
      },
      message: (ws, message, isBinary) => {
        const conn = ws.getUserData().conn as WsConnection;
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
        const conn = ws.getUserData().conn as WsConnection;
        conn.closed = true;
        this.connections.delete(conn);
        conn.session.closed();
        metrics.connections.dec({ transport: "websocket" });
        metrics.disconnects.inc({ code: String(code) });
      },
    });
  }

  publication(pub: Publication): number {
    let sent = 0;
    for (const format of FORMATS) {
      const topic = TOPIC_PREFIX[format] + pub.ch;
      const n = this.app.numSubscribers(topic);
      if (n === 0) continue;
      this.app.publish(topic, encodePubPush(format, pub), format === "msgpack", false);
      sent += n;
    }
    return sent;
  }

  join(ch: string, info: ClientInfo): void {
    this.presenceEvent("join", ch, info);
  }

  leave(ch: string, info: ClientInfo): void {
    this.presenceEvent("leave", ch, info);
  }

  private presenceEvent(kind: "join" | "leave", ch: string, info: ClientInfo): void {
    for (const format of FORMATS) {
      const topic = TOPIC_PREFIX[format] + ch;
      if (this.app.numSubscribers(topic) === 0) continue;
      this.app.publish(topic, encodeJoinLeave(format, kind, ch, info), format === "msgpack", false);
    }
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

