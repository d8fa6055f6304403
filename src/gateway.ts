import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { DEMO_PAGE } from "./demo/page.js";
import { hostname } from "node:os";
import { NatsServerApi } from "./api/nats.js";
import { ServerOperations } from "./api/operations.js";
import { TokenVerifier } from "./auth/jwt.js";
import { memoryBackend, natsBackend, type Backend } from "./backend.js";
import type { Config } from "./config/types.js";
import { attachAdmin } from "./http/admin.js";
import { ServerApi } from "./http/api.js";
import { OriginPolicy } from "./http/origin.js";
import { Reply } from "./http/respond.js";
import { Hub } from "./hub.js";
import { Limits } from "./limits/limits.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { nodeToken } from "./nats/subjects.js";
import { SessionSigner } from "./http/session-token.js";
import { LongPollTransport } from "./transport/longpoll.js";
import { SseTransport } from "./transport/sse.js";
import { WebSocketTransport } from "./transport/websocket.js";
import { loadUws, type TemplatedApp, type us_listen_socket } from "./uws.js";

/**
 * The native listen takes (host, port, options, cb); the bundled typings only declare the form
 * without a host. LIBUS_LISTEN_EXCLUSIVE_PORT is 1 in uSockets.
 */
const EXCLUSIVE_PORT = 1;
type ListenWithOptions = (
  host: string,
  port: number,
  options: number,
  cb: (socket: us_listen_socket | false) => void,
) => TemplatedApp;
function listenWithOptions(
  app: TemplatedApp,
  host: string,
  port: number,
  options: number,
  cb: (socket: us_listen_socket | false) => void,
): void {
  (app.listen as unknown as ListenWithOptions).call(app, host, port, options, cb);
}

/** The browser SDK (always) and the chat demo (when enabled), read once at start-up. */
function attachStatic(app: TemplatedApp, demo: boolean): void {
  const sdk = readFileSync(fileURLToPath(new URL("./client/index.js", import.meta.url)));
  app.get("/natsedge-client.js", (res) =>
    new Reply(res).send(200, sdk, "text/javascript; charset=utf-8", { "Cache-Control": "public, max-age=300" }),
  );
  if (demo) app.get("/demo", (res) => new Reply(res).send(200, DEMO_PAGE, "text/html; charset=utf-8"));
}

export interface ListeningPorts {
  port: number;
  adminPort: number;
}

/**
 * The composition root: builds the backend (memory or NATS), hub, transports and HTTP surfaces
 * from the config, and owns the order of start-up and shutdown.
 */
export class Gateway {
  private readonly listenSockets: us_listen_socket[] = [];
  private draining = false;
  private started = false;
  private natsApi: NatsServerApi | undefined;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly hub: Hub,
    private readonly backend: Backend,
    private readonly transports: { ws: WebSocketTransport; longPoll: LongPollTransport; sse: SseTransport },
    readonly node: string,
  ) {}

  get ready(): boolean {
    return this.started && !this.draining && this.backend.ready();
  }

  static async start(
    config: Config,
    log: Logger,
    opts: { sharePort?: boolean } = {},
  ): Promise<{ gateway: Gateway; ports: ListeningPorts }> {
    const uws = loadUws();
    const node = nodeToken(`${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`);
    const metrics = new Metrics();
    const backend = config.nats
      ? await natsBackend(config, config.nats, node, metrics, log)
      : memoryBackend(config);
    const hub = new Hub(backend.broker, backend.history, backend.presence, metrics, log, config.presenceGrace, config.maxPresenceMembers);
    const limits = new Limits(config, backend.presence, metrics, log);
    const verifier = config.auth ? new TokenVerifier(config.auth) : undefined;
    const origins = new OriginPolicy(config.allowedOrigins, config.embedded && !config.allowedOrigins);
    const ops = new ServerOperations(config, hub);

    const app = uws.App();
    const ctx = { config, hub, limits, verifier, metrics, log, node };
    const signer = new SessionSigner(config.sessionSecret);
    const transports = {
      ws: new WebSocketTransport(app, ctx, origins),
      longPoll: new LongPollTransport(app, ctx, origins, signer),
      sse: new SseTransport(app, ctx, origins, signer),
    };
    for (const t of Object.values(transports)) {
      t.attach();
      hub.addSink(t);
    }
    new ServerApi(config, ops, origins, limits, log).attach(app);
    attachStatic(app, config.demo);
    app.any("/*", (res) => new Reply(res).error(404, "not found"));

    const gateway = new Gateway(config, log, hub, backend, transports, node);
    const adminApp = uws.App();
    attachAdmin(adminApp, metrics, { ready: () => gateway.ready });

    await hub.start();
    await backend.start();
    if (backend.nats) {
      gateway.natsApi = new NatsServerApi(backend.nats.link.nc, backend.nats.subjects, ops, log);
      gateway.natsApi.start();
    }
    const adminPort = await gateway.listen(adminApp, config.adminHost, config.adminPort, false);
    const port = await gateway.listen(app, config.host, config.port, opts.sharePort ?? false);
    gateway.started = true;
    log.info({ port, adminPort, node, broker: config.nats ? "nats" : "memory" }, "listening");
    return { gateway, ports: { port, adminPort } };
  }

  /**
   * uWS shares ports (SO_REUSEPORT) by default, which would let a second gateway on the same port
   * start silently; only workers share on purpose.
   */
  private listen(app: TemplatedApp, host: string, port: number, share: boolean): Promise<number> {
    const uws = loadUws();
    return new Promise((resolve, reject) => {
      listenWithOptions(app, host, port, share ? 0 : EXCLUSIVE_PORT, (socket) => {
        if (!socket) {
          reject(new Error(`cannot listen on ${host}:${port} (in use or not permitted)`));
          return;
        }
        this.listenSockets.push(socket);
        resolve(uws.us_socket_local_port(socket));
      });
    });
  }

  /**
   * Readiness goes false first (load balancers stop sending), the client port closes, clients
   * are asked to reconnect over the drain period, then the broker is drained.
   */
  async shutdown(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const { ws, longPoll, sse } = this.transports;
    this.log.info({ clients: ws.size + sse.size, drainPeriodMs: this.config.drainPeriod }, "draining");
    const uws = loadUws();
    const [adminSocket, clientSocket] = this.listenSockets;
    if (clientSocket) uws.us_listen_socket_close(clientSocket);
    longPoll.drain();
    await Promise.all([ws.drain(this.config.drainPeriod), sse.drain(this.config.drainPeriod)]);
    this.natsApi?.stop();
    await this.hub.close();
    await this.backend.close();
    if (adminSocket) uws.us_listen_socket_close(adminSocket);
    this.log.info("stopped");
  }
}
