import type { Metrics } from "../metrics.js";
import type { HttpResponse } from "../uws.js";

const STATUS: Record<number, string> = {
  200: "200 OK",
  204: "204 No Content",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  405: "405 Method Not Allowed",
  408: "408 Request Timeout",
  411: "411 Length Required",
  413: "413 Payload Too Large",
  426: "426 Upgrade Required",
  429: "429 Too Many Requests",
  431: "431 Request Header Fields Too Large",
  500: "500 Internal Server Error",
  503: "503 Service Unavailable",
};

/**
 * A uWS response with its abort state tracked: uWS responses must not be touched after the client
 * went away, and every write outside the request callback must be corked.
 */
export class Reply {
  aborted = false;
  done = false;
  /** uWS keeps one abort handler per response; whoever else needs to know registers here. */
  private readonly abortListeners: Array<() => void> = [];

  constructor(readonly res: HttpResponse) {
    res.onAborted(() => {
      this.aborted = true;
      for (const f of this.abortListeners) f();
    });
  }

  onAbort(listener: () => void): void {
    this.abortListeners.push(listener);
  }

  send(status: number, body: string | Buffer, contentType = "application/json", headers: Record<string, string> = {}): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.res.cork(() => {
      this.res.writeStatus(STATUS[status] ?? `${status} Status`);
      this.res.writeHeader("Content-Type", contentType);
      if (!("Cache-Control" in headers)) this.res.writeHeader("Cache-Control", "no-store");
      for (const [k, v] of Object.entries(headers)) this.res.writeHeader(k, v);
      // A refused or stalled upload may still be streaming in; closing is cheaper than reading it.
      this.res.end(body, status === 413 || status === 408);
    });
  }

  json(status: number, value: unknown): void {
    this.send(status, JSON.stringify(value));
  }

  error(status: number, message: string, headers: Record<string, string> = {}): void {
    this.send(status, JSON.stringify({ error: { code: status, message } }), "application/json", headers);
  }
}

export class BodyTooLarge extends Error {}
export class BodyTimeout extends Error {}

/**
 * Collects a request body, refusing more than `limit` bytes as soon as it is exceeded and a body
 * still incomplete after `timeoutMs` (a client trickling bytes would hold the request, and its
 * buffer, for as long as it liked). Chunked bodies arrive the same way as sized ones.
 */
export function readBody(reply: Reply, limit: number, timeoutMs: number, metrics: Metrics): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    const timer = setTimeout(() => {
      failed = true;
      metrics.httpRefused.inc({ reason: "body_timeout" });
      reject(new BodyTimeout(`body not received within ${Math.round(timeoutMs / 1000)} s`));
    }, timeoutMs);
    reply.res.onData((chunk, isLast) => {
      if (failed) return;
      size += chunk.byteLength;
      if (size > limit) {
        failed = true;
        clearTimeout(timer);
        metrics.httpRefused.inc({ reason: "body_too_large" });
        reject(new BodyTooLarge(`body larger than ${limit} bytes`));
        return;
      }
      // uWS reuses the chunk's memory after this callback returns.
      chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
      if (isLast) {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      }
    });
    // An aborted request never delivers its last chunk: the timer must not keep it alive.
    reply.onAbort(() => {
      failed = true;
      clearTimeout(timer);
    });
  });
}
