import { createRequire } from "node:module";

type Yaml = typeof import("yaml");

let loaded: Yaml | undefined;

/**
 * The YAML library, loaded on first use: it is ~70 modules, and a gateway configured by JSON,
 * environment and flags never needs it. Start-up time is how long a restarted replica refuses its
 * reconnecting clients. Synchronous (the CommonJS build) because configuration loading is.
 */
export function yaml(): Yaml {
  loaded ??= createRequire(import.meta.url)("yaml") as Yaml;
  return loaded;
}
