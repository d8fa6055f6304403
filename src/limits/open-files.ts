import { readFileSync } from "node:fs";

/** Used where the open-files limit cannot be read (not Linux). */
const FALLBACK = 10_000;

/**
 * The default for maxConnections: 90 % of the process's open-files limit (each connection is one
 * descriptor; the rest is left for NATS, log files and the admin listener). Past the limit,
 * accept() fails inside uWS and clients see resets instead of a 503 they can act on.
 */
export function defaultMaxConnections(limitsFile = "/proc/self/limits"): number {
  let text: string;
  try {
    text = readFileSync(limitsFile, "utf8");
  } catch {
    return FALLBACK;
  }
  const soft = /^Max open files\s+(\d+|unlimited)/mu.exec(text)?.[1];
  if (soft === undefined) return FALLBACK;
  if (soft === "unlimited") return 1_000_000;
  return Math.max(1, Math.floor(Number(soft) * 0.9));
}
