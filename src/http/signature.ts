import { createHmac } from "node:crypto";

/**
 * How the gateway signs what it POSTs to a backend (webhook batches, HTTP hook calls), so the
 * receiver can tell the gateway from anyone else who reaches its URL.
 */
export const SIGNATURE_HEADER = "Natsedge-Signature";
export const TIMESTAMP_HEADER = "Natsedge-Timestamp";

/** `v1=` + hex HMAC-SHA256 over `<timestamp>.<body>`: the timestamp is signed so a replay can be refused by age. */
export function signature(secret: string, timestamp: string, body: string | Buffer): string {
  return "v1=" + createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex");
}

/** The two headers for a body sent now (Unix seconds). */
export function signatureHeaders(secret: string, body: string | Buffer): Record<string, string> {
  const timestamp = String(Math.floor(Date.now() / 1000));
  return { [TIMESTAMP_HEADER]: timestamp, [SIGNATURE_HEADER]: signature(secret, timestamp, body) };
}
