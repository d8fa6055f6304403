import type { HttpResponse } from "../uws.js";

const STATUS: Record<number, string> = {
  200: "200 OK",
  204: "204 No Content",
  400: "400 Bad Request",
  401: "401 Unauthorized",
  403: "403 Forbidden",
  404: "404 Not Found",
  405: "405 Method Not Allowed",
  413: "413 Payload Too Large",
  429: "429 Too Many Requests",
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

  constructor(readonly res: HttpResponse) {
    res.onAborted(() => {
      this.aborted = true;
    });
  }

  send(status: number, body: string | Buffer, contentType = "application/json", headers: Record<string, string> = {}): void {
    if (this.aborted || this.done) return;
    this.done = true;
    this.res.cork(() => {
      this.res.writeStatus(STATUS[status] ?? `${status} Status`);
      this.res.writeHeader("Content-Type", contentType);
      if (!("Cache-Control" in headers)) this.res.writeHeader("Cache-Control", "no-store");
      for (const [k, v] of Object.entries(headers)) this.res.writeHeader(k, v);
      // A refused upload may still be streaming in; closing is cheaper than reading it.
      this.res.end(body, status === 413);
    });
  }

  json(status: number, value: unknown): void {
    this.send(status, JSON.stringify(value));
  }

  error(status: number, message: string): void {
    this.json(status, { error: { code: status, message } });
  }
}

export class BodyTooLarge extends Error {}

/** Collects a request body, refusing more than `limit` bytes as soon as it is exceeded. */
export function readBody(reply: Reply, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    reply.res.onData((chunk, isLast) => {
      if (failed) return;
      size += chunk.byteLength;
      if (size > limit) {
        failed = true;
        reject(new BodyTooLarge(`body larger than ${limit} bytes`));
        return;
      }
      // uWS reuses the chunk's memory after this callback returns.
      chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
      if (isLast) resolve(Buffer.concat(chunks));
    });
  });
}
