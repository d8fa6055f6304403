import { consumerOpts, type JetStreamClient, type JetStreamSubscription } from "nats";
import type { UserCounts } from "../limits/user-counts.js";
import type { Logger } from "../log.js";
import type { NatsLink } from "./connection.js";
import { MAX_FOLLOWED_USERS, USER_COUNT_TTL_MS } from "./streams.js";
import { encodeToken, type Subjects } from "./subjects.js";
import { untilDone } from "./until-done.js";

/** Counts are written again well before they age out of the stream. */
const REFRESH_MS = USER_COUNT_TTL_MS / 3;
const REFRESH_BATCH = 64;
/** A count is a small non-negative integer as text; anything longer is not one. */
const MAX_COUNT_BYTES = 10;
/** Counts of gateways that are gone are dropped this often (the stream only ages them out). */
const PRUNE_MS = 60_000;

/**
 * Per-user connection counts in a JetStream stream: one subject per (user, gateway) holding that
 * gateway's count as text, the last write winning. Every gateway follows the whole stream (the
 * last message per subject, then every new one) and keeps the counts in memory, so checking a
 * connect costs no request at all: counting every user's entries on the server instead (a
 * filtered stream info) takes time in proportion to all of them, and a reconnect storm of
 * thousands of users made that minutes.
 *
 * A gateway that dies leaves its counts behind; they are ignored once its heartbeat expires and
 * age out of the stream. A write lost while NATS is away is corrected by the user's next change
 * or the periodic rewrite, and a gateway that has just started sees the others' counts a moment
 * later: the limit is approximate in those moments, as it is for connects that race on several
 * gateways.
 */
export class NatsUserCounts implements UserCounts {
  /** This gateway's non-zero counts (kept by UserConnections), written again before they age out. */
  private own: () => ReadonlyMap<string, number> = () => new Map();
  /** Every other gateway's non-zero counts: user (as its subject token) -> node -> count. */
  private readonly others = new Map<string, Map<string, number>>();
  /** Counts set during this turn of the event loop, written together at its end. */
  private pending = new Map<string, number>();
  private batch: Promise<void> | undefined;
  private refresh: NodeJS.Timeout | undefined;
  private prune: NodeJS.Timeout | undefined;
  private sub: JetStreamSubscription | undefined;
  /** Ends the attempts to follow the counts (and a subscription made too late) once closed. */
  private readonly closing = new AbortController();

  constructor(
    private readonly js: JetStreamClient,
    private readonly subjects: Subjects,
    private readonly node: string,
    private readonly link: NatsLink,
    private readonly liveNodes: () => Promise<Set<string>>,
    private readonly log: Logger,
  ) {}

  /**
   * Starts the periodic rewrite and pruning, and begins following the counts without waiting for
   * the subscription: creating its consumer is a JetStream API request, and after a replica's
   * restart the survivors' recovery reads queue ahead of it in nats-server (up to ~0.7 s in the
   * reconnect storm), time in which a gateway waiting for it would refuse its clients. Until
   * the counts arrive, connects are checked against those seen so far, as they are while the
   * first ones stream in.
   */
  start(): void {
    void this.follow();
    this.refresh = setInterval(() => {
      this.rewrite().catch((err: unknown) => this.log.warn({ err }, "user connection counts refresh failed"));
    }, REFRESH_MS);
    this.refresh.unref();
    this.prune = setInterval(() => {
      this.forgetGone().catch((err: unknown) => this.log.warn({ err }, "pruning user connection counts failed"));
    }, PRUNE_MS);
    this.prune.unref();
  }

  /** Subscribes, retrying while JetStream refuses (a cluster still forming), until closed. */
  private async follow(): Promise<void> {
    const opts = consumerOpts();
    opts.orderedConsumer();
    opts.deliverLastPerSubject();
    opts.callback((err, m) => {
      if (err || !m) return;
      this.record(m.subject, m.data);
    });
    const { signal } = this.closing;
    let sub: JetStreamSubscription;
    try {
      sub = await untilDone(() => this.js.subscribe(this.subjects.allUserCounts(), opts), "user connection counts not followed yet", this.log, signal);
    } catch {
      return; // closed while trying
    }
    if (signal.aborted) sub.unsubscribe();
    else this.sub = sub;
  }

  rewriteFrom(counts: () => ReadonlyMap<string, number>): void {
    this.own = counts;
  }

  /**
   * Counts set in one turn of the event loop are written at its end, together: a burst of
   * connects (a reconnect storm) then costs one socket write to NATS and one read of the acks,
   * not one each, and a user who came and went meanwhile is written once.
   */
  set(user: string, count: number): Promise<void> {
    this.link.require();
    this.pending.set(user, count);
    this.batch ??= new Promise((resolve) => setImmediate(() => resolve(this.flush())));
    return this.batch;
  }

  /** Writes the pending counts; a failure is logged here once and corrected as `set` says. */
  private async flush(): Promise<void> {
    const counts = this.pending;
    this.pending = new Map();
    this.batch = undefined;
    const results = await Promise.allSettled([...counts].map(([user, count]) => this.write(user, count)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed.length > 0) this.log.warn({ err: failed[0]?.reason, failed: failed.length }, "publishing user connection counts failed");
  }

  async total(user: string, local: number): Promise<number> {
    const counts = this.others.get(encodeToken(user));
    if (!counts) return local;
    const live = await this.liveNodes();
    let total = local;
    for (const [node, n] of counts) if (live.has(node)) total += n;
    return total;
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.batch;
    clearInterval(this.refresh);
    clearInterval(this.prune);
    this.sub?.unsubscribe();
  }

  /** A count from the stream; malformed subjects and bodies (anyone may publish there) are ignored. */
  private record(subject: string, data: Uint8Array): void {
    const parsed = this.subjects.parseUserCount(subject);
    if (!parsed || parsed.node === this.node || data.byteLength > MAX_COUNT_BYTES) return;
    const n = Number(Buffer.from(data).toString("latin1"));
    if (!Number.isSafeInteger(n) || n < 0) return;
    const token = parsed.userToken;
    let counts = this.others.get(token);
    if (n === 0) {
      counts?.delete(parsed.node);
      if (counts?.size === 0) this.others.delete(token);
      return;
    }
    if (!counts) {
      if (this.others.size >= MAX_FOLLOWED_USERS) return;
      this.others.set(token, (counts = new Map()));
    }
    counts.set(parsed.node, n);
  }

  private async forgetGone(): Promise<void> {
    const live = await this.liveNodes();
    for (const [user, counts] of this.others) {
      for (const node of counts.keys()) if (!live.has(node)) counts.delete(node);
      if (counts.size === 0) this.others.delete(user);
    }
  }

  private write(user: string, count: number): Promise<unknown> {
    return this.js.publish(this.subjects.userCount(user, this.node), Buffer.from(String(count), "latin1"));
  }

  private async rewrite(): Promise<void> {
    if (!this.link.connected) return;
    const users = [...this.own()];
    for (let i = 0; i < users.length; i += REFRESH_BATCH) {
      await Promise.all(users.slice(i, i + REFRESH_BATCH).map(([user, count]) => this.write(user, count)));
    }
  }
}
