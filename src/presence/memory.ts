import type { ClientInfo } from "../publication.js";
import { MAX_PRESENCE_LIST, presenceIdentity, tooManyMembers, type Presence, type PresenceStats } from "./presence.js";

interface Channel {
  members: Map<string, { user: string; info?: unknown }>;
  /** Connections per identity, so `has` and `stats` never scan the member list. */
  identities: Map<string, number>;
}

export class MemoryPresence implements Presence {
  private readonly channels = new Map<string, Channel>();

  async add(ch: string, info: ClientInfo): Promise<void> {
    let c = this.channels.get(ch);
    if (!c) this.channels.set(ch, (c = { members: new Map(), identities: new Map() }));
    if (!c.members.has(info.client)) {
      const id = presenceIdentity(info);
      c.identities.set(id, (c.identities.get(id) ?? 0) + 1);
    }
    c.members.set(info.client, info.info === undefined ? { user: info.user } : { user: info.user, info: info.info });
  }

  async remove(ch: string, client: string): Promise<void> {
    const c = this.channels.get(ch);
    const member = c?.members.get(client);
    if (!c || !member) return;
    c.members.delete(client);
    const id = presenceIdentity({ client, user: member.user });
    const n = (c.identities.get(id) ?? 1) - 1;
    if (n > 0) c.identities.set(id, n);
    else c.identities.delete(id);
    if (c.members.size === 0) this.channels.delete(ch);
  }

  async has(ch: string, identity: string): Promise<boolean> {
    return this.channels.get(ch)?.identities.has(identity) ?? false;
  }

  async get(ch: string): Promise<Record<string, { user: string; info?: unknown }>> {
    const members = this.channels.get(ch)?.members;
    if (members && members.size > MAX_PRESENCE_LIST) throw tooManyMembers(members.size);
    return Object.fromEntries(members ?? []);
  }

  async stats(ch: string): Promise<PresenceStats> {
    const c = this.channels.get(ch);
    if (!c) return { clients: 0, users: 0 };
    let users = 0;
    for (const id of c.identities.keys()) if (!id.startsWith(ANON)) users++;
    return { clients: c.members.size, users };
  }

  async clients(ch: string): Promise<number> {
    return this.channels.get(ch)?.members.size ?? 0;
  }

  async close(): Promise<void> {}
}

const ANON = "anon:";
