import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, Events, type ConnectionOptions, type NatsConnection } from "nats";
import type { NatsConfig } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/**
 * The gateway's one NATS connection: reconnects forever with jittered backoff, and keeps the
 * `connected` flag and metrics true to what the client library reports.
 */
export class NatsLink {
  connected = true;
  private readonly listeners: Array<(event: "disconnect" | "reconnect") => void> = [];

  private constructor(
    readonly nc: NatsConnection,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {
    metrics.natsConnected.set(1);
    void this.watch();
  }

  static async open(config: NatsConfig, name: string, log: Logger, metrics: Metrics): Promise<NatsLink> {
    const opts: ConnectionOptions = {
      servers: config.servers,
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      reconnectJitter: 500,
      reconnectJitterTLS: 1000,
      pingInterval: 10_000,
      maxPingOut: 3,
      timeout: 5_000,
      // Otherwise every request (each JetStream publish and API call) captures two stack traces
      // up front to decorate a failure it rarely has: a tenth of the event loop's busy time in a
      // reconnect storm. Our own logs name what failed.
      noAsyncTraces: true,
    };
    if (config.user !== undefined) {
      opts.user = config.user;
      opts.pass = config.password;
    }
    if (config.token !== undefined) opts.token = config.token;
    if (config.credsFile !== undefined) {
      const file = config.credsFile;
      opts.authenticator = credsAuthenticator(() => readFileSync(file));
    }
    if (config.tls) opts.tls = { ...config.tls };
    log.info({ servers: config.servers }, "connecting to NATS");
    // Start-up waits for NATS rather than failing (in a cluster deploy, start order is not
    // guaranteed), saying why each attempt failed; wrong credentials are fatal at once.
    for (let delay = 500; ; delay = Math.min(delay * 2, 10_000)) {
      try {
        const nc = await connect(opts);
        log.info({ server: nc.getServer() }, "connected to NATS");
        return new NatsLink(nc, log, metrics);
      } catch (err) {
        const e = err as { code?: string; message?: string };
        if (e.code === "AUTHORIZATION_VIOLATION" || e.code === "AUTHENTICATION_EXPIRED" || /authoriz/i.test(e.message ?? "")) {
          throw new Error(`NATS refused the credentials: ${e.message ?? String(err)}`);
        }
        log.warn({ err: e.message ?? String(err), retryInMs: delay }, "cannot connect to NATS yet");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Fails fast while disconnected, instead of letting a request wait out its timeout. */
  require(): void {
    if (!this.connected) throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable (NATS disconnected)");
  }

  onStatus(listener: (event: "disconnect" | "reconnect") => void): void {
    this.listeners.push(listener);
  }

  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === Events.Disconnect) {
        this.connected = false;
        this.metrics.natsConnected.set(0);
        this.log.warn({ server: s.data }, "NATS disconnected");
        for (const l of this.listeners) l("disconnect");
      } else if (s.type === Events.Reconnect) {
        this.connected = true;
        this.metrics.natsConnected.set(1);
        this.metrics.natsReconnects.inc();
        this.log.info({ server: s.data }, "NATS reconnected");
        for (const l of this.listeners) l("reconnect");
      } else if (s.type === Events.Error) {
        this.log.warn({ err: s.data }, "NATS async error");
      }
    }
  }

  async drain(): Promise<void> {
    if (this.nc.isClosed()) return;
    try {
      await this.nc.drain();
    } catch (err) {
      this.log.warn({ err }, "NATS drain failed");
      await this.nc.close();
    }
  }
}
