import type { HistoryOptions, NamespaceOptions } from "../config/types.js";
import type { ClientInfo, Publication, StreamPosition } from "../publication.js";

/** What a broker delivers to its gateway. Calls for one channel arrive in publish order. */
export interface BrokerHandler {
  onPublication(pub: Publication): void;
  onJoin(ch: string, info: ClientInfo): void;
  onLeave(ch: string, info: ClientInfo): void;
  onControl(msg: ControlMessage): void;
  /**
   * The broker cannot prove that the channel's next publication follows the last one it handed
   * on (a gap it could not fill, a recreated stream). Called before any publication past the
   * break is handed on, so subscribers can be told to recover from history first.
   */
  onContinuityLost(ch: string, reason: string): void;
}

/** Gateway-wide commands about a user's connections that must reach every replica. */
export type ControlMessage =
  | { kind: "disconnect"; user: string; code: number; reason: string }
  | { kind: "subscribe"; user: string; ch: string }
  | { kind: "unsubscribe"; user: string; ch: string; reason: string };

export interface PublishOptions {
  /** Keep the publication in the channel's history (and give it an offset). */
  history?: HistoryOptions;
  /** A retried publish with the same key within the window is delivered once. */
  idempotencyKey?: string;
}

export interface PublishResult {
  offset?: number;
  epoch?: string;
}

/**
 * Moves publications, join/leave events and control messages between gateways. The hub calls
 * subscribe/unsubscribe once per channel per gateway, however many local clients listen.
 */
export interface Broker {
  start(handler: BrokerHandler): Promise<void>;
  publish(pub: Publication, opts: PublishOptions): Promise<PublishResult>;
  publishJoin(ch: string, info: ClientInfo): Promise<void>;
  publishLeave(ch: string, info: ClientInfo): Promise<void>;
  publishControl(msg: ControlMessage): Promise<void>;
  /**
   * Starts delivery of the channel to this gateway. For history channels resolves with the
   * channel's offset at that moment: every later publication is delivered, in order, without gaps.
   */
  subscribe(ch: string, ns: NamespaceOptions): Promise<number | undefined>;
  unsubscribe(ch: string): Promise<void>;
  close(): Promise<void>;
}

export type { StreamPosition };
