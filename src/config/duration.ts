/**
 * Durations and sizes as people write them in config files, env vars and flags.
 * Both parsers are strict (whole, non-negative numbers with a known unit and nothing else) and
 * return `undefined` for anything they do not accept, so callers can report the offending key.
 */

export const DURATION_UNITS: ReadonlyMap<string, number> = new Map([
  ["ms", 1],
  ["s", 1000],
  ["m", 60_000],
  ["h", 3_600_000],
  ["d", 86_400_000],
]);

// Case-sensitive on purpose: "KB" is 1000 bytes and "KiB" 1024, and "Mb" (megabit) is not a size.
export const SIZE_UNITS: ReadonlyMap<string, number> = new Map([
  ["B", 1],
  ["KB", 1e3],
  ["MB", 1e6],
  ["GB", 1e9],
  ["KiB", 1024],
  ["MiB", 1024 ** 2],
  ["GiB", 1024 ** 3],
]);

/** "500ms", "30s", "5m", "1h", "2d", or a plain integer meaning seconds, to milliseconds. */
export function parseDuration(text: string): number | undefined {
  return scaled(text, DURATION_UNITS, "s");
}

/** "64KiB", "1MiB", "512KB", "1MB", "100B", or a plain integer meaning bytes, to bytes. */
export function parseSize(text: string): number | undefined {
  return scaled(text, SIZE_UNITS, "B");
}

function scaled(text: string, units: ReadonlyMap<string, number>, bareUnit: string): number | undefined {
  const match = /^(\d+)([A-Za-z]*)$/.exec(text);
  if (!match) return undefined;
  const factor = units.get(match[2] || bareUnit);
  if (factor === undefined) return undefined;
  const value = Number(match[1]) * factor;
  return Number.isSafeInteger(value) ? value : undefined;
}
