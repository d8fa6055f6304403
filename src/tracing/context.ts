/**
 * W3C trace context (https://www.w3.org/TR/trace-context/): the `traceparent` a client may send
 * with a command and that publications carry in NATS headers. Both come from outside: an invalid
 * value is ignored (the span starts a new trace), as the W3C rules say, and never refused.
 */

/** Where a span sits in a trace, and whether the trace is recorded. */
export interface SpanContext {
  /** 32 lower-case hex digits, not all zero. */
  readonly traceId: string;
  /** 16 lower-case hex digits, not all zero. */
  readonly spanId: string;
  readonly sampled: boolean;
}

export const TRACEPARENT = "traceparent";

/** Version 00 is exactly this long; later versions may append fields after a dash. */
const V00_LENGTH = 55;
/** Longer than any traceparent a known version defines: refused before a regex looks at it. */
const MAX_LENGTH = 256;
const HEAD = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

/** The context a `traceparent` value names, or undefined when it is not a valid one. */
export function parseTraceparent(value: unknown): SpanContext | undefined {
  if (typeof value !== "string" || value.length < V00_LENGTH || value.length > MAX_LENGTH) return undefined;
  const m = HEAD.exec(value);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags] = m as unknown as [string, string, string, string, string];
  if (version === "ff") return undefined;
  if (version === "00" ? value.length !== V00_LENGTH : value.length > V00_LENGTH && value[V00_LENGTH] !== "-") return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, sampled: (parseInt(flags, 16) & 1) === 1 };
}

export function formatTraceparent(ctx: SpanContext): string {
  return `00-${ctx.traceId}-${ctx.spanId}-${ctx.sampled ? "01" : "00"}`;
}
