import type { Broker, BrokerHandler, ControlMessage, PublishOptions, PublishResult } from "../broker/broker.js";
import type { HistoryOptions, NamespaceOptions } from "../config/types.js";
import type { History, HistoryQuery, HistoryResult } from "../history/history.js";
import type { Logger } from "../log.js";
import type { Metrics, PublishSource } from "../metrics.js";
import { PresenceAnnouncer } from "../presence/announcer.js";
import { PresenceCapacity } from "../presence/capacity.js";
import type { Presence, PresenceStats } from "../presence/presence.js";
import type { ClientInfo, Publication, StreamPosition } from "../publication.js";
import type { Revocations } from "../sessions/revocations.js";
import type { LifecycleEvents } from "../events/lifecycle.js";
import { backendCall } from "./backend-call.js";
import { ChannelTable, type LocalChannel } from "./channels.js";
import { SharedReads } from "./shared-reads.js";
import { UserRegistry, type HubSession, type UserSession } from "./users.js";
import { SpanKind, type Tracer } from "../tracing/tracer.js";

export type { HubSession, UserSession } from "./users.js";
export type { LocalChannel } from "./channels.js";

/** Where the hub hands publications and presence events for local delivery (a transport). */
export interface FanoutSink {
  publication(pub: Publication): number;
  join(ch: string, info: ClientInfo): void;
  leave(ch: string, info: ClientInfo): void;
  /**
   * Delivery of a history channel breaks here: its subscribers must recover from history before
   * they may take another publication (see docs/protocol.md, Recovery contract).
   */
  continuityLost(ch: string, reason: string): void;
}

export interface HubParts {
  broker: Broker;
  history: History;
  presence: Presence;
  revocations: Revocations;
  metrics: Metrics;
  log: Logger;
  presenceGraceMs: number;
  maxPresenceMembers: number;
  /** Lifecycle events: channels held here, joins and leaves announced here. */
  events?: LifecycleEvents;
  /** With tracing on: a publication that carries a trace context gets a `deliver` span here. */
  tracer?: Tracer;
}

/**
 * The gateway's centre and the single entry point transports and the server API use: channels
 * held in the broker (channels.ts), fan-out of what the broker delivers to the transports'
 * sinks, publish, history, presence (policy in presence/), and server-side disconnects of the
 * users registered here (users.ts).
 */
export class Hub implements BrokerHandler {
  private readonly channels: ChannelTable;
  private readonly users = new UserRegistry();
  private readonly reads = new SharedReads();
  private readonly sinks: FanoutSink[] = [];
  private readonly announcer: PresenceAnnouncer;
  private readonly capacity: PresenceCapacity;
  private readonly broker: Broker;
  private readonly metrics: Metrics;
  private readonly log: Logger;

  constructor(private readonly parts: HubParts) {
    const { broker, presence, metrics, log } = parts;
    this.broker = broker;
    this.metrics = metrics;
    this.log = log;
    this.channels = new ChannelTable(broker, metrics, log, parts.events);
    this.announcer = new PresenceAnnouncer(presence, broker, metrics, log, parts.presenceGraceMs, parts.events);
    this.capacity = new PresenceCapacity(presence, parts.maxPresenceMembers);
  }

  start(): Promise<void> {
    return this.broker.start(this);
  }

  addSink(sink: FanoutSink): void {
    this.sinks.push(sink);
  }

  removeSink(sink: FanoutSink): void {
    const i = this.sinks.indexOf(sink);
    if (i >= 0) this.sinks.splice(i, 1);
  }

  register(session: HubSession): void {
    this.users.register(session);
  }

  unregister(session: HubSession): void {
    this.users.unregister(session);
  }

  /** The user's sessions registered on this gateway (read-only, for the admin console). */
  localSessionsOf(user: string): UserSession[] {
    return this.users.describe(user);
  }

  /** Resolves once the broker delivers the channel to this gateway. */
  subscribe(ch: string, ns: NamespaceOptions): Promise<void> {
    return this.channels.hold(ch, ns);
  }

  unsubscribe(ch: string): void {
    this.channels.release(ch);
  }

  /**
   * Live publications with offsets after `after` that this gateway has already fanned out, or
   * undefined when they are no longer all in the recent buffer.
   */
  recentAfter(ch: string, after: number): Publication[] | undefined {
    const recent = this.channels.recent(ch);
    return recent ? recent.after(after) : [];
  }

  /**
   * Keeps every live publication of the channel from now until the release is called (a
   * catch-up reading history), so recentAfter() can cover a slow read on a busy channel.
   */
  holdRecent(ch: string): () => void {
    return this.channels.recent(ch)?.hold() ?? (() => {});
  }

  /**
   * What a client missed since `since`, answered from the publications this gateway fanned out
   * lately, without reading history: only when the position is of the current epoch, every
   * publication after it is still in the recent buffer (proven by the predecessor links), and
   * history would still hold them all (no more than its size, none older than its ttl), so the
   * answer is the one a history read would give. Else undefined, and the caller reads history.
   */
  recentSince(ch: string, opts: HistoryOptions, since: StreamPosition): { pubs: Publication[]; position: StreamPosition } | undefined {
    const position = this.livePosition(ch);
    if (!position || position.epoch !== since.epoch || since.offset > position.offset) return undefined;
    const pubs = this.recentAfter(ch, since.offset);
    if (!pubs || pubs.length > opts.size) return undefined;
    const oldest = pubs[0];
    if (oldest && Date.now() - oldest.ts >= opts.ttl) return undefined;
    return { pubs, position };
  }

  /**
   * The position a new subscriber takes up without `since`, from memory: where live delivery on
   * this gateway stands, which is what a history read would answer too. Undefined before the
   * channel's position or epoch is known here.
   */
  livePosition(ch: string): StreamPosition | undefined {
    const offset = this.lastOffset(ch);
    const epoch = this.parts.history.knownEpoch(ch);
    return offset === undefined || epoch === undefined ? undefined : { offset, epoch };
  }

  /** Keeps publications a catch-up just read, when they join this gateway's recent ones (see RecentPublications.backfill). */
  keepRead(ch: string, epoch: string, pubs: Publication[]): void {
    if (pubs.length === 0 || epoch !== this.parts.history.knownEpoch(ch)) return;
    this.channels.recent(ch)?.backfill(pubs);
  }

  /** The newest offset delivered live in this channel, if any has been seen since subscribing. */
  lastOffset(ch: string): number | undefined {
    return this.channels.recent(ch)?.lastOffset;
  }

  publish(pub: Publication, opts: PublishOptions, source: PublishSource): Promise<PublishResult> {
    return backendCall(
      async () => {
        const result = await this.broker.publish(pub, opts);
        this.metrics.publications.inc({ source });
        return result;
      },
      "broker publish failed",
      this.log,
    );
  }

  /**
   * A `limit` above the namespace's size (a client cannot know it) reads what is retained.
   * Identical reads in flight share one backend read (see SharedReads).
   */
  readHistory(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    const q = query.limit !== undefined && query.limit > opts.size ? { ...query, limit: opts.size } : query;
    return this.reads.read(ch, q, () => backendCall(() => this.parts.history.read(ch, opts, q), "history read failed", this.log));
  }

  join(ch: string, info: ClientInfo, announce: boolean): Promise<void> {
    return this.announcer.join(ch, info, announce);
  }

  leave(ch: string, info: ClientInfo, announce: boolean): void {
    this.announcer.leave(ch, info, announce);
  }

  /** Throws ProtocolError 429 when the channel's presence is full (before a client joins it). */
  presenceRoom(ch: string): Promise<void> {
    return backendCall(() => this.capacity.admit(ch), "presence read failed", this.log);
  }

  presenceOf(ch: string): Promise<Record<string, { user: string; info?: unknown }>> {
    return backendCall(() => this.parts.presence.get(ch), "presence read failed", this.log);
  }

  presenceStats(ch: string): Promise<PresenceStats> {
    return backendCall(() => this.parts.presence.stats(ch), "presence read failed", this.log);
  }

  /**
   * Closes the user's connections on every replica, and revokes the long-poll and SSE sessions
   * it holds, which are signed tokens no replica could otherwise take back.
   */
  disconnectUser(user: string, reason = "disconnected by server"): Promise<void> {
    return backendCall(
      async () => {
        await this.parts.revocations.revoke(user);
        await this.broker.publishControl({ kind: "disconnect", user, code: 4003, reason });
      },
      "control publish failed",
      this.log,
    );
  }

  /** Subscribes the user's connections on every replica to the channel (server-side subscription). */
  subscribeUser(user: string, ch: string): Promise<void> {
    return this.control({ kind: "subscribe", user, ch });
  }

  unsubscribeUser(user: string, ch: string, reason: string): Promise<void> {
    return this.control({ kind: "unsubscribe", user, ch, reason });
  }

  private control(msg: ControlMessage): Promise<void> {
    return backendCall(() => this.broker.publishControl(msg), "control publish failed", this.log);
  }

  /** Channels held on this gateway, how many local subscriptions hold each, and its deliveries. */
  channelCounts(): IterableIterator<LocalChannel> {
    return this.channels.counts();
  }

  // --- BrokerHandler: deliveries from the broker ---------------------------------------------

  onPublication(pub: Publication): void {
    const recent = this.channels.delivered(pub.ch);
    if (!recent) return;
    recent.add(pub);
    this.metrics.deliveryLatency.observe(Math.max(0, Date.now() - pub.ts) / 1000);
    // pub.trace is only ever set with tracing on: the one check the untraced path pays.
    const span = pub.trace && this.parts.tracer?.start("deliver", SpanKind.consumer, pub.trace, { "natsedge.channel": pub.ch });
    let sent = 0;
    for (const sink of this.sinks) {
      try {
        sent += sink.publication(pub);
      } catch (err) {
        // One undeliverable publication must not stop the broker's delivery loop.
        this.log.error({ err, ch: pub.ch }, "fan-out failed");
      }
    }
    if (sent > 0) this.metrics.messagesSent.inc(sent);
    if (span) {
      span.set("natsedge.sent", sent);
      span.end();
    }
  }

  onContinuityLost(ch: string, reason: string): void {
    const recent = this.channels.recent(ch);
    if (!recent) return;
    recent.forget();
    for (const sink of this.sinks) {
      try {
        sink.continuityLost(ch, reason);
      } catch (err) {
        this.log.error({ err, ch }, "continuity signal failed");
      }
    }
  }

  onJoin(ch: string, info: ClientInfo): void {
    if (!this.channels.has(ch)) return;
    for (const sink of this.sinks) sink.join(ch, info);
  }

  onLeave(ch: string, info: ClientInfo): void {
    if (!this.channels.has(ch)) return;
    for (const sink of this.sinks) sink.leave(ch, info);
  }

  onControl(msg: ControlMessage): void {
    for (const s of this.users.sessionsOf(msg.user)) {
      if (msg.kind === "disconnect") s.disconnect(msg.code, msg.reason, false);
      else if (msg.kind === "subscribe") s.subscribeByServer?.(msg.ch);
      else s.unsubscribeByServer?.(msg.ch, msg.reason);
    }
  }

  async close(): Promise<void> {
    await this.announcer.flush();
    await this.broker.close();
    await this.parts.history.close();
    await this.parts.presence.close();
  }
}
