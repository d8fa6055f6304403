import type { NatsConnection, Subscription } from "nats";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { NatsLink } from "./connection.js";

const PROBE_INTERVAL_MS = 5_000;
const PROBE_TIMEOUT_MS = 3_000;

/**
 * Proves the broker path works end to end: a socket can look connected while the server no
 * longer routes (a wedged cluster node). Each gateway publishes to its own probe subject and
 * times the message's return; readiness follows the last result.
 */
export class RoundTripProbe {
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  private pending = new Map<number, () => void>();
  healthy = false;

  constructor(
    private readonly link: NatsLink,
    private readonly subject: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const nc: NatsConnection = this.link.nc;
    this.sub = nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err || msg.data.byteLength !== 8) return;
        const id = Buffer.from(msg.data).readDoubleBE(0);
        this.pending.get(id)?.();
      },
    });
    await this.probe();
    this.timer = setInterval(() => void this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  /** Runs one probe now; resolves with whether the message came back in time. */
  async probe(): Promise<boolean> {
    const id = ++this.seq;
    const started = performance.now();
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), PROBE_TIMEOUT_MS);
      this.pending.set(id, () => {
        clearTimeout(timer);
        resolve(true);
      });
      const body = Buffer.alloc(8);
      body.writeDoubleBE(id, 0);
      try {
        this.link.nc.publish(this.subject, body);
      } catch {
        clearTimeout(timer);
        resolve(false);
      }
    });
    this.pending.delete(id);
    if (ok) this.metrics.brokerRoundtrip.observe((performance.now() - started) / 1000);
    if (ok !== this.healthy) {
      if (ok) this.log.info("broker round-trip probe healthy");
      else this.log.warn("broker round-trip probe failed: not ready");
    }
    this.healthy = ok && this.link.connected;
    return ok;
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }
}
