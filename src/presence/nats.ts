import type { JetStreamClient } from "nats";
import type { Logger } from "../log.js";
import type { NatsLink } from "../nats/connection.js";
import { pack, unpack } from "../protocol/msgpack.js";
import type { ClientInfo } from "../publication.js";
import type { JsLimiter } from "../nats/js-limiter.js";
import { isNotFound, NODE_TTL_MS, type Jsm } from "../nats/streams.js";
import type { Subjects } from "../nats/subjects.js";
import { MAX_PRESENCE_LIST, presenceIdentity, tooManyMembers, type Presence, type PresenceStats } from "./presence.js";

const HEARTBEAT_MS = NODE_TTL_MS / 3;
const LIVE_NODES_CACHE_MS = 1_000;

/**
 * Presence in a JetStream stream, one subject per (channel, identity, node, client) holding the
 * member's info. Counting and membership questions are answered from the stream's per-subject
 * state (one request, no consumers). Entries of a gateway that died are ignored as soon as its
 * heartbeat expires, and removed by the reaper.
 *
 * Every JetStream request passes the gateway's limiter. Only the reads a client asked for
 * (`presence`, `presence_stats`, the capacity check before a join) may be refused when it is
 * full; joins, leaves and the reaper queue, since dropping them would leave presence wrong.
 */
export class NatsPresence implements Presence {
  /** Subjects of this gateway's own entries, to remove them without a lookup. */
  private readonly own = new Map<string, string>();
  private heartbeat: NodeJS.Timeout | undefined;
  private liveNodes: { at: number; nodes: Promise<Set<string>> } | undefined;

  constructor(
    private readonly jsm: Jsm,
    private readonly js: JetStreamClient,
    private readonly subjects: Subjects,
    readonly node: string,
    private readonly log: Logger,
    private readonly link: NatsLink,
    private readonly limiter: JsLimiter,
  ) {}

  async start(): Promise<void> {
    await this.beat();
    this.heartbeat = setInterval(() => {
      this.beat().catch((err: unknown) => this.log.warn({ err }, "presence heartbeat failed"));
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  private async beat(): Promise<void> {
    await this.js.publish(this.subjects.node(this.node), new Uint8Array(0));
  }

  /** Gateways whose heartbeat has not expired; cached briefly, it is asked on every join. */
  live(): Promise<Set<string>> {
    const now = Date.now();
    if (!this.liveNodes || now - this.liveNodes.at > LIVE_NODES_CACHE_MS) {
      const nodes = this.subjectCounts(this.subjects.nodesStream(), this.subjects.allNodes()).then(
        (counts) => new Set(Object.keys(counts).map((s) => s.slice(s.lastIndexOf(".") + 1))),
      );
      nodes.catch(() => {
        this.liveNodes = undefined;
      });
      this.liveNodes = { at: now, nodes };
    }
    return this.liveNodes.nodes;
  }

  async add(ch: string, info: ClientInfo): Promise<void> {
    this.link.require();
    const subject = this.subjects.presence(ch, presenceIdentity(info), this.node, info.client);
    const value = info.info === undefined ? { user: info.user } : { user: info.user, info: info.info };
    // Remembered before the publish: one that timed out may still have been stored, and must be
    // removable.
    this.own.set(ch + "\u0000" + info.client, subject);
    await this.js.publish(subject, pack(value));
  }

  async remove(ch: string, client: string): Promise<void> {
    const key = ch + "\u0000" + client;
    const subject = this.own.get(key);
    if (!subject) return;
    this.own.delete(key);
    await this.purge(subject);
  }

  /** Purging the subject leaves nothing behind, so per-subject counts stay exact. */
  private async purge(subject: string): Promise<void> {
    await this.limiter.wait(() => this.jsm.streams.purge(this.subjects.presenceStream(), { filter: subject }));
  }

  async has(ch: string, identity: string): Promise<boolean> {
    this.link.require();
    const [counts, live] = await Promise.all([
      this.subjectCounts(this.subjects.presenceStream(), this.subjects.presenceOfIdentity(ch, identity)),
      this.live(),
    ]);
    return Object.keys(counts).some((s) => live.has(this.subjects.parsePresence(s)?.node ?? ""));
  }

  private async members(ch: string): Promise<Array<{ subject: string; client: string; identity: string }>> {
    this.link.require();
    const [counts, live] = await Promise.all([
      this.counts(this.subjects.presenceStream(), this.subjects.presenceOfChannel(ch), "admit"),
      this.live(),
    ]);
    // One client may hold entries on several gateways (a long-poll client served round-robin):
    // it is one member.
    const out = new Map<string, { subject: string; client: string; identity: string }>();
    for (const subject of Object.keys(counts)) {
      const p = this.subjects.parsePresence(subject);
      if (p && live.has(p.node)) out.set(p.client, { subject, client: p.client, identity: p.identity });
    }
    return [...out.values()];
  }

  async get(ch: string): Promise<Record<string, { user: string; info?: unknown }>> {
    const members = await this.members(ch);
    if (members.length > MAX_PRESENCE_LIST) throw tooManyMembers(members.length);
    const stream = this.subjects.presenceStream();
    const entries = await Promise.all(
      members.map(async (m) => {
        try {
          const msg = await this.limiter.wait(() => this.jsm.direct.getMessage(stream, { last_by_subj: m.subject }));
          return [m.client, unpack(msg.data) as { user: string; info?: unknown }] as const;
        } catch (err) {
          if (isNotFound(err)) return undefined; // left in the meantime
          throw err;
        }
      }),
    );
    return Object.fromEntries(entries.filter((e) => e !== undefined));
  }

  async stats(ch: string): Promise<PresenceStats> {
    const members = await this.members(ch);
    const users = new Set<string>();
    for (const m of members) if (m.identity.startsWith("user:")) users.add(m.identity);
    return { clients: members.length, users: users.size };
  }

  /** Whether this gateway is the one that reaps: the live gateway with the smallest id. */
  async leads(): Promise<boolean> {
    return [...(await this.live())].sort()[0] === this.node;
  }

  /**
   * Removes the entries of gateways whose heartbeat expired, and returns the leaves they make:
   * one per channel and identity that has no entry on a live gateway left.
   */
  async reapDead(): Promise<{ reaped: number; leaves: Array<{ ch: string; info: ClientInfo }> }> {
    const live = await this.live();
    const counts = await this.subjectCounts(this.subjects.presenceStream(), this.subjects.allPresence());
    const survivors = new Set<string>();
    const dead: Array<{ subject: string; ch: string; identity: string; client: string }> = [];
    for (const subject of Object.keys(counts)) {
      const p = this.subjects.parsePresence(subject);
      if (!p) continue;
      if (live.has(p.node)) survivors.add(p.ch + "\u0000" + p.identity);
      else dead.push({ subject, ...p });
    }
    const leaves: Array<{ ch: string; info: ClientInfo }> = [];
    for (const d of dead) {
      const info = await this.entryInfo(d.subject, d.client);
      await this.purge(d.subject);
      const key = d.ch + "\u0000" + d.identity;
      if (survivors.has(key) || !info) continue;
      survivors.add(key); // one leave per identity, however many dead connections it had
      leaves.push({ ch: d.ch, info });
    }
    return { reaped: dead.length, leaves };
  }

  private async entryInfo(subject: string, client: string): Promise<ClientInfo | undefined> {
    try {
      const v = unpack(await this.lastValue(subject)) as { user: string; info?: unknown };
      const info: ClientInfo = { client, user: v.user };
      if (v.info !== undefined) info.info = v.info;
      return info;
    } catch {
      return undefined;
    }
  }

  private async lastValue(subject: string): Promise<Uint8Array> {
    const stream = this.subjects.presenceStream();
    return (await this.limiter.wait(() => this.jsm.direct.getMessage(stream, { last_by_subj: subject }))).data;
  }

  /** Subject -> message count for the stream's subjects matching `filter`. */
  private subjectCounts(stream: string, filter: string): Promise<Record<string, number>> {
    return this.counts(stream, filter, "wait");
  }

  private async counts(stream: string, filter: string, gate: "admit" | "wait"): Promise<Record<string, number>> {
    const info = await this.limiter[gate](() => this.jsm.streams.info(stream, { subjects_filter: filter }));
    return info.state.subjects ?? {};
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
  }
}
