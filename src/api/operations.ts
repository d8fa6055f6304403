import { resolveChannel, type ResolvedChannel } from "../channels.js";
import type { Config } from "../config/types.js";
import type { Hub } from "../hub/hub.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Format } from "../protocol/codec.js";
import { Payload } from "../protocol/payload.js";
import { MAX_HISTORY_LIMIT } from "../history/history.js";
import { encodeObjectWithPubs, encodePubEntry } from "../protocol/push.js";

export type Params = Record<string, unknown>;

/** A result that is already encoded (publication data spliced in), sent as is. */
export class Encoded {
  constructor(readonly bytes: Buffer) {}
}

/**
 * The server API's operations, independent of how they arrive (HTTP on any replica, or NATS
 * request/reply): the same validation, semantics and result shapes as the protocol's ok replies.
 */
export class ServerOperations {
  constructor(
    private readonly config: Config,
    private readonly hub: Hub,
  ) {}

  /** Operation names as they appear in paths and subjects. */
  static readonly NAMES = ["publish", "disconnect", "presence", "presence_stats", "history"] as const;

  run(op: string, params: Params, format: Format = "json"): Promise<unknown> {
    switch (op) {
      case "publish":
        return this.publish(params, format);
      case "disconnect":
        return this.disconnect(params);
      case "presence":
        return this.presence(params);
      case "presence_stats":
        return this.presenceStats(params);
      case "history":
        return this.history(params, format);
      default:
        return Promise.reject(new ProtocolError(ErrorCode.NotFound, `no such operation ${JSON.stringify(op)}`));
    }
  }

  private channel(params: Params): ResolvedChannel {
    return resolveChannel(this.config.namespaces, params.channel, "channel");
  }

  private async publish(params: Params, format: Format): Promise<unknown> {
    const r = this.channel(params);
    if (params.data === undefined) throw new ProtocolError(ErrorCode.BadRequest, "data is required");
    const key = params.idempotencyKey;
    if (key !== undefined && (typeof key !== "string" || key.length === 0 || key.length > 128)) {
      throw new ProtocolError(ErrorCode.BadRequest, "idempotencyKey must be a string of 1 to 128 characters");
    }
    const result = await this.hub.publish(
      { ch: r.ch, data: Payload.fromValue(params.data, format), ts: Date.now() },
      { history: r.options.history, idempotencyKey: key },
      "api",
    );
    return result.offset === undefined ? {} : { offset: result.offset, epoch: result.epoch };
  }

  private async disconnect(params: Params): Promise<unknown> {
    const user = params.user;
    if (typeof user !== "string" || user.length === 0 || user.length > 256) {
      throw new ProtocolError(ErrorCode.BadRequest, "user must be a string of 1 to 256 characters");
    }
    await this.hub.disconnectUser(user);
    return {};
  }

  private presenceChannel(params: Params): ResolvedChannel {
    const r = this.channel(params);
    if (!r.options.presence) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no presence`);
    return r;
  }

  private async presence(params: Params): Promise<unknown> {
    return { clients: await this.hub.presenceOf(this.presenceChannel(params).ch) };
  }

  private async presenceStats(params: Params): Promise<unknown> {
    const stats = await this.hub.presenceStats(this.presenceChannel(params).ch);
    return { clients: stats.clients, users: stats.users };
  }

  private async history(params: Params, format: Format): Promise<unknown> {
    const r = this.channel(params);
    const opts = r.options.history;
    if (!opts) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no history`);
    const limit = integerParam(params.limit, "limit", 1, MAX_HISTORY_LIMIT);
    const reverse = booleanParam(params.reverse, "reverse");
    const result = await this.hub.readHistory(r.ch, opts, {
      limit,
      reverse,
    });
    return new Encoded(
      encodeObjectWithPubs(
        format,
        { offset: result.position.offset, epoch: result.position.epoch },
        result.pubs.map((p) => encodePubEntry(format, p)),
      ),
    );
  }
}

/** Accepts a boolean or (from a query string) `true` / `false`. */
function booleanParam(value: unknown, key: string): boolean {
  if (value === undefined || value === null || value === false || value === "false") return false;
  if (value === true || value === "true") return true;
  throw new ProtocolError(ErrorCode.BadRequest, `${key} must be true or false`);
}

/** Accepts a number or (from a query string) its decimal text. */
function integerParam(value: unknown, key: string, min: number, max: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  const n = typeof value === "string" && /^[0-9]{1,10}$/u.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw new ProtocolError(ErrorCode.BadRequest, `${key} must be an integer from ${min} to ${max}`);
  }
  return n;
}
