/**
 * The seam between the client and its transports. A transport moves protocol v1 frames and knows
 * nothing of subscriptions, recovery or tokens; it reports what it reads and how it ended to the
 * TransportHost the client gives it, and calls nothing else of the client.
 */
import type { NatsedgeError } from "./errors.js";
import type { Position } from "./subscription.js";

export type TransportName = "websocket" | "longpoll";
export type Frame = Record<string, unknown>;

export interface Transport {
  readonly name: TransportName;
  /** Commands, each with its `id`. */
  send(frames: Frame[]): void;
  /** Leaves for good (a switch, disconnect(), a dead connection). */
  close(): void;
  /**
   * Present on a transport that subscribes by naming channels in each poll instead of sending
   * `subscribe` (long-poll): the client hands it the channels to follow and to stop following.
   */
  follow?(channels: string[]): void;
  unfollow?(channel: string): void;
}

/** What the client gives one transport; every call concerns that transport. */
export interface TransportHost {
  /** Frames in the order read: replies to commands and pushes. */
  receive(frames: Frame[]): void;
  /** The transport ended: a socket closed, a request failed, the session was ended. */
  closed(code: number, reason: string): void;
  /** The subscriptions among `channels` to poll now, each from its position. */
  polls(channels: ReadonlySet<string>): PolledChannel[];
}

/** One subscription in one poll; its answer goes to the subscription that was polled. */
export interface PolledChannel {
  readonly ch: string;
  /** After the last publication delivered; null: from now. */
  readonly since: Position | null;
  /** The channel's subscription token, sent in its cursor. */
  readonly token?: string;
  /** The channel's position after `pubs`, and those publications. */
  answer(state: Frame): void;
  /** The poll refused the channel (the transport stops following it). */
  refuse(err: NatsedgeError): void;
}

/** How a transport gets its host: the client binds the seam to that transport. */
export type Attach = (transport: Transport) => TransportHost;
