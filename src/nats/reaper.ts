import { resolveChannel } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import type { Broker } from "../broker/broker.js";
import type { Logger } from "../log.js";
import type { NatsPresence } from "../presence/nats.js";
import { unpack } from "../protocol/msgpack.js";
import type { ClientInfo } from "../publication.js";
import type { Subjects } from "./subjects.js";

const REAP_INTERVAL_MS = 10_000;

/**
 * Removes presence entries left by gateways that died without cleaning up (kill -9, lost
 * machine) and announces their clients' leaves. Readers already ignore such entries once the
 * heartbeat expires; this makes the leave visible and keeps the stream small. Only the live
 * gateway with the smallest id reaps, so each leave is announced once.
 */
export class PresenceReaper {
  private timer: NodeJS.Timeout | undefined;
  private running = false;

  constructor(
    private readonly presence: NatsPresence,
    private readonly broker: Broker,
    private readonly subjects: Subjects,
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
      const live = await this.presence.live();
      const leader = [...live].sort()[0];
      if (leader !== this.presence.node) return;
      const counts = await this.presence.subjectCounts(this.subjects.presenceStream(), this.subjects.allPresence());
      const survivors = new Set<string>();
      const dead: Array<{ subject: string; ch: string; identity: string; client: string }> = [];
      for (const subject of Object.keys(counts)) {
        const p = this.subjects.parsePresence(subject);
        if (!p) continue;
        if (live.has(p.node)) survivors.add(p.ch + "\u0000" + p.identity);
        else dead.push({ subject, ...p });
      }
      for (const d of dead) {
        const info = await this.entryInfo(d.subject, d.client);
        await this.presence.purge(d.subject);
        const key = d.ch + "\u0000" + d.identity;
        if (survivors.has(key) || !info || !this.announces(d.ch)) continue;
        survivors.add(key); // one leave per identity, however many dead connections it had
        await this.broker.publishLeave(d.ch, info);
      }
      if (dead.length > 0) this.log.info({ entries: dead.length }, "reaped presence of dead gateways");
    } catch (err) {
      this.log.warn({ err }, "presence reaping failed");
    } finally {
      this.running = false;
    }
  }

  private announces(ch: string): boolean {
    try {
      return resolveChannel(this.namespaces, ch).options.joinLeave;
    } catch {
      return false;
    }
  }

  private async entryInfo(subject: string, client: string): Promise<ClientInfo | undefined> {
    try {
      const v = unpack(await this.presence.lastValue(subject)) as { user: string; info?: unknown };
      const info: ClientInfo = { client, user: v.user };
      if (v.info !== undefined) info.info = v.info;
      return info;
    } catch {
      return undefined;
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
