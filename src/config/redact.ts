/**
 * The effective configuration as check-config prints it: what start-up would run with, with the
 * value of every secret setting (SECRET_KEYS, marked in the settings table) replaced.
 */

import { isObject } from "./kinds.js";
import { SECRET_KEYS } from "./settings.js";
import type { Config } from "./types.js";
import { yaml } from "./yaml.js";

export const REDACTED = "[redacted]";

export const FORMATS = ["json", "yaml"] as const;
export type Format = (typeof FORMATS)[number];

/**
 * A copy of `config` without secret values. Config keeps each secret at its setting's key path
 * (auth.hmacSecret is config.auth.hmacSecret), which test/check-config.test.ts holds it to.
 */
export function redacted(config: Config): Config {
  const copy = structuredClone(config);
  for (const key of SECRET_KEYS) {
    const path = key.split(".");
    const name = path.pop() ?? key;
    const holder = path.reduce<unknown>((at, part) => (isObject(at) ? at[part] : undefined), copy);
    if (isObject(holder) && holder[name] !== undefined) holder[name] = REDACTED;
  }
  return copy;
}

export function formatConfig(config: Config, format: Format): string {
  const shown = redacted(config);
  return format === "json" ? `${JSON.stringify(shown, null, 2)}\n` : yaml().stringify(shown);
}
