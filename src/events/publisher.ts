import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { makeEvent, type EventFields, type EventType, type LifecycleEvent } from "./types.js";
import type { WebhookSender } from "./webhook.js";

/** Where events go besides the webhook: NATS subjects, or in-process listeners in memory mode. */
export type EventOutlet = (event: LifecycleEvent) => void;

/**
 * Turns what happened into events of the configured types, stamped with this gateway's id and
 * the time, and hands each to every outlet and the webhook. Never blocks or throws into the
 * code that reports: a failing outlet is logged.
 */
export class EventPublisher {
  private readonly outlets: EventOutlet[] = [];

  constructor(
    private readonly types: ReadonlySet<EventType>,
    private readonly node: string,
    private readonly webhook: WebhookSender | undefined,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  wants(type: EventType): boolean {
    return this.types.has(type);
  }

  /** Adds a destination for every event (the NATS subjects; an in-process listener). */
  to(outlet: EventOutlet): void {
    this.outlets.push(outlet);
  }

  emit<T extends EventType>(type: T, fields: EventFields[T]): void {
    if (!this.types.has(type)) return;
    const event = makeEvent(type, this.node, fields);
    this.metrics.eventsPublished.inc({ type });
    for (const outlet of this.outlets) {
      try {
        outlet(event);
      } catch (err) {
        this.log.warn({ err, type }, "lifecycle event not published");
      }
    }
    this.webhook?.enqueue(event);
  }

  async close(): Promise<void> {
    await this.webhook?.close();
  }
}
