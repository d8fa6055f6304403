import type { JetStreamClient, Subscription } from "nats";
import type { Logger } from "../log.js";
import { RevocationSet, type Revocations } from "../sessions/revocations.js";
import type { NatsLink } from "./connection.js";
import { isNotFound, type Jsm } from "./streams.js";
import { decodeToken, type Subjects } from "./subjects.js";

/** Revocation records read at once at start-up. */
const LOAD_CONCURRENCY = 16;

/**
 * Revocations in a JetStream stream, one subject per user (the last revocation wins) and records
 * aging out with the sessions they end. Every replica listens to the subjects (a stored message
 * also reaches core subscribers) and reads what is stored when it starts, so requests are checked
 * against memory, not NATS.
 */
export class NatsRevocations implements Revocations {
  private readonly set = new RevocationSet();
  private sub: Subscription | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly jsm: Jsm,
    private readonly js: JetStreamClient,
    private readonly subjects: Subjects,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const prefix = this.subjects.revoked("");
    this.sub = this.link.nc.subscribe(this.subjects.allRevoked(), {
      callback: (err, msg) => {
        if (err) return;
        this.record(msg.subject.slice(prefix.length), msg.data);
      },
    });
    await this.link.nc.flush();
    await this.load();
  }

  private record(token: string, data: Uint8Array): void {
    const at = Number(Buffer.from(data).toString("latin1"));
    if (!Number.isSafeInteger(at) || at <= 0) return;
    this.set.add(decodeToken(token), at);
  }

  /** Reads every stored revocation (those made before this replica started). */
  private async load(): Promise<void> {
    const stream = this.subjects.revokedStream();
    const info = await this.jsm.streams.info(stream, { subjects_filter: this.subjects.allRevoked() });
    const subjects = Object.keys(info.state.subjects ?? {});
    const prefix = this.subjects.revoked("");
    for (let i = 0; i < subjects.length; i += LOAD_CONCURRENCY) {
      await Promise.all(
        subjects.slice(i, i + LOAD_CONCURRENCY).map(async (subject) => {
          try {
            const m = await this.jsm.direct.getMessage(stream, { last_by_subj: subject });
            this.record(subject.slice(prefix.length), m.data);
          } catch (err) {
            if (!isNotFound(err)) throw err;
          }
        }),
      );
    }
    if (subjects.length > 0) this.log.info({ revocations: subjects.length }, "session revocations loaded");
  }

  async revoke(user: string): Promise<void> {
    const at = Date.now();
    this.set.add(user, at);
    await this.js.publish(this.subjects.revoked(user), Buffer.from(String(at), "latin1"));
  }

  revokedAt(user: string, now = Date.now()): number | undefined {
    return this.set.get(user, now);
  }

  async close(): Promise<void> {
    this.sub?.unsubscribe();
  }
}
