import { timingSafeEqual, createHash } from "node:crypto";
import { Encoded, ServerOperations } from "../api/operations.js";
import type { Config } from "../config/types.js";
import type { Logger } from "../log.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";
import type { OriginPolicy } from "./origin.js";
import type { Limits } from "../limits/limits.js";
import { headTooLarge, refuseHead } from "./request-head.js";
import { BodyTimeout, BodyTooLarge, readBody, Reply } from "./respond.js";


/**
 * The backend server API over HTTP, guarded by the API key: each operation at `/api/<name>`, GET
 * with the query string or POST with a JSON body. Errors are `{error:{code, message}}`.
 */
export class ServerApi {
  private readonly keyDigest: Buffer | undefined;

  constructor(
    private readonly config: Config,
    private readonly ops: ServerOperations,
    private readonly origins: OriginPolicy,
    private readonly limits: Limits,
    private readonly log: Logger,
  ) {
    this.keyDigest = config.apiKey === undefined ? undefined : digest(config.apiKey);
  }

  attach(app: TemplatedApp): void {
    for (const { name, method } of this.ops.routes()) {
      if (method === "POST") app.post(`/api/${name}`, this.route(true, name));
      else app.get(`/api/${name}`, this.route(false, name));
    }
    app.any("/api/*", (res) => new Reply(res).error(404, "no such API endpoint"));
  }

  private route(hasBody: boolean, op: string) {
    return (res: HttpResponse, req: HttpRequest): void => {
      const reply = new Reply(res);
      // Headers can only be read synchronously inside this callback.
      const auth = req.getHeader("authorization");
      const origin = req.getHeader("origin");
      const host = req.getHeader("host");
      const query = new URLSearchParams(req.getQuery() ?? "");
      const ip = this.limits.addresses.of(res, req);
      if (headTooLarge(req)) return refuseHead(reply, this.limits.metrics);
      if (!this.origins.allows(origin, host)) return reply.error(403, "origin not allowed");
      // Wrong keys are counted per address and, past the budget, not even checked: guessing the
      // key online costs a minute per handful of tries.
      const wait = this.limits.apiKeyRefused(ip);
      if (wait !== undefined) {
        return reply.error(429, "too many requests with a wrong API key; retry later", { "Retry-After": String(wait) });
      }
      if (!this.authorized(auth)) {
        this.limits.apiKeyFailed(ip);
        return reply.error(
          401,
          this.keyDigest ? "missing or wrong API key (Authorization: apikey <key>)" : "the server API is disabled: set apiKey",
        );
      }
      void this.handle(reply, hasBody, query, op);
    };
  }

  private async handle(reply: Reply, hasBody: boolean, query: URLSearchParams, op: string): Promise<void> {
    try {
      const params = hasBody
        ? parseBody(await readBody(reply, this.config.maxFrameSize, this.config.bodyTimeout, this.limits.metrics))
        : Object.fromEntries(query);
      const result = await this.ops.run(op, params);
      if (result instanceof Encoded) reply.send(200, result.bytes);
      else reply.json(200, result);
    } catch (err) {
      if (err instanceof BodyTooLarge) return reply.error(413, err.message);
      if (err instanceof BodyTimeout) return reply.error(408, err.message);
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
