/**
 * The reconnect delay for an attempt: uniform in [0, min(max, min * 2^attempt)] ("full jitter"),
 * so that the clients of a failed replica spread out instead of returning together.
 */
export function backoff(attempt: number, min = 500, max = 20_000, random: () => number = Math.random): number {
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

export interface ReconnectTiming {
  /** Window of the first attempt after a loss (ms). */
  jitter: number;
  /** Base and cap of the backoff of the attempts after it (ms). */
  min: number;
  max: number;
}

/**
 * The delay before reconnect attempt `attempt` (0: the first after a connection was lost or an
 * attempt failed with none since). The first is uniform in [0, jitter): every client of a failed
 * replica loses its connection at the same instant, and this window alone decides how the
 * stampede is spread. The later ones follow backoff(): by then the attempts are spread already.
 */
export function reconnectDelay(attempt: number, t: ReconnectTiming, random: () => number = Math.random): number {
  return attempt === 0 ? Math.floor(random() * t.jitter) : backoff(attempt, t.min, t.max, random);
}
