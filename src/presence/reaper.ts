import type { Broker } from "../broker/broker.js";
import { resolveChannel } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import type { Logger } from "../log.js";
import type { NatsPresence } from "./nats.js";

const REAP_INTERVAL_MS = 10_000;

/**
 * Removes presence entries left by gateways that died without cleaning up (kill -9, lost
 * machine) and announces their clients' leaves. Readers already ignore such entries once the
 * heartbeat expires; this makes the leave visible and keeps the stream small. Only one live
 * gateway reaps, so each leave is announced once.
 */
export class PresenceReaper {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly presence: NatsPresence,
    private readonly broker: Broker,
    private readonly namespaces: Record<string, NamespaceOptions>,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.reap(), REAP_INTERVAL_MS);
    this.timer.unref();
  }

  async reap(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      if (!(await this.presence.leads())) return;
      const { reaped, leaves } = await this.presence.reapDead();
      for (const { ch, info } of leaves) if (this.announces(ch)) await this.broker.publishLeave(ch, info);
      if (reaped > 0) this.log.info({ entries: reaped }, "reaped presence of dead gateways");
    } catch (err) {
      this.log.warn({ err }, "presence reaping failed");
    } finally {
      this.running = false;
    }
  }

  /** Only channels of joinLeave namespaces announce; other keys (user connection counts) do not. */
  private announces(ch: string): boolean {
    try {
      return resolveChannel(this.namespaces, ch).options.joinLeave;
    } catch {
      return false;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
