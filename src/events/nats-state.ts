import type { JetStreamClient } from "nats";
import type { JsLimiter } from "../nats/js-limiter.js";
import { isNotFound, leaderGet, type Jsm } from "../nats/streams.js";
import type { Subjects } from "../nats/subjects.js";
import type { TransitionState } from "./transitions.js";

const ON = new Uint8Array([1]);
const OFF = new Uint8Array([0]);
/** Compare-and-set attempts before giving up on a contended key (the caller retries later). */
const CAS_ATTEMPTS = 8;
/** JetStream's answer to a publish whose expected last subject sequence is not the last one. */
const WRONG_LAST_SEQUENCE = 10071;

/**
 * The bits in the transitions stream, one subject per key. A set reads the bit from the stream
 * leader (a replica could answer stale) and publishes the new one expecting the subject's last
 * sequence it read: the server refuses all but one of racing writers. An off bit is purged
 * right after it is written (only it: messages after it stay), so the stream holds only keys
 * that are on; a missing subject reads as off.
 */
export class NatsTransitionState implements TransitionState {
  constructor(
    private readonly jsm: Jsm,
    private readonly js: JetStreamClient,
    private readonly subjects: Subjects,
    private readonly limiter: JsLimiter,
  ) {}

  async set(key: string, on: boolean): Promise<boolean> {
    const subject = this.subjects.transition(key);
    for (let i = 0; i < CAS_ATTEMPTS; i++) {
      const current = await this.read(subject);
      if (current.on === on) return false;
      let seq: number;
      try {
        const ack = await this.limiter.wait(() =>
          this.js.publish(subject, on ? ON : OFF, { expect: { lastSubjectSequence: current.seq } }),
        );
        seq = ack.seq;
      } catch (err) {
        if (isWrongLastSequence(err)) continue;
        throw err;
      }
      if (!on) {
        // A failed purge leaves an off bit behind, which reads the same as none.
        await this.limiter
          .wait(() => this.jsm.streams.purge(this.subjects.transitionsStream(), { filter: subject, seq: seq + 1 }))
          .catch(() => undefined);
      }
      return true;
    }
    throw new Error(`transition of ${key} contended ${CAS_ATTEMPTS} times`);
  }

  private async read(subject: string): Promise<{ on: boolean; seq: number }> {
    try {
      const msg = await this.limiter.wait(() => leaderGet(this.jsm, this.subjects.transitionsStream(), { last_by_subj: subject }));
      return { on: msg.data[0] === 1, seq: msg.seq };
    } catch (err) {
      if (isNotFound(err)) return { on: false, seq: 0 };
      throw err;
    }
  }
}

function isWrongLastSequence(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string };
  return e?.api_error?.err_code === WRONG_LAST_SEQUENCE || /wrong last sequence/i.test(e?.message ?? "");
}
