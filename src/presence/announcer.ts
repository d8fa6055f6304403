import type { Broker } from "../broker/broker.js";
import type { LifecycleEvents } from "../events/lifecycle.js";
import { backendCall } from "../hub/backend-call.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { ClientInfo } from "../publication.js";
import { presenceIdentity, type Presence } from "./presence.js";

/**
 * Join/leave pushes per channel per second on one gateway. Past it events are dropped (and
 * counted): under a reconnect storm members would otherwise get N^2 pushes. Clients that need
 * exact membership ask `presence` / `presence_stats`.
 */
export const JOIN_LEAVE_PER_SECOND = 50;
/** Channels whose event budget is tracked at once; beyond it the budgets start over. */
const MAX_BUDGETS = 10_000;

/**
 * Presence policy: entries are added and removed per connection, but join and leave are
 * announced per user, a leave only after a grace period (a quick reconnect is no news), and at a
 * bounded rate per channel.
 */
export class PresenceAnnouncer {
  /** Leaves waiting out the grace period, by channel + client. */
  private readonly pendingLeaves = new Map<string, { timer: NodeJS.Timeout; run: () => Promise<void> }>();
  /** Joins in flight, by channel + client: a leave waits for its join. */
  private readonly joining = new Map<string, Promise<void>>();
  private readonly eventBudget = new Map<string, { second: number; used: number }>();

  constructor(
    private readonly presence: Presence,
    private readonly broker: Broker,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly graceMs: number,
    private readonly events?: LifecycleEvents,
  ) {}

  /** Adds the client to presence; announces a join only when its user was not already there. */
  join(ch: string, info: ClientInfo, announce: boolean): Promise<void> {
    const key = ch + "\u0000" + info.client;
    const pending = this.pendingLeaves.get(key);
    if (pending) {
      clearTimeout(pending.timer);
      this.pendingLeaves.delete(key);
    }
    // Removing before the add lands would leave a ghost entry behind.
    const done = this.add(ch, info, announce).finally(() => {
      if (this.joining.get(key) === done) this.joining.delete(key);
    });
    this.joining.set(key, done);
    return done;
  }

  private async add(ch: string, info: ClientInfo, announce: boolean): Promise<void> {
    const present = announce
      ? await backendCall(() => this.presence.has(ch, presenceIdentity(info)), "presence read failed", this.log)
      : true;
    await backendCall(() => this.presence.add(ch, info), "presence add failed", this.log);
    if (!present && this.spend(ch)) {
      await backendCall(() => this.broker.publishJoin(ch, info), "join publish failed", this.log);
      this.events?.presenceJoined(ch, info);
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
        if (!this.spend(ch)) return;
        await this.broker.publishLeave(ch, info);
        this.events?.presenceLeft(ch, info);
      } catch (err) {
        this.log.warn({ err, ch }, "presence leave failed");
      }
    };
    if (this.graceMs === 0) {
      void run();
      return;
    }
    this.pendingLeaves.get(key)?.timer.refresh();
    if (!this.pendingLeaves.has(key)) this.pendingLeaves.set(key, { timer: setTimeout(run, this.graceMs), run });
  }

  private spend(ch: string): boolean {
    const second = Math.floor(Date.now() / 1000);
    let b = this.eventBudget.get(ch);
    if (!b || b.second !== second) {
      if (this.eventBudget.size > MAX_BUDGETS) this.eventBudget.clear();
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

  /** Leaves still in their grace period happen now, while the broker can still announce them. */
  async flush(): Promise<void> {
    const pending = [...this.pendingLeaves.values()];
    for (const p of pending) clearTimeout(p.timer);
    await Promise.all(pending.map((p) => p.run()));
  }
}
