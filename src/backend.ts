import type { Broker } from "./broker/broker.js";
import { MemoryBroker } from "./broker/memory.js";
import { NatsBroker } from "./broker/nats.js";
import type { Config, NatsConfig } from "./config/types.js";
import type { History } from "./history/history.js";
import { MemoryHistory } from "./history/memory.js";
import { NatsHistory } from "./history/nats.js";
import type { Logger } from "./log.js";
import type { Metrics } from "./metrics.js";
import { NatsLink } from "./nats/connection.js";
import { JsLimiter } from "./nats/js-limiter.js";
import { RoundTripProbe } from "./nats/probe.js";
import { PresenceReaper } from "./presence/reaper.js";
import { Streams, type Jsm } from "./nats/streams.js";
import { NatsRevocations } from "./nats/revocations.js";
import { Subjects } from "./nats/subjects.js";
import { MemoryRevocations, type Revocations } from "./sessions/revocations.js";
import { MemoryPresence } from "./presence/memory.js";
import type { Presence } from "./presence/presence.js";
import { NatsPresence } from "./presence/nats.js";

/** The three seams behind the hub, and what it takes to run and stop them. */
export interface Backend {
  broker: Broker;
  history: History;
  presence: Presence;
  /** Server-side disconnects of long-poll and SSE sessions, known to every replica. */
  revocations: Revocations;
  /** False while the broker path is known to be broken. */
  ready(): boolean;
  /** Present in NATS mode: what the NATS server API and the cluster view need. */
  nats?: { link: NatsLink; subjects: Subjects; liveNodes: () => Promise<Set<string>> };
  /** Starts background work that needs the hub running (heartbeats, probes, reaping). */
  start(): Promise<void>;
  close(): Promise<void>;
}

export function memoryBackend(config: Config): Backend {
  const history = new MemoryHistory();
  return {
    broker: new MemoryBroker(history, config.idempotencyWindow),
    history,
    presence: new MemoryPresence(),
    revocations: new MemoryRevocations(),
    ready: () => true,
    start: async () => undefined,
    close: async () => undefined,
  };
}

export async function natsBackend(
  config: Config,
  nats: NatsConfig,
  node: string,
  metrics: Metrics,
  log: Logger,
): Promise<Backend> {
  const link = await NatsLink.open(nats, `natsedge ${node}`, log, metrics);
  const subjects = new Subjects(nats.prefix);
  const jsm = await untilDone(async () => (await link.nc.jetstreamManager()) as Jsm, "JetStream not ready yet", log);
  const streams = new Streams(jsm, subjects, config.namespaces, nats, config.idempotencyWindow, log);
  await untilDone(() => streams.ensureAll(), "JetStream streams not ready yet", log);
  const limiter = new JsLimiter(undefined, undefined, () => metrics.jetstreamRefused.inc());
  metrics.watchJetStream(() => limiter.load);
  const broker = new NatsBroker(link, jsm, streams, subjects, config.namespaces, metrics, log, limiter);
  const history = new NatsHistory(jsm, streams, subjects, metrics, link, limiter);
  const presence = new NatsPresence(jsm, link.nc.jetstream(), subjects, node, log, link, limiter);
  const reaper = new PresenceReaper(presence, broker, config.namespaces, log);
  const revocations = new NatsRevocations(link, jsm, link.nc.jetstream(), subjects, log);
  const probe = new RoundTripProbe(link, subjects.probe(node), metrics, log);
  link.onStatus((event) => {
    if (event === "reconnect") probe.reconnected();
    else probe.disconnected();
  });
  return {
    broker,
    history,
    presence,
    revocations,
    nats: { link, subjects, liveNodes: () => presence.live() },
    ready: () => probe.healthy(),
    async start() {
      await untilDone(() => presence.start(), "presence heartbeat not stored yet", log);
      await untilDone(() => revocations.start(), "session revocations not loaded yet", log);
      await probe.start();
      reaper.start();
    },
    async close() {
      reaper.stop();
      probe.stop();
      await revocations.close();
      await link.drain();
    },
  };
}

/**
 * A NATS cluster that is still forming answers before JetStream has a meta leader (and a stream
 * before it has a leader): start-up waits that out, however long it takes, instead of exiting,
 * which would only restart the same wait. Each attempt logs why it failed, and /readyz says 503
 * meanwhile, so a wait on a configuration JetStream keeps refusing is visible rather than silent.
 */
async function untilDone<T>(op: () => Promise<T>, what: string, log: Logger): Promise<T> {
  const started = Date.now();
  for (let attempt = 1, delay = 250; ; attempt++, delay = Math.min(delay * 2, 5_000)) {
    try {
      return await op();
    } catch (err) {
      log.warn({ err: (err as Error).message, attempt, waitedMs: Date.now() - started, retryInMs: delay }, what);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
