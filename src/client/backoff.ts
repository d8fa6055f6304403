/**
 * The reconnect delay for an attempt: uniform in [0, min(max, min * 2^attempt)] ("full jitter"),
 * so that the clients of a failed replica spread out instead of returning together.
 */
export function backoff(attempt: number, min = 500, max = 20_000, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
