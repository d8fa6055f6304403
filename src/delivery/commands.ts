import { MAX_HISTORY_LIMIT } from "../history/history.js";
import type { TokenBucket } from "../limits/bucket.js";
import { chargeItems } from "../limits/limits.js";
import { encodeFrame, type Format } from "../protocol/codec.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { Payload } from "../protocol/payload.js";
import { encodePubEntry, encodeReplyWithPubs } from "../protocol/push.js";
import type { Publication } from "../publication.js";
import { authorize } from "./access.js";
import type { DeliveryContext } from "./context.js";
import { idOf, optionalInteger, optionalPosition, optionalString, validateFrame, type Frame } from "./frames.js";
import type { Identity } from "./identity.js";
import type { ResolvedChannel } from "../channels.js";
import type { ClientRequest } from "../hooks/request.js";
import { parseTraceparent, type SpanContext } from "../tracing/context.js";
import { SpanKind, type Span, type Tracer } from "../tracing/tracer.js";

/** A command's answer: the `ok` object, or a whole frame already encoded (spliced publications). */
export type Reply = Record<string, unknown> | Buffer;

/** Marker: the command sent its own reply and nothing more is to be sent. */
export const ALREADY_SENT = Buffer.alloc(0);

const MAX_IDEMPOTENCY_KEY = 128;

/** Where one client's replies go, in its wire format. */
export interface ReplySink {
  readonly format: Format;
  send(frame: Buffer): void;
}

/** A client as the channel commands see it, whichever transport keeps its state. */
export interface Caller {
  readonly identity: Identity;
  readonly format: Format;
  /** The client's command budget: reads cost one token per message on top of the command. */
  readonly budget: TokenBucket | undefined;
  /** The transport and forwarded headers, for backend hooks. */
  readonly request: ClientRequest;
}

/** Sends a command's `ok` reply. */
export function sendOk(out: ReplySink, id: unknown, ok: Record<string, unknown>): void {
  out.send(encodeFrame(out.format, id === undefined ? { ok } : { id, ok }));
}

/** Sends a command's error reply and counts it. */
export function sendError(ctx: DeliveryContext, out: ReplySink, id: unknown, err: ProtocolError): void {
  ctx.metrics.errors.inc({ code: String(err.code) });
  const error = err.toJSON();
  out.send(encodeFrame(out.format, id === undefined ? { error } : { id, error }));
}

/**
 * Runs one client's commands strictly in order, for every transport: spends the command budget
 * (`commandRate` per second, bursts of twice that), answers each command with `ok` or a
 * documented error, and turns anything unexpected into 500 without losing the queue.
 * A connection's owner may drop the queue once it is `idle` and make a new one for the next
 * message: an idle connection then holds no queue, promise or closure.
 */
export class CommandQueue {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  private rejected = 0;
  /** Set by the owner when the client is gone: nothing more runs or is sent. */
  ended = false;

  constructor(
    private readonly ctx: DeliveryContext,
    private readonly out: ReplySink,
    private readonly budget: TokenBucket | undefined,
    private readonly dispatch: (cmd: Frame) => Promise<Reply> | Reply,
  ) {}

  /** Queues decoded frames; false once the client floods past twice its rate (the owner ends it). */
  receive(frames: unknown[]): boolean {
    for (const frame of frames) {
      if (this.ended) return true;
      if (this.budget && !this.budget.take()) {
        this.ctx.metrics.rateLimited.inc({ kind: "command" });
        this.sendError(idOf(frame), new ProtocolError(ErrorCode.RateLimited, "too many commands", this.budget.retryAfter()));
        if (++this.rejected > 2 * this.ctx.config.commandRate) return false;
        continue;
      }
      this.rejected = 0;
      this.pending++;
      this.tail = this.tail.then(() => this.run(frame));
    }
    return true;
  }

  /** Resolves once every command received so far has been answered. */
  settled(): Promise<void> {
    return this.tail;
  }

  /** Nothing queued or running, and no run of refused commands to remember. */
  get idle(): boolean {
    return this.pending === 0 && this.rejected === 0;
  }

  private async run(frame: unknown): Promise<void> {
    try {
      await this.answer(frame);
    } finally {
      this.pending--;
    }
  }

  private async answer(frame: unknown): Promise<void> {
    if (this.ended) return;
    const id = idOf(frame);
    try {
      const reply = await this.dispatch(validateFrame(frame));
      if (this.ended || reply === ALREADY_SENT) return;
      if (Buffer.isBuffer(reply)) this.out.send(reply);
      else this.sendOk(id, reply);
    } catch (err) {
      if (this.ended) return;
      if (err instanceof ProtocolError) return this.sendError(id, err);
      this.ctx.log.error({ err }, "command failed");
      this.sendError(id, new ProtocolError(ErrorCode.Internal, "internal error"));
    }
  }

  sendOk(id: unknown, ok: Record<string, unknown>): void {
    sendOk(this.out, id, ok);
  }

  sendError(id: unknown, err: ProtocolError): void {
    sendError(this.ctx, this.out, id, err);
  }
}

/**
 * The commands that need nothing of a connection but who the client is: publish, presence,
 * presence_stats, history, rpc and ping. Every transport answers them here.
 */
export function channelCommand(ctx: DeliveryContext, caller: Caller, cmd: Frame): Promise<Reply> | Reply {
  switch (cmd.op) {
    case "publish":
      return ctx.tracer ? tracedPublish(ctx, ctx.tracer, caller, cmd) : publish(ctx, caller, cmd, undefined);
    case "presence":
      return presence(ctx, caller, cmd);
    case "presence_stats":
      return presenceStats(ctx, caller, cmd);
    case "history":
      return history(ctx, caller, cmd);
    case "rpc":
      return rpc(ctx, caller, cmd, ctx.tracer ? parseTraceparent(cmd.traceparent) : undefined);
    case "ping":
      return {};
    default:
      throw new ProtocolError(ErrorCode.BadRequest, `unknown op ${JSON.stringify(cmd.op)}`);
  }
}

/**
 * The publish span covers the hook, the broker publish and (NATS) the JetStream ack; its context
 * rides with the publication, so every gateway's `deliver` span of it is its child.
 */
function tracedPublish(ctx: DeliveryContext, tracer: Tracer, caller: Caller, cmd: Frame): Promise<Reply> {
  const span = tracer.start("publish", SpanKind.producer, parseTraceparent(cmd.traceparent), {
    "natsedge.transport": caller.request.transport,
    "natsedge.client": caller.identity.client,
    "enduser.id": caller.identity.user,
  });
  return tracer.around(span, () => publish(ctx, caller, cmd, span));
}

async function publish(ctx: DeliveryContext, caller: Caller, cmd: Frame, span: Span | undefined): Promise<Reply> {
  const r = authorize(ctx.config.namespaces, caller.identity, cmd.ch);
  span?.set("natsedge.channel", r.ch);
  if (!r.options.clientPublish) {
    throw new ProtocolError(ErrorCode.Forbidden, `namespace ${r.namespace} does not allow client publish`);
  }
  if (!Object.hasOwn(cmd, "data") || cmd.data === undefined) {
    throw new ProtocolError(ErrorCode.BadRequest, "data is required");
  }
  const idempotencyKey = optionalString(cmd, "idempotencyKey", MAX_IDEMPOTENCY_KEY);
  const data = await ctx.hooks.publish(caller.identity, r, caller.request, cmd.data, span?.context);
  const pub: Publication = {
    ch: r.ch,
    data: Payload.fromValue(data, data === cmd.data ? caller.format : "json"),
    info: { client: caller.identity.client, user: caller.identity.user },
    ts: Date.now(),
  };
  if (span) pub.trace = span.context;
  const result = await ctx.hub.publish(pub, { history: r.options.history, idempotencyKey }, "client");
  return result.offset === undefined ? {} : { offset: result.offset, epoch: result.epoch };
}

/** Answered by the backend's rpc hook: `{data}`. */
async function rpc(ctx: DeliveryContext, caller: Caller, cmd: Frame, trace: SpanContext | undefined): Promise<Reply> {
  return { data: await ctx.hooks.rpc(caller.identity, caller.request, cmd.method, cmd.data, trace) };
}

function presenceChannel(ctx: DeliveryContext, caller: Caller, cmd: Frame): ResolvedChannel {
  const r = authorize(ctx.config.namespaces, caller.identity, cmd.ch);
  if (!r.options.presence) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no presence`);
  return r;
}

async function presence(ctx: DeliveryContext, caller: Caller, cmd: Frame): Promise<Reply> {
  const clients = await ctx.hub.presenceOf(presenceChannel(ctx, caller, cmd).ch);
  chargeItems(caller.budget, Object.keys(clients).length);
  return { clients };
}

async function presenceStats(ctx: DeliveryContext, caller: Caller, cmd: Frame): Promise<Reply> {
  const stats = await ctx.hub.presenceStats(presenceChannel(ctx, caller, cmd).ch);
  return { clients: stats.clients, users: stats.users };
}

async function history(ctx: DeliveryContext, caller: Caller, cmd: Frame): Promise<Reply> {
  const r = authorize(ctx.config.namespaces, caller.identity, cmd.ch);
  const opts = r.options.history;
  if (!opts) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no history`);
  const limit = optionalInteger(cmd, "limit", 1, MAX_HISTORY_LIMIT);
  const since = optionalPosition(cmd, "since");
  const reverse = cmd.reverse;
  if (reverse !== undefined && typeof reverse !== "boolean") {
    throw new ProtocolError(ErrorCode.BadRequest, "reverse must be true or false");
  }
  const result = await ctx.hub.readHistory(r.ch, opts, { limit, since, reverse: reverse === true });
  chargeItems(caller.budget, result.reads);
  if (since && !result.complete) {
    throw new ProtocolError(ErrorCode.BadRequest, "since is outside the retained history or from another epoch; read without since");
  }
  return encodeReplyWithPubs(
    caller.format,
    idOf(cmd),
    { offset: result.position.offset, epoch: result.position.epoch },
    result.pubs.map((p) => encodePubEntry(caller.format, p)),
  );
}
