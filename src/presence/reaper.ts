import type { Broker } from "../broker/broker.js";
import { resolveChannel } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import type { Logger } from "../log.js";
import type { ClientInfo } from "../publication.js";
import type { NatsPresence } from "./nats.js";

/** Told of every identity whose last entry under a presence key the reaper removed. */
export type ReapListener = (key: string, info: ClientInfo, announced: boolean) => void;

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
  private readonly listeners: ReapListener[] = [];

  constructor(
    private readonly presence: NatsPresence,
    private readonly broker: Broker,
    private readonly namespaces: Record<string, NamespaceOptions>,
    private readonly log: Logger,
  ) {}

  onReaped(listener: ReapListener): void {
    this.listeners.push(listener);
  }

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
      for (const { ch, info } of leaves) {
        const announced = this.announces(ch);
        if (announced) await this.broker.publishLeave(ch, info);
        for (const listener of this.listeners) listener(ch, info, announced);
      }
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
