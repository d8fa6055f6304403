import { resolveChannel, type ResolvedChannel } from "../channels.js";
import { isValidPattern } from "../auth/patterns.js";
import { MAX_CHANNELS_LIMIT, type Cluster } from "../cluster/cluster.js";
import type { Config } from "../config/types.js";
import type { Hub } from "../hub/hub.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Format } from "../protocol/codec.js";
import { Payload } from "../protocol/payload.js";
import { MAX_HISTORY_LIMIT } from "../history/history.js";
import { pack } from "../protocol/msgpack.js";
import { encodeObjectWithPubs, encodePubEntry } from "../protocol/push.js";

export type Params = Record<string, unknown>;

/** A result that is already encoded (publication data spliced in), sent as is. */
export class Encoded {
  constructor(readonly bytes: Buffer) {}
}

/** The most channels one `broadcast` publishes to. */
export const MAX_BROADCAST_CHANNELS = 1_000;
/** The most commands in one `batch`; its total size is bounded by the request body's. */
export const MAX_BATCH_COMMANDS = 100;
/** Publishes of one broadcast in flight at once. */
const BROADCAST_CONCURRENCY = 32;
const UNSUBSCRIBE_REASON = "unsubscribed by server";

interface Operation {
  /** How it is called over HTTP: GET takes the query string, POST a JSON body. */
  method: "GET" | "POST";
  /** Allowed inside a batch: not the ones that fan out to many channels or every gateway. */
  batch: boolean;
  run(params: Params, format: Format): Promise<unknown>;
}

/**
 * The server API's operations, independent of how they arrive (HTTP on any replica, or NATS
 * request/reply): the same validation, semantics and result shapes as the protocol's ok replies.
 */
export class ServerOperations {
  private readonly ops: Record<string, Operation>;

  constructor(
    private readonly config: Config,
    private readonly hub: Hub,
    private readonly cluster: Cluster,
  ) {
    this.ops = {
      publish: { method: "POST", batch: true, run: (p, f) => this.publish(p, f) },
      broadcast: { method: "POST", batch: false, run: (p, f) => this.broadcast(p, f) },
      subscribe: { method: "POST", batch: true, run: (p) => this.subscribe(p) },
      unsubscribe: { method: "POST", batch: true, run: (p) => this.unsubscribe(p) },
      disconnect: { method: "POST", batch: true, run: (p) => this.disconnect(p) },
      batch: { method: "POST", batch: false, run: (p, f) => this.batch(p, f) },
      presence: { method: "GET", batch: true, run: (p) => this.presence(p) },
      presence_stats: { method: "GET", batch: true, run: (p) => this.presenceStats(p) },
      history: { method: "GET", batch: true, run: (p, f) => this.history(p, f) },
      channels: { method: "GET", batch: false, run: (p) => this.channels(p) },
      info: { method: "GET", batch: false, run: () => this.info() },
    };
  }

  /** Operation names (as they appear in paths and subjects) and their HTTP methods. */
  routes(): Array<{ name: string; method: "GET" | "POST" }> {
    return Object.entries(this.ops).map(([name, op]) => ({ name, method: op.method }));
  }

  run(op: string, params: Params, format: Format = "json"): Promise<unknown> {
    const operation = Object.hasOwn(this.ops, op) ? this.ops[op] : undefined;
    if (!operation) return Promise.reject(new ProtocolError(ErrorCode.NotFound, `no such operation ${JSON.stringify(op)}`));
    return operation.run(params, format);
  }

  private channel(params: Params): ResolvedChannel {
    return resolveChannel(this.config.namespaces, params.channel, "channel");
  }

  private async publish(params: Params, format: Format): Promise<unknown> {
    const r = this.channel(params);
    const data = dataParam(params, format);
    return this.publishTo(r, data, idempotencyKeyParam(params));
  }

  private async publishTo(r: ResolvedChannel, data: Payload, key: string | undefined): Promise<unknown> {
    const result = await this.hub.publish(
      { ch: r.ch, data, ts: Date.now() },
      { history: r.options.history, idempotencyKey: key },
      "api",
    );
    return result.offset === undefined ? {} : { offset: result.offset, epoch: result.epoch };
  }

  /** One data to many channels: each channel's result (or error) at its index. */
  private async broadcast(params: Params, format: Format): Promise<unknown> {
    const channels = params.channels;
    if (!Array.isArray(channels) || channels.length === 0 || channels.length > MAX_BROADCAST_CHANNELS) {
      throw new ProtocolError(ErrorCode.BadRequest, `channels must be an array of 1 to ${MAX_BROADCAST_CHANNELS} channel names`);
    }
    const data = dataParam(params, format);
    const key = idempotencyKeyParam(params);
    const results: unknown[] = new Array(channels.length);
    for (let i = 0; i < channels.length; i += BROADCAST_CONCURRENCY) {
      const chunk = channels.slice(i, i + BROADCAST_CONCURRENCY);
      await Promise.all(
        chunk.map(async (ch: unknown, j) => {
          results[i + j] = await outcome(() => this.publishTo(resolveChannel(this.config.namespaces, ch, "channel"), data, key));
        }),
      );
    }
    return { results };
  }

  private async subscribe(params: Params): Promise<unknown> {
    const user = userParam(params);
    await this.hub.subscribeUser(user, this.channel(params).ch);
    return {};
  }

  private async unsubscribe(params: Params): Promise<unknown> {
    const user = userParam(params);
    await this.hub.unsubscribeUser(user, this.channel(params).ch, UNSUBSCRIBE_REASON);
    return {};
  }

  private async disconnect(params: Params): Promise<unknown> {
    await this.hub.disconnectUser(userParam(params));
    return {};
  }

  /** Commands one after another, in order; each one's result (or error) at its index. */
  private async batch(params: Params, format: Format): Promise<unknown> {
    const commands = params.commands;
    if (!Array.isArray(commands) || commands.length === 0 || commands.length > MAX_BATCH_COMMANDS) {
      throw new ProtocolError(ErrorCode.BadRequest, `commands must be an array of 1 to ${MAX_BATCH_COMMANDS} commands`);
    }
    const results: unknown[] = [];
    for (const cmd of commands as unknown[]) {
      results.push(await outcome(() => this.batchCommand(cmd, format)));
    }
    return new Encoded(encodeResults(format, results));
  }

  private batchCommand(cmd: unknown, format: Format): Promise<unknown> {
    const c = cmd as { op?: unknown; params?: unknown } | null;
    if (typeof c !== "object" || c === null || Array.isArray(c)) {
      throw new ProtocolError(ErrorCode.BadRequest, "a command must be an object {op, params}");
    }
    const op = typeof c.op === "string" && Object.hasOwn(this.ops, c.op) ? this.ops[c.op] : undefined;
    if (!op?.batch) {
      const allowed = Object.keys(this.ops).filter((k) => this.ops[k]?.batch);
      throw new ProtocolError(ErrorCode.BadRequest, `op must be one of ${allowed.join(", ")}`);
    }
    const p = c.params ?? {};
    if (typeof p !== "object" || p === null || Array.isArray(p)) throw new ProtocolError(ErrorCode.BadRequest, "params must be an object");
    return op.run(p as Params, format);
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

  /** Channels held on any gateway, with subscriptions summed over gateways, by name. */
  private async channels(params: Params): Promise<unknown> {
    const pattern = params.pattern;
    if (pattern !== undefined && (typeof pattern !== "string" || !isValidPattern(pattern))) {
      throw new ProtocolError(ErrorCode.BadRequest, "pattern must be a channel pattern (see Permissions)");
    }
    const limit = integerParam(params.limit, "limit", 1, MAX_CHANNELS_LIMIT) ?? MAX_CHANNELS_LIMIT;
    const answers = await this.cluster.channels(pattern === undefined ? { limit } : { pattern, limit });
    const counts = new Map<string, number>();
    let truncated = false;
    for (const a of answers) {
      truncated ||= a.truncated;
      for (const [ch, n] of a.channels) counts.set(ch, (counts.get(ch) ?? 0) + n);
    }
    const names = [...counts.keys()].sort();
    if (names.length > limit) truncated = true;
    const channels: Record<string, { subscribers: number }> = {};
    for (const ch of names.slice(0, limit)) channels[ch] = { subscribers: counts.get(ch) as number };
    return truncated ? { channels, truncated } : { channels };
  }

  private async info(): Promise<unknown> {
    const nodes = await this.cluster.info();
    return { nodes: nodes.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0)) };
  }
}

/** A command's result, or its error as the error body, so one failure does not end the rest. */
async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return await run();
  } catch (err) {
    const e = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.Internal, "internal error");
    return { error: { code: e.code, message: e.message } };
  }
}

/** `{"results":[...]}` with already-encoded results spliced in. */
function encodeResults(format: Format, results: unknown[]): Buffer {
  const items = results.map((r) => (r instanceof Encoded ? r.bytes : format === "json" ? Buffer.from(JSON.stringify(r)) : pack(r)));
  if (format === "json") {
    const parts: Buffer[] = [Buffer.from('{"results":[')];
    items.forEach((b, i) => parts.push(...(i > 0 ? [Buffer.from(","), b] : [b])));
    parts.push(Buffer.from("]}"));
    return Buffer.concat(parts);
  }
  // fixmap of one; array16 header (a batch holds at most MAX_BATCH_COMMANDS < 65536 results).
  const head = Buffer.from([0x81, ...pack("results"), 0xdc, items.length >> 8, items.length & 0xff]);
  return Buffer.concat([head, ...items]);
}

function dataParam(params: Params, format: Format): Payload {
  if (params.data === undefined) throw new ProtocolError(ErrorCode.BadRequest, "data is required");
  return Payload.fromValue(params.data, format);
}

function idempotencyKeyParam(params: Params): string | undefined {
  const key = params.idempotencyKey;
  if (key !== undefined && (typeof key !== "string" || key.length === 0 || key.length > 128)) {
    throw new ProtocolError(ErrorCode.BadRequest, "idempotencyKey must be a string of 1 to 128 characters");
  }
  return key;
}

function userParam(params: Params): string {
  const user = params.user;
  if (typeof user !== "string" || user.length === 0 || user.length > 256) {
    throw new ProtocolError(ErrorCode.BadRequest, "user must be a string of 1 to 256 characters");
  }
  return user;
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
