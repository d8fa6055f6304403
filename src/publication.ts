import type { Payload } from "./protocol/payload.js";
import type { SpanContext } from "./tracing/context.js";

/** Who a client is, as shown to others (presence, join/leave, publisher info). */
export interface ClientInfo {
  client: string;
  /** Empty string for anonymous clients. */
  user: string;
  /** The token's `info` claim, when present. */
  info?: unknown;
}

/** A message in a channel, as it travels from broker to hub to transports. */
export interface Publication {
  ch: string;
  data: Payload;
  /** Position in the channel's history; absent for channels without history. */
  offset?: number;
  /** The channel's previous offset (0 for its first publication), to detect gaps in live delivery. */
  prev?: number;
  /** Set when a client published (publisher identity, without token info). */
  info?: { client: string; user: string };
  /** Wall-clock ms when the publication entered the system, for delivery latency. */
  ts: number;
  /** The publish span's context (NATS header `traceparent`); only read and set with tracing on. */
  trace?: SpanContext;
}

/** A channel position: offsets only compare within one epoch. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** Epochs are short identifiers; longer input is not a position this gateway handed out. */
const MAX_EPOCH_LENGTH = 64;

/** A client-supplied `{offset, epoch}`, or undefined when the value is not one. */
export function asPosition(value: unknown): StreamPosition | undefined {
  const p = value as Partial<StreamPosition> | null;
  if (
    typeof p !== "object" ||
    p === null ||
    typeof p.offset !== "number" ||
    !Number.isSafeInteger(p.offset) ||
    p.offset < 0 ||
    typeof p.epoch !== "string" ||
    p.epoch.length > MAX_EPOCH_LENGTH
  ) {
    return undefined;
  }
  return { offset: p.offset, epoch: p.epoch };
}
