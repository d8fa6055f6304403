import type { Broker } from "../broker/broker.js";
import type { NamespaceOptions } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { RecentPublications } from "./recent.js";

interface ChannelState {
  refs: number;
  /** Publications delivered to this gateway since the channel was held (for the admin console's rates). */
  delivered: number;
  recent: RecentPublications;
  /** The broker subscription; every local subscriber waits on it and sees its failure. */
  ready: Promise<void>;
}

/** Told when this gateway starts and stops holding a channel (channel occupied/vacated events). */
export interface ChannelWatch {
  channelHeld(ch: string): void;
  channelReleased(ch: string): void;
}

/** A channel held on this gateway, as the admin console lists it. */
export interface LocalChannel {
  ch: string;
  /** Local subscribers (connections, held polls, admin tails). */
  subscribers: number;
  delivered: number;
}

/**
 * The channels this gateway listens to: one broker subscription per channel, however many local
 * subscribers hold it, made by the first and removed by the last. Broker calls for one channel
 * run one after another in call order, so a quick unsubscribe-subscribe cannot reorder them.
 */
export class ChannelTable {
  private readonly channels = new Map<string, ChannelState>();
  private readonly brokerOps = new Map<string, Promise<void>>();

  constructor(
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    /** Told when this gateway starts and stops holding a channel (lifecycle events). */
    private readonly watch?: ChannelWatch,
  ) {}

  /** Resolves once the broker delivers the channel to this gateway. */
  async hold(ch: string, ns: NamespaceOptions): Promise<void> {
    let state = this.channels.get(ch);
    if (!state) {
      const s: ChannelState = { refs: 0, delivered: 0, recent: new RecentPublications(), ready: Promise.resolve() };
      this.metrics.channelSubscribes.inc();
      s.ready = this.brokerOp(ch, async () => {
        const baseline = await this.broker.subscribe(ch, ns);
        if (baseline !== undefined) s.recent.baseline(baseline);
      });
      // A failed subscription is forgotten at once, so the next subscriber tries again instead
      // of joining a channel the broker never delivers.
      s.ready.catch((err: unknown) => {
        this.log.error({ err, ch }, "broker subscribe failed");
        if (this.channels.get(ch) !== s) return;
        this.channels.delete(ch);
        this.metrics.channels.set(this.channels.size);
        this.watch?.channelReleased(ch);
      });
      this.channels.set(ch, s);
      this.metrics.channels.set(this.channels.size);
      this.watch?.channelHeld(ch);
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

  release(ch: string): void {
    const state = this.channels.get(ch);
    if (!state || --state.refs > 0) return;
    this.channels.delete(ch);
    this.metrics.channels.set(this.channels.size);
    this.watch?.channelReleased(ch);
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

  has(ch: string): boolean {
    return this.channels.has(ch);
  }

  /** The channel's recent live publications, while it is held. */
  recent(ch: string): RecentPublications | undefined {
    return this.channels.get(ch)?.recent;
  }

  /** Counts a publication the broker delivered; its recent buffer, or undefined when not held. */
  delivered(ch: string): RecentPublications | undefined {
    const state = this.channels.get(ch);
    if (!state) return undefined;
    state.delivered++;
    return state.recent;
  }

  /** The held channels with their local subscriber counts and deliveries so far. */
  *counts(): IterableIterator<LocalChannel> {
    for (const [ch, s] of this.channels) yield { ch, subscribers: s.refs, delivered: s.delivered };
  }
}
