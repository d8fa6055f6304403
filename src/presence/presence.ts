import type { ClientInfo } from "../publication.js";

export interface PresenceStats {
  clients: number;
  users: number;
}

/** Who is subscribed to a channel right now, across every gateway. */
export interface Presence {
  add(ch: string, info: ClientInfo): Promise<void>;
  remove(ch: string, client: string): Promise<void>;
  get(ch: string): Promise<Record<string, { user: string; info?: unknown }>>;
  stats(ch: string): Promise<PresenceStats>;
  close(): Promise<void>;
}
