import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from "prom-client";

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
  readonly channelSubscribes = new Counter({
    name: "natsedge_channel_subscribes_total",
    help: "Broker subscriptions made for channels (the first local subscriber of a channel)",
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

  readonly eventsPublished = new Counter({
    name: "natsedge_events_published_total",
    help: "Lifecycle events this gateway emitted, by type (docs/events.md)",
    labelNames: ["type"] as const,
    registers: [this.registry],
  });
  readonly webhookDeliveries = new Counter({
    name: "natsedge_webhook_deliveries_total",
    help: "Webhook batch POSTs by result: ok, retry (failed, tried again), failed (out of tries), rejected (4xx)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly webhookEventsDropped = new Counter({
    name: "natsedge_webhook_events_dropped_total",
    help: "Lifecycle events never delivered to the webhook: queue full (oldest dropped) or batch out of tries",
    registers: [this.registry],
  });
  readonly spansDropped = new Counter({
    name: "natsedge_trace_spans_dropped_total",
    help: "Trace spans never sent to the collector: queue_full (the collector is slow or away) or export_failed (refused, or no answer in time)",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly connectionsRefused = new Counter({
    name: "natsedge_connections_refused_total",
    help: "Connections refused by a limit: max_connections, per_ip, connect_rate, per_user, no_token",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly rateLimited = new Counter({
    name: "natsedge_rate_limited_total",
    help: "Requests refused with 429 by a rate limit: command, poll (held polls per session), apikey (failed API keys per address), admin_login (wrong admin secrets per address), presence (channel full)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly httpRefused = new Counter({
    name: "natsedge_http_refused_total",
    help: "HTTP requests refused before they were handled: header_too_large, body_timeout, body_too_large, bad_upgrade",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly presenceEventsDropped = new Counter({
    name: "natsedge_presence_events_dropped_total",
    help: "Join/leave pushes not sent because a channel exceeded its per-second budget",
    registers: [this.registry],
  });

  readonly natsConnected = new Gauge({
    name: "natsedge_nats_connected",
    help: "1 while the NATS connection is up (always 0 in memory mode)",
    registers: [this.registry],
  });
  readonly natsReconnects = new Counter({
    name: "natsedge_nats_reconnects_total",
    help: "NATS reconnections",
    registers: [this.registry],
  });
  readonly brokerRoundtrip = new Histogram({
    name: "natsedge_broker_roundtrip_seconds",
    help: "Publish -> self-subscribe round trip through the broker (health probe)",
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly recoveries = new Counter({
    name: "natsedge_recoveries_total",
    help: "Subscribe-with-since recoveries, by result and where the missed publications came from (recent: this gateway's memory; history: a history read)",
    labelNames: ["result", "source"] as const,
    registers: [this.registry],
  });
  readonly gapsDetected = new Counter({
    name: "natsedge_gaps_detected_total",
    help: "Gaps in a channel's live stream seen by this gateway (e.g. after a NATS reconnect)",
    registers: [this.registry],
  });
  readonly gapsFilled = new Counter({
    name: "natsedge_gap_publications_filled_total",
    help: "Publications fetched from the stream to fill gaps in live delivery",
    registers: [this.registry],
  });
  /** What the JetStream limiter reports (NATS mode); read when /metrics is scraped. */
  private jetstreamLoad: (() => { active: number; waiting: number }) | undefined;
  readonly jetstreamRequests = new Gauge({
    name: "natsedge_jetstream_requests",
    help: "JetStream API requests of this gateway in flight (state=active) and waiting for a slot (state=waiting)",
    labelNames: ["state"] as const,
    registers: [this.registry],
    collect: () => {
      const load = this.jetstreamLoad?.();
      if (!load) return;
      this.jetstreamRequests.set({ state: "active" }, load.active);
      this.jetstreamRequests.set({ state: "waiting" }, load.waiting);
    },
  });
  readonly jetstreamRefused = new Counter({
    name: "natsedge_jetstream_refused_total",
    help: "Client-driven JetStream reads refused with 503 because too many requests were waiting",
    registers: [this.registry],
  });

  watchJetStream(load: () => { active: number; waiting: number }): void {
    this.jetstreamLoad = load;
  }

  readonly continuityLost = new Counter({
    name: "natsedge_continuity_lost_total",
    help: "Times a history channel's live delivery could not be proven continuous (unfillable gap, failed fill, recreated stream); its subscribers were told to recover",
    registers: [this.registry],
  });
  readonly invalidPayloads = new Counter({
    name: "natsedge_invalid_payloads_total",
    help: "Messages from NATS dropped because their payload was not valid JSON/MessagePack",
    registers: [this.registry],
  });

  readonly longPollRequests = new Counter({
    name: "natsedge_longpoll_requests_total",
    help: "Long-poll requests by outcome (data, timeout, position, rpc, error)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly longPollHeld = new Gauge({
    name: "natsedge_longpoll_held",
    help: "Polls currently held open waiting for a publication",
    registers: [this.registry],
  });
  readonly longPollDuration = new Histogram({
    name: "natsedge_longpoll_duration_seconds",
    help: "Time from a long-poll request's arrival to its answer",
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 25, 30, 60],
    registers: [this.registry],
  });

  readonly hookCalls = new Counter({
    name: "natsedge_hook_calls_total",
    help: "Backend hook calls by kind and result (ok, denied, timeout, unavailable, invalid, busy)",
    labelNames: ["kind", "result"] as const,
    registers: [this.registry],
  });
  readonly hookDuration = new Histogram({
    name: "natsedge_hook_duration_seconds",
    help: "Time from asking a backend hook to having its answer (or giving up), by kind and client transport",
    labelNames: ["kind", "transport"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly tlsReloads = new Counter({
    name: "natsedge_tls_reloads_total",
    help: "Certificate reloads (SIGHUP or changed files) by result; after an error the previous certificate stays in service",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  readonly eventLoopLag = new EventLoopLag(
    "natsedge_event_loop_lag_seconds",
    "How late the event loop ran a timer due every 100 ms, one sample per tick (a stall of d seconds shows as one sample of up to d)",
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  );

  readonly jwksFetches = new Counter({
    name: "natsedge_jwks_fetches_total",
    help: "Fetches of auth.jwksUrl by cause and result; after a failure the keys held stay in use",
    labelNames: ["reason", "result"] as const,
    registers: [this.registry],
  });

  readonly jwksLoadedAt = new Gauge({
    name: "natsedge_jwks_last_success_timestamp_seconds",
    help: "When the key set from auth.jwksUrl was last fetched successfully (Unix time)",
    registers: [this.registry],
  });

  constructor() {
    // prom-client's own lag monitor (nodejs_eventloop_lag_*) is another timer: ticking with ours,
    // started in the same turn, the two wake an idle loop once per period instead of twice.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: LAG_RESOLUTION_MS });
    // prom-client's Histogram counts one observe() at a time and cannot take Node's sampled
    // distribution, so this series is its own collector, read in the same text format.
    this.registry.registerMetric(this.eventLoopLag as unknown as Metric);
  }
}

/**
 * Node samples the loop in C++ (nothing per message here); the ticks are spaced this far apart.
 * Each tick wakes an idle loop: at 10 ms those wake-ups cost an idle gateway ~0.7 % of a core,
 * more than all its other timers together. At 100 ms a stall shorter than a tick is caught with
 * probability d / 100 ms, which over a scrape interval still gives the distribution.
 */
const LAG_RESOLUTION_MS = 100;

/**
 * Event-loop delay as a Prometheus histogram. Node's monitor keeps the samples; each scrape moves
 * them into cumulative bucket counts and resets the monitor, so nothing runs between scrapes.
 */
export class EventLoopLag {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly monitor: IntervalHistogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  /** Samples at or below each bound, since start. */
  private readonly atOrBelow: number[];
  private count = 0;
  private sum = 0;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.atOrBelow = buckets.map(() => 0);
    this.monitor.enable();
  }

  /** Folds the samples taken since the last call into the totals. */
  drain(): void {
    const h = this.monitor;
    const n = h.count;
    if (n === 0) return;
    // Each sample is the whole interval between ticks (resolution + delay): the delay is the rest.
    const res = LAG_RESOLUTION_MS * 1e6;
    const min = h.min - res;
    const max = h.max - res;
    // The k-th smallest sample, k in 1..n: the histogram's value at rank k.
    const ranked = (k: number): number => h.percentile((100 * k) / n) - res;
    let low = 0;
    this.buckets.forEach((bound, i) => {
      const ns = bound * 1e9;
      let below: number;
      if (ns >= max) below = n;
      else if (ns < min) below = 0;
      else {
        // Largest k with ranked(k) <= bound; the bounds rise, so the search starts where the last ended.
        let hi = n;
        while (low < hi) {
          const mid = Math.ceil((low + hi) / 2);
          if (ranked(mid) <= ns) low = mid;
          else hi = mid - 1;
        }
        below = low;
      }
      low = below;
      this.atOrBelow[i]! += below;
    });
    this.count += n;
    this.sum += (Math.max(0, h.mean - res) * n) / 1e9;
    h.reset();
  }

  /** Samples and summed lag (seconds) since start, for readers other than Prometheus. */
  totals(): { count: number; sum: number } {
    this.drain();
    return { count: this.count, sum: this.sum };
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> }> {
    this.drain();
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: [
        ...this.buckets.map((le, i) => ({ metricName: `${this.name}_bucket`, labels: { le }, value: this.atOrBelow[i]! })),
        { metricName: `${this.name}_bucket`, labels: { le: "+Inf" }, value: this.count },
        { metricName: `${this.name}_sum`, labels: {}, value: this.sum },
        { metricName: `${this.name}_count`, labels: {}, value: this.count },
      ],
    };
  }

  reset(): void {
    this.monitor.reset();
    this.atOrBelow.fill(0);
    this.count = 0;
    this.sum = 0;
  }
}
