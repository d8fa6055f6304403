import type { Logger } from "../log.js";
import type { AttributeValue, FinishedSpan, SpanSink } from "./tracer.js";

export interface OtlpOptions {
  /** The OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces. */
  url: string;
  serviceName: string;
  /** Names this process among a service's replicas (`service.instance.id`). */
  instance: string;
  /** Spans held while the collector is slow or away; beyond it new spans are dropped and counted. */
  maxQueue?: number;
  /** Spans per request. */
  maxBatch?: number;
  /** How often waiting spans are sent, ms. */
  intervalMs?: number;
  /** How long one request may take, ms. */
  timeoutMs?: number;
}

/** At shutdown a batch gets this long at most, so a collector that is away cannot hold the exit up. */
const CLOSING_TIMEOUT_MS = 2_000;

/** Sends one JSON body; rejects when the collector did not take it. */
export type Post = (url: string, body: string, timeoutMs: number) => Promise<void>;

const SCOPE = { name: "natsedge" };

async function fetchPost(url: string, body: string, timeoutMs: number): Promise<void> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body,
    redirect: "error",
    signal: AbortSignal.timeout(timeoutMs),
  });
  // The body is not needed; reading it to the end frees the connection for the next batch.
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new Error(`collector answered ${res.status}`);
}

/**
 * Sends ended spans to an OpenTelemetry collector as OTLP/HTTP JSON. Nothing waits on it: spans
 * go into a bounded queue (full, new spans are dropped and counted), a timer sends a batch every
 * interval or sooner once a batch is full, one request at a time, each with a timeout. A batch the
 * collector refused or did not take in time is dropped and counted, not retried: traces are a
 * sample, and a backlog behind a collector that is down would only grow.
 */
export class OtlpExporter implements SpanSink {
  private queue: FinishedSpan[] = [];
  private sending: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private readonly resource: { attributes: ReturnType<typeof attributes> };
  private readonly maxQueue: number;
  private readonly maxBatch: number;
  private readonly timeoutMs: number;
  private closed = false;
  private closing = false;

  constructor(
    private readonly opts: OtlpOptions,
    private readonly dropped: (spans: number, reason: "queue_full" | "export_failed") => void,
    private readonly log: Pick<Logger, "warn">,
    private readonly post: Post = fetchPost,
  ) {
    this.maxQueue = opts.maxQueue ?? 2048;
    this.maxBatch = opts.maxBatch ?? 512;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.resource = { attributes: attributes({ "service.name": opts.serviceName, "service.instance.id": opts.instance }) };
    this.timer = setInterval(() => this.send(), opts.intervalMs ?? 1_000);
    this.timer.unref();
  }

  /** Spans waiting to be sent. */
  get queued(): number {
    return this.queue.length;
  }

  add(span: FinishedSpan): void {
    if (this.closed || this.queue.length >= this.maxQueue) {
      this.dropped(1, "queue_full");
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.maxBatch) this.send();
  }

  /** Sends what waits, batch by batch; resolves when the queue is empty (or every batch failed). */
  async flush(): Promise<void> {
    while (this.sending || this.queue.length > 0) {
      await (this.sending ?? this.send());
    }
  }

  /** Sends what waits; once a batch fails the rest is dropped rather than tried against a collector that is away. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.closing = true;
    await this.flush();
    this.closed = true;
  }

  private send(): Promise<void> | undefined {
    if (this.sending || this.queue.length === 0) return this.sending;
    const batch = this.queue.length <= this.maxBatch ? this.queue : this.queue.slice(0, this.maxBatch);
    this.queue = batch === this.queue ? [] : this.queue.slice(this.maxBatch);
    const body = JSON.stringify({ resourceSpans: [{ resource: this.resource, scopeSpans: [{ scope: SCOPE, spans: batch.map(encodeSpan) }] }] });
    const timeout = this.closing ? Math.min(this.timeoutMs, CLOSING_TIMEOUT_MS) : this.timeoutMs;
    this.sending = this.post(this.opts.url, body, timeout)
      .catch((err: unknown) => {
        const rest = this.closing ? this.queue.splice(0) : [];
        this.dropped(batch.length + rest.length, "export_failed");
        this.log.warn({ err, spans: batch.length }, "trace export failed");
      })
      .finally(() => {
        this.sending = undefined;
        if (this.queue.length >= this.maxBatch) this.send();
      });
    return this.sending;
  }
}

function attributes(attrs: Record<string, AttributeValue>): Array<{ key: string; value: Record<string, unknown> }> {
  return Object.entries(attrs).map(([key, v]) => ({
    key,
    value:
      typeof v === "string"
        ? { stringValue: v }
        : typeof v === "boolean"
          ? { boolValue: v }
          : Number.isInteger(v)
            ? { intValue: String(v) }
            : { doubleValue: v },
  }));
}

/** OTLP JSON: ids as hex, times as decimal nanosecond strings, enums as numbers. */
function encodeSpan(s: FinishedSpan): Record<string, unknown> {
  const out: Record<string, unknown> = {
    traceId: s.context.traceId,
    spanId: s.context.spanId,
    name: s.name,
    kind: s.kind,
    startTimeUnixNano: String(s.start),
    endTimeUnixNano: String(s.end),
    attributes: attributes(s.attributes),
    status: s.error === undefined ? { code: 0 } : { code: 2, message: s.error },
  };
  if (s.parentSpanId !== undefined) out.parentSpanId = s.parentSpanId;
  return out;
}
