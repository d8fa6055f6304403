import type { Subscription } from "nats";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { NatsLink } from "./connection.js";

/** One 8-byte message per interval: cheap enough to run often, so a stall shows within the deadline. */
export const PROBE_INTERVAL_MS = 500;
/**
 * A probe not back within this long counts as failed, answered later or not at all. With the
 * interval above, readiness drops at most interval + deadline (1.5 s) after the path stalls.
 */
export const PROBE_DEADLINE_MS = 1_000;

/**
 * Proves the broker path works end to end: a socket can look connected while nothing moves over
 * it (a stalled network path, a wedged cluster node), and the client library only notices after
 * its ping timeout (30 s). Each gateway publishes to its own probe subject and times each
 * message's return. Readiness is decided when asked: the last probe must have come back in time
 * and none may be overdue, so a stall counts from the moment it starts rather than from the next
 * timeout.
 */
export class RoundTripProbe {
  private sub: Subscription | undefined;
  private timer: NodeJS.Timeout | undefined;
  private seq = 0;
  /** Probe id -> when it was sent (performance.now()). Ids increase, so the first entry is the oldest. */
  private readonly outstanding = new Map<number, number>();
  private answered = false;
  private reported = false;
  private firstAnswer: (() => void) | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly subject: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly deadlineMs = PROBE_DEADLINE_MS,
    private readonly intervalMs = PROBE_INTERVAL_MS,
  ) {}

  /** Subscribes, waits (up to the deadline) for the first probe to return, then probes every interval. */
  async start(): Promise<void> {
    this.sub = this.link.nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err || msg.data.byteLength !== 8) return;
        this.onReturn(Buffer.from(msg.data).readDoubleBE(0));
      },
    });
    const first = new Promise<void>((resolve) => {
      this.firstAnswer = resolve;
      setTimeout(resolve, this.deadlineMs).unref();
    });
    this.send();
    await first;
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  healthy(): boolean {
    if (!this.link.connected || !this.answered) return false;
    const oldest = this.outstanding.values().next();
    return oldest.done === true || performance.now() - oldest.value <= this.deadlineMs;
  }

  /** The connection dropped: nothing in flight will come back, and readiness waits for a new answer. */
  disconnected(): void {
    this.outstanding.clear();
    this.answered = false;
    this.report();
  }

  /** Probes at once after a reconnect instead of waiting for the next tick. */
  reconnected(): void {
    this.send();
  }

  private tick(): void {
    const now = performance.now();
    for (const [id, sent] of this.outstanding) {
      if (now - sent <= this.deadlineMs) break;
      this.outstanding.delete(id);
      this.answered = false;
    }
    this.report();
    this.send();
  }

  private send(): void {
    const id = ++this.seq;
    const body = Buffer.alloc(8);
    body.writeDoubleBE(id, 0);
    try {
      this.link.nc.publish(this.subject, body);
      this.outstanding.set(id, performance.now());
    } catch {
      this.answered = false;
    }
  }

  private onReturn(id: number): void {
    const sent = this.outstanding.get(id);
    if (sent === undefined) return;
    const rtt = performance.now() - sent;
    // One connection keeps order: probes sent before this one that are still missing are lost.
    for (const older of this.outstanding.keys()) {
      this.outstanding.delete(older);
      if (older === id) break;
    }
    this.metrics.brokerRoundtrip.observe(rtt / 1000);
    this.answered = rtt <= this.deadlineMs;
    this.report();
    this.firstAnswer?.();
    this.firstAnswer = undefined;
  }

  /** Logs each change of state once. */
  private report(): void {
    const ok = this.healthy();
    if (ok === this.reported) return;
    this.reported = ok;
    if (ok) this.log.info("broker round-trip probe healthy");
    else this.log.warn({ deadlineMs: this.deadlineMs }, "broker round-trip probe failed: not ready");
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }
}
