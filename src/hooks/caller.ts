/** Why a hook call produced no answer to act on; each is a `result` label of natsedge_hook_calls_total. */
export type HookFailureReason = "timeout" | "unavailable" | "invalid" | "busy";

export class HookFailure extends Error {
  constructor(
    readonly reason: HookFailureReason,
    message: string,
  ) {
    super(message);
  }
}

/**
 * One way of reaching the backend: sends a JSON request, resolves with the answer's bytes or
 * throws HookFailure. With tracing on, `traceparent` names the hook span, sent as a header so the
 * backend's own spans can join the trace.
 */
export interface HookCaller {
  call(kind: string, body: Buffer, timeoutMs: number, maxBytes: number, traceparent?: string): Promise<Buffer>;
}
