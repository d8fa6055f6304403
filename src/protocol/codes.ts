/** Error codes carried in `{id, error:{code, message}}` replies (HTTP-like on purpose). */
export const ErrorCode = {
  BadRequest: 400,
  Unauthenticated: 401,
  Forbidden: 403,
  NotFound: 404,
  AlreadySubscribed: 409,
  /** `unsub` push: the subscription's continuity is gone; resubscribe with `since`. */
  InsufficientState: 410,
  TooLarge: 413,
  Timeout: 408,
  RateLimited: 429,
  Internal: 500,
  Unavailable: 503,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes (and `disconnect` push codes). */
export const CloseCode = {
  Shutdown: 4000,
  Unauthorized: 4001,
  TokenExpired: 4002,
  Disconnected: 4003,
  ProtocolViolation: 4004,
  SlowConsumer: 4008,
  /** SSE: a channel's continuity was lost; reconnect (with Last-Event-ID) to recover. */
  InsufficientState: 4010,
  RateLimited: 4029,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** A command failed in a way the client should hear about; never takes the connection down. */
export class ProtocolError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Seconds after which a refused request (429, 503) may succeed, when known. */
    readonly retryAfter?: number,
  ) {
    super(message);
  }

  /** The error object of a reply: `{code, message}`, plus `retryAfter` when there is one. */
  toJSON(): { code: number; message: string; retryAfter?: number } {
    return this.retryAfter === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, retryAfter: this.retryAfter };
  }
}

/** Input that is not a frame at all: the connection is closed with 4004. */
export class FrameError extends Error {}
