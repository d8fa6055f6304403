import { backendCall } from "../hub/backend-call.js";
import type { Logger } from "../log.js";
import type { Presence } from "../presence/presence.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { ClientInfo } from "../publication.js";

/**
 * Presence key under which a user's connections are registered. `$` cannot start a namespace
 * name, so no channel shares it, and the reaper never announces leaves for it.
 */
function keyOf(user: string): string {
  return `$conn.${user}`;
}

/**
 * The per-user connection limit across the whole cluster: each connection of a signed-in user is
 * an entry in the presence store (in NATS mode shared by every replica, with dead replicas'
 * entries expiring with their heartbeat). When the user already holds the limit, the newest
 * connection is refused; connections already open are never closed for it. Connects racing on
 * several replicas can overshoot by the number in flight at once.
 */
export class UserConnections {
  constructor(
    private readonly presence: Presence,
    private readonly max: number,
    private readonly log: Logger,
  ) {}

  /** Registers the connection; throws ProtocolError 429 when its user is at the limit. */
  async add(info: ClientInfo): Promise<void> {
    if (this.max === 0 || info.user === "") return;
    const key = keyOf(info.user);
    const { clients } = await backendCall(() => this.presence.stats(key), "user connection count failed", this.log);
    if (clients >= this.max) {
      throw new ProtocolError(ErrorCode.RateLimited, `user has too many connections (limit ${this.max})`);
    }
    await backendCall(() => this.presence.add(key, { client: info.client, user: info.user }), "user connection entry failed", this.log);
  }

  remove(info: ClientInfo): void {
    if (this.max === 0 || info.user === "") return;
    this.presence.remove(keyOf(info.user), info.client).catch((err: unknown) => {
      this.log.warn({ err }, "removing a user connection entry failed");
    });
  }
}
