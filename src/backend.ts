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
import { PresenceReaper, type ReapListener } from "./presence/reaper.js";
import { NatsTransitionState } from "./events/nats-state.js";
import type { EventOutlet } from "./events/publisher.js";
import { MemoryTransitionState, type TransitionState } from "./events/transitions.js";
import { Streams, type Jsm } from "./nats/streams.js";
import { NatsRevocations } from "./nats/revocations.js";
import { NatsUserCounts } from "./nats/user-counts.js";
import { untilDone } from "./nats/until-done.js";
import { LocalUserCounts, type UserCounts } from "./limits/user-counts.js";
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
  /** Users' connection counts on the other gateways (maxConnectionsPerUser). */
  userCounts: UserCounts;
  /** False while the broker path is known to be broken. */
  ready(): boolean;
  /** The on/off bits lifecycle transitions are decided with (src/events/transitions.ts). */
  transitions: TransitionState;
  /** Present in NATS mode: publishes lifecycle events to `<prefix>.event.<type>`. */
  eventOutlet?: EventOutlet;
  /** Present in NATS mode: tells of presence entries removed because their gateway died. */
  onReaped?(listener: ReapListener): void;
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
    userCounts: new LocalUserCounts(),
    transitions: new MemoryTransitionState(),
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
  const streams = new Streams(jsm, subjects, config.namespaces, nats, config.idempotencyWindow, config.events !== undefined, log);
  await untilDone(() => streams.ensureAll(), "JetStream streams not ready yet", log);
  const limiter = new JsLimiter(undefined, undefined, () => metrics.jetstreamRefused.inc());
  metrics.watchJetStream(() => limiter.load);
  const broker = new NatsBroker(link, jsm, streams, subjects, config.namespaces, metrics, log, limiter, config.tracing !== undefined);
  const history = new NatsHistory(jsm, streams, subjects, metrics, link, limiter);
  const presence = new NatsPresence(jsm, link.nc.jetstream(), subjects, node, log, link, limiter);
  const reaper = new PresenceReaper(presence, broker, config.namespaces, log);
  const revocations = new NatsRevocations(link, jsm, link.nc.jetstream(), subjects, log);
  const userCounts = new NatsUserCounts(link.nc.jetstream(), subjects, node, link, () => presence.live(), log);
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
    userCounts,
    transitions: new NatsTransitionState(jsm, link.nc.jetstream(), subjects, limiter),
    eventOutlet: (event) => link.nc.publish(subjects.event(event.type), JSON.stringify(event)),
    onReaped: (listener) => reaper.onReaped(listener),
    nats: { link, subjects, liveNodes: () => presence.live() },
    ready: () => probe.healthy(),
    async start() {
      await untilDone(() => presence.start(), "presence heartbeat not stored yet", log);
      await untilDone(() => revocations.start(), "session revocations not loaded yet", log);
      // The probe before the counts: every gateway's counts (thousands of messages) then arrive
      // ahead of anything else on the connection, and the first probe would wait for all of them.
      await probe.start();
      // Not awaited (NatsUserCounts.start says why): the gateway listens while they are followed.
      userCounts.start();
      reaper.start();
    },
    async close() {
      reaper.stop();
      probe.stop();
      await revocations.close();
      await userCounts.close();
      await link.drain();
    },
  };
}
