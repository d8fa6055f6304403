import { timingSafeEqual, createHash } from "node:crypto";
import { resolveChannel } from "../channels.js";
import type { Config } from "../config/types.js";
import type { Hub } from "../hub.js";
import type { Logger } from "../log.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { Payload } from "../protocol/payload.js";
import { encodeObjectWithPubs, encodePubEntry } from "../protocol/push.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";
import type { OriginPolicy } from "./origin.js";
import { BodyTooLarge, readBody, Reply } from "./respond.js";

interface Request {
  query: URLSearchParams;
  body?: Record<string, unknown>;
}

type Handler = (req: Request) => Promise<unknown>;

/**
 * The backend server API: publish, disconnect, presence, history, guarded by the API key. Same
 * semantics and shapes as the protocol's ok replies; errors are `{error:{code, message}}`.
 */
export class ServerApi {
  private readonly keyDigest: Buffer | undefined;

  constructor(
    private readonly config: Config,
    private readonly hub: Hub,
    private readonly origins: OriginPolicy,
    private readonly log: Logger,
  ) {
    this.keyDigest = config.apiKey === undefined ? undefined : digest(config.apiKey);
  }

  attach(app: TemplatedApp): void {
    app.post("/api/publish", this.route(true, (r) => this.publish(r)));
    app.post("/api/disconnect", this.route(true, (r) => this.disconnect(r)));
    app.get("/api/presence", this.route(false, (r) => this.presence(r)));
    app.get("/api/history", this.route(false, (r) => this.history(r)));
    app.any("/api/*", (res) => new Reply(res).error(404, "no such API endpoint"));
  }

  private route(hasBody: boolean, handler: Handler) {
    return (res: HttpResponse, req: HttpRequest): void => {
      const reply = new Reply(res);
      // Headers can only be read synchronously inside this callback.
      const auth = req.getHeader("authorization");
      const origin = req.getHeader("origin");
      const host = req.getHeader("host");
      const query = new URLSearchParams(req.getQuery() ?? "");
      if (!this.origins.allows(origin, host)) return reply.error(403, "origin not allowed");
      if (!this.authorized(auth)) {
        return reply.error(
          401,
          this.keyDigest ? "missing or wrong API key (Authorization: apikey <key>)" : "the server API is disabled: set apiKey",
        );
      }
      void this.handle(reply, hasBody, query, handler);
    };
  }

  private async handle(reply: Reply, hasBody: boolean, query: URLSearchParams, handler: Handler): Promise<void> {
    try {
      const request: Request = { query };
      if (hasBody) request.body = parseBody(await readBody(reply, this.config.maxFrameSize));
      const result = await handler(request);
      if (result instanceof RawJson) reply.send(200, result.bytes);
      else reply.json(200, result);
    } catch (err) {
      if (err instanceof BodyTooLarge) return reply.error(413, err.message);
      if (err instanceof ProtocolError) return reply.error(err.code, err.message);
      this.log.error({ err }, "server API request failed");
      reply.error(500, "internal error");
    }
  }

  private authorized(header: string): boolean {
    if (!this.keyDigest) return false;
    const match = /^apikey\s+(.+)$/iu.exec(header.trim());
    // Digests have equal length, so the comparison time says nothing about the key.
    return match !== null && timingSafeEqual(digest(match[1] as string), this.keyDigest);
  }

  private async publish(req: Request): Promise<unknown> {
    const body = req.body as Record<string, unknown>;
    const r = resolveChannel(this.config.namespaces, body.channel);
    if (body.data === undefined) throw new ProtocolError(ErrorCode.BadRequest, "data is required");
    const key = body.idempotencyKey;
    if (key !== undefined && (typeof key !== "string" || key.length === 0 || key.length > 128)) {
      throw new ProtocolError(ErrorCode.BadRequest, "idempotencyKey must be a string of 1 to 128 characters");
    }
    const result = await this.hub.publish(
      { ch: r.ch, data: Payload.fromValue(body.data), ts: Date.now() },
      { history: r.options.history, idempotencyKey: key },
      "api",
    );
    return result.offset === undefined ? {} : { offset: result.offset };
  }

  private async disconnect(req: Request): Promise<unknown> {
    const user = (req.body as Record<string, unknown>).user;
    if (typeof user !== "string" || user.length === 0 || user.length > 256) {
      throw new ProtocolError(ErrorCode.BadRequest, "user must be a string of 1 to 256 characters");
    }
    await this.hub.disconnectUser(user);
    return {};
  }

  private async presence(req: Request): Promise<unknown> {
    const r = resolveChannel(this.config.namespaces, req.query.get("channel") ?? undefined);
    if (!r.options.presence) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no presence`);
    return { clients: await this.hub.presenceOf(r.ch) };
  }

  private async history(req: Request): Promise<unknown> {
    const r = resolveChannel(this.config.namespaces, req.query.get("channel") ?? undefined);
    const opts = r.options.history;
    if (!opts) throw new ProtocolError(ErrorCode.BadRequest, `namespace ${r.namespace} has no history`);
    const rawLimit = req.query.get("limit");
    let limit: number | undefined;
    if (rawLimit !== null) {
      limit = /^[0-9]{1,9}$/u.test(rawLimit) ? Number(rawLimit) : NaN;
      if (!(limit >= 1 && limit <= opts.size)) {
        throw new ProtocolError(ErrorCode.BadRequest, `limit must be an integer from 1 to ${opts.size}`);
      }
    }
    const result = await this.hub.readHistory(r.ch, opts, { limit });
    const body = encodeObjectWithPubs(
      "json",
      { offset: result.position.offset, epoch: result.position.epoch },
      result.pubs.map((p) => encodePubEntry("json", p)),
    );
    return new RawJson(body);
  }
}

/** A response body that is already JSON bytes. */
export class RawJson {
  constructor(readonly bytes: Buffer) {}
}

function parseBody(bytes: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw new ProtocolError(ErrorCode.BadRequest, "body must be a JSON object");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(ErrorCode.BadRequest, "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

function digest(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}
