import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export type PublishSource = "client" | "api" | "broker";

/** Every series the gateway exports; one registry per gateway so tests can run several. */
export class Metrics {
  readonly registry = new Registry();

  readonly connections = new Gauge({
    name: "natsedge_connections",
    help: "Open client connections",
    labelNames: ["transport"] as const,
    registers: [this.registry],
  });
  readonly subscriptions = new Gauge({
    name: "natsedge_subscriptions",
    help: "Client channel subscriptions held by this gateway",
    registers: [this.registry],
  });
  readonly channels = new Gauge({
    name: "natsedge_channels",
    help: "Channels with at least one local subscriber (= broker subscriptions)",
    registers: [this.registry],
  });
  readonly publications = new Counter({
    name: "natsedge_publications_total",
    help: "Publications accepted, by where they came from",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly messagesSent = new Counter({
    name: "natsedge_messages_sent_total",
    help: "Publication pushes handed to client connections",
    registers: [this.registry],
  });
  readonly deliveryLatency = new Histogram({
    name: "natsedge_delivery_latency_seconds",
    help: "Time from a publication entering the system to its fan-out on this gateway",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: "natsedge_errors_total",
    help: "Error replies sent to clients, by code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });
  readonly disconnects = new Counter({
    name: "natsedge_disconnects_total",
    help: "Client connections closed, by close code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}
