import { ErrorCode, headers, type NatsConnection, type NatsError, type RequestOptions } from "nats";
import { TRACEPARENT } from "../tracing/context.js";
import type { Subjects } from "../nats/subjects.js";
import { HookFailure, type HookCaller } from "./caller.js";

/**
 * Hooks over NATS request/reply to `<prefix>.hook.<kind>`: backends subscribe with a queue group,
 * so one of them answers each call and any of them may come and go.
 */
export class NatsHookCaller implements HookCaller {
  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
  ) {}

  async call(kind: string, body: Buffer, timeoutMs: number, maxBytes: number, traceparent?: string): Promise<Buffer> {
    let data: Uint8Array;
    const opts: RequestOptions = { timeout: timeoutMs };
    if (traceparent !== undefined) {
      opts.headers = headers();
      opts.headers.set(TRACEPARENT, traceparent);
    }
    try {
      data = (await this.nc.request(this.subjects.hook(kind), body, opts)).data;
    } catch (err) {
      const code = (err as NatsError).code;
      if (code === ErrorCode.Timeout) throw new HookFailure("timeout", `no answer within ${timeoutMs} ms`);
      if (code === ErrorCode.NoResponders) throw new HookFailure("unavailable", "no backend subscribed (no responders)");
      throw new HookFailure("unavailable", `NATS request failed: ${(err as Error).message}`);
    }
    if (data.byteLength > maxBytes) throw new HookFailure("invalid", `answer of ${data.byteLength} bytes is over ${maxBytes}`);
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }
}
