/**
 * What the hub needs to know of a client session: whom it belongs to, how to end it, and (for
 * sessions whose channels the server may change, i.e. WebSocket) server-side (un)subscribes.
 */
export interface HubSession {
  readonly user: string;
  /** The client id, shown in the admin console. */
  readonly client?: string;
  disconnect(code: number, reason: string, reconnect: boolean): void;
  subscribeByServer?(ch: string): void;
  unsubscribeByServer?(ch: string, reason: string): void;
}

/** A registered session as the admin console shows it. */
export interface UserSession {
  client: string;
  /** When it registered (connected), ms since the epoch. */
  since: number;
}

/**
 * The sessions on this gateway by user, so a server-side disconnect, subscribe or unsubscribe
 * finds them. Anonymous sessions (user "") cannot be named by the server API, so they are not
 * kept: most connections of a public gateway cost no entry here.
 */
export class UserRegistry {
  /** Each session with the moment it registered. */
  private readonly byUser = new Map<string, Map<HubSession, number>>();

  register(session: HubSession): void {
    if (session.user === "") return;
    let sessions = this.byUser.get(session.user);
    if (!sessions) this.byUser.set(session.user, (sessions = new Map()));
    sessions.set(session, Date.now());
  }

  unregister(session: HubSession): void {
    const sessions = this.byUser.get(session.user);
    if (!sessions) return;
    sessions.delete(session);
    if (sessions.size === 0) this.byUser.delete(session.user);
  }

  /** A copy: ending a session unregisters it. */
  sessionsOf(user: string): HubSession[] {
    const sessions = this.byUser.get(user);
    return sessions ? [...sessions.keys()] : [];
  }

  describe(user: string): UserSession[] {
    const sessions = this.byUser.get(user);
    if (!sessions) return [];
    return [...sessions].map(([s, since]) => ({ client: s.client ?? "", since }));
  }
}
