/**
 * Reads the three sources of raw settings: a config file (YAML or JSON), NATSEDGE_* env vars and
 * flags. Each raw value keeps its origin, for error messages and for resolving relative paths;
 * validation happens later, when the value is read as its setting's kind.
 */

import { readFileSync } from "node:fs";
import { dirname, extname, resolve } from "node:path";
import { ConfigError, errorText, fail, problem, show, type At, type Origin } from "./errors.js";
import { filePath, isObject, parseJson } from "./kinds.js";
import { MAX_CONFIG_DEPTH, nestingBound } from "./nesting.js";
import { SCHEMA_KEY } from "./schema.js";
import { envNames, flagNames, KEYS, type Key } from "./settings.js";
import { yaml } from "./yaml.js";

export interface Raw {
  value: unknown;
  origin: Origin;
}

const BY_ENV = new Map(KEYS.flatMap((key) => envNames(key).map((name) => [name, key] as const)));
const BY_FLAG = new Map(KEYS.flatMap((key) => flagNames(key).map((name) => [name, key] as const)));

interface Layer {
  /** The config file named by this source, if any. */
  config?: Raw;
  values: Map<Key, Raw>;
}

function readFlags(argv: readonly string[]): Layer {
  const layer: Layer = { values: new Map() };
  const rest = [...argv];
  for (let arg = rest.shift(); arg !== undefined; arg = rest.shift()) {
    if (!arg.startsWith("--")) {
      throw new ConfigError(`${arg}: unexpected argument; settings are --name value or --name=value (see --help)`);
    }
    const equals = arg.indexOf("=");
    const flag = equals === -1 ? arg : arg.slice(0, equals);
    const key = BY_FLAG.get(flag);
    if (key === undefined && flag !== "--config") throw new ConfigError(`${flag}: unknown flag (see --help)`);
    let value = arg.slice(equals + 1);
    if (equals === -1) {
      // A following "--name" is the next flag rather than this one's value (`--host --port 1` is a
      // slip), but "-----BEGIN PUBLIC KEY-----" is a value.
      const next = rest.shift();
      if (next === undefined || /^--[a-z]/i.test(next)) {
        throw new ConfigError(`${flag}: needs a value, as ${flag} <value> or ${flag}=<value>`);
      }
      value = next;
    }
    const raw: Raw = { value, origin: { label: flag } };
    if (key === undefined) layer.config = raw;
    else layer.values.set(key, raw);
  }
  return layer;
}

function readEnv(env: Record<string, string | undefined>): Layer {
  const layer: Layer = { values: new Map() };
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("NATSEDGE_") || value === undefined) continue;
    const raw: Raw = { value, origin: { label: name } };
    const key = BY_ENV.get(name);
    const other = key === undefined ? undefined : layer.values.get(key);
    if (key !== undefined && other !== undefined) {
      // Two names of one setting: variables have no order, so neither can win.
      const both = `${other.origin.label} and ${name}`;
      throw new ConfigError(`${key} (from ${both}): set only one of these variables; they name the same setting`);
    }
    if (key !== undefined) layer.values.set(key, raw);
    else if (name === "NATSEDGE_CONFIG") layer.config = raw;
    else throw new ConfigError(`${name}: unknown environment variable; no natsedge setting has that name (see --help)`);
  }
  return layer;
}

/**
 * Config-file layout: a dotted key is nested in mappings, `auth.hmacSecret` being `hmacSecret`
 * inside `auth:`. A key that is also a group (`nats.tls`) may be given as a mapping of the keys
 * inside it, which also sets the key itself to true.
 */
const BY_PATH = new Map<string, Key>(KEYS.map((key) => [key, key]));
const GROUPS = new Set(
  KEYS.flatMap((key) => {
    const parts = key.split(".");
    return parts.slice(1).map((_, i) => parts.slice(0, i + 1).join("."));
  }),
);

/** The names allowed inside the group `group` ("" for the top level), in table order. */
function fileNamesIn(group: string): string[] {
  const prefix = group ? `${group}.` : "";
  const inside = KEYS.filter((key) => key.startsWith(prefix)).map((key) => key.slice(prefix.length).split(".")[0]);
  return [...new Set(inside)].filter((name) => name !== undefined);
}

export function readText(path: string, at: At): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw problem(at, `${show(path)} cannot be read: ${errorText(error)}`);
  }
}

function parseFileText(text: string, file: string, at: At): unknown {
  const extension = extname(file).toLowerCase();
  const isYaml = extension === ".yaml" || extension === ".yml";
  if (nestingBound(text) > MAX_CONFIG_DEPTH) throw problem(at, `${show(file)} nests deeper than ${MAX_CONFIG_DEPTH} levels`);
  if (extension === ".json") return parseJson(text, at, file);
  if (!isYaml) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Not JSON: fall through to YAML, and report a YAML error if that fails too.
    }
  }
  try {
    return yaml().parse(text) as unknown;
  } catch (error) {
    throw problem(at, `${show(file)} is not valid ${isYaml ? "YAML" : "JSON or YAML"}: ${errorText(error)}`);
  }
}

function readConfigFile(config: Raw): Map<Key, Raw> {
  const at: At = { key: "config", origin: config.origin };
  const file = filePath.parse(config.value, at);
  const data = parseFileText(readText(file, at), file, at);
  const origin: Origin = { label: file, dir: dirname(resolve(file)) };
  const values = new Map<Key, Raw>();
  // In a file, an empty value (YAML null) means "not set"; an empty file sets nothing.
  const read = (group: string, mapping: Record<string, unknown>): void => {
    for (const [name, value] of Object.entries(mapping)) {
      if (group === "" && name === SCHEMA_KEY) continue;
      const path = group ? `${group}.${name}` : name;
      // "auth.hmacSecret: x" at the top level is not the hmacSecret inside auth.
      const nested = !name.includes(".");
      const key = nested ? BY_PATH.get(path) : undefined;
      const isGroup = nested && GROUPS.has(path);
      if (key === undefined && !isGroup) {
        throw problem({ key: path, origin }, `unknown key; allowed here: ${fileNamesIn(group).join(", ")}`);
      }
      if (value === null) continue;
      if (isGroup && isObject(value)) {
        if (key !== undefined) values.set(key, { value: true, origin });
        read(path, value);
      } else if (key !== undefined) {
        values.set(key, { value, origin });
      } else {
        fail({ key: path, origin }, value, `a mapping of ${fileNamesIn(path).join(", ")}`);
      }
    }
  };
  if (data === null) return values;
  if (!isObject(data)) return fail(at, file, "a file whose top level is a mapping of settings");
  read("", data);
  return values;
}

/** The raw value of every setting given, from the file, env vars and flags (later ones win). */
export function readSources(
  argv: readonly string[],
  env: Record<string, string | undefined>,
): { configFile: Raw | undefined; raw: Map<Key, Raw> } {
  const flags = readFlags(argv);
  const fromEnv = readEnv(env);
  const configFile = flags.config ?? fromEnv.config;
  const fromFile = configFile ? readConfigFile(configFile) : new Map<Key, Raw>();
  return { configFile, raw: new Map([...fromFile, ...fromEnv.values, ...flags.values]) };
}
