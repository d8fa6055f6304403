import type { ResolvedChannel } from "../channels.js";
import type { Hub } from "../hub/hub.js";
import type { Logger } from "../log.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { ClientInfo } from "../publication.js";

/**
 * A polling client stays present this long after its last poll ended on this gateway; with the
 * presence grace period its leave is announced within 60 s of it stopping.
 */
export const POLLED_PRESENCE_TTL_MS = 45_000;

/** A polling client present in a channel on this gateway. */
interface Entry {
  timer: NodeJS.Timeout;
  r: ResolvedChannel;
  info: ClientInfo;
  /** Polls in progress that pin the entry (it may not expire while one is held). */
  held: number;
}

/**
 * Presence for clients that hold no connection (long-poll): a client is present in a channel
 * while it polls it and POLLED_PRESENCE_TTL_MS after, joins and leaves going through the hub like
 * a connected client's.
 */
export class PolledPresence {
  private readonly entries = new Map<string, Entry>();
  /** Entries per client, capped at maxEntries (each outlives the poll that made it). */
  private readonly perClient = new Map<string, number>();

  constructor(
    private readonly hub: Hub,
    private readonly log: Logger,
    private readonly maxEntries: number,
  ) {}

  /**
   * Pins the client's presence in the channel for the duration of a poll; false if the channel
   * has none. Throws ProtocolError 429 when the channel's presence is full or the client already
   * has maxEntries entries here.
   */
  async pin(r: ResolvedChannel, info: ClientInfo): Promise<boolean> {
    if (!r.options.presence) return false;
    const key = r.ch + "\u0000" + info.client;
    if (this.pinExisting(key)) return true;
    if ((this.perClient.get(info.client) ?? 0) >= this.maxEntries) {
      throw new ProtocolError(ErrorCode.RateLimited, `this session is present in ${this.maxEntries} channels already`);
    }
    await this.hub.presenceRoom(r.ch);
    if (this.pinExisting(key)) return true; // another poll of the client joined meanwhile
    const entry: Entry = { timer: undefined as unknown as NodeJS.Timeout, r, info, held: 1 };
    entry.timer = setTimeout(() => {
      if (entry.held > 0) return void entry.timer.refresh();
      this.drop(key, entry);
    }, POLLED_PRESENCE_TTL_MS);
    entry.timer.unref();
    this.entries.set(key, entry);
    this.perClient.set(info.client, (this.perClient.get(info.client) ?? 0) + 1);
    this.hub.join(r.ch, info, r.options.joinLeave).catch((err: unknown) => this.log.warn({ err, ch: r.ch }, "long-poll presence join failed"));
    return true;
  }

  /**
   * A poll ended: the entry is no longer pinned and lives POLLED_PRESENCE_TTL_MS from now. An
   * entry already left (an `unsubscribe` while the poll was held) stays gone: re-adding it would
   * announce a new join.
   */
  release(r: ResolvedChannel, info: ClientInfo): void {
    const entry = this.entries.get(r.ch + "\u0000" + info.client);
    if (!entry) return;
    entry.held = Math.max(0, entry.held - 1);
    entry.timer.refresh();
  }

  /** The client left the channel: the leave is announced now. */
  leave(r: ResolvedChannel, info: ClientInfo): void {
    const key = r.ch + "\u0000" + info.client;
    const entry = this.entries.get(key);
    if (entry) this.drop(key, entry);
  }

  /** Every entry leaves now (the gateway is draining). */
  clear(): void {
    for (const [key, entry] of this.entries) this.drop(key, entry);
  }

  private pinExisting(key: string): boolean {
    const existing = this.entries.get(key);
    if (!existing) return false;
    existing.held++;
    existing.timer.refresh();
    return true;
  }

  private drop(key: string, entry: Entry): void {
    clearTimeout(entry.timer);
    this.entries.delete(key);
    const client = entry.info.client;
    const n = (this.perClient.get(client) ?? 1) - 1;
    if (n > 0) this.perClient.set(client, n);
    else this.perClient.delete(client);
    this.hub.leave(entry.r.ch, entry.info, entry.r.options.joinLeave);
  }
}
