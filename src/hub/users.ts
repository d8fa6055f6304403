/**
 * What the hub needs to know of a client session: whom it belongs to, how to end it, and (for
 * sessions whose channels the server may change, i.e. WebSocket) server-side (un)subscribes.
 */
export interface HubSession {
  readonly user: string;
  disconnect(code: number, reason: string, reconnect: boolean): void;
  subscribeByServer?(ch: string): void;
  unsubscribeByServer?(ch: string, reason: string): void;
}

/**
 * The sessions on this gateway by user, so a server-side disconnect, subscribe or unsubscribe
 * finds them. Anonymous sessions (user "") cannot be named by the server API, so they are not
 * kept: most connections of a public gateway cost no entry here.
 */
export class UserRegistry {
  private readonly byUser = new Map<string, Set<HubSession>>();

  register(session: HubSession): void {
    if (session.user === "") return;
    let set = this.byUser.get(session.user);
    if (!set) this.byUser.set(session.user, (set = new Set()));
    set.add(session);
  }

  unregister(session: HubSession): void {
    const set = this.byUser.get(session.user);
    if (!set) return;
    set.delete(session);
    if (set.size === 0) this.byUser.delete(session.user);
  }

  /** A copy: ending a session unregisters it. */
  sessionsOf(user: string): HubSession[] {
    const set = this.byUser.get(user);
    return set ? [...set] : [];
  }
}
