import { backendCall } from "../hub/backend-call.js";
import type { Logger } from "../log.js";
import type { Presence } from "../presence/presence.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { ClientInfo } from "../publication.js";
import { LocalUserCounts, type UserCounts } from "./user-counts.js";

/**
 * Presence keys under which users' connections are registered. `$` cannot start a namespace
 * name, so no channel shares them, and the reaper never announces leaves for them.
 */
export const USER_CONNECTIONS_PREFIX = "$conn.";

export function userConnectionsKey(user: string): string {
  return USER_CONNECTIONS_PREFIX + user;
}

/** Who follows a user's connection count (lifecycle events), and how long a closed one lingers. */
export interface UserWatch {
  /**
   * After an entry of the user's was added or removed; for an add, `present` tells (when asked)
   * whether this gateway still holds one of the user's entries.
   */
  changed(user: string, present?: () => boolean): void;
  /**
   * A closed connection's entry is removed this much later, so that a quick reconnect keeps the
   * count above zero; a gateway that dies meanwhile leaves the entry to the reaper.
   */
  graceMs: number;
}

/**
 * The per-user connection limit across the whole cluster: each gateway publishes how many of a
 * user's connections it holds (UserCounts) and checks the limit against every live gateway's
 * counts in memory. When the user already holds the limit, the newest connection is refused;
 * connections already open are never closed for it. Connects racing on several replicas can
 * overshoot by the number in flight at once.
 *
 * Only when something follows users coming online and going offline (`watch`: lifecycle events)
 * is each connection also an entry in the presence store (in NATS mode shared by every replica,
 * with dead replicas' entries expiring with their heartbeat), since that needs to know whose
 * connections they are, not only how many; the limit alone never pays for those writes.
 */
export class UserConnections {
  /** Removals waiting out the grace period, by client id. */
  private readonly lingering = new Map<string, { timer: NodeJS.Timeout; run: () => Promise<void> }>();
  private readonly removing = new Set<Promise<void>>();
  /** Connections of each user this gateway has added and not begun to remove (lingering ones too): its count. */
  private readonly held = new Map<string, number>();

  constructor(
    private readonly presence: Presence,
    private readonly max: number,
    private readonly log: Logger,
    private readonly watch?: UserWatch,
    private readonly totals: UserCounts = new LocalUserCounts(),
  ) {
    if (max > 0) totals.rewriteFrom(() => this.held);
  }

  private counts(info: ClientInfo): boolean {
    return (this.max > 0 || this.watch !== undefined) && info.user !== "";
  }

  /** Registers the connection; throws ProtocolError 429 when its user is at the limit. */
  async add(info: ClientInfo): Promise<void> {
    if (!this.counts(info)) return;
    // An SSE session keeps its client id across reconnects: its entry, still lingering, is its
    // entry again.
    const lingering = this.lingering.get(info.client);
    if (lingering) {
      clearTimeout(lingering.timer);
      this.lingering.delete(info.client);
    }
    const user = info.user;
    if (this.max > 0 && !lingering) {
      const clients = await backendCall(() => this.totals.total(user, this.held.get(user) ?? 0), "user connection count failed", this.log);
      if (clients >= this.max) {
        throw new ProtocolError(ErrorCode.RateLimited, `user has too many connections (limit ${this.max})`);
      }
    }
    if (this.watch) {
      await backendCall(() => this.presence.add(userConnectionsKey(user), { client: info.client, user }), "user connection entry failed", this.log);
    }
    if (!lingering) {
      const n = (this.held.get(user) ?? 0) + 1;
      this.held.set(user, n);
      await this.publishCount(user, n);
    }
    this.watch?.changed(user, () => this.held.has(user));
  }

  remove(info: ClientInfo): void {
    if (!this.counts(info)) return;
    const run = async (): Promise<void> => {
      this.lingering.delete(info.client);
      const left = (this.held.get(info.user) ?? 1) - 1;
      if (left > 0) this.held.set(info.user, left);
      else this.held.delete(info.user);
      if (this.watch) {
        try {
          await this.presence.remove(userConnectionsKey(info.user), info.client);
          this.watch.changed(info.user);
        } catch (err) {
          this.log.warn({ err }, "removing a user connection entry failed");
        }
      }
      await this.publishCount(info.user, left);
    };
    const graceMs = this.watch?.graceMs ?? 0;
    if (graceMs === 0) this.track(run());
    else if (!this.lingering.has(info.client)) {
      this.lingering.set(info.client, { timer: setTimeout(() => this.track(run()), graceMs), run });
    }
  }

  /**
   * Tells the other gateways this one's count; a failure only leaves it stale until the user's
   * next change or the periodic rewrite, and never costs a client its connection.
   */
  private async publishCount(user: string, n: number): Promise<void> {
    if (this.max === 0) return;
    try {
      await this.totals.set(user, n);
    } catch (err) {
      this.log.warn({ err }, "publishing a user connection count failed");
    }
  }

  private track(p: Promise<void>): void {
    this.removing.add(p);
    void p.finally(() => this.removing.delete(p));
  }

  /** Removals still lingering happen now (shutdown), and every removal has finished. */
  async flush(): Promise<void> {
    for (const l of [...this.lingering.values()]) {
      clearTimeout(l.timer);
      this.track(l.run());
    }
    await Promise.all(this.removing);
  }
}
