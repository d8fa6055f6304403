import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { DEMO_PAGE } from "./demo/page.js";
import { hostname } from "node:os";
import { LocalClusterStats, NatsClusterStats } from "./admin/cluster-stats.js";
import { AdminConsole } from "./admin/console.js";
import { NodeReport } from "./admin/node-report.js";
import { NatsServerApi } from "./api/nats.js";
import { ServerOperations } from "./api/operations.js";
import { TokenVerifier } from "./auth/jwt.js";
import { LocalNode, SingleNode, type Cluster } from "./cluster/cluster.js";
import { NatsCluster } from "./cluster/nats.js";
import { memoryBackend, natsBackend, type Backend } from "./backend.js";
import type { Config } from "./config/types.js";
import { attachAdmin } from "./http/admin.js";
import { ServerApi } from "./http/api.js";
import { Listener } from "./http/listener.js";
import { OriginPolicy } from "./http/origin.js";
import { Reply } from "./http/respond.js";
import { ExpirySchedule } from "./delivery/expiry-schedule.js";
import type { Session } from "./delivery/session.js";
import { Hooks } from "./hooks/hooks.js";
import { Hub } from "./hub/hub.js";
import { Limits } from "./limits/limits.js";
import type { Logger } from "./log.js";
import { Metrics } from "./metrics.js";
import { nodeToken } from "./nats/subjects.js";
import { SessionSigner } from "./http/session-token.js";
import { loadCertificate } from "./http/tls.js";
import { TlsReloader, type ReloadReason } from "./http/tls-reload.js";
import { LongPollTransport } from "./transport/longpoll.js";
import { SseTransport } from "./transport/sse.js";
import { WebSocketTransport } from "./transport/websocket.js";
import { loadUws, type TemplatedApp } from "./uws.js";
import { lifecycleEvents } from "./events/wiring.js";
import type { LifecycleEvents } from "./events/lifecycle.js";
import { version } from "./version.js";
import { OtlpExporter } from "./tracing/otlp.js";
import { Tracer } from "./tracing/tracer.js";

/**
 * The browser SDK (always) and the chat demo (when enabled), read once at start-up. The SDK is
 * several ES modules that import each other by relative paths, so they are served side by side
 * under /natsedge-client/; /natsedge-client.js, the URL pages import, re-exports the entry.
 */
function staticRoutes(demo: boolean): (app: TemplatedApp) => void {
  const dir = fileURLToPath(new URL("./client/", import.meta.url));
  const modules = readdirSync(dir)
    .filter((f) => f.endsWith(".js"))
    .map((f) => [f, readFileSync(dir + f)] as const);
  const entry = 'export * from "./natsedge-client/index.js";\n';
  const js = "text/javascript; charset=utf-8";
  const cache = { "Cache-Control": "public, max-age=300" };
  return (app) => {
    app.get("/natsedge-client.js", (res) => new Reply(res).send(200, entry, js, cache));
    for (const [name, body] of modules) {
      app.get(`/natsedge-client/${name}`, (res) => new Reply(res).send(200, body, js, cache));
    }
    if (demo) app.get("/demo", (res) => new Reply(res).send(200, DEMO_PAGE, "text/html; charset=utf-8"));
  };
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
  private draining = false;
  private started = false;
  private natsApi: NatsServerApi | undefined;
  private cluster: Cluster | undefined;
  private tlsReloader: TlsReloader | undefined;

  private constructor(
    private readonly config: Config,
    private readonly log: Logger,
    private readonly hub: Hub,
    private readonly backend: Backend,
    private readonly transports: { ws: WebSocketTransport; longPoll: LongPollTransport; sse: SseTransport },
    private readonly listeners: { client: Listener; admin: Listener },
    private readonly verifier: TokenVerifier | undefined,
    readonly node: string,
    private readonly lifecycle: { events: LifecycleEvents; limits: Limits; exporter: OtlpExporter | undefined },
    private readonly adminConsole: AdminConsole | undefined,
  ) {}

  get ready(): boolean {
    return this.started && !this.draining && this.backend.ready();
  }

  static async start(
    config: Config,
    log: Logger,
    opts: { sharePort?: boolean } = {},
  ): Promise<{ gateway: Gateway; ports: ListeningPorts }> {
    // Both before anything connects: refusing the uWS fallback, and a certificate that cannot be served.
    loadUws();
    const certificate = config.tls && loadCertificate(config.tls);
    const node = nodeToken(`${hostname()}-${process.pid}-${randomBytes(2).toString("hex")}`);
    const metrics = new Metrics();
    // The admin port opens before the backend is waited for (NATS may still be starting, or
    // JetStream electing its leaders): orchestrators see the process alive (/healthz 200) but
    // not ready (/readyz 503) instead of a port that does not answer. The client port stays
    // closed until start-up completes.
    let gateway: Gateway | undefined = undefined;
    const adminConsole = config.adminSecret === undefined ? undefined : new AdminConsole(config, config.adminSecret, metrics, log);
    const admin = new Listener(
      { name: "admin", host: config.adminHost, port: config.adminPort, share: false },
      (app) => attachAdmin(app, metrics, { ready: () => gateway?.ready ?? false }, adminConsole),
      config.adminTls ? certificate : undefined,
    );
    const adminPort = admin.start();
    log.info({ adminPort, node }, "admin listening; not ready until start-up completes");
    const backend = config.nats ? await natsBackend(config, config.nats, node, metrics, log) : memoryBackend(config);
    const events = lifecycleEvents(config, backend, node, metrics, log);
    const exporter = config.tracing && new OtlpExporter(
      { url: config.tracing.otlpUrl, serviceName: config.tracing.serviceName, instance: node },
      (spans, reason) => metrics.spansDropped.inc({ reason }, spans),
      log,
    );
    const tracer = config.tracing && exporter && new Tracer(exporter, config.tracing.sampleRatio);
    const hub = new Hub({
      ...backend,
      metrics,
      log,
      presenceGraceMs: config.presenceGrace,
      maxPresenceMembers: config.maxPresenceMembers,
      events,
      tracer,
    });
    const userWatch = events.tracksUsers ? { changed: (user: string, present?: () => boolean) => events.userChanged(user, present), graceMs: config.presenceGrace } : undefined;
    const limits = new Limits(config, backend.presence, metrics, log, userWatch, backend.userCounts);
    const verifier = config.auth ? new TokenVerifier(config.auth, log, metrics) : undefined;
    const origins = new OriginPolicy(config.allowedOrigins, config.embedded && !config.allowedOrigins);
    const hooks = new Hooks(config.hooks, backend.nats && { nc: backend.nats.link.nc, subjects: backend.nats.subjects }, metrics, log, tracer);
    const tokenExpiry = new ExpirySchedule<Session>((s) => s.expired());
    const ctx = { config, hub, hooks, limits, verifier, metrics, log, node, tokenExpiry, events, tracer };
    const signer = new SessionSigner(config.sessionSecret, (user) => backend.revocations.revokedAt(user));
    const transports = {
      ws: new WebSocketTransport(ctx, origins),
      longPoll: new LongPollTransport(ctx, origins, signer),
      sse: new SseTransport(ctx, origins, signer),
    };
    const local = new LocalNode(node, version(), hub, () => transports.ws.size + transports.sse.size);
    const natsCluster = backend.nats && new NatsCluster(backend.nats, local, log);
    const cluster = natsCluster ?? new SingleNode(local);
    const report = new NodeReport(local, hub, metrics, backend.nats?.link.nc);
    // Every replica answers the console's questions, console or not, so one on any replica sees them all.
    const adminStats = natsCluster ? new NatsClusterStats(natsCluster, report) : new LocalClusterStats(report);
    const ops = new ServerOperations(config, hub, cluster);
    for (const t of Object.values(transports)) hub.addSink(t);
    const api = new ServerApi(config, ops, origins, limits, log);
    const statics = staticRoutes(config.demo);
    const clientRoutes = (app: TemplatedApp): void => {
      for (const t of Object.values(transports)) t.attach(app);
      api.attach(app);
      statics(app);
      app.any("/*", (res) => new Reply(res).error(404, "not found"));
    };

    const listeners = {
      client: new Listener(
        { name: "client", host: config.host, port: config.port, share: opts.sharePort ?? false },
        clientRoutes,
        certificate,
      ),
      admin,
    };
    gateway = new Gateway(config, log, hub, backend, transports, listeners, verifier, node, { events, limits, exporter }, adminConsole);
    gateway.cluster = cluster;

    await hub.start();
    // Answering before the heartbeat announces this gateway: askers wait for every live one.
    cluster.start();
    await backend.start();
    if (backend.nats) {
      gateway.natsApi = new NatsServerApi(backend.nats.link.nc, backend.nats.subjects, ops, log);
      gateway.natsApi.start();
    }
    adminConsole?.ready({ hub, ops, cluster: adminStats });
    // Keys before clients: a token refused for want of keys closes with 4001, and clients do not
    // reconnect after that.
    await verifier?.start();
    const port = listeners.client.start();
    if (certificate) {
      const served = config.adminTls ? [listeners.client, listeners.admin] : [listeners.client];
      gateway.tlsReloader = new TlsReloader(certificate, served, metrics, log);
    }
    gateway.started = true;
    const tls = certificate ? { tls: true, adminTls: config.adminTls } : {};
    log.info({ port, adminPort, node, broker: config.nats ? "nats" : "memory", ...tls }, "listening");
    return { gateway, ports: { port, adminPort } };
  }

  /** Serves the certificate files' current contents to new connections, if they changed and are valid. */
  reloadTls(reason: ReloadReason): void {
    void this.tlsReloader?.reload(reason);
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
    this.tlsReloader?.close();
    this.verifier?.close();
    this.listeners.client.close();
    longPoll.drain();
    await Promise.all([ws.drain(this.config.drainPeriod), sse.drain(this.config.drainPeriod)]);
    this.natsApi?.stop();
    this.cluster?.stop();
    await this.lifecycle.limits.users.flush();
    this.adminConsole?.close();
    await this.hub.close();
    // After the hub's last leaves, before the link closes: the last transitions are settled and
    // the webhook gets what waits.
    await this.lifecycle.events.close();
    await this.backend.close();
    // The last spans (the drain's) go out before the process does.
    await this.lifecycle.exporter?.close();
    this.listeners.admin.close();
    this.log.info("stopped");
  }
}
