import { AckPolicy, createInbox, DeliverPolicy, nanos, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "nats";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { JsLimiter } from "./js-limiter.js";
import type { Jsm } from "./streams.js";

/** A stored message as a consumer delivers it. */
export interface Delivered {
  seq: number;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  /** When the stream stored it, ms since the Unix epoch. */
  time: number;
  /** Messages of the subject after this one, on the consumer's server when it was sent. */
  pending: number;
}

/** What cursors share within one read: the connection, the gate, and the tally of requests. */
export interface CursorContext {
  nc: NatsConnection;
  jsm: Jsm;
  limiter: JsLimiter;
  /** JetStream API requests made so far; every request a cursor makes is added here. */
  cost: { reads: number };
  /** Deletions under way, so that the owner can wait for them when it closes. */
  cleanup: Set<Promise<void>>;
}

/** Messages one pull request asks for: a long read arrives in pieces the connection absorbs. */
const BATCH = 1_000;
/**
 * How long one pull waits for messages the consumer's server does not hold yet. An ephemeral
 * consumer of a replicated stream runs on a randomly chosen replica (nats-server 2.9), which may
 * lag the stream leader that the caller asked for the channel's position.
 */
const PULL_WAIT_MS = 2_000;
/** Removes a consumer nobody deleted (the gateway died in the middle of a read). */
const INACTIVE_MS = 30_000;
/** The gateways use the default JetStream API prefix (no domain). */
const API = "$JS.API";

/**
 * An ephemeral pull consumer over one subject of a stream, from a start sequence, without acks:
 * a walk through a channel's stored messages that costs one request to create, one per
 * `BATCH` messages pulled and one to delete, whatever the channel's length. Its creation answers
 * how many messages of the subject lie at or after the start (`pendingAtStart`), which is also
 * what locating the newest N of a channel is built on.
 */
export class SubjectCursor {
  /** Messages of the subject at or after `start` when the consumer was created. */
  readonly pendingAtStart: number;
  private readonly inbox = createInbox();
  private readonly sub: Subscription;
  private readonly buffer: Delivered[] = [];
  private next0 = 0;
  /** Messages the outstanding pull request may still deliver (0: none outstanding). */
  private asked = 0;
  /** Releases the limiter slot of the outstanding pull. */
  private settle: (() => void) | undefined;
  /** Messages of the subject after the last one delivered, as far as the consumer knows. */
  private remaining: number;
  /** The last pull ended (expired) without a message. */
  private dry = false;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(
    private readonly ctx: CursorContext,
    private readonly stream: string,
    private readonly name: string,
    readonly start: number,
    pending: number,
  ) {
    this.pendingAtStart = pending;
    this.remaining = pending;
    this.sub = ctx.nc.subscribe(this.inbox, { callback: (err, msg) => this.onMessage(err, msg) });
  }

  static async open(ctx: CursorContext, stream: string, subject: string, start: number, gate: "admit" | "wait"): Promise<SubjectCursor> {
    ctx.cost.reads++;
    const info = await ctx.limiter[gate](() =>
      ctx.jsm.consumers.add(stream, {
        ack_policy: AckPolicy.None,
        ...(start <= 1 ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start }),
        filter_subject: subject,
        inactive_threshold: nanos(INACTIVE_MS),
        mem_storage: true,
        num_replicas: 1,
      }),
    );
    return new SubjectCursor(ctx, stream, info.name, Math.max(1, start), info.num_pending);
  }

  /**
   * The next message, pulling when none is on its way. Undefined when a pull waited
   * `PULL_WAIT_MS` and nothing came: the consumer's server holds nothing more for the subject.
   * `want` is how many more the caller may take: the next pull asks for no more than that, nor
   * for more than the consumer says it holds.
   */
  async next(want = Infinity): Promise<Delivered | undefined> {
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.closed) throw new Error("cursor closed");
      if (this.next0 < this.buffer.length) {
        const m = this.buffer[this.next0++] as Delivered;
        if (this.next0 === this.buffer.length) {
          this.buffer.length = 0;
          this.next0 = 0;
        }
        return m;
      }
      if (this.dry) {
        this.dry = false;
        return undefined;
      }
      if (this.asked === 0) await this.pull(want);
      else await this.arrival();
    }
  }

  private async pull(want: number): Promise<void> {
    // At least one: a consumer on a replica behind the leader holds nothing yet, and waits.
    const batch = Math.max(1, Math.min(BATCH, want, this.remaining));
    this.ctx.cost.reads++;
    this.asked = batch;
    // The slot is held until the pull is answered in full or expires: that is when the server is
    // done with it.
    await new Promise<void>((started, failed) => {
      this.ctx.limiter
        .wait(
          () =>
            new Promise<void>((done) => {
              this.settle = done;
              started();
              if (this.closed) return this.release();
              try {
                const request = JSON.stringify({ batch, expires: nanos(PULL_WAIT_MS) });
                this.ctx.nc.publish(`${API}.CONSUMER.MSG.NEXT.${this.stream}.${this.name}`, request, { reply: this.inbox });
              } catch (err) {
                this.failure = err as Error;
                this.release();
              }
            }),
        )
        .catch(failed);
    });
  }

  /** Resolves on the next delivery or status; throws when the server stays silent past the pull's expiry. */
  private arrival(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        reject(new ProtocolError(ErrorCode.Unavailable, "broker unavailable (history read timed out)"));
      }, PULL_WAIT_MS + 3_000);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (err) {
      this.failure = err;
    } else if (msg.reply?.startsWith("$JS.ACK.")) {
      const m = parseAck(msg.reply);
      if (m) {
        this.buffer.push({ seq: m.seq, time: m.time, pending: m.pending, data: msg.data, headers: msg.headers });
        this.remaining = m.pending;
      }
      if (--this.asked <= 0) this.release();
    } else {
      const code = msg.headers?.code ?? 0;
      if (code === 408 || code === 404) {
        // The pull expired with part of its batch undelivered: the server had nothing more.
        this.dry = true;
        this.release();
      } else if (code !== 100) {
        // 409: the consumer was deleted, or the server refused the pull.
        this.failure = new Error(`pull failed: ${code} ${msg.headers?.description ?? ""}`);
        this.release();
      }
    }
    this.wake?.();
  }

  private release(): void {
    this.asked = 0;
    const s = this.settle;
    this.settle = undefined;
    s?.();
  }

  /** Stops listening and deletes the consumer in the background (counted now, in `cost`). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sub.unsubscribe();
    this.release();
    this.ctx.cost.reads++;
    const deleted = this.ctx.limiter
      .wait(() => this.ctx.jsm.consumers.delete(this.stream, this.name))
      .then(
        () => undefined,
        // Gone already, or NATS is away: the inactivity threshold removes it.
        () => undefined,
      );
    this.ctx.cleanup.add(deleted);
    void deleted.then(() => this.ctx.cleanup.delete(deleted));
  }
}

/**
 * `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`, or the
 * form with domain and account hash in front (12 tokens).
 */
function parseAck(reply: string): { seq: number; time: number; pending: number } | undefined {
  const t = reply.split(".");
  const o = t.length >= 12 ? 4 : t.length === 9 ? 2 : -1;
  if (o < 0) return undefined;
  const seq = Number(t[o + 3]);
  const ns = Number(t[o + 5]);
  const pending = Number(t[o + 6]);
  if (!Number.isSafeInteger(seq) || !Number.isFinite(ns) || !Number.isSafeInteger(pending)) return undefined;
  return { seq, time: Math.floor(ns / 1e6), pending };
}
