import { readCookie } from "../auth/cookie.js";
import type { HooksConfig } from "../config/types.js";

export type TransportName = "websocket" | "longpoll" | "sse";

/** A forwarded header value is cut off here; the request head as a whole is bounded already. */
const MAX_VALUE = 4096;

/**
 * What a hook learns about the request a client came with: its transport, and the headers and
 * cookies the operator listed (`hooks.headers`, `hooks.cookies`). Nothing else is forwarded: the
 * gateway's own secrets (API key, session secret, NATS credentials, long-poll sessions) never.
 */
export interface ClientRequest {
  readonly transport: TransportName;
  readonly headers?: Record<string, string>;
  readonly cookies?: Record<string, string>;
}

/**
 * Reads the listed headers and cookies; `header` must be called synchronously inside the uWS
 * request callback, which is why transports call this where they read their other headers.
 */
export function clientRequest(transport: TransportName, hooks: HooksConfig, header: (name: string) => string): ClientRequest {
  const request: { transport: TransportName; headers?: Record<string, string>; cookies?: Record<string, string> } = { transport };
  if (hooks.headers.length > 0) {
    const headers: Record<string, string> = {};
    for (const name of hooks.headers) {
      const value = header(name);
      if (value !== "") headers[name] = value.slice(0, MAX_VALUE);
    }
    request.headers = headers;
  }
  if (hooks.cookies.length > 0) {
    const cookieHeader = header("cookie");
    const cookies: Record<string, string> = {};
    for (const name of hooks.cookies) {
      const value = readCookie(cookieHeader, name);
      if (value !== undefined) cookies[name] = value.slice(0, MAX_VALUE);
    }
    request.cookies = cookies;
  }
  return request;
}
