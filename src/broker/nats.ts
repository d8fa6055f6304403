import { createHash } from "node:crypto";
import type { JetStreamClient, Msg, NatsConnection, Subscription } from "nats";
import { namespaceOf, resolveChannel } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { decodeEvent, decodePublication, encodeEvent, encodePublication, H, readTrace } from "../nats/codec.js";
import type { NatsLink } from "../nats/connection.js";
import type { JsLimiter } from "../nats/js-limiter.js";
import { isNotFound, leaderGet, type Jsm, type Streams } from "../nats/streams.js";
import type { Subjects } from "../nats/subjects.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { pack, unpack } from "../protocol/msgpack.js";
import type { ClientInfo, Publication } from "../publication.js";
import type { Broker, BrokerHandler, ControlMessage, PublishOptions, PublishResult } from "./broker.js";

interface ChannelSub {
  ch: string;
  history: boolean;
  sub: Subscription;
  /** Offset of the last publication handed on; undefined until the baseline is known. */
  last: number | undefined;
  /** Live messages (and catch-up requests) waiting while the baseline is fetched or a gap is filled. */
  queue: Array<Msg | typeof CATCH_UP | typeof RESTART>;
  busy: boolean;
  /** Catch-up reads that failed in a row; while above zero, one is retried on a timer. */
  catchUpFailures: number;
}

const PUBLISH_TIMEOUT_MS = 5_000;
const CATCH_UP = Symbol("catch-up");
/** After a continuity break: live delivery goes on from the channel's current top. */
const RESTART = Symbol("restart");
const FILL_RETRIES = 3;
/** A failed gap-fill read is tried again this many times (after 0.25, 0.5, 1, 2 s). */
const FILL_READ_RETRIES = 4;
/** Live messages queued per channel while a gap is filled; beyond it the queue becomes one catch-up. */
const MAX_QUEUE = 1_000;
/** Upper bound on publications fetched to fill one gap; past it the channel skips ahead (and says so). */
const MAX_GAP_FILL = 10_000;
/** A failed catch-up read is tried again after 500 ms, doubling up to this. */
const CATCH_UP_RETRY_MAX_MS = 5_000;

/**
 * The NATS broker: one core subscription per channel per gateway. History channels are read from
 * their stream's republish subject, whose sequence headers let this gateway notice a gap (a
 * reconnect, a slow consumer drop) and fill it from the stream instead of skipping messages.
 */
export class NatsBroker implements Broker {
  private handler: BrokerHandler | undefined;
  private readonly channels = new Map<string, ChannelSub>();
  private readonly nc: NatsConnection;
  private readonly js: JetStreamClient;
  private control: Subscription | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly jsm: Jsm,
    private readonly streams: Streams,
    private readonly subjects: Subjects,
    private readonly namespaces: Record<string, NamespaceOptions>,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly limiter: JsLimiter,
    /** Tracing is on: publications' `traceparent` headers are read. */
    private readonly tracing = false,
  ) {
    this.nc = link.nc;
    this.js = link.nc.jetstream({ timeout: PUBLISH_TIMEOUT_MS });
    link.onStatus((event) => {
      if (event === "reconnect") this.catchUpAll();
    });
    // A recreated stream starts its sequence again: positions from the old one mean nothing.
    streams.watchEpochs((ns) => {
      for (const cs of this.channels.values()) {
        if (!cs.history || namespaceOf(cs.ch) !== ns) continue;
        this.lost(cs, "the channel's history stream was recreated (new epoch)");
        cs.queue.push(RESTART);
        this.startPump(cs);
      }
    });
  }

  async start(handler: BrokerHandler): Promise<void> {
    this.handler = handler;
    this.control = this.nc.subscribe(this.subjects.control(), {
      callback: (err, msg) => {
        if (err) return;
        this.guarded(() => {
          const m = decodeControl(msg.data);
          if (m) this.handler?.onControl(m);
        });
      },
    });
    await this.nc.flush();
  }

  /**
   * nats.js calls subscription callbacks from its parser: a throw there ends its read loop and the
   * gateway hears nothing until the ping timeout. Whatever a message does, it must not escape.
   */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.metrics.invalidPayloads.inc();
      this.log.error({ err }, "NATS message handling failed");
    }
  }

  private requireConnection(): void {
    if (!this.link.connected) throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable (NATS disconnected)");
  }

  async publish(pub: Publication, opts: PublishOptions): Promise<PublishResult> {
    this.requireConnection();
    const { body, headers } = encodePublication(pub);
    const subject = this.subjects.channel(pub.ch);
    if (opts.history) {
      const ns = namespaceOf(pub.ch);
      const ack = await this.js.publish(subject, body, {
        headers,
        ...(opts.idempotencyKey === undefined ? {} : { msgID: messageId(pub.ch, opts.idempotencyKey) }),
      });
      return { offset: ack.seq, epoch: await this.streams.epoch(ns) };
    }
    if (opts.idempotencyKey !== undefined) {
      // Stored, deduplicated and republished to the channel by the server in one step: a key is
      // recorded only together with its message, so a publish that failed can be retried.
      await this.js.publish(this.subjects.idempotent(pub.ch), body, {
        headers,
        msgID: messageId(pub.ch, opts.idempotencyKey),
      });
      return {};
    }
    this.nc.publish(subject, body, { headers });
    return {};
  }

  async publishJoin(ch: string, info: ClientInfo): Promise<void> {
    this.publishEvent("join", ch, info);
  }

  async publishLeave(ch: string, info: ClientInfo): Promise<void> {
    this.publishEvent("leave", ch, info);
  }

  private publishEvent(kind: "join" | "leave", ch: string, info: ClientInfo): void {
    this.requireConnection();
    const { body, headers } = encodeEvent(kind, info);
    // Events ride the channel's delivery subject, so a channel stays one subscription.
    this.nc.publish(this.deliverySubject(ch, this.hasHistory(ch)), body, { headers });
  }

  async publishControl(msg: ControlMessage): Promise<void> {
    this.requireConnection();
    this.nc.publish(this.subjects.control(), pack(msg));
    await this.nc.flush();
  }

  private hasHistory(ch: string): boolean {
    try {
      return resolveChannel(this.namespaces, ch).options.history !== undefined;
    } catch {
      return false;
    }
  }

  private deliverySubject(ch: string, history: boolean): string {
    return history ? this.subjects.republished(ch) : this.subjects.channel(ch);
  }

  async subscribe(ch: string, ns: NamespaceOptions): Promise<number | undefined> {
    const history = ns.history !== undefined;
    const cs: ChannelSub = {
      ch,
      history,
      sub: undefined as unknown as Subscription,
      last: undefined,
      queue: [],
      busy: history,
      catchUpFailures: 0,
    };
    cs.sub = this.nc.subscribe(this.deliverySubject(ch, history), {
      callback: (err, msg) => {
        if (!err) this.guarded(() => this.onMessage(cs, msg));
      },
    });
    this.channels.set(ch, cs);
    try {
      // The subscription is live on the server before the baseline is read, so nothing falls
      // between them; queued messages at or before the baseline are dropped as already stored.
      // Channels without history wait for the flush too: the client's subscribe reply must not
      // go out while the SUB is still unsent, or a publication made right after it (through
      // another gateway) is missed (test/cluster/workers.test.ts caught about 1 in 70).
      await this.nc.flush();
      if (!history) return undefined;
      cs.last = await this.lastSequence(ch);
    } catch (err) {
      cs.sub.unsubscribe();
      if (this.channels.get(ch) === cs) this.channels.delete(ch);
      throw err;
    }
    cs.busy = false;
    this.startPump(cs);
    return cs.last;
  }

  async unsubscribe(ch: string): Promise<void> {
    const cs = this.channels.get(ch);
    if (!cs) return;
    this.channels.delete(ch);
    cs.sub.unsubscribe();
  }

  private onMessage(cs: ChannelSub, msg: Msg): void {
    const event = msg.headers?.get(H.event);
    if (event === "join" || event === "leave") {
      const info = decodeEvent(msg.data);
      if (!info) return this.metrics.invalidPayloads.inc();
      if (event === "join") this.handler?.onJoin(cs.ch, info);
      else this.handler?.onLeave(cs.ch, info);
      return;
    }
    if (!cs.history) {
      const pub = decodePublication(cs.ch, msg.data, msg.headers);
      if (!pub) return this.metrics.invalidPayloads.inc();
      if (this.tracing) readTrace(pub, msg.headers);
      this.handler?.onPublication(pub);
      return;
    }
    if (cs.queue.length >= MAX_QUEUE) {
      // Stored in the stream anyway: past the bound, one catch-up replaces the queued messages.
      cs.queue = [CATCH_UP];
    } else {
      cs.queue.push(msg);
    }
    this.startPump(cs);
  }

  private startPump(cs: ChannelSub): void {
    this.pump(cs).catch((err: unknown) => this.log.error({ err, ch: cs.ch }, "channel delivery failed"));
  }

  /** Works through the channel's queue one item at a time; only one pump runs per channel. */
  private async pump(cs: ChannelSub): Promise<void> {
    if (cs.busy) return;
    cs.busy = true;
    try {
      while (cs.queue.length > 0 && this.channels.get(cs.ch) === cs) {
        const item = cs.queue.shift() as Msg | typeof CATCH_UP | typeof RESTART;
        const pending = item === CATCH_UP ? this.catchUp(cs) : item === RESTART ? this.restart(cs) : this.sequenced(cs, item);
        if (pending) await pending;
      }
    } finally {
      cs.busy = false;
    }
  }

  /**
   * Hands on a republished message in order, first filling any gap before it from the stream.
   * Returns a promise only when it has to wait (a gap), so the common path stays synchronous.
   */
  private sequenced(cs: ChannelSub, msg: Msg): Promise<void> | undefined {
    const seq = Number(msg.headers?.get(H.sequence));
    const prev = Number(msg.headers?.get(H.lastSequence));
    if (!Number.isSafeInteger(seq) || !Number.isSafeInteger(prev)) {
      this.metrics.invalidPayloads.inc();
      return undefined;
    }
    const last = cs.last as number;
    if (seq <= last) {
      // Already delivered (a stream fill overtook the live copy), unless the stream started
      // again: a channel's first message (prev 0) after later ones is the sign of that.
      if (prev === 0 && last > 0) this.checkEpoch(cs.ch);
      return undefined;
    }
    if (prev <= last) {
      this.deliver(cs, msg.data, msg.headers, seq, prev);
      return undefined;
    }
    this.metrics.gapsDetected.inc();
    return this.fillPatiently(cs, seq - 1).then(
      (filled) => {
        if (!filled) this.lost(cs, "a gap in the channel could not be filled from its history");
        if (seq > (cs.last as number)) this.deliver(cs, msg.data, msg.headers, seq, prev);
      },
      (err: unknown) => {
        this.log.warn({ err, ch: cs.ch }, "gap fill failed");
        this.lost(cs, "reading the channel's history to fill a gap failed");
        this.deliver(cs, msg.data, msg.headers, seq, prev);
      },
    );
  }

  /**
   * Tells the hub that delivery breaks here, and moves past the break: publications after it are
   * handed on with their true `prev`, so nothing downstream mistakes them for a continuation.
   */
  private lost(cs: ChannelSub, reason: string): void {
    if (this.channels.get(cs.ch) !== cs) return;
    this.metrics.continuityLost.inc();
    this.log.warn({ ch: cs.ch, reason }, "channel continuity lost");
    this.handler?.onContinuityLost(cs.ch, reason);
  }

  private readonly epochChecks = new Map<string, number>();

  /** A suspected recreated stream: its epoch is read again (at most once a second per namespace). */
  private checkEpoch(ch: string): void {
    const ns = namespaceOf(ch);
    const now = Date.now();
    if (now - (this.epochChecks.get(ns) ?? 0) < 1_000) return;
    this.epochChecks.set(ns, now);
    this.streams.epoch(ns, true).catch((err: unknown) => this.log.warn({ err, ns }, "stream check failed"));
  }

  private deliver(cs: ChannelSub, data: Uint8Array, headers: Msg["headers"], seq: number, prev: number): void {
    // A fill still running for a subscription that was released (and perhaps made anew) must not
    // push old offsets to the new subscribers.
    if (this.channels.get(cs.ch) !== cs) return;
    cs.last = seq;
    const pub = decodePublication(cs.ch, data, headers, { offset: seq, prev });
    if (!pub) return this.metrics.invalidPayloads.inc();
    if (this.tracing) readTrace(pub, headers);
    this.handler?.onPublication(pub);
  }

  /** Fetches what was published while this gateway was away, even if nothing new arrives. */
  private async catchUp(cs: ChannelSub): Promise<void> {
    let top: number;
    try {
      top = await this.lastSequence(cs.ch);
    } catch (err) {
      // Not known to be a gap. A live message would reveal one and fill it, but in a quiet
      // channel none may come: what was missed would wait for the next publication. So the read
      // is tried again (a stream leader election right after a reconnect fails it for seconds).
      if (cs.catchUpFailures++ === 0) this.log.warn({ err, ch: cs.ch }, "catch-up after reconnect failed");
      this.retryCatchUp(cs);
      return;
    }
    cs.catchUpFailures = 0;
    if (top <= (cs.last as number)) return;
    this.metrics.gapsDetected.inc();
    let filled = false;
    try {
      filled = await this.fillPatiently(cs, top);
      if (!filled) this.lost(cs, "a gap in the channel could not be filled from its history");
    } catch (err) {
      this.log.warn({ err, ch: cs.ch }, "catch-up after reconnect failed");
      this.lost(cs, "reading the channel's history to fill a gap failed");
    }
    // Subscribers were told to recover from history: live delivery resumes after the top, and
    // the same break is not found again by the next message.
    if (!filled && this.channels.get(cs.ch) === cs) cs.last = Math.max(cs.last as number, top);
  }

  /** Live delivery goes on from the channel's current top (a recreated stream starts anew). */
  private async restart(cs: ChannelSub): Promise<void> {
    try {
      cs.last = await this.lastSequence(cs.ch);
    } catch (err) {
      this.log.warn({ err, ch: cs.ch }, "reading the channel's position failed");
      cs.last = 0;
    }
  }

  /**
   * fill(), with a failed read tried again a few times: while a stream elects a leader (a NATS
   * node restarting) reads fail for seconds, and giving up at once would send every subscriber
   * back to history, and end every SSE stream, for a gap that is about to be fillable. A retry
   * goes on from what the failed attempt already delivered.
   */
  private async fillPatiently(cs: ChannelSub, upTo: number): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.fill(cs, upTo);
      } catch (err) {
        if (attempt >= FILL_READ_RETRIES || this.channels.get(cs.ch) !== cs) throw err;
        this.log.warn({ err, ch: cs.ch, attempt: attempt + 1 }, "gap fill read failed; trying again");
        await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
      }
    }
  }

  /**
   * Delivers stored publications of the channel after `cs.last` up to `upTo` (inclusive). False
   * when it cannot prove it delivered all of them: the last publication handed on is no longer
   * in the stream (a channel is trimmed oldest first, so what followed it may be gone too), a
   * message known to exist did not come, or the gap was larger than MAX_GAP_FILL.
   */
  private async fill(cs: ChannelSub, upTo: number): Promise<boolean> {
    const ns = namespaceOf(cs.ch);
    const stream = this.streams.streamOf(ns);
    const subject = this.subjects.channel(cs.ch);
    const from = cs.last as number;
    if (from > 0) {
      let at;
      try {
        at = await leaderGet(this.jsm, stream, { seq: from });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      if (at?.subject !== subject) return false;
    }
    let misses = 0;
    for (let i = 0; (cs.last as number) < upTo; i++) {
      if (this.channels.get(cs.ch) !== cs) return true; // released: nobody is waiting for it
      if (i >= MAX_GAP_FILL) return false;
      let m;
      try {
        const seq = (cs.last as number) + 1;
        m = await this.limiter.wait(() => leaderGet(this.jsm, stream, { next_by_subj: subject, seq }));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        // The message is known to exist (a later one arrived); during a leader change the
        // stream may briefly not answer for it, so give it a moment before giving up.
        if (++misses > FILL_RETRIES) return false;
        await new Promise((r) => setTimeout(r, 100 * misses));
        continue;
      }
      if (m.seq > upTo) return true;
      const prev = cs.last as number;
      this.metrics.gapsFilled.inc();
      this.deliver(cs, m.data, m.header, m.seq, prev);
    }
    return true;
  }

  private retryCatchUp(cs: ChannelSub): void {
    const delay = Math.min(CATCH_UP_RETRY_MAX_MS, 250 * 2 ** Math.min(cs.catchUpFailures, 10));
    setTimeout(() => {
      // Disconnected meanwhile: the reconnect queues a catch-up of its own.
      if (this.channels.get(cs.ch) !== cs || !this.link.connected) return;
      cs.queue.push(CATCH_UP);
      this.startPump(cs);
    }, delay).unref();
  }

  private async lastSequence(ch: string): Promise<number> {
    try {
      // From the stream leader: a lagging replica's baseline would be behind what clients were told.
      const m = await this.limiter.wait(() =>
        leaderGet(this.jsm, this.streams.streamOf(namespaceOf(ch)), { last_by_subj: this.subjects.channel(ch) }),
      );
      return m.seq;
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
  }

  private catchUpAll(): void {
    for (const cs of this.channels.values()) {
      if (!cs.history) continue;
      cs.queue.push(CATCH_UP);
      this.startPump(cs);
    }
  }

  async close(): Promise<void> {
    this.streams.stop();
    this.control?.unsubscribe();
    for (const cs of this.channels.values()) cs.sub.unsubscribe();
    this.channels.clear();
    this.handler = undefined;
  }
}

/**
 * JetStream dedupes by message id per stream, and a stream holds a whole namespace: the id must
 * name the channel too, or one channel's key would swallow another's publication. Hashed so any
 * key is a safe header value.
 */
function messageId(ch: string, key: string): string {
  return createHash("sha256").update(ch).update("\u0000").update(key).digest("base64url");
}

function decodeControl(data: Uint8Array): ControlMessage | undefined {
  try {
    const m = unpack(data) as Record<string, unknown> | null;
    // Anonymous connections share the user "": no control message may address them all at once.
    if (typeof m !== "object" || m === null || typeof m.user !== "string" || m.user === "") return undefined;
    const { user, code, reason, ch } = m;
    if (m.kind === "disconnect" && typeof code === "number" && Number.isInteger(code) && code >= 4000 && code <= 4999 && typeof reason === "string") {
      return { kind: "disconnect", user, code, reason: reason.slice(0, 100) };
    }
    // The channel is resolved against the namespaces where it is used, like any channel name.
    if (m.kind === "subscribe" && typeof ch === "string") return { kind: "subscribe", user, ch };
    if (m.kind === "unsubscribe" && typeof ch === "string" && typeof reason === "string") {
      return { kind: "unsubscribe", user, ch, reason: reason.slice(0, 100) };
    }
  } catch {
    /* counted below */
  }
  return undefined;
}
