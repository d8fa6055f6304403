import { createHash } from "node:crypto";
import {
  DiscardPolicy,
  nanos,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StoredMsg,
  type StreamConfig,
} from "nats";
import type { NamespaceOptions, NatsConfig } from "../config/types.js";
import type { Logger } from "../log.js";
import { SESSION_TTL_MS } from "../sessions/revocations.js";
import type { Subjects } from "./subjects.js";

/**
 * Direct get (nats-server 2.9+) reads stored messages without creating a consumer. nats.js has it
 * on the manager implementation but not on the exported interface.
 */
export interface DirectGet {
  getMessage(stream: string, query: { seq?: number; last_by_subj?: string; next_by_subj?: string }): Promise<StoredMsg>;
}
export type Jsm = JetStreamManager & { direct: DirectGet };

/**
 * A message get answered by the stream leader (consistent, unlike direct get). The server takes
 * `next_by_subj` here too since 2.9; nats.js's types only declare seq and last_by_subj.
 */
export function leaderGet(
  jsm: Jsm,
  stream: string,
  query: { seq?: number; last_by_subj?: string; next_by_subj?: string },
): Promise<StoredMsg> {
  return (jsm.streams as unknown as DirectGet).getMessage(stream, query);
}

/** JetStream's dedupe window cannot exceed a stream's max age. */
function dedupeWindow(idempotencyMs: number, ttlMs: number): number {
  return Math.min(idempotencyMs, ttlMs);
}

/**
 * The JetStream streams natsedge owns: one per history namespace, plus presence, node heartbeats
 * and publish dedupe. Created or updated at start-up so config changes take effect on deploy.
 * A namespace stream's epoch is derived from its creation time, so a recreated stream is
 * detected by clients as a new epoch.
 */
export class Streams {
  private readonly epochs = new Map<string, string>();
  private readonly epochListeners: Array<(ns: string) => void> = [];
  private watcher: NodeJS.Timeout | undefined;

  constructor(
    private readonly jsm: JetStreamManager,
    private readonly subjects: Subjects,
    private readonly namespaces: Record<string, NamespaceOptions>,
    private readonly nats: NatsConfig,
    private readonly idempotencyWindowMs: number,
    /** Lifecycle events are on: their transitions stream is needed. */
    private readonly events: boolean,
    private readonly log: Logger,
  ) {}

  async ensureAll(): Promise<void> {
    for (const [ns, opts] of Object.entries(this.namespaces)) {
      if (opts.history) await this.ensureNamespace(ns);
    }
    await this.ensure({
      name: this.subjects.presenceStream(),
      subjects: [this.subjects.allPresence()],
      max_msgs_per_subject: 1,
      allow_direct: true,
    });
    await this.ensure({
      name: this.subjects.nodesStream(),
      subjects: [this.subjects.allNodes()],
      max_msgs_per_subject: 1,
      max_age: nanos(NODE_TTL_MS),
      allow_direct: true,
    });
    await this.ensure({
      name: this.subjects.userCountsStream(),
      subjects: [this.subjects.allUserCounts()],
      max_msgs_per_subject: 1,
      max_msgs: MAX_FOLLOWED_USERS,
      max_age: nanos(USER_COUNT_TTL_MS),
      allow_direct: true,
    });
    await this.ensure({
      name: this.subjects.revokedStream(),
      subjects: [this.subjects.allRevoked()],
      max_msgs_per_subject: 1,
      max_age: nanos(SESSION_TTL_MS),
      allow_direct: true,
    });
    // Only keys that are on hold a message (an off bit is purged once set), so the stream holds
    // the users online and channels occupied, no more. Without events nothing settles keys.
    if (this.events) {
      await this.ensure({
        name: this.subjects.transitionsStream(),
        subjects: [this.subjects.allTransitions()],
        max_msgs_per_subject: 1,
      });
    }
    const idem = this.subjects.idempotentSubjects();
    await this.ensure({
      name: this.subjects.idempotentStream(),
      subjects: [idem.stored],
      max_msgs_per_subject: 1,
      max_age: nanos(this.idempotencyWindowMs),
      duplicate_window: nanos(this.idempotencyWindowMs),
      republish: { src: idem.stored, dest: idem.republished },
    });
  }

  private async ensureNamespace(ns: string): Promise<void> {
    const history = this.namespaces[ns]?.history;
    if (!history) return;
    const s = this.subjects.namespaceSubjects(ns);
    const created = await this.ensure({
      name: this.subjects.namespaceStream(ns),
      subjects: [s.stored],
      max_msgs_per_subject: history.size,
      max_age: nanos(history.ttl),
      duplicate_window: nanos(dedupeWindow(this.idempotencyWindowMs, history.ttl)),
      republish: { src: s.stored, dest: s.republished },
      allow_direct: true,
    });
    this.epochs.set(ns, epochOf(created));
  }

  /** Creates the stream or updates its limits; returns its creation time. */
  private async ensure(partial: Partial<StreamConfig> & { name: string }): Promise<string> {
    const config: Partial<StreamConfig> = {
      retention: RetentionPolicy.Limits,
      discard: DiscardPolicy.Old,
      storage: this.nats.storage === "memory" ? StorageType.Memory : StorageType.File,
      num_replicas: this.nats.streamReplicas,
      ...partial,
    };
    try {
      const info = await this.jsm.streams.info(partial.name);
      if (info.config.storage !== config.storage) {
        this.log.error(
          { stream: partial.name, has: info.config.storage, wanted: config.storage },
          "stream storage type differs from nats.storage and cannot be changed in place; delete the stream to change it",
        );
        config.storage = info.config.storage;
      }
      const updated = await this.jsm.streams.update(partial.name, config);
      return updated.created;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const info = await this.jsm.streams.add(config);
      this.log.info({ stream: partial.name }, "stream created");
      return info.created;
    }
  }

  /**
   * Re-reads every namespace stream's identity now and then: a stream deleted and recreated
   * behind the gateway's back (or lost with a cluster) is a new epoch, and is recreated if gone.
   */
  watchEpochs(onChange: (ns: string) => void, intervalMs = 30_000): void {
    this.epochListeners.push(onChange);
    if (this.watcher) return;
    this.watcher = setInterval(() => {
      for (const [ns, opts] of Object.entries(this.namespaces)) {
        if (!opts.history) continue;
        this.epoch(ns, true).catch((err: unknown) => this.log.warn({ err, ns }, "stream check failed"));
      }
    }, intervalMs);
    this.watcher.unref();
  }

  stop(): void {
    clearInterval(this.watcher);
  }

  private epochChanged(ns: string): void {
    this.log.warn({ ns }, "history stream was recreated: new epoch");
    for (const l of this.epochListeners) l(ns);
  }

  streamOf(ns: string): string {
    return this.subjects.namespaceStream(ns);
  }

  /** The namespace stream's epoch as last seen, without a request; undefined before the first. */
  cachedEpoch(ns: string): string | undefined {
    return this.epochs.get(ns);
  }

  /** The namespace stream's epoch; refreshed (and the stream recreated) when it has gone away. */
  async epoch(ns: string, refresh = false): Promise<string> {
    const cached = this.epochs.get(ns);
    if (cached && !refresh) return cached;
    try {
      const info = await this.jsm.streams.info(this.subjects.namespaceStream(ns));
      const e = epochOf(info.created);
      this.epochs.set(ns, e);
      if (cached && cached !== e) this.epochChanged(ns);
      return e;
    } catch (err) {
      if (!isNotFound(err)) throw err;
      this.log.warn({ ns }, "history stream missing: recreating it");
      await this.ensureNamespace(ns);
      if (cached && cached !== this.epochs.get(ns)) this.epochChanged(ns);
      return this.epochs.get(ns) as string;
    }
  }
}

/** Node heartbeats expire after this long; a killed gateway's clients leave presence by then. */
export const NODE_TTL_MS = 15_000;
/** A gateway's per-user connection count lives this long unless written again (see NatsUserCounts). */
export const USER_COUNT_TTL_MS = 60 * 60_000;
/**
 * Users whose counts on other gateways are followed at most (the stream keeps as many): anyone
 * who may publish to the subjects could otherwise make every gateway hold any number of them.
 * Past it, new users' counts elsewhere are not seen, and the limit is only each gateway's own.
 */
export const MAX_FOLLOWED_USERS = 1_000_000;

function epochOf(created: string): string {
  return createHash("sha256").update(created).digest("base64url").slice(0, 10);
}

export function isNotFound(err: unknown): boolean {
  const e = err as { code?: string | number; api_error?: { code?: number }; message?: string };
  return (
    e?.api_error?.code === 404 ||
    e?.code === "404" ||
    e?.code === 404 ||
    /not found/i.test(e?.message ?? "")
  );
}
