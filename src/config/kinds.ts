/**
 * The kinds of value a setting can take. Each parses raw input from any source (a string from
 * an env var or flag, or any YAML/JSON value from a file) and either returns the typed value or
 * throws a ConfigError that says what is allowed.
 */

import { isIP } from "node:net";
import { DURATION_UNITS, parseDuration, parseSize, SIZE_UNITS } from "./duration.js";
import { ConfigError, errorText, fail, problem, show, type At } from "./errors.js";
import { EVENT_TYPES, type EventType } from "../events/types.js";
import type { HistoryOptions, HookSpec, LogLevel, NamespaceOptions } from "./types.js";

/** A JSON Schema (draft 2020-12) fragment. */
export type Schema = { readonly [keyword: string]: unknown };

export interface Kind<T> {
  /** What is allowed, phrased to follow "is not allowed: ". */
  allowed: string;
  /**
   * What a config file may hold, for editors and for checking examples. It may be looser than
   * parse (a string of digits is not range-checked) but never stricter, so an editor does not
   * flag a file natsedge accepts.
   */
  schema: Schema;
  parse(value: unknown, at: At): T;
}

/** A JSON Schema pattern is an ECMAScript regex without flags: refuse to emit one that needs them. */
function schemaPattern(regex: RegExp): string {
  if (regex.flags !== "") throw new Error(`natsedge bug: schema pattern /${regex.source}/${regex.flags} has flags`);
  return regex.source;
}

/** Numbers as strings, which every number kind also accepts (env vars and flags are strings). */
const DIGITS = { type: "string", pattern: "^\\d+$" } as const;

/** A comma-separated string or a non-empty list of strings, each matching `item`. */
function listSchema(item: Schema): Schema {
  return { anyOf: [{ type: "string", minLength: 1 }, { type: "array", minItems: 1, items: { type: "string", ...item } }] };
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function isList(value: unknown): value is unknown[] {
  return Array.isArray(value);
}

export function parseJson(text: string, at: At, shown: unknown): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw problem(at, `${show(shown)} is not valid JSON: ${errorText(error)}`);
  }
}

/** A fraction from 0 to 1: a number in files, or a decimal string anywhere ("0.25", "1", ".5"). */
export const ratio: Kind<number> = {
  allowed: "a number from 0 to 1",
  schema: { anyOf: [{ type: "number", minimum: 0, maximum: 1 }, { type: "string", pattern: "^(0|1)?(\\.\\d+)?$" }] },
  parse(value, at) {
    const number = typeof value === "string" && /^\d*(\.\d+)?$/.test(value) && value !== "" ? Number(value) : value;
    return typeof number === "number" && number >= 0 && number <= 1 ? number : fail(at, value, this.allowed);
  },
};

/** A whole number: a number in files, or a string of digits anywhere ("1e3", "8.5", "" are not). */
function toInteger(value: unknown): number | undefined {
  const number = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  return typeof number === "number" && Number.isSafeInteger(number) && number >= 0 ? number : undefined;
}

export function integer(min: number, max: number, note = ""): Kind<number> {
  return {
    allowed: `an integer from ${min} to ${max}${note}`,
    schema: { anyOf: [{ type: "integer", minimum: min, maximum: max }, DIGITS] },
    parse(value, at) {
      const number = toInteger(value);
      return number !== undefined && number >= min && number <= max ? number : fail(at, value, this.allowed);
    },
  };
}

/** Numbers in files mean seconds (durations) or bytes (sizes), as plain integers in strings do. */
function scaled(parseText: (text: string) => number | undefined, scale: number, units: ReadonlyMap<string, number>) {
  return (allowed: string, min: number, max: number): Kind<number> => ({
    allowed,
    schema: {
      anyOf: [
        { type: "integer", minimum: Math.ceil(min / scale), maximum: Math.floor(max / scale) },
        { type: "string", pattern: `^\\d+(${[...units.keys()].join("|")})?$` },
      ],
    },
    parse(value, at) {
      const whole = toInteger(value);
      const result = typeof value === "string" ? parseText(value) : whole === undefined ? undefined : whole * scale;
      return result !== undefined && result >= min && result <= max ? result : fail(at, value, allowed);
    },
  });
}

export const duration = scaled(parseDuration, 1000, DURATION_UNITS);
export const size = scaled(parseSize, 1, SIZE_UNITS);

function characters(minLength: number, allowed = `a string of at least ${minLength} characters`): Kind<string> {
  return {
    allowed,
    schema: { type: "string", minLength },
    parse: (value, at) => (typeof value === "string" && value.length >= minLength ? value : fail(at, value, allowed)),
  };
}

/**
 * Secrets are compared or used as HMAC keys: a short one can be guessed offline from one signed
 * token, or online against the API. 32 characters of random base64 carry 192 bits.
 */
export const secretText = characters(32, "a string of at least 32 characters (e.g. the output of: openssl rand -base64 32)");

export function matching(regex: RegExp, allowed: string): Kind<string> {
  return {
    allowed,
    schema: { type: "string", pattern: schemaPattern(regex) },
    parse: (value, at) => (typeof value === "string" && regex.test(value) ? value : fail(at, value, allowed)),
  };
}

// Both cases spelled out rather than the i flag, which a JSON Schema pattern cannot carry.
const LABEL = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HOSTNAME = new RegExp(`^(?=.{1,253}$)${LABEL}(\\.${LABEL})*$`);
/** Loose on purpose: colons make it IPv6, and isIP decides the rest when natsedge loads the file. */
const IPV6_LIKE = /^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[^\s%]+)?$/;

export const host: Kind<string> = {
  allowed: "an IP address (IPv6 without brackets) or a host name",
  schema: {
    type: "string",
    anyOf: [{ pattern: schemaPattern(HOSTNAME) }, { pattern: schemaPattern(IPV6_LIKE) }],
  },
  parse(value, at) {
    const valid = typeof value === "string" && (isIP(value) !== 0 || HOSTNAME.test(value));
    return valid ? value : fail(at, value, this.allowed);
  },
};

export function oneOf<T extends string>(values: readonly T[]): Kind<T> {
  return {
    allowed: `one of ${values.join(", ")}`,
    schema: { enum: values },
    parse(value, at) {
      return values.find((candidate) => candidate === value) ?? fail(at, value, this.allowed);
    },
  };
}

export const logLevel = oneOf<LogLevel>(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** true or false: booleans in files, the strings "true" and "false" anywhere. */
export function boolean(allowed = "true or false"): Kind<boolean> {
  return {
    allowed,
    schema: { enum: [true, false, "true", "false"] },
    parse(value, at) {
      if (value === true || value === "true") return true;
      return value === false || value === "false" ? false : fail(at, value, allowed);
    },
  };
}

/** scheme://host[:port], lower case; host is a name that may start with "*.", an IPv4 or a [IPv6] address. */
const ORIGIN_HOST = `((\\*\\.)?${LABEL}(\\.${LABEL})*|\\[[0-9a-f:.]+\\])`;
const ORIGIN = new RegExp(`^[a-z][a-z0-9+.-]*://${ORIGIN_HOST}(:(?<port>\\d{1,5}))?$`);

export const origins: Kind<string[]> = {
  allowed:
    'a comma-separated list (in files also a list) of "*" or scheme://host[:port], where host may start with "*."',
  // Loose: entries are lower-cased before ORIGIN is applied, which a flagless pattern cannot do.
  schema: listSchema({ pattern: "^(\\*|[A-Za-z][A-Za-z0-9+.-]*://[^/\\s]+)$" }),
  parse(value, at) {
    const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
    if (!isList(entries) || entries.length === 0) return fail(at, value, this.allowed);
    return entries.map((entry) => {
      // Browsers send scheme and host in lower case: lower-casing here lets the gateway compare strings.
      const origin = typeof entry === "string" ? entry.toLowerCase() : "";
      const match = ORIGIN.exec(origin);
      const port = Number(match?.groups?.port ?? 1);
      const valid = origin === "*" || (match !== null && port >= 1 && port <= 65535);
      return valid ? origin : fail(at, entry, this.allowed);
    });
  },
};

export const PEM = /-----BEGIN PUBLIC KEY-----[\s\S]+-----END PUBLIC KEY-----/;

/** PEM text; literal "\n" sequences (how PEM usually survives an env var) become newlines. */
export const publicKey: Kind<string> = {
  allowed: "PEM text from -----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY-----",
  schema: { type: "string", pattern: schemaPattern(PEM) },
  parse(value, at) {
    const pem = typeof value === "string" ? value.replace(/\\n/g, "\n") : "";
    return PEM.test(pem) ? pem : fail(at, value, this.allowed);
  },
};

/** Hosts an http:// URL may name: traffic to them does not leave the machine. */
function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || (isIP(hostname) === 4 && hostname.startsWith("127."));
}

/** The value as a URL, or undefined when it is not one; a URL with credentials is refused. */
function urlWithoutCredentials(value: unknown, at: At): URL | undefined {
  let url: URL | undefined;
  try {
    url = typeof value === "string" ? new URL(value) : undefined;
  } catch {
    url = undefined;
  }
  if (url !== undefined && (url.username !== "" || url.password !== "")) {
    // Not echoed: the part before "@" is most likely a password.
    throw problem(at, "a URL with credentials (user:password@) is not allowed");
  }
  return url;
}

/**
 * The URL of keys the gateway trusts. Plain http is allowed only where nobody can change the
 * answer on the way (a sidecar, a test); anywhere else swapped keys would let anyone sign tokens.
 */
export const keysUrl: Kind<string> = {
  allowed: "an https:// URL, or an http:// URL to localhost, 127.0.0.0/8 or [::1]",
  schema: { type: "string", pattern: "^https?://" },
  parse(value, at) {
    const url = urlWithoutCredentials(value, at);
    const valid = url?.protocol === "https:" || (url?.protocol === "http:" && isLoopback(url.hostname));
    return valid && url !== undefined ? url.href : fail(at, value, this.allowed);
  },
};

/** A hook's target: NATS request/reply, or an http(s) URL without credentials in it. */
function hookTarget(value: unknown, at: At): string {
  const allowed = 'the string "nats" or an http:// or https:// URL';
  if (value === "nats") return value;
  const url = urlWithoutCredentials(value, at);
  return url?.protocol === "https:" || url?.protocol === "http:" ? url.href : fail(at, value, allowed);
}

const HOOK_OPTIONS = new Set(["target", "timeout", "failOpen"]);
const hookTimeout = duration("a duration from 10ms to 60s", 10, 60_000);

/**
 * A backend hook: its target alone (`nats` or a URL), or in files (in env vars as JSON) a mapping
 * of target, timeout and failOpen. `failOpen` only where the hook has an open answer.
 */
export function hook(failOpenAllowed: boolean): Kind<HookSpec> {
  const allowed = 'the string "nats", an http(s) URL, or a mapping of target, timeout and failOpen';
  return {
    allowed,
    schema: {
      anyOf: [
        { type: "string", minLength: 1 },
        {
          type: "object",
          properties: {
            target: { description: 'Where the hook is answered: "nats" or an http(s) URL', type: "string", minLength: 1 },
            timeout: { description: "How long to wait for the answer (default hooks.timeout)", ...hookTimeout.schema },
            failOpen: {
              description: "When the backend cannot answer, go on as if there were no hook instead of refusing with 503",
              type: "boolean",
            },
          },
          required: ["target"],
          additionalProperties: false,
        },
      ],
    },
    parse(value, at) {
      const raw = typeof value === "string" && value.trimStart().startsWith("{") ? parseJson(value, at, value) : value;
      if (typeof raw === "string") return { target: hookTarget(raw, at), failOpen: false };
      if (!isObject(raw)) return fail(at, value, allowed);
      for (const name of Object.keys(raw)) if (!HOOK_OPTIONS.has(name)) throw unknownKey(at, name, HOOK_OPTIONS);
      const spec: HookSpec = { target: hookTarget(raw.target, child(at, "target")), failOpen: false };
      if (raw.timeout != null) spec.timeout = hookTimeout.parse(raw.timeout, child(at, "timeout"));
      if (raw.failOpen != null) {
        if (typeof raw.failOpen !== "boolean") fail(child(at, "failOpen"), raw.failOpen, "true or false");
        if (raw.failOpen && !failOpenAllowed) fail(child(at, "failOpen"), true, "false: this hook has no open answer");
        spec.failOpen = raw.failOpen === true;
      }
      return spec;
    },
  };
}

/** Header or cookie names: HTTP tokens; header names are compared in lower case. */
export function nameList(what: "header" | "cookie"): Kind<string[]> {
  const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/;
  const allowed = `a comma-separated list (in files also a list) of at most 32 ${what} names`;
  return {
    allowed,
    schema: listSchema({ pattern: schemaPattern(token) }),
    parse(value, at) {
      const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
      if (!isList(entries) || entries.length === 0 || entries.length > 32) return fail(at, value, allowed);
      return entries.map((entry) => {
        if (typeof entry !== "string" || !token.test(entry)) return fail(at, entry, allowed);
        return what === "header" ? entry.toLowerCase() : entry;
      });
    },
  };
}

/** A receiver of signed events: http or https, no credentials in the URL (the signature is the proof). */
export const webhookUrl: Kind<string> = {
  allowed: "an http:// or https:// URL without user:password@",
  schema: { type: "string", pattern: "^https?://" },
  parse(value, at) {
    const url = urlWithoutCredentials(value, at);
    const valid = url?.protocol === "https:" || url?.protocol === "http:";
    return valid && url !== undefined ? url.href : fail(at, value, this.allowed);
  },
};

/** Lifecycle event types, or "all". */
export const eventTypes: Kind<EventType[]> = {
  allowed: `a comma-separated list (in files also a list) of "all" or event types: ${EVENT_TYPES.join(", ")}`,
  schema: listSchema({ enum: ["all", ...EVENT_TYPES] }),
  parse(value, at) {
    const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
    if (!isList(entries) || entries.length === 0) return fail(at, value, this.allowed);
    if (entries.length === 1 && entries[0] === "all") return [...EVENT_TYPES];
    const types = entries.map((entry) => EVENT_TYPES.find((t) => t === entry) ?? fail(at, entry, this.allowed));
    return [...new Set(types)];
  },
};

export const nonEmpty = characters(1, "a non-empty string");

/** nats://host:port, tls://host:port or host:port; host is a name, an IPv4 or a [IPv6] address. */
const NATS_SERVER = /^(?:(?<scheme>nats|tls):\/\/)?(?<host>\[[^\]]*\]|[^:/[\]]+):(?<port>\d{1,5})$/;

function natsHost(host: string): boolean {
  if (host.startsWith("[")) return isIP(host.slice(1, -1)) === 6;
  // "10.0.0.256" and "1.2.3" would pass as host names; all-numeric hosts must be IPv4 addresses.
  if (/^[\d.]+$/.test(host)) return isIP(host) === 4;
  return HOSTNAME.test(host);
}

/** Entries are normalised to scheme://host:port, host:port becoming nats://host:port. */
export const natsServers: Kind<string[]> = {
  allowed:
    "a comma-separated list (in files also a list) of nats://host:port, tls://host:port or host:port, " +
    "where host is a host name, an IPv4 address or a [IPv6] address and port is 1 to 65535",
  // No "@" anywhere: credentials in a URL are refused (and so a comma-separated string with one too).
  schema: listSchema({ pattern: "^[^@]+$" }),
  parse(value, at) {
    const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
    if (!isList(entries) || entries.length === 0) return fail(at, value, this.allowed);
    return entries.map((entry) => {
      if (typeof entry === "string" && entry.includes("@")) {
        // Not echoed: the part before "@" is most likely a password.
        throw problem(
          at,
          "an entry with credentials (user:password@) is not allowed; set nats.user and nats.password, " +
            "nats.token or nats.credsFile instead",
        );
      }
      const match = typeof entry === "string" ? NATS_SERVER.exec(entry) : null;
      const { scheme = "nats", host = "", port = "0" } = match?.groups ?? {};
      const portNumber = Number(port);
      const valid = match !== null && natsHost(host) && portNumber >= 1 && portNumber <= 65535;
      return valid ? `${scheme}://${host}:${portNumber}` : fail(at, entry, this.allowed);
    });
  },
};

/** An IP address or a CIDR block (`10.0.0.0/8`, `fd00::/8`); IPv6 without brackets. */
function addressOrBlock(entry: unknown): string | undefined {
  if (typeof entry !== "string") return undefined;
  const [address = "", bits, extra] = entry.split("/");
  const family = isIP(address);
  if (family === 0 || extra !== undefined) return undefined;
  if (bits === undefined) return address.toLowerCase();
  const max = family === 4 ? 32 : 128;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= max ? `${address.toLowerCase()}/${Number(bits)}` : undefined;
}

export const addressList: Kind<string[]> = {
  allowed: "a comma-separated list (in files also a list) of IP addresses or CIDR blocks, e.g. 10.0.0.0/8,::1",
  schema: listSchema({ pattern: "^[0-9A-Fa-f:.]+(/\\d{1,3})?$" }),
  parse(value, at) {
    const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
    if (!isList(entries) || entries.length === 0) return fail(at, value, this.allowed);
    return entries.map((entry) => addressOrBlock(entry) ?? fail(at, entry, this.allowed));
  },
};

/** Subject tokens: no wildcards (`*`, `>`), no whitespace, no empty tokens. */
export const natsPrefix = matching(
  /^(?=.{1,64}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
  "a string of 1 to 64 characters: tokens of A-Z, a-z, 0-9, _ and - separated by single dots",
);

export const filePath = characters(
  1,
  "a file path, resolved against the config file's directory when set in that file, else the working directory",
);

const NAMESPACE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
/** The on/off namespace options, with their hover text in editors (docs/configuration.md says more). */
const FLAG_ABOUT = {
  presence: "Track who is subscribed",
  joinLeave: "Push join and leave events to subscribers; needs presence: true",
  clientPublish: "Let clients publish (otherwise only the server API can)",
  anonymous: "Let clients without a token subscribe",
  personal: "ns.<user> channels can only be used by the user named by their last token",
} as const;
const FLAGS = Object.keys(FLAG_ABOUT).filter((name): name is keyof typeof FLAG_ABOUT => name in FLAG_ABOUT);
const NAMESPACE_OPTIONS = new Set<string>(["history", ...FLAGS, "subscribeHook", "publishHook"]);
const subscribeHook = hook(true);
const publishHook = hook(true);
const historySize = integer(1, 100_000);
const historyTtl = duration("a duration greater than 0, e.g. 30s or 5m", 1, Number.MAX_SAFE_INTEGER);

function child(at: At, name: string): At {
  return { ...at, key: `${at.key}.${name}` };
}

function unknownKey(at: At, name: string, allowed: Iterable<string>): ConfigError {
  return problem(child(at, name), `unknown key; allowed here: ${[...allowed].join(", ")}`);
}

function history(value: unknown, at: At): HistoryOptions {
  if (!isObject(value)) return fail(at, value, "a mapping with size and ttl");
  for (const name of Object.keys(value)) {
    if (name !== "size" && name !== "ttl") throw unknownKey(at, name, ["size", "ttl"]);
  }
  const read = <T>(name: string, kind: Kind<T>): T => {
    const here = child(at, name);
    if (value[name] == null) throw problem(here, `missing; history needs both size and ttl (${name}: ${kind.allowed})`);
    return kind.parse(value[name], here);
  };
  return { size: read("size", historySize), ttl: read("ttl", historyTtl) };
}

function namespace(value: unknown, at: At): NamespaceOptions {
  // `chat:` with nothing after it is a YAML null: a namespace with every option at its default.
  const options = value === null ? {} : value;
  if (!isObject(options)) return fail(at, value, "a mapping of namespace options");
  for (const name of Object.keys(options)) {
    if (!NAMESPACE_OPTIONS.has(name)) throw unknownKey(at, name, NAMESPACE_OPTIONS);
  }
  const flag = (name: (typeof FLAGS)[number]): boolean => {
    const option = options[name] ?? false;
    return typeof option === "boolean" ? option : fail(child(at, name), option, "true or false");
  };
  const result: NamespaceOptions = {
    presence: flag("presence"),
    joinLeave: flag("joinLeave"),
    clientPublish: flag("clientPublish"),
    anonymous: flag("anonymous"),
    personal: flag("personal"),
  };
  if (result.joinLeave && !result.presence) {
    fail(child(at, "joinLeave"), true, "joinLeave needs presence: true in the same namespace");
  }
  if (options.history != null) result.history = history(options.history, child(at, "history"));
  if (options.subscribeHook != null) result.subscribeHook = subscribeHook.parse(options.subscribeHook, child(at, "subscribeHook"));
  if (options.publishHook != null) result.publishHook = publishHook.parse(options.publishHook, child(at, "publishHook"));
  return result;
}

/**
 * Null-prototype, so a client asking for a namespace called "constructor" or "__proto__"
 * finds nothing rather than something inherited from Object.prototype.
 */
export function namespaceMap(): Record<string, NamespaceOptions> {
  return Object.create(null) as Record<string, NamespaceOptions>;
}

const NULL = { type: "null" } as const;

const historySchema: Schema = {
  description: "Keep recent publications; size and ttl are both required",
  anyOf: [
    NULL,
    {
      type: "object",
      properties: {
        size: { description: "Publications kept per channel", ...historySize.schema },
        ttl: { description: "How long a publication is kept", ...historyTtl.schema },
      },
      required: ["size", "ttl"],
      additionalProperties: false,
    },
  ],
};

const namespaceSchema: Schema = {
  anyOf: [
    NULL,
    {
      type: "object",
      properties: {
        history: historySchema,
        subscribeHook: { description: "Backend hook asked before a client subscribes (docs/backend.md)", ...subscribeHook.schema },
        publishHook: { description: "Backend hook asked before a client publication is accepted (docs/backend.md)", ...publishHook.schema },
        ...Object.fromEntries(FLAGS.map((name) => [name, { description: FLAG_ABOUT[name], type: ["boolean", "null"] }])),
      },
      additionalProperties: false,
      if: { properties: { joinLeave: { const: true } }, required: ["joinLeave"] },
      then: { properties: { presence: { const: true } }, required: ["presence"] },
    },
  ],
};

export const namespaces: Kind<Record<string, NamespaceOptions>> = {
  allowed: "a mapping (in NATSEDGE_NAMESPACES a JSON object) of namespace name to options; see docs/configuration.md",
  schema: {
    anyOf: [
      { type: "object", propertyNames: { pattern: schemaPattern(NAMESPACE_NAME) }, additionalProperties: namespaceSchema },
      // The env var's form, which a file may use too.
      { type: "string", contentMediaType: "application/json" },
    ],
  },
  parse(value, at) {
    const map = typeof value === "string" ? parseJson(value, at, value) : value;
    if (!isObject(map)) return fail(at, value, "a mapping of namespace name to options");
    const result = namespaceMap();
    for (const [name, options] of Object.entries(map)) {
      if (!NAMESPACE_NAME.test(name)) fail(at, name, "names of 1 to 64 characters from A-Z, a-z, 0-9, _ and -");
      result[name] = namespace(options, child(at, name));
    }
    return result;
  },
};
