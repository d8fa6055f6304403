import type { Logger } from "../log.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/**
 * Runs a call to the broker, history or presence backend. A ProtocolError is the client's answer
 * already; anything else is a backend failure, logged and answered `503 broker unavailable`.
 */
export async function backendCall<T>(op: () => Promise<T>, what: string, log: Logger): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof ProtocolError) throw err;
    log.error({ err }, what);
    throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable");
  }
}
