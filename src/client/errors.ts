/** A command's error reply, a subscription refused or ended by the server, or a local failure. */
export class NatsedgeError extends Error {
  /** Seconds the gateway asks a client to wait before trying again (some 429 refusals). */
  declare readonly retryAfter?: number;

  constructor(
    readonly code: number,
    message: string,
    retryAfter?: number,
  ) {
    super(message);
    if (retryAfter !== undefined) this.retryAfter = retryAfter;
  }
}

/** A protocol error object: `{code, message, retryAfter?}`. */
export function errorFrom(e: { code: number; message: string; retryAfter?: unknown }): NatsedgeError {
  const after = e.retryAfter;
  return new NatsedgeError(e.code, e.message, typeof after === "number" && after > 0 ? after : undefined);
}
