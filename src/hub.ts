import type { Broker, BrokerHandler, ControlMessage, PublishOptions, PublishResult } from "./broker/broker.js";
import type { HistoryOptions, NamespaceOptions } from "./config/types.js";
import type { History, HistoryQuery, HistoryResult } from "./history/history.js";
import type { Logger } from "./log.js";
import type { Metrics, PublishSource } from "./metrics.js";
import { PresenceCapacity } from "./presence/capacity.js";
import { presenceIdentity, type Presence, type PresenceStats } from "./presence/presence.js";
import type { Revocations } from "./sessions/revocations.js";
import { ErrorCode, ProtocolError } from "./protocol/codes.js";
import type { ClientInfo, Publication } from "./publication.js";

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

/** What the hub needs to know of a client session. */
export interface HubSession {
  readonly user: string;
  disconnect(code: number, reason: string, reconnect: boolean): void;
}

/** Recent publications kept per channel to close the window between a history read and joining live delivery. */
const RECENT = 64;
/**
 * Join/leave pushes per channel per second on one gateway. Past it events are dropped (and
 * counted): under a reconnect storm members would otherwise get N^2 pushes. Clients that need
 * exact membership ask `presence` / `presence_stats`.
 */
export const JOIN_LEAVE_PER_SECOND = 50;

interface ChannelState {
  refs: number;
  recent: Publication[];
  lastOffset: number | undefined;
  /** The broker subscription; every local subscriber waits on it and sees its failure. */
  ready: Promise<void>;
}

/**
 * The gateway's centre: one broker subscription per channel however many local subscribers,
 * fan-out of everything the broker delivers to the transports' sinks, and the single entry point
 * sessions and the HTTP API use to publish, read history and presence.
 */
export class Hub implements BrokerHandler {
  private readonly channels = new Map<string, ChannelState>();
  /** Broker (un)subscribe calls per channel run one after another, in call order. */
  private readonly brokerOps = new Map<string, Promise<void>>();
  private readonly sinks: FanoutSink[] = [];
  private readonly sessionsByUser = new Map<string, Set<HubSession>>();
  /** Leaves waiting out the grace period, by channel + client. */
  private readonly pendingLeaves = new Map<string, { timer: NodeJS.Timeout; run: () => Promise<void> }>();
  private readonly eventBudget = new Map<string, { second: number; used: number }>();
  /** Presence joins in flight, by channel + client. */
  private readonly joining = new Map<string, Promise<void>>();

  constructor(
    private readonly broker: Broker,
    private readonly history: History,
    private readonly presence: Presence,
    private readonly revocations: Revocations,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly presenceGraceMs: number,
    maxPresenceMembers: number,
  ) {
    this.capacity = new PresenceCapacity(presence, maxPresenceMembers);
  }

  private readonly capacity: PresenceCapacity;

  start(): Promise<void> {
    return this.broker.start(this);
  }

  addSink(sink: FanoutSink): void {
    this.sinks.push(sink);
  }

  // --- sessions -----------------------------------------------------------------------------

  register(session: HubSession): void {
    let set = this.sessionsByUser.get(session.user);
    if (!set) this.sessionsByUser.set(session.user, (set = new Set()));
    set.add(session);
  }

  unregister(session: HubSession): void {
    const set = this.sessionsByUser.get(session.user);
    if (!set) return;
    set.delete(session);
    if (set.size === 0) this.sessionsByUser.delete(session.user);
  }

  // --- channel membership -------------------------------------------------------------------

  /** Resolves once the broker delivers the channel to this gateway. */
  async subscribe(ch: string, ns: NamespaceOptions): Promise<void> {
    let state = this.channels.get(ch);
    if (!state) {
      const s: ChannelState = { refs: 0, recent: [], lastOffset: undefined, ready: Promise.resolve() };
      this.metrics.channelSubscribes.inc();
      s.ready = this.brokerOp(ch, async () => {
        const baseline = await this.broker.subscribe(ch, ns);
        if (s.lastOffset === undefined && baseline !== undefined) s.lastOffset = baseline;
      });
      // A failed subscription is forgotten at once, so the next subscriber tries again instead
      // of joining a channel the broker never delivers.
      s.ready.catch((err: unknown) => {
        this.log.error({ err, ch }, "broker subscribe failed");
        if (this.channels.get(ch) !== s) return;
        this.channels.delete(ch);
        this.metrics.channels.set(this.channels.size);
      });
      this.channels.set(ch, s);
      this.metrics.channels.set(this.channels.size);
      state = s;
    }
    state.refs++;
    try {
      await state.ready;
    } catch (err) {
      state.refs--;
      if (err instanceof ProtocolError) throw err;
      throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable");
    }
  }

  unsubscribe(ch: string): void {
    this.release(ch);
  }

  private release(ch: string): void {
    const state = this.channels.get(ch);
    if (!state || --state.refs > 0) return;
    this.channels.delete(ch);
    this.metrics.channels.set(this.channels.size);
    this.brokerOp(ch, () => this.broker.unsubscribe(ch)).catch((err: unknown) =>
      this.log.warn({ err, ch }, "broker unsubscribe failed"),
    );
  }

  private brokerOp(ch: string, op: () => Promise<void>): Promise<void> {
    const prev = this.brokerOps.get(ch) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(op);
    const settled = next.catch(() => undefined);
    this.brokerOps.set(ch, settled);
    void settled.then(() => {
      if (this.brokerOps.get(ch) === settled) this.brokerOps.delete(ch);
    });
    return next;
  }

  /**
   * Live publications with offsets after `after` that this gateway has already fanned out, or
   * undefined when they are no longer all in the recent buffer.
   */
  recentAfter(ch: string, after: number): Publication[] | undefined {
    const state = this.channels.get(ch);
    if (!state || state.lastOffset === undefined || state.lastOffset <= after) return [];
    const i = state.recent.findIndex((p) => (p.offset as number) > after);
    if (i < 0) return undefined;
    const first = state.recent[i] as Publication;
    // Offsets need not be consecutive (NATS stream sequences are shared by a namespace), so
    // coverage is proven by the publication's link to its predecessor.
    if (i === 0 && (first.prev === undefined || first.prev > after)) return undefined;
    return state.recent.slice(i);
  }

  /** The newest offset delivered live in this channel, if any has been seen since subscribing. */
  lastOffset(ch: string): number | undefined {
    return this.channels.get(ch)?.lastOffset;
  }

  // --- operations used by sessions and the server API -----------------------------------------

  async publish(pub: Publication, opts: PublishOptions, source: PublishSource): Promise<PublishResult> {
    try {
      const result = await this.broker.publish(pub, opts);
      this.metrics.publications.inc({ source });
      return result;
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      this.log.error({ err, ch: pub.ch }, "broker publish failed");
      throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable");
    }
  }

  readHistory(ch: string, opts: HistoryOptions, query: HistoryQuery): Promise<HistoryResult> {
    return this.guard(() => this.history.read(ch, opts, query), "history read failed");
  }

  /** Adds the client to presence; announces a join only when its user was not already there. */
  join(ch: string, info: ClientInfo, announce: boolean): Promise<void> {
    const key = ch + "\u0000" + info.client;
    const pending = this.pendingLeaves.get(key);
    if (pending) {
      clearTimeout(pending.timer);
      this.pendingLeaves.delete(key);
    }
    // A leave for this client waits for its join: removing before the add lands would leave a
    // ghost entry behind.
    const done = this.addToPresence(ch, info, announce).finally(() => {
      if (this.joining.get(key) === done) this.joining.delete(key);
    });
    this.joining.set(key, done);
    return done;
  }

  private async addToPresence(ch: string, info: ClientInfo, announce: boolean): Promise<void> {
    const present = announce
      ? await this.guard(() => this.presence.has(ch, presenceIdentity(info)), "presence read failed")
      : true;
    await this.guard(() => this.presence.add(ch, info), "presence add failed");
    if (!present && this.spendEventBudget(ch)) {
      await this.guard(() => this.broker.publishJoin(ch, info), "join publish failed");
    }
  }

  /**
   * Removes the client from presence after the grace period, and announces a leave only when no
   * connection of its user remains: a reconnect within the grace period produces no leave/join pair.
   */
  leave(ch: string, info: ClientInfo, announce: boolean): void {
    const key = ch + "\u0000" + info.client;
    const run = async (): Promise<void> => {
      this.pendingLeaves.delete(key);
      await this.joining.get(key)?.catch(() => undefined);
      try {
        await this.presence.remove(ch, info.client);
        if (!announce || (await this.presence.has(ch, presenceIdentity(info)))) return;
        if (this.spendEventBudget(ch)) await this.broker.publishLeave(ch, info);
      } catch (err) {
        this.log.warn({ err, ch }, "presence leave failed");
      }
    };
    if (this.presenceGraceMs === 0) {
      void run();
      return;
    }
    this.pendingLeaves.get(key)?.timer.refresh();
    if (!this.pendingLeaves.has(key)) this.pendingLeaves.set(key, { timer: setTimeout(run, this.presenceGraceMs), run });
  }

  private spendEventBudget(ch: string): boolean {
    const second = Math.floor(Date.now() / 1000);
    let b = this.eventBudget.get(ch);
    if (!b || b.second !== second) {
      if (this.eventBudget.size > 10_000) this.eventBudget.clear();
      b = { second, used: 0 };
      this.eventBudget.set(ch, b);
    }
    if (b.used >= JOIN_LEAVE_PER_SECOND) {
      this.metrics.presenceEventsDropped.inc();
      return false;
    }
    b.used++;
    return true;
  }

  /** Throws ProtocolError 429 when the channel's presence is full (before a client joins it). */
  presenceRoom(ch: string): Promise<void> {
    return this.guard(() => this.capacity.admit(ch), "presence read failed");
  }

  presenceOf(ch: string): Promise<Record<string, { user: string; info?: unknown }>> {
    return this.guard(() => this.presence.get(ch), "presence read failed");
  }

  presenceStats(ch: string): Promise<PresenceStats> {
    return this.guard(() => this.presence.stats(ch), "presence read failed");
  }

  /**
   * Closes the user's connections on every replica, and revokes the long-poll and SSE sessions
   * it holds, which are signed tokens no replica could otherwise take back.
   */
  disconnectUser(user: string, reason = "disconnected by server"): Promise<void> {
    return this.guard(async () => {
      await this.revocations.revoke(user);
      await this.broker.publishControl({ kind: "disconnect", user, code: 4003, reason });
    }, "control publish failed");
  }

  private async guard<T>(op: () => Promise<T>, what: string): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      this.log.error({ err }, what);
      throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable");
    }
  }

  // --- BrokerHandler: deliveries from the broker ---------------------------------------------

  onPublication(pub: Publication): void {
    const state = this.channels.get(pub.ch);
    if (!state) return;
    if (pub.offset !== undefined) {
      state.lastOffset = pub.offset;
      state.recent.push(pub);
      if (state.recent.length > RECENT) state.recent.shift();
    }
    this.metrics.deliveryLatency.observe(Math.max(0, Date.now() - pub.ts) / 1000);
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
  }

  onContinuityLost(ch: string, reason: string): void {
    const state = this.channels.get(ch);
    if (!state) return;
    // What was delivered before the break proves nothing about what follows it.
    state.recent = [];
    state.lastOffset = undefined;
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
    if (msg.kind === "disconnect") {
      const sessions = this.sessionsByUser.get(msg.user);
      if (!sessions) return;
      for (const s of [...sessions]) s.disconnect(msg.code, msg.reason, false);
    }
  }

  async close(): Promise<void> {
    // Leaves still in their grace period happen now, while the broker can still announce them.
    const pending = [...this.pendingLeaves.values()];
    for (const p of pending) clearTimeout(p.timer);
    await Promise.all(pending.map((p) => p.run()));
    await this.broker.close();
    await this.history.close();
    await this.presence.close();
  }
}
