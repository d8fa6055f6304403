import type { Metrics } from "../metrics.js";
import type { HttpRequest, HttpResponse } from "../uws.js";
import type { Reply } from "./respond.js";

/**
 * The largest request head (request line and headers) the gateway reads: a 16 KiB token in a
 * cookie or an Authorization header, a 4 KiB Last-Event-ID and a long `?ch=` list fit. Larger
 * heads get 431. uWebSockets.js itself reads at most 127,973 bytes of head and 48 header lines;
 * beyond those it closes the connection without an answer (measured; docs/security.md).
 */
export const MAX_REQUEST_HEAD = 32 * 1024;

/** Whether the head is over MAX_REQUEST_HEAD; call inside the uWS request callback. */
export function headTooLarge(req: HttpRequest): boolean {
  let size = req.getMethod().length + req.getUrl().length + (req.getQuery()?.length ?? 0) + 12;
  req.forEach((key, value) => {
    size += key.length + value.length + 4;
  });
  return size > MAX_REQUEST_HEAD;
}

/** The peer's address as uWS reports it (IPv6 in full form, IPv4 dotted). */
export function peerAddress(res: HttpResponse): string {
  return Buffer.from(res.getRemoteAddressAsText()).toString();
}

export function refuseHead(reply: Reply, metrics: Metrics): void {
  metrics.httpRefused.inc({ reason: "header_too_large" });
  reply.error(431, `request head larger than ${MAX_REQUEST_HEAD} bytes`);
}
