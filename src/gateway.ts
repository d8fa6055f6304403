import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { TokenVerifier } from "./auth/jwt.js";
import { MemoryBroker } from "./broker/memory.js";
import type { Config } from "./config/types.js";
import { MemoryHistory } from "./history/memory.js";
import { attachAdmin } from "./http/admin.js";
import { ServerApi } from "./http/api.js";
import { OriginPolicy } from "./http/origin.js";
import { Reply } from "./http/respond.js";
import { Hub } from "./hub.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { MemoryPresence } from "./presence/memory.js";
import { WebSocketTransport } from "./transport/websocket.js";
import { loadUws, type TemplatedApp, type us_listen_socket } from "./uws.js";

export interface ListeningPorts {
  port: number;
  adminPort: number;
}

/**
 * The composition root: builds broker, hub, transports and HTTP surfaces from the config, and
 * owns the order of start-up and shutdown.
 */
export class Gateway {
  private readonly listenSockets: us_listen_socket[] = [];
  private draining = false;
  private started = false;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly hub: Hub,
    private readonly ws: WebSocketTransport,
    readonly node: string,
  ) {}

  static async start(config: Config, log: Logger): Promise<{ gateway: Gateway; ports: ListeningPorts }> {
    const uws = loadUws();
    const node = `${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`;
    const metrics = new Metrics();
    const history = new MemoryHistory();
    const broker = new MemoryBroker(history, config.idempotencyWindow);
    const presence = new MemoryPresence();
    const hub = new Hub(broker, history, presence, metrics, log);
    const verifier = config.auth ? new TokenVerifier(config.auth) : undefined;
    const origins = new OriginPolicy(config.allowedOrigins, config.embedded && !config.allowedOrigins);

    const app = uws.App();
    const ws = new WebSocketTransport(app, { config, hub, verifier, metrics, log, node }, origins);
    ws.attach();
    hub.addSink(ws);
    new ServerApi(config, hub, origins, log).attach(app);
    app.any("/*", (res) => new Reply(res).error(404, "not found"));

    const adminApp = uws.App();
    const gateway = new Gateway(config, log, hub, ws, node);
    attachAdmin(adminApp, metrics, { ready: () => gateway.started && !gateway.draining });

    await hub.start();
    const port = await gateway.listen(app, config.host, config.port);
    const adminPort = await gateway.listen(adminApp, config.adminHost, config.adminPort);
    gateway.started = true;
    log.info({ port, adminPort, node }, "listening");
    return { gateway, ports: { port, adminPort } };
  }

  private listen(app: TemplatedApp, host: string, port: number): Promise<number> {
    const uws = loadUws();
    return new Promise((resolve, reject) => {
      app.listen(host, port, (socket) => {
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
   * are asked to reconnect over the drain period, then the broker is closed.
   */
  async shutdown(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    this.log.info({ clients: this.ws.size, drainPeriodMs: this.config.drainPeriod }, "draining");
    const uws = loadUws();
    const [clientSocket, adminSocket] = this.listenSockets;
    if (clientSocket) uws.us_listen_socket_close(clientSocket);
    await this.ws.drain(this.config.drainPeriod);
    await this.hub.close();
    if (adminSocket) uws.us_listen_socket_close(adminSocket);
    this.log.info("stopped");
  }
}
