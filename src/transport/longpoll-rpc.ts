import { randomUUID } from "node:crypto";
import type { ResolvedChannel } from "../channels.js";
import { authorize } from "../delivery/access.js";
import { channelCommand, CommandQueue, type Caller, type Reply } from "../delivery/commands.js";
import type { DeliveryContext } from "../delivery/context.js";
import { authenticate, describeConnect, refreshClaims } from "../delivery/authenticate.js";
import { traced, type Span } from "../tracing/tracer.js";
import { optionalString, type Frame } from "../delivery/frames.js";
import { clientInfo, type Identity } from "../delivery/identity.js";
import type { ClientRequest } from "../hooks/request.js";
import type { TokenBucket } from "../limits/bucket.js";
import type { Format } from "../protocol/codec.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { ClientInfo } from "../publication.js";

/** What an `/lp/rpc` request needs of the long-poll transport. */
export interface RpcHost {
  /** A signed session carrying the identity: the client's state between requests. */
  issueSession(identity: Identity): string;
  /** The client stops polling a channel: its presence there ends now, not at its timeout. */
  unsubscribe(r: ResolvedChannel, info: ClientInfo): void;
}

/**
 * One `/lp/rpc` request's commands. Long-poll keeps no client state on the gateway: `connect` and
 * `refresh` answer with a signed session, every later request brings it back, and channels are
 * subscribed by polling them (`/lp/poll`). The channel commands are the delivery core's.
 */
export class RpcRequest implements Caller {
  /** The encoded replies, in command order. */
  readonly frames: Buffer[] = [];
  readonly budget: TokenBucket | undefined;
  private current: Identity | undefined;
  private readonly commands: CommandQueue;

  constructor(
    private readonly ctx: DeliveryContext,
    readonly format: Format,
    private readonly host: RpcHost,
    identity: Identity | undefined,
    /** A bearer token from the request's headers, used by `connect` without a `token`. */
    private readonly bearer: string | undefined,
    /** Commands without a session spend the budget of the client's address. */
    ip: string,
    readonly request: ClientRequest = { transport: "longpoll" },
  ) {
    this.current = identity;
    this.budget = ctx.limits.commandBudget(identity ? identity.client : `ip:${ip}`);
    this.commands = new CommandQueue(ctx, { format, send: (frame) => this.frames.push(frame) }, this.budget, (cmd) => this.dispatch(cmd));
  }

  get identity(): Identity {
    if (!this.current) throw new ProtocolError(ErrorCode.Unauthenticated, "connect first");
    return this.current;
  }

  /** Runs the commands in order and resolves with their replies. */
  async run(cmds: unknown[]): Promise<Buffer[]> {
    this.commands.receive(cmds);
    await this.commands.settled();
    return this.frames;
  }

  private dispatch(cmd: Frame): Promise<Reply> | Reply {
    if (cmd.op === "connect") return traced(this.ctx.tracer, "connect", cmd, (span) => this.connect(cmd, span));
    const identity = this.identity;
    switch (cmd.op) {
      case "subscribe":
        throw new ProtocolError(ErrorCode.BadRequest, "over long-poll, channels are subscribed by polling them (/lp/poll)");
      case "unsubscribe":
        this.host.unsubscribe(authorize(this.ctx.config.namespaces, identity, cmd.ch), clientInfo(identity));
        return {};
      case "refresh":
        return this.refresh(cmd, identity);
      default:
        return channelCommand(this.ctx, this, cmd);
    }
  }

  private async connect(cmd: Frame, span: Span | undefined): Promise<Reply> {
    if (this.current) throw new ProtocolError(ErrorCode.BadRequest, "already connected");
    const token = optionalString(cmd, "token") ?? this.bearer;
    const client = randomUUID();
    const { claims, channels } = await authenticate(this.ctx, client, token, this.request, cmd.data, span?.context);
    const identity: Identity = claims ? { client, user: claims.sub, claims } : { client, user: "" };
    describeConnect(span, "longpoll", client, identity.user);
    this.current = identity;
    const ok: Record<string, unknown> = {
      client: identity.client,
      user: identity.user,
      node: this.ctx.node,
      ping: Math.round(this.ctx.config.pingInterval / 1000),
      session: this.host.issueSession(identity),
    };
    // Long-poll holds no subscriptions: the channels the connect hook named are the client's to poll.
    if (channels) ok.channels = channels;
    return ok;
  }

  private async refresh(cmd: Frame, identity: Identity): Promise<Reply> {
    const claims = await refreshClaims(this.ctx, identity, optionalString(cmd, "token"), this.request);
    this.current = { client: identity.client, user: identity.user, claims };
    return { session: this.host.issueSession(this.current) };
  }
}

