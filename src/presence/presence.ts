import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { ClientInfo } from "../publication.js";

export interface PresenceStats {
  clients: number;
  users: number;
}

/** Who is subscribed to a channel right now, across every gateway. */
export interface Presence {
  add(ch: string, info: ClientInfo): Promise<void>;
  remove(ch: string, client: string): Promise<void>;
  /** Whether anyone with this identity (user id, or client id for anonymous clients) is present. */
  has(ch: string, identity: string): Promise<boolean>;
  get(ch: string): Promise<Record<string, { user: string; info?: unknown }>>;
  stats(ch: string): Promise<PresenceStats>;
  /**
   * Clients present, for the gateway's own decisions (lifecycle transitions): in NATS mode this
   * read queues behind other JetStream work instead of being refused when the gateway is busy.
   */
  clients(ch: string): Promise<number>;
  close(): Promise<void>;
}

/**
 * Join/leave are about people, not sockets: a user's second tab or quick reconnect is not news.
 * Anonymous clients have no user id, so each is its own identity.
 */
export function presenceIdentity(info: { client: string; user: string }): string {
  return info.user === "" ? `anon:${info.client}` : `user:${info.user}`;
}

/**
 * A presence list is answered whole; past this many members it is refused (413) and clients use
 * presence_stats. It bounds what one command can cost (one read per member in NATS mode) and
 * the size of the reply.
 */
export const MAX_PRESENCE_LIST = 1000;

export function tooManyMembers(n: number): ProtocolError {
  return new ProtocolError(
    ErrorCode.TooLarge,
    `channel has ${n} members, more than ${MAX_PRESENCE_LIST} can be listed; use presence_stats`,
  );
}
