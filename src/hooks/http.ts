import { signatureHeaders } from "../http/signature.js";
import { TRACEPARENT } from "../tracing/context.js";
import { HookFailure, type HookCaller } from "./caller.js";

/**
 * Hooks over HTTP: a JSON POST to the configured URL, answered with a 2xx JSON body. Redirects are
 * not followed (the answer decides who may do what; it comes from the configured URL or not at
 * all), and the body is read only up to the size limit. With `hooks.httpSecret` every call is
 * signed like a webhook batch, so a backend reachable by others can refuse what is not signed.
 */
export class HttpHookCaller implements HookCaller {
  constructor(
    private readonly url: string,
    private readonly secret: string | undefined,
  ) {}

  async call(kind: string, body: Buffer, timeoutMs: number, maxBytes: number, traceparent?: string): Promise<Buffer> {
    const signal = AbortSignal.timeout(timeoutMs);
    try {
      const res = await fetch(this.url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "natsedge-hook": kind,
          ...(this.secret === undefined ? {} : signatureHeaders(this.secret, body)),
          ...(traceparent === undefined ? {} : { [TRACEPARENT]: traceparent }),
        },
        body,
        redirect: "error",
        signal,
      });
      if (!res.ok) {
        await res.body?.cancel();
        throw new HookFailure("unavailable", `HTTP ${res.status}`);
      }
      const declared = Number(res.headers.get("content-length") ?? "0");
      if (declared > maxBytes) {
        await res.body?.cancel();
        throw new HookFailure("invalid", `answer of ${declared} bytes is over ${maxBytes}`);
      }
      return await readCapped(res.body, maxBytes);
    } catch (err) {
      if (err instanceof HookFailure) throw err;
      if (signal.aborted) throw new HookFailure("timeout", `no answer within ${timeoutMs} ms`);
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw new HookFailure("unavailable", `HTTP request failed: ${cause ?? (err as Error).message}`);
    }
  }
}

async function readCapped(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<Buffer> {
  if (!body) return Buffer.alloc(0);
  const parts: Uint8Array[] = [];
  let size = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      throw new HookFailure("invalid", `answer is over ${maxBytes} bytes`);
    }
    parts.push(value);
  }
  return Buffer.concat(parts);
}
