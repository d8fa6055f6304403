import { pino, type Logger } from "pino";
import type { LogLevel } from "./config/types.js";

export type { Logger };

/** Structured JSON lines on stdout; one logger per gateway so tests can run several. */
export function createLogger(level: LogLevel): Logger {
  return pino({ level, base: { svc: "natsedge" } });
}
