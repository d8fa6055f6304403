import type { MemoryHistory } from "../history/memory.js";
import type { ClientInfo, Publication } from "../publication.js";
import type { Broker, BrokerHandler, ControlMessage, PublishOptions, PublishResult } from "./broker.js";
import { IdempotencyCache } from "./idempotency.js";

/**
 * The embedded broker: one process, delivery by direct call. It keeps the same contract as the
 * NATS broker (delivery only for subscribed channels, history offsets, idempotency) so the rest
 * of the gateway cannot tell them apart.
 */
export class MemoryBroker implements Broker {
  private handler: BrokerHandler | undefined;
  private readonly subscribed = new Set<string>();
  private readonly idempotency: IdempotencyCache;

  constructor(
    private readonly history: MemoryHistory,
    idempotencyWindowMs: number,
  ) {
    this.idempotency = new IdempotencyCache(idempotencyWindowMs);
    history.keepWhile((ch) => this.subscribed.has(ch));
  }

  async start(handler: BrokerHandler): Promise<void> {
    this.handler = handler;
  }

  async publish(pub: Publication, opts: PublishOptions): Promise<PublishResult> {
    const key = opts.idempotencyKey;
    if (key !== undefined) {
      const seen = this.idempotency.get(pub.ch, key);
      if (seen) return seen;
    }
    let result: PublishResult = {};
    let delivered = pub;
    if (opts.history) {
      // Appended and delivered in one synchronous step: nothing can observe history ahead of
      // delivery, which keeps subscribe-with-recovery free of duplicates and gaps.
      const pos = this.history.append(pub, opts.history);
      result = { offset: pos.offset, epoch: pos.epoch };
      delivered = { ...pub, offset: pos.offset, prev: pos.offset - 1 };
    }
    if (key !== undefined) this.idempotency.set(pub.ch, key, result);
    if (this.subscribed.has(pub.ch)) this.handler?.onPublication(delivered);
    return result;
  }

  async publishJoin(ch: string, info: ClientInfo): Promise<void> {
    if (this.subscribed.has(ch)) this.handler?.onJoin(ch, info);
  }

  async publishLeave(ch: string, info: ClientInfo): Promise<void> {
    if (this.subscribed.has(ch)) this.handler?.onLeave(ch, info);
  }

  async publishControl(msg: ControlMessage): Promise<void> {
    this.handler?.onControl(msg);
  }

  async subscribe(ch: string): Promise<number | undefined> {
    this.subscribed.add(ch);
    // Delivery is synchronous with history appends, so there is never anything in flight.
    return undefined;
  }

  async unsubscribe(ch: string): Promise<void> {
    this.subscribed.delete(ch);
  }

  async close(): Promise<void> {
    this.handler = undefined;
  }
}
