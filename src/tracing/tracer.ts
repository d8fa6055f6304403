import { randomFillSync } from "node:crypto";
import { parseTraceparent, type SpanContext } from "./context.js";

/** OTLP span kinds (opentelemetry-proto trace.proto). */
export const SpanKind = { server: 2, client: 3, producer: 4, consumer: 5 } as const;
export type SpanKindValue = (typeof SpanKind)[keyof typeof SpanKind];

export type AttributeValue = string | number | boolean;

/** A span once it ended, as the exporter sends it. */
export interface FinishedSpan {
  name: string;
  kind: SpanKindValue;
  context: SpanContext;
  parentSpanId: string | undefined;
  /** Unix epoch nanoseconds. */
  start: bigint;
  end: bigint;
  attributes: Record<string, AttributeValue>;
  /** Set when the span's work failed. */
  error?: string;
}

/** Where ended, sampled spans go (the OTLP exporter). */
export interface SpanSink {
  add(span: FinishedSpan): void;
}

/** Wall-clock nanoseconds with sub-millisecond steps: the monotonic clock from the process's origin. */
function nowNanos(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

/** Ids come from a pool refilled 4 KiB at a time: one system call for hundreds of spans. */
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
const ZERO_HEX: Record<number, string> = { 8: "0".repeat(16), 16: "0".repeat(32) };
let poolAt = POOL_SIZE;

function randomHex(bytes: number): string {
  for (;;) {
    if (poolAt + bytes > POOL_SIZE) {
      randomFillSync(pool);
      poolAt = 0;
    }
    const hex = pool.toString("hex", poolAt, poolAt + bytes);
    poolAt += bytes;
    // All-zero ids are invalid in W3C trace context; 2^-64 at worst, but cheap to rule out.
    if (hex !== ZERO_HEX[bytes]) return hex;
  }
}

/** One unit of work. Not sampled, it still carries the context onward but records nothing. */
export class Span {
  readonly context: SpanContext;
  /** Only a sampled span reads the clock: an unsampled one is never reported. */
  private readonly start: bigint;
  private ended = false;
  private error: string | undefined;

  constructor(
    private readonly sink: SpanSink,
    readonly name: string,
    private readonly kind: SpanKindValue,
    private readonly parent: SpanContext | undefined,
    sampled: boolean,
    private readonly attributes: Record<string, AttributeValue>,
  ) {
    this.context = { traceId: parent?.traceId ?? randomHex(16), spanId: randomHex(8), sampled };
    this.start = sampled ? nowNanos() : 0n;
  }

  set(key: string, value: AttributeValue): void {
    this.attributes[key] = value;
  }

  /** Marks the span failed; a ProtocolError's code goes along as an attribute where the caller sets one. */
  fail(err: unknown): void {
    this.error = err instanceof Error ? err.message : String(err);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.context.sampled) return;
    const span: FinishedSpan = {
      name: this.name,
      kind: this.kind,
      context: this.context,
      parentSpanId: this.parent?.spanId,
      start: this.start,
      end: nowNanos(),
      attributes: this.attributes,
    };
    if (this.error !== undefined) span.error = this.error;
    this.sink.add(span);
  }
}

/**
 * Starts spans. Only a gateway with `tracing.otlpUrl` has one; everywhere else the tracer is
 * undefined and the code that would trace checks that and does nothing more. Sampling is decided
 * once, at a trace's root (`sampleRatio`); a span with a parent follows the parent's decision,
 * whether the parent is this gateway's or a client's `traceparent`.
 */
export class Tracer {
  constructor(
    private readonly sink: SpanSink,
    private readonly sampleRatio: number,
    private readonly random: () => number = Math.random,
  ) {}

  start(name: string, kind: SpanKindValue, parent: SpanContext | undefined, attributes: Record<string, AttributeValue> = {}): Span {
    const sampled = parent ? parent.sampled : this.sampleRatio >= 1 || this.random() < this.sampleRatio;
    return new Span(this.sink, name, kind, parent, sampled, attributes);
  }

  /** Runs `work` inside a span that ends when it settles, marked failed if it throws. */
  async around<T>(span: Span, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      span.fail(err);
      throw err;
    } finally {
      span.end();
    }
  }
}

/**
 * A client command in a span of its own: a child of the command's `traceparent` when it names a
 * valid one, else a new trace. Callers check `ctx.tracer` first where a command is per message.
 */
export function traced<T>(
  tracer: Tracer | undefined,
  name: string,
  cmd: { readonly traceparent?: unknown },
  work: (span: Span | undefined) => Promise<T>,
): Promise<T> {
  if (!tracer) return work(undefined);
  const span = tracer.start(name, SpanKind.server, parseTraceparent(cmd.traceparent));
  return tracer.around(span, () => work(span));
}
