import { createHmac } from "node:crypto";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { LifecycleEvent } from "./types.js";

/** Events in one POST at most. */
export const BATCH_MAX = 100;
/** How long the first event of a batch waits for company before the batch goes. */
export const FLUSH_MS = 1_000;
/** Events waiting at most; past it the oldest are dropped (natsedge_webhook_events_dropped_total). */
export const QUEUE_MAX = 10_000;
/** Tries of one batch (the first and the retries); then it is dropped. */
export const ATTEMPTS = 6;
/** Wait before the first retry; doubling, up to BACKOFF_MAX_MS, each less up to a quarter at random. */
export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 30_000;
/** One POST's time limit. */
export const POST_TIMEOUT_MS = 10_000;
/** How long shutdown spends sending what is still queued (one try per batch). */
export const CLOSE_MS = 5_000;

export const SIGNATURE_HEADER = "Natsedge-Signature";
export const TIMESTAMP_HEADER = "Natsedge-Timestamp";

/** `v1=` + hex HMAC-SHA256 over `<timestamp>.<body>`: the timestamp is signed so a replay can be refused by age. */
export function signature(secret: string, timestamp: string, body: string): string {
  return "v1=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** Sends one POST; resolves with the status, rejects when no answer came. */
export type Post = (body: string, headers: Record<string, string>) => Promise<number>;

export function httpPost(url: string): Post {
  return async (body, headers) => {
    const res = await fetch(url, {
      method: "POST",
      body,
      headers,
      // A redirect is the receiver's mistake, and following one would send signed events elsewhere.
      redirect: "manual",
      signal: AbortSignal.timeout(POST_TIMEOUT_MS),
    });
    await res.body?.cancel().catch(() => undefined);
    return res.status;
  };
}

/** Worth another try: the receiver failed or was overloaded, or never answered (status 0). */
function retryable(status: number): boolean {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/**
 * Delivers events to one HTTP endpoint as signed JSON batches `{"events": [...]}`, one batch in
 * flight at a time (in order), each retried with exponential backoff on failure. Memory is
 * bounded: at most QUEUE_MAX events wait, the oldest dropped first, and a batch that failed
 * ATTEMPTS times is dropped. Delivery is at least once per event that is not dropped (a batch
 * whose answer was lost is sent again): receivers dedupe by event id.
 */
export class WebhookSender {
  private queue: LifecycleEvent[] = [];
  /** Index of the oldest waiting event in `queue` (dropping from the front stays cheap). */
  private head = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private sending: Promise<void> | undefined;
  private closing = false;
  private wakeBackoff: (() => void) | undefined;

  constructor(
    private readonly secret: string,
    private readonly post: Post,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {}

  get waiting(): number {
    return this.queue.length - this.head;
  }

  enqueue(event: LifecycleEvent): void {
    if (this.closing) {
      this.metrics.webhookEventsDropped.inc();
      return;
    }
    if (this.waiting >= QUEUE_MAX) {
      this.head++;
      this.metrics.webhookEventsDropped.inc();
    }
    this.queue.push(event);
    if (this.head > QUEUE_MAX) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    if (this.sending) return;
    if (this.waiting >= BATCH_MAX) this.startSending();
    else this.flushTimer ??= setTimeout(() => this.startSending(), FLUSH_MS);
  }

  private startSending(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.sending || this.waiting === 0) return;
    this.sending = this.pump().finally(() => {
      this.sending = undefined;
      if (this.waiting === 0 || this.closing) return;
      if (this.waiting >= BATCH_MAX) this.startSending();
      else this.flushTimer ??= setTimeout(() => this.startSending(), FLUSH_MS);
    });
  }

  /** Sends full batches while there are any, and the partial one it started with. */
  private async pump(): Promise<void> {
    do {
      await this.deliver(this.take());
    } while (this.waiting >= BATCH_MAX || (this.closing && this.waiting > 0));
  }

  private take(): LifecycleEvent[] {
    const n = Math.min(BATCH_MAX, this.waiting);
    const batch = this.queue.slice(this.head, this.head + n);
    this.head += n;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    return batch;
  }

  private async deliver(batch: LifecycleEvent[]): Promise<void> {
    const body = JSON.stringify({ events: batch });
    for (let attempt = 1; ; attempt++) {
      const timestamp = String(Math.floor(Date.now() / 1000));
      const headers = {
        "Content-Type": "application/json",
        [TIMESTAMP_HEADER]: timestamp,
        [SIGNATURE_HEADER]: signature(this.secret, timestamp, body),
      };
      let status: number;
      try {
        status = await this.post(body, headers);
      } catch {
        status = 0;
      }
      if (status >= 200 && status < 300) {
        this.metrics.webhookDeliveries.inc({ result: "ok" });
        return;
      }
      const last = attempt >= ATTEMPTS || this.closing || !retryable(status);
      if (last) {
        this.metrics.webhookDeliveries.inc({ result: retryable(status) ? "failed" : "rejected" });
        this.metrics.webhookEventsDropped.inc(batch.length);
        this.log.warn({ status, attempts: attempt, events: batch.length }, "webhook batch not delivered; dropped");
        return;
      }
      this.metrics.webhookDeliveries.inc({ result: "retry" });
      await this.backoff(attempt);
    }
  }

  private backoff(attempt: number): Promise<void> {
    const full = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (attempt - 1));
    const ms = full - Math.floor(full * 0.25 * this.random());
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wakeBackoff = done;
    });
  }

  /** Sends what is queued, one try per batch, for at most CLOSE_MS. */
  async close(): Promise<void> {
    this.closing = true;
    this.wakeBackoff?.();
    if (!this.sending) this.startSending();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.sending, new Promise((r) => (timer = setTimeout(r, CLOSE_MS)))]);
    clearTimeout(timer);
    if (this.waiting > 0) this.metrics.webhookEventsDropped.inc(this.waiting);
  }
}
