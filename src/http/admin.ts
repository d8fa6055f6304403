import type { AdminConsole } from "../admin/console.js";
import type { Metrics } from "../metrics.js";
import type { TemplatedApp } from "../uws.js";
import { Reply } from "./respond.js";

export interface Readiness {
  ready(): boolean;
}

/**
 * The operator's port: Prometheus metrics and probes, kept off the client-facing port, and the
 * admin console when `adminSecret` is set.
 */
export function attachAdmin(app: TemplatedApp, metrics: Metrics, readiness: Readiness, adminConsole?: AdminConsole): void {
  app.get("/metrics", (res) => {
    const reply = new Reply(res);
    metrics.registry.metrics().then(
      (text) => reply.send(200, text, metrics.registry.contentType),
      () => reply.error(500, "metrics collection failed"),
    );
  });
  app.get("/healthz", (res) => new Reply(res).json(200, { status: "ok" }));
  app.get("/readyz", (res) => {
    const ready = readiness.ready();
    new Reply(res).json(ready ? 200 : 503, { status: ready ? "ready" : "not ready" });
  });
  adminConsole?.attach(app);
  app.any("/*", (res) => new Reply(res).error(404, "not found"));
}
