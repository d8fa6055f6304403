import type { Msg, NatsConnection, Subscription } from "nats";
import { headers as natsHeaders } from "nats";
import type { Logger } from "../log.js";
import { decodePayload, H, MSGPACK } from "../nats/codec.js";
import type { Subjects } from "../nats/subjects.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { Format } from "../protocol/codec.js";
import { pack } from "../protocol/msgpack.js";
import { Encoded, ServerOperations, type Params } from "./operations.js";

/** Every replica listens in one queue group, so each request is answered exactly once. */
export const API_QUEUE = "natsedge-api";

/**
 * The server API over NATS request/reply: `<prefix>.api.<op>` with a JSON (or MessagePack, by
 * Content-Type) body of the same parameters as the HTTP API. Access is governed by NATS
 * permissions on those subjects, not the API key.
 */
export class NatsServerApi {
  private sub: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
    private readonly ops: ServerOperations,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(this.subjects.api("*"), {
      queue: API_QUEUE,
      callback: (err, msg) => {
        if (!err) this.handle(msg).catch((e: unknown) => this.log.error({ err: e }, "NATS API reply failed"));
      },
    });
  }

  private async handle(msg: Msg): Promise<void> {
    if (!msg.reply) return;
    const contentType = msg.headers?.get(H.contentType) || undefined;
    const format: Format = contentType?.toLowerCase().startsWith(MSGPACK) ? "msgpack" : "json";
    const op = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
    let result: unknown;
    try {
      const body = msg.data.byteLength === 0 ? {} : decodePayload(msg.data, contentType)?.value();
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new ProtocolError(ErrorCode.BadRequest, "request body must be a JSON or MessagePack object");
      }
      result = await this.ops.run(op, body as Params, format);
    } catch (err) {
      if (!(err instanceof ProtocolError)) this.log.error({ err, op }, "NATS API request failed");
      const e = err instanceof ProtocolError ? err : new ProtocolError(ErrorCode.Internal, "internal error");
      result = { error: { code: e.code, message: e.message } };
    }
    let bytes = this.encode(result, format);
    // A reply over the server's max_payload would make nats.js throw: answer 413 instead.
    const max = this.nc.info?.max_payload ?? 1024 * 1024;
    if (bytes.byteLength > max - 1024) {
      bytes = this.encode({ error: { code: ErrorCode.TooLarge, message: `reply larger than the NATS max_payload (${max} bytes); use the HTTP API or a smaller limit` } }, format);
    }
    if (format === "msgpack") {
      const h = natsHeaders();
      h.set(H.contentType, MSGPACK);
      msg.respond(bytes, { headers: h });
    } else {
      msg.respond(bytes);
    }
  }

  private encode(result: unknown, format: Format): Buffer {
    if (result instanceof Encoded) return result.bytes;
    return format === "msgpack" ? pack(result) : Buffer.from(JSON.stringify(result));
  }

  stop(): void {
    this.sub?.unsubscribe();
  }
}
