/** Seconds since the epoch at which a JWT expires, if it says. */
export function tokenExpiry(token: string | undefined): number | undefined {
  try {
    const part = (token?.split(".")[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
    const exp = (JSON.parse(atob(part)) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * When to refresh a token that has `lifetime` ms left: at 80% of it, or 5 s before exp when that
 * is sooner (lifetimes under 25 s), but never before half-way and 1 s, so that a token of a few
 * seconds is not refreshed again at once, in a loop. Undefined when it is too late: the gateway
 * then ends the connection (4002) and the client reconnects with a new token.
 */
export function refreshDelay(lifetime: number): number | undefined {
  const delay = Math.max(1000, lifetime / 2, Math.min(lifetime - 5_000, lifetime * 0.8));
  return delay >= lifetime ? undefined : Math.min(delay, 2_147_483_647);
}
