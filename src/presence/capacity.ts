import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Presence } from "./presence.js";

/** How long a channel's member count is trusted before it is read again. */
const FRESH_MS = 1_000;
/** Channels whose count is cached at once; beyond it the cache starts over. */
const MAX_CACHED = 10_000;

/**
 * The cap on a presence channel's members. Reading the count costs a request to the presence
 * store (in NATS mode a JetStream call), so it is cached for a second per channel and each join
 * admitted meanwhile is added to it: a burst of subscribes costs one read, and the cap can be
 * overshot only by joins on other replicas within that second.
 */
export class PresenceCapacity {
  private readonly counts = new Map<string, { at: number; clients: number }>();

  constructor(
    private readonly presence: Presence,
    private readonly max: number,
  ) {}

  /** Throws ProtocolError 429 when the channel already has `max` members. */
  async admit(ch: string, now = Date.now()): Promise<void> {
    let c = this.counts.get(ch);
    if (!c || now - c.at > FRESH_MS) {
      const { clients } = await this.presence.stats(ch);
      if (this.counts.size >= MAX_CACHED) this.counts.clear();
      c = { at: now, clients };
      this.counts.set(ch, c);
    }
    if (c.clients >= this.max) {
      throw new ProtocolError(ErrorCode.RateLimited, `presence of ${ch} is full (${this.max} members)`);
    }
    c.clients++;
  }
}
