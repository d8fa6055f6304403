import { userConnectionsKey, USER_CONNECTIONS_PREFIX } from "../limits/user-connections.js";
import type { Logger } from "../log.js";
import type { Presence } from "../presence/presence.js";
import type { ClientInfo } from "../publication.js";
import type { EventPublisher } from "./publisher.js";
import type { Transitions } from "./transitions.js";
import { MAX_REASON, type EventTransport } from "./types.js";

/**
 * Presence key under which each gateway holding a channel registers (one entry per gateway,
 * the gateway id as its client id). `$` cannot start a namespace name, so no channel shares it.
 */
const HOLDERS_PREFIX = "$occ.";

/**
 * Where the gateway reports what happens to clients, users and channels; what is news
 * cluster-wide is decided here and handed to the publisher. Client and presence events are this
 * gateway's own. A user's online/offline and a channel's occupied/vacated are cluster-wide: they
 * follow a count in the presence store (a user's connections, the gateways holding a channel)
 * and are decided by Transitions, so one replica announces each change.
 */
export class LifecycleEvents {
  /** Channels this gateway holds, with the timer of a release waiting out the grace period. */
  private readonly held = new Map<string, { release?: NodeJS.Timeout }>();
  /** Presence updates per channel run in call order. */
  private readonly chains = new Map<string, Promise<void>>();

  constructor(
    private readonly publisher: EventPublisher,
    private readonly transitions: Transitions,
    private readonly presence: Presence,
    private readonly node: string,
    /** A vacated channel waits this long for a new subscriber, as a departed client does in presence. */
    private readonly graceMs: number,
    private readonly log: Logger,
  ) {}

  /** Whether users' connections need counting in the presence store. */
  get tracksUsers(): boolean {
    return this.publisher.wants("user.online") || this.publisher.wants("user.offline");
  }

  private get tracksChannels(): boolean {
    return this.publisher.wants("channel.occupied") || this.publisher.wants("channel.vacated");
  }

  // --- clients and presence (this gateway's own) ------------------------------------------

  clientConnected(info: ClientInfo, transport: EventTransport): void {
    this.publisher.emit("client.connect", { client: info.client, user: info.user, transport });
  }

  clientDisconnected(info: ClientInfo, transport: EventTransport, code: number, reason: string): void {
    this.publisher.emit("client.disconnect", {
      client: info.client,
      user: info.user,
      transport,
      code,
      reason: reason.slice(0, MAX_REASON),
    });
  }

  presenceJoined(ch: string, info: ClientInfo): void {
    this.publisher.emit("presence.join", withInfo({ ch, client: info.client, user: info.user }, info));
  }

  presenceLeft(ch: string, info: ClientInfo): void {
    this.publisher.emit("presence.leave", withInfo({ ch, client: info.client, user: info.user }, info));
  }

  // --- users (cluster-wide) ---------------------------------------------------------------

  /**
   * A connection entry of the user was added here (with `present`: whether this gateway still
   * holds one) or removed (here, or by the reaper).
   */
  userChanged(user: string, present?: () => boolean): void {
    if (!this.tracksUsers) return;
    void this.transitions.settle(
      `u:${user}`,
      () => this.presence.clients(userConnectionsKey(user)),
      (on) => this.publisher.emit(on ? "user.online" : "user.offline", { user }),
      present,
    );
  }

  // --- channels (cluster-wide) ------------------------------------------------------------

  /** The first local subscriber of a channel (the hub's channel table). */
  channelHeld(ch: string): void {
    if (!this.tracksChannels) return;
    const entry = this.held.get(ch);
    if (entry) {
      clearTimeout(entry.release);
      entry.release = undefined;
      return;
    }
    this.held.set(ch, {});
    this.chain(ch, () => this.presence.add(HOLDERS_PREFIX + ch, { client: this.node, user: "" }), true);
  }

  /** The last local subscriber of a channel is gone; the channel is let go after the grace period. */
  channelReleased(ch: string): void {
    const entry = this.held.get(ch);
    if (!entry || entry.release) return;
    if (this.graceMs === 0) this.letGo(ch);
    else entry.release = setTimeout(() => this.letGo(ch), this.graceMs);
  }

  private letGo(ch: string): void {
    this.held.delete(ch);
    this.chain(ch, () => this.presence.remove(HOLDERS_PREFIX + ch, this.node));
  }

  /** Runs a presence update of the channel's holders after the previous one, then settles the channel. */
  private chain(ch: string, update: () => Promise<void>, adds = false): void {
    const prev = this.chains.get(ch) ?? Promise.resolve();
    const next = prev.then(async () => {
      let added = adds;
      try {
        await update();
      } catch (err) {
        added = false;
        this.log.warn({ err, ch }, "channel holder update failed");
      }
      await this.settleChannel(ch, added ? () => this.held.has(ch) : undefined);
    });
    this.chains.set(ch, next);
    void next.then(() => {
      if (this.chains.get(ch) === next) this.chains.delete(ch);
    });
  }

  private settleChannel(ch: string, present?: () => boolean): Promise<void> {
    return this.transitions.settle(
      `c:${ch}`,
      () => this.presence.clients(HOLDERS_PREFIX + ch),
      (on) => this.publisher.emit(on ? "channel.occupied" : "channel.vacated", { ch }),
      present,
    );
  }

  // --- dead gateways ----------------------------------------------------------------------

  /** The reaper removed a dead gateway's entries under this presence key. */
  reaped(key: string): void {
    if (key.startsWith(USER_CONNECTIONS_PREFIX)) this.userChanged(key.slice(USER_CONNECTIONS_PREFIX.length));
    else if (key.startsWith(HOLDERS_PREFIX) && this.tracksChannels) void this.settleChannel(key.slice(HOLDERS_PREFIX.length));
  }

  /**
   * At shutdown, after the transports closed every client: this gateway lets go of its channels
   * now, the transitions that follow are settled, and the webhook gets what is queued.
   */
  async close(): Promise<void> {
    for (const [ch, entry] of this.held) {
      clearTimeout(entry.release);
      this.letGo(ch);
    }
    while (this.chains.size > 0) await Promise.all(this.chains.values());
    await this.transitions.idle();
    await this.publisher.close();
  }
}

function withInfo<T extends object>(fields: T, info: ClientInfo): T & { info?: unknown } {
  return info.info === undefined ? fields : { ...fields, info: info.info };
}
