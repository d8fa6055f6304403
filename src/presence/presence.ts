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
  close(): Promise<void>;
}

/**
 * Join/leave are about people, not sockets: a user's second tab or quick reconnect is not news.
 * Anonymous clients have no user id, so each is its own identity.
 */
export function presenceIdentity(info: { client: string; user: string }): string {
  return info.user === "" ? `anon:${info.client}` : `user:${info.user}`;
}
