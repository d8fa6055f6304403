import type { ClientInfo } from "../publication.js";
import type { Presence, PresenceStats } from "./presence.js";

type Members = Map<string, { user: string; info?: unknown }>;

export class MemoryPresence implements Presence {
  private readonly channels = new Map<string, Members>();

  async add(ch: string, info: ClientInfo): Promise<void> {
    let members = this.channels.get(ch);
    if (!members) this.channels.set(ch, (members = new Map()));
    members.set(info.client, info.info === undefined ? { user: info.user } : { user: info.user, info: info.info });
  }

  async remove(ch: string, client: string): Promise<void> {
    const members = this.channels.get(ch);
    if (!members) return;
    members.delete(client);
    if (members.size === 0) this.channels.delete(ch);
  }

  async get(ch: string): Promise<Record<string, { user: string; info?: unknown }>> {
    return Object.fromEntries(this.channels.get(ch) ?? []);
  }

  async stats(ch: string): Promise<PresenceStats> {
    const members = this.channels.get(ch);
    if (!members) return { clients: 0, users: 0 };
    const users = new Set<string>();
    for (const m of members.values()) users.add(m.user);
    return { clients: members.size, users: users.size };
  }

  async close(): Promise<void> {}
}
