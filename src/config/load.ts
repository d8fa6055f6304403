/**
 * Builds the validated Config from defaults, a config file, NATSEDGE_* env vars and flags
 * (later sources win). Every setting is described once, in SETTINGS; the file keys, env var
 * names, flag names, defaults, validation and --help text all derive from that table.
 */

import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, extname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { defaultMaxConnections } from "../limits/open-files.js";
import { parseDuration, parseSize } from "./duration.js";
import { formatHelp } from "./help.js";
import type {
  AuthConfig,
  Config,
  HistoryOptions,
  LogLevel,
  NamespaceOptions,
  NatsConfig,
  NatsTls,
  ServerTls,
} from "./types.js";

/** Bad configuration. The message is one line naming the key, the value and what is allowed. */
export class ConfigError extends Error {
  override name = "ConfigError";

  constructor(message: string) {
    // A key, flag, variable or file name may itself hold a line break: escaped, it stays one line.
    super(message.replace(/[\p{Cc}\u2028\u2029]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
  }
}

/** Where a raw value came from, for error messages and for resolving relative paths. */
interface Origin {
  label: string;
  /** Set for values from a config file: relative paths in it resolve against this directory. */
  dir?: string;
}

interface Raw {
  value: unknown;
  origin: Origin;
}

/** The key being validated, for error messages. */
interface At {
  key: string;
  origin: Origin;
  /** Secrets are reported by length only, so they do not end up in logs. */
  secret?: boolean;
}

interface Kind<T> {
  /** What is allowed, phrased to follow "is not allowed: ". */
  allowed: string;
  parse(value: unknown, at: At): T;
}

function where(at: At): string {
  return `${at.key} (from ${at.origin.label})`;
}

function show(value: unknown, secret = false): string {
  if (secret && typeof value === "string") return `a value of ${value.length} character${value.length === 1 ? "" : "s"}`;
  if (secret) return `${typeof value === "object" ? "an" : "a"} ${typeof value}`;
  // JSON keeps the message on one line even for multi-line values such as PEM text.
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    // A YAML alias that contains itself (`&a [*a]`) or nesting deep enough to overflow the stack.
    text = Array.isArray(value) ? "a list that cannot be shown" : "a mapping that cannot be shown";
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function fail(at: At, value: unknown, allowed: string): never {
  throw new ConfigError(`${where(at)}: ${show(value, at.secret)} is not allowed: ${allowed}`);
}

function problem(at: At, text: string): ConfigError {
  return new ConfigError(`${where(at)}: ${text}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isList(value: unknown): value is unknown[] {
  return Array.isArray(value);
}

/** The first line of an error's message, so that a message built from it stays on one line. */
export function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? text;
}

function readText(path: string, at: At): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw problem(at, `${show(path)} cannot be read: ${errorText(error)}`);
  }
}

function parseJson(text: string, at: At, shown: unknown): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw problem(at, `${show(shown)} is not valid JSON: ${errorText(error)}`);
  }
}

/* ---------------------------------------------------------------- kinds of value */

/** A whole number: a number in files, or a string of digits anywhere ("1e3", "8.5", "" are not). */
function toInteger(value: unknown): number | undefined {
  const number = typeof value === "string" && /^\d+$/.test(value) ? Number(value) : value;
  return typeof number === "number" && Number.isSafeInteger(number) && number >= 0 ? number : undefined;
}

function integer(min: number, max: number, note = ""): Kind<number> {
  return {
    allowed: `an integer from ${min} to ${max}${note}`,
    parse(value, at) {
      const number = toInteger(value);
      return number !== undefined && number >= min && number <= max ? number : fail(at, value, this.allowed);
    },
  };
}

/** Numbers in files mean seconds (durations) or bytes (sizes), as plain integers in strings do. */
function scaled(parseText: (text: string) => number | undefined, scale: number) {
  return (allowed: string, min: number, max: number): Kind<number> => ({
    allowed,
    parse(value, at) {
      const whole = toInteger(value);
      const result = typeof value === "string" ? parseText(value) : whole === undefined ? undefined : whole * scale;
      return result !== undefined && result >= min && result <= max ? result : fail(at, value, allowed);
    },
  });
}

const duration = scaled(parseDuration, 1000);
const size = scaled(parseSize, 1);

function characters(minLength: number, allowed = `a string of at least ${minLength} characters`): Kind<string> {
  return {
    allowed,
    parse: (value, at) => (typeof value === "string" && value.length >= minLength ? value : fail(at, value, allowed)),
  };
}

/**
 * Secrets are compared or used as HMAC keys: a short one can be guessed offline from one signed
 * token, or online against the API. 32 characters of random base64 carry 192 bits.
 */
const secretText = characters(32, "a string of at least 32 characters (e.g. the output of: openssl rand -base64 32)");

function matching(pattern: RegExp, allowed: string): Kind<string> {
  return {
    allowed,
    parse: (value, at) => (typeof value === "string" && pattern.test(value) ? value : fail(at, value, allowed)),
  };
}

const LABEL = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
const HOSTNAME = new RegExp(`^(?=.{1,253}$)${LABEL}(\\.${LABEL})*$`, "i");

const host: Kind<string> = {
  allowed: "an IP address (IPv6 without brackets) or a host name",
  parse(value, at) {
    const valid = typeof value === "string" && (isIP(value) !== 0 || HOSTNAME.test(value));
    return valid ? value : fail(at, value, this.allowed);
  },
};

function oneOf<T extends string>(values: readonly T[]): Kind<T> {
  return {
    allowed: `one of ${values.join(", ")}`,
    parse(value, at) {
      return values.find((candidate) => candidate === value) ?? fail(at, value, this.allowed);
    },
  };
}

const logLevel = oneOf<LogLevel>(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** true or false: booleans in files, the strings "true" and "false" anywhere. */
function boolean(allowed = "true or false"): Kind<boolean> {
  return {
    allowed,
    parse(value, at) {
      if (value === true || value === "true") return true;
      return value === false || value === "false" ? false : fail(at, value, allowed);
    },
  };
}

/** scheme://host[:port], lower case; host is a name that may start with "*.", an IPv4 or a [IPv6] address. */
const ORIGIN_HOST = `((\\*\\.)?${LABEL}(\\.${LABEL})*|\\[[0-9a-f:.]+\\])`;
const ORIGIN = new RegExp(`^[a-z][a-z0-9+.-]*://${ORIGIN_HOST}(:(?<port>\\d{1,5}))?$`);

const origins: Kind<string[]> = {
  allowed:
    'a comma-separated list (in files also a list) of "*" or scheme://host[:port], where host may start with "*."',
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

const PEM = /-----BEGIN PUBLIC KEY-----[\s\S]+-----END PUBLIC KEY-----/;

/** PEM text; literal "\n" sequences (how PEM usually survives an env var) become newlines. */
const publicKey: Kind<string> = {
  allowed: "PEM text from -----BEGIN PUBLIC KEY----- to -----END PUBLIC KEY-----",
  parse(value, at) {
    const pem = typeof value === "string" ? value.replace(/\\n/g, "\n") : "";
    return PEM.test(pem) ? pem : fail(at, value, this.allowed);
  },
};

const nonEmpty = characters(1, "a non-empty string");

/** nats://host:port, tls://host:port or host:port; host is a name, an IPv4 or a [IPv6] address. */
const NATS_SERVER = /^(?:(?<scheme>nats|tls):\/\/)?(?<host>\[[^\]]*\]|[^:/[\]]+):(?<port>\d{1,5})$/;

function natsHost(host: string): boolean {
  if (host.startsWith("[")) return isIP(host.slice(1, -1)) === 6;
  // "10.0.0.256" and "1.2.3" would pass as host names; all-numeric hosts must be IPv4 addresses.
  if (/^[\d.]+$/.test(host)) return isIP(host) === 4;
  return HOSTNAME.test(host);
}

/** Entries are normalised to scheme://host:port, host:port becoming nats://host:port. */
const natsServers: Kind<string[]> = {
  allowed:
    "a comma-separated list (in files also a list) of nats://host:port, tls://host:port or host:port, " +
    "where host is a host name, an IPv4 address or a [IPv6] address and port is 1 to 65535",
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

const addressList: Kind<string[]> = {
  allowed: "a comma-separated list (in files also a list) of IP addresses or CIDR blocks, e.g. 10.0.0.0/8,::1",
  parse(value, at) {
    const entries = typeof value === "string" ? value.split(",").map((entry) => entry.trim()) : value;
    if (!isList(entries) || entries.length === 0) return fail(at, value, this.allowed);
    return entries.map((entry) => addressOrBlock(entry) ?? fail(at, entry, this.allowed));
  },
};

/** Subject tokens: no wildcards (`*`, `>`), no whitespace, no empty tokens. */
const natsPrefix = matching(
  /^(?=.{1,64}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/,
  "a string of 1 to 64 characters: tokens of A-Z, a-z, 0-9, _ and - separated by single dots",
);

const filePath = characters(
  1,
  "a file path, resolved against the config file's directory when set in that file, else the working directory",
);

const NAMESPACE_NAME = /^[A-Za-z0-9_-]{1,64}$/;
const FLAGS = ["presence", "joinLeave", "clientPublish", "anonymous", "personal"] as const;
const NAMESPACE_OPTIONS = new Set<string>(["history", ...FLAGS]);
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
  return result;
}

/**
 * Null-prototype, so a client asking for a namespace called "constructor" or "__proto__"
 * finds nothing rather than something inherited from Object.prototype.
 */
function namespaceMap(): Record<string, NamespaceOptions> {
  return Object.create(null) as Record<string, NamespaceOptions>;
}

const namespaces: Kind<Record<string, NamespaceOptions>> = {
  allowed: "a mapping (in NATSEDGE_NAMESPACES a JSON object) of namespace name to options; see docs/configuration.md",
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

/* ---------------------------------------------------------------- the settings */

/** Parsed value of each setting; the file key is the property name. */
interface Values {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  "tls.certFile": string;
  "tls.keyFile": string;
  adminTls: boolean;
  apiKey: string;
  sessionSecret: string;
  allowedOrigins: string[];
  logLevel: LogLevel;
  "auth.hmacSecret": string;
  "auth.publicKey": string;
  "auth.publicKeyFile": string;
  "auth.jwksFile": string;
  "auth.audience": string;
  "auth.issuer": string;
  "auth.cookie": string;
  "auth.requireExp": boolean;
  namespaces: Record<string, NamespaceOptions>;
  maxFrameSize: number;
  pingInterval: number;
  maxSubscriptions: number;
  backpressureLimit: number;
  commandRate: number;
  idempotencyWindow: number;
  drainPeriod: number;
  presenceGrace: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  connectRate: number;
  maxConnectionsPerUser: number;
  trustedProxies: string[];
  maxHeldPolls: number;
  maxPresenceMembers: number;
  bodyTimeout: number;
  demo: boolean;
  workers: number;
  "nats.servers": string[];
  "nats.prefix": string;
  "nats.user": string;
  "nats.password": string;
  "nats.token": string;
  "nats.credsFile": string;
  "nats.tls": boolean;
  "nats.tls.caFile": string;
  "nats.tls.certFile": string;
  "nats.tls.keyFile": string;
  "nats.streamReplicas": number;
  "nats.storage": "file" | "memory";
}

type Key = keyof Values;

interface Setting<T> {
  kind: Kind<T>;
  about: string;
  /** Raw default, parsed like any other input; shown as-is in --help. */
  default?: string;
  /** --help text for settings without a raw default. */
  defaultText?: string;
  /** Settings that cannot be given as a flag. */
  noFlag?: true;
  secret?: true;
  /** A shorter name for the env var and flag (not the file key), listed first in --help. */
  alias?: string;
}

const KIB = 1024;
const MIB = 1024 * KIB;
const SECOND = 1000;
const MINUTE = 60 * SECOND;

const PORT_NOTE = " (0 = pick a free port)";
const KEY_SOURCE_TEXT = "set one of auth.hmacSecret, auth.publicKey, auth.publicKeyFile or auth.jwksFile";
const NATS_FILE_NOTE = "; checked to be readable at startup";
const RELOAD_NOTE = "; checked at startup, reloaded on SIGHUP and when the file changes";

const SETTINGS: { readonly [K in Key]: Setting<Values[K]> } = {
  host: { kind: host, about: "Address the client listener (WebSocket and HTTP) binds to", default: "0.0.0.0" },
  port: { kind: integer(0, 65535, PORT_NOTE), about: "Port of the client listener", default: "8000" },
  adminHost: {
    kind: host,
    about: "Address the admin listener (metrics and health probes) binds to",
    defaultText: "the value of host",
  },
  adminPort: { kind: integer(0, 65535, PORT_NOTE), about: "Port of the admin listener", default: "9100" },
  "tls.certFile": {
    kind: filePath,
    about: `Certificate chain (PEM, leaf first) the client listener serves TLS with; needs tls.keyFile${RELOAD_NOTE}`,
  },
  "tls.keyFile": {
    kind: filePath,
    about: `Private key (PEM, not encrypted) of tls.certFile${RELOAD_NOTE}`,
  },
  adminTls: {
    kind: boolean(),
    about: "Serve the admin listener over TLS too, with the tls.certFile certificate",
    default: "false",
  },
  apiKey: {
    kind: secretText,
    about: "Key for the server HTTP API (/api/*, header Authorization: apikey <key>); unset, that API answers 401",
    secret: true,
  },
  sessionSecret: {
    kind: secretText,
    about:
      "Secret signing long-poll/SSE sessions; every replica needs the same one. Unset: random per process (fine for one process only)",
    secret: true,
  },
  allowedOrigins: {
    kind: origins,
    about: "Browser origins allowed to connect",
    defaultText: "unset (same-origin only; any origin in the embedded default)",
  },
  logLevel: { kind: logLevel, about: "Log level", default: "info" },
  "auth.hmacSecret": {
    kind: secretText,
    about: "Shared secret client JWTs are signed with (HS256)",
    secret: true,
  },
  "auth.publicKey": {
    kind: publicKey,
    about: "Public key (RSA, P-256 or Ed25519) client JWTs are verified with; \\n escapes become newlines",
  },
  "auth.publicKeyFile": {
    kind: filePath,
    about: "File holding the PEM public key client JWTs are verified with, read at startup",
  },
  "auth.jwksFile": {
    kind: filePath,
    about: 'JWKS file (a JSON object with a non-empty "keys" array) whose keys verify client JWTs, read at startup',
  },
  "auth.audience": { kind: nonEmpty, about: "Required JWT aud claim", defaultText: "unset (not checked)" },
  "auth.issuer": { kind: nonEmpty, about: "Required JWT iss claim", defaultText: "unset (not checked)" },
  "auth.requireExp": {
    kind: boolean(),
    about: "Refuse client JWTs without an exp claim (a token that never expires cannot be revoked by time)",
    default: "true",
  },
  "auth.cookie": {
    kind: matching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, "a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
    about: "Cookie that may carry the client JWT",
  },
  namespaces: {
    kind: namespaces,
    about: "Channel namespaces",
    defaultText: "none (the embedded default has one: public)",
    noFlag: true,
  },
  maxFrameSize: {
    kind: size("a size from 1KiB to 16MiB", KIB, 16 * MIB),
    about: "Largest inbound WebSocket message or HTTP body",
    default: "64KiB",
  },
  pingInterval: {
    kind: duration("a duration from 2s to 10m", 2 * SECOND, 10 * MINUTE),
    about: "Keepalive ping interval (a peer silent for twice as long is closed)",
    default: "25s",
  },
  maxSubscriptions: { kind: integer(1, 100_000), about: "Subscriptions one connection may hold", default: "128" },
  backpressureLimit: {
    kind: size("a size from 16KiB to 1GiB", 16 * KIB, 1024 * MIB),
    about: "Outbound bytes buffered for one client before it is disconnected with 4008",
    default: "1MiB",
  },
  commandRate: {
    kind: integer(0, 1_000_000, " (0 = no limit)"),
    about: "Commands per second one connection may send (bursts up to twice that)",
    default: "100",
  },
  idempotencyWindow: {
    kind: duration("a duration from 1s to 1h", SECOND, 60 * MINUTE),
    about: "Window in which a repeated publish idempotencyKey is delivered once",
    default: "5m",
  },
  drainPeriod: {
    kind: duration("a duration from 0 to 10m", 0, 10 * MINUTE),
    about: "Period over which clients are disconnected on shutdown",
    default: "5s",
  },
  presenceGrace: {
    kind: duration("a duration from 0 to 60s", 0, 60 * SECOND),
    about: "How long a departed client stays in presence, so that a quick reconnect causes no leave and join",
    default: "5s",
  },
  maxConnections: {
    kind: integer(0, 10_000_000, " (0 = no limit)"),
    about: "WebSocket and SSE connections one process holds; more are refused with 503 and Retry-After",
    defaultText: "90% of the process's open-files limit",
  },
  maxConnectionsPerIp: {
    kind: integer(0, 10_000_000, " (0 = no limit)"),
    about: "WebSocket and SSE connections from one client address per process (429 beyond; see trustedProxies)",
    default: "1000",
  },
  connectRate: {
    kind: integer(0, 1_000_000, " (0 = no limit)"),
    about: "New WebSocket, SSE and long-poll sessions per second from one client address per process (bursts of twice that; 429 beyond)",
    default: "100",
  },
  maxConnectionsPerUser: {
    kind: integer(0, 1_000_000, " (0 = no limit)"),
    about: "Connections one signed-in user may hold across the whole cluster; a newer one is refused with 429 and close 4029",
    default: "100",
  },
  trustedProxies: {
    kind: addressList,
    about: "Proxies (addresses or CIDR blocks) whose X-Forwarded-For header names the client address for per-IP limits",
    defaultText: "none (the peer address is the client address)",
  },
  maxHeldPolls: {
    kind: integer(1, 100),
    about: "Long polls one session may hold open at once on one process (429 beyond)",
    default: "4",
  },
  maxPresenceMembers: {
    kind: integer(1, 1_000_000),
    about: "Members a presence channel may have; a subscribe beyond it is refused with 429",
    default: "10000",
  },
  bodyTimeout: {
    kind: duration("a duration from 1s to 5m", SECOND, 5 * MINUTE),
    about: "Time a client has to send a whole HTTP request body (408 beyond)",
    default: "10s",
  },
  demo: {
    kind: boolean(),
    about: "Serve the chat demo page at /demo (built on the client SDK at /natsedge-client.js)",
    default: "false",
  },
  workers: {
    kind: integer(1, 64),
    about: "Gateway processes sharing the client port (SO_REUSEPORT); more than 1 requires nats.servers",
    default: "1",
  },
  "nats.servers": {
    kind: natsServers,
    about:
      "NATS servers to connect to; unset, natsedge uses an in-memory broker and the other nats.* settings are errors",
    alias: "nats",
  },
  "nats.prefix": {
    kind: natsPrefix,
    about: "First subject token(s) of every NATS subject natsedge uses",
    default: "natsedge",
  },
  "nats.user": { kind: nonEmpty, about: "NATS user name; needs nats.password" },
  "nats.password": { kind: nonEmpty, about: "NATS password; needs nats.user", secret: true },
  "nats.token": { kind: nonEmpty, about: "NATS token; not with nats.user/nats.password", secret: true },
  "nats.credsFile": {
    kind: filePath,
    about: `NATS credentials file (JWT and NKey seed); not with nats.user/nats.password or nats.token${NATS_FILE_NOTE}`,
  },
  "nats.tls": {
    kind: boolean("true or false (in the file also a mapping of caFile, certFile and keyFile)"),
    about: "Require TLS to NATS; on as well when a nats.tls file is set or a server is tls://",
    defaultText: "false",
  },
  "nats.tls.caFile": {
    kind: filePath,
    about: `CA certificates (PEM) the NATS servers are verified with${NATS_FILE_NOTE}`,
  },
  "nats.tls.certFile": {
    kind: filePath,
    about: `Client certificate (PEM) for NATS; needs nats.tls.keyFile${NATS_FILE_NOTE}`,
  },
  "nats.tls.keyFile": { kind: filePath, about: `Private key (PEM) of nats.tls.certFile${NATS_FILE_NOTE}` },
  "nats.streamReplicas": {
    kind: integer(1, 5),
    about: "Replicas of the JetStream streams natsedge creates",
    default: "1",
  },
  "nats.storage": {
    kind: oneOf(["file", "memory"]),
    about: "Storage of the JetStream streams natsedge creates",
    default: "file",
  },
};

// Object.keys gives string[]; the guard narrows it to Key[] without a cast.
const KEYS = Object.keys(SETTINGS).filter((key): key is Key => key in SETTINGS);

/** "auth.publicKeyFile" -> "NATSEDGE_AUTH_PUBLIC_KEY_FILE" */
const envName = (key: string): string => `NATSEDGE_${key.replace(/\./g, "_").replace(/[A-Z]/g, "_$&")}`.toUpperCase();
/** "auth.publicKeyFile" -> "--auth-public-key-file" */
const flagName = (key: string): string => `--${key.replace(/\./g, "-").replace(/[A-Z]/g, "-$&")}`.toLowerCase();

/** The names a setting goes by: its alias first, then its key. */
function settingNames(key: Key): string[] {
  const { alias } = SETTINGS[key];
  return alias === undefined ? [key] : [alias, key];
}
const envNames = (key: Key): string[] => settingNames(key).map(envName);
const flagNames = (key: Key): string[] => (SETTINGS[key].noFlag ? [] : settingNames(key).map(flagName));

const BY_ENV = new Map(KEYS.flatMap((key) => envNames(key).map((name) => [name, key] as const)));
const BY_FLAG = new Map(KEYS.flatMap((key) => flagNames(key).map((name) => [name, key] as const)));

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

export const HELP: string = formatHelp(
  KEYS.map((key) => {
    const setting: Setting<unknown> = SETTINGS[key];
    return {
      key,
      envs: envNames(key),
      flags: flagNames(key),
      about: setting.about,
      allowed: setting.kind.allowed,
      default: setting.default ?? setting.defaultText ?? "unset",
    };
  }),
);

/* ---------------------------------------------------------------- sources */

const DEFAULT_ORIGIN: Origin = { label: "default" };

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

function parseFileText(text: string, file: string, at: At): unknown {
  const extension = extname(file).toLowerCase();
  const isYaml = extension === ".yaml" || extension === ".yml";
  if (extension === ".json") return parseJson(text, at, file);
  if (!isYaml) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      // Not JSON: fall through to YAML, and report a YAML error if that fails too.
    }
  }
  try {
    return parseYaml(text) as unknown;
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

/* ---------------------------------------------------------------- assembly */

type Get = <K extends Key>(key: K) => Values[K] | undefined;
type WithDefault = <K extends Key>(key: K) => Values[K];

const KEY_SOURCES = ["auth.hmacSecret", "auth.publicKey", "auth.publicKeyFile", "auth.jwksFile"] as const;
const CLAIMS = ["auth.audience", "auth.issuer", "auth.cookie", "auth.requireExp"] as const;

function setIfDefined<T, K extends keyof T>(target: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) target[key] = value;
}

/** Reads a file named by `key`, relative to the config file when the name came from one. */
function readKeyFile(raw: Map<Key, Raw>, key: Key, name: string): { text: string; at: At; file: string } {
  const origin = raw.get(key)?.origin ?? DEFAULT_ORIGIN;
  const at: At = { key, origin };
  const file = resolve(origin.dir ?? process.cwd(), name);
  return { text: readText(file, at), at, file };
}

function publicKeyFromFile(raw: Map<Key, Raw>, name: string): string {
  const { text: pem, at, file } = readKeyFile(raw, "auth.publicKeyFile", name);
  return PEM.test(pem) ? pem : fail(at, file, `a file holding ${publicKey.allowed}`);
}

function jwksFromFile(raw: Map<Key, Raw>, name: string): { keys: Record<string, unknown>[] } {
  const { text: json, at, file } = readKeyFile(raw, "auth.jwksFile", name);
  const jwks = parseJson(json, at, file);
  const keys = isObject(jwks) ? jwks.keys : undefined;
  if (!isList(keys) || keys.length === 0 || !keys.every(isObject)) {
    return fail(at, file, 'a JWKS file: a JSON object whose "keys" is a non-empty array of key objects');
  }
  return { keys };
}

function buildAuth(raw: Map<Key, Raw>, get: Get): AuthConfig | undefined {
  const sources = KEY_SOURCES.filter((key) => raw.has(key));
  if (sources.length > 1) {
    const named = sources.map((key) => `${key} (from ${raw.get(key)?.origin.label ?? "?"})`);
    throw new ConfigError(`auth: only one key source may be set, but ${named.join(" and ")} are; ${KEY_SOURCE_TEXT}`);
  }
  if (sources.length === 0) {
    for (const claim of CLAIMS) {
      const origin = raw.get(claim)?.origin;
      if (origin) throw problem({ key: claim, origin }, `needs a key source: ${KEY_SOURCE_TEXT}`);
    }
    return undefined;
  }

  const auth: AuthConfig = { requireExp: get("auth.requireExp") ?? true };
  setIfDefined(auth, "hmacSecret", get("auth.hmacSecret"));
  setIfDefined(auth, "publicKey", get("auth.publicKey"));
  const pemFile = get("auth.publicKeyFile");
  if (pemFile !== undefined) auth.publicKey = publicKeyFromFile(raw, pemFile);
  const jwksFile = get("auth.jwksFile");
  if (jwksFile !== undefined) auth.jwks = jwksFromFile(raw, jwksFile);
  setIfDefined(auth, "audience", get("auth.audience"));
  setIfDefined(auth, "issuer", get("auth.issuer"));
  setIfDefined(auth, "cookie", get("auth.cookie"));
  return auth;
}

const NATS_KEYS = KEYS.filter((key) => key.startsWith("nats.") && key !== "nats.servers");
const TLS_FILES = ["nats.tls.caFile", "nats.tls.certFile", "nats.tls.keyFile"] as const;

/** "nats.user (from NATSEDGE_NATS_USER)" */
function labelled(raw: Map<Key, Raw>, key: Key): string {
  return `${key} (from ${raw.get(key)?.origin.label ?? DEFAULT_ORIGIN.label})`;
}

function atKey(raw: Map<Key, Raw>, key: Key): At {
  return { key, origin: raw.get(key)?.origin ?? DEFAULT_ORIGIN };
}

/** Checks that a file named by `key` can be read and returns its absolute path. */
function readableFile(raw: Map<Key, Raw>, key: Key, name: string | undefined): string | undefined {
  return name === undefined ? undefined : readKeyFile(raw, key, name).file;
}

/** Two settings that only work together: one without the other is an error naming the one given. */
function checkPair(raw: Map<Key, Raw>, [first, second]: readonly [Key, Key], because: string): void {
  if (raw.has(first) === raw.has(second)) return;
  const [given, missing] = raw.has(first) ? [first, second] : [second, first];
  throw problem(atKey(raw, given), `needs ${missing} too; ${because}`);
}

/** One credential kind at most: user with password, a token, or a creds file. */
function checkNatsCredentials(raw: Map<Key, Raw>): void {
  const set = (key: Key): boolean => raw.has(key);
  const userPassword = (["nats.user", "nats.password"] as const).filter(set);
  const others = [...userPassword, ...(set("nats.token") ? (["nats.token"] as const) : [])];
  if (set("nats.credsFile") && others.length > 0) {
    throw problem(
      atKey(raw, "nats.credsFile"),
      `cannot be combined with ${others.map((key) => labelled(raw, key)).join(" and ")}; ` +
        "use only one of a creds file, a token, or a user and password",
    );
  }
  if (set("nats.token") && userPassword.length > 0) {
    throw problem(
      atKey(raw, "nats.token"),
      `cannot be combined with ${userPassword.map((key) => labelled(raw, key)).join(" and ")}; ` +
        "use either a token or a user and password",
    );
  }
  checkPair(raw, ["nats.user", "nats.password"], "set both or neither");
}

function buildTls(raw: Map<Key, Raw>, get: Get, servers: readonly string[]): NatsTls | undefined {
  const requested = get("nats.tls");
  const files = TLS_FILES.filter((key) => raw.has(key));
  const tlsServer = servers.find((server) => server.startsWith("tls://"));
  if (requested === false) {
    const because = files[0] === undefined ? undefined : `${labelled(raw, files[0])} is set`;
    const reason = because ?? (tlsServer === undefined ? undefined : `nats.servers has ${tlsServer}`);
    if (reason !== undefined) {
      throw problem(atKey(raw, "nats.tls"), `false is not allowed while ${reason}, which requires TLS; unset one of them`);
    }
  }
  checkPair(raw, ["nats.tls.certFile", "nats.tls.keyFile"], "a client certificate and its key go together");
  if (requested !== true && files.length === 0 && tlsServer === undefined) return undefined;
  const tls: NatsTls = {};
  setIfDefined(tls, "caFile", readableFile(raw, "nats.tls.caFile", get("nats.tls.caFile")));
  setIfDefined(tls, "certFile", readableFile(raw, "nats.tls.certFile", get("nats.tls.certFile")));
  setIfDefined(tls, "keyFile", readableFile(raw, "nats.tls.keyFile", get("nats.tls.keyFile")));
  return tls;
}

function buildNats(raw: Map<Key, Raw>, get: Get, withDefault: WithDefault): NatsConfig | undefined {
  const servers = get("nats.servers");
  if (servers === undefined) {
    for (const key of NATS_KEYS) {
      if (raw.has(key)) throw problem(atKey(raw, key), "needs nats.servers (NATSEDGE_NATS, --nats), which is not set");
    }
    return undefined;
  }
  checkNatsCredentials(raw);
  const nats: NatsConfig = {
    servers,
    prefix: withDefault("nats.prefix"),
    streamReplicas: withDefault("nats.streamReplicas"),
    storage: withDefault("nats.storage"),
  };
  setIfDefined(nats, "user", get("nats.user"));
  setIfDefined(nats, "password", get("nats.password"));
  setIfDefined(nats, "token", get("nats.token"));
  setIfDefined(nats, "credsFile", readableFile(raw, "nats.credsFile", get("nats.credsFile")));
  setIfDefined(nats, "tls", buildTls(raw, get, servers));
  return nats;
}

/** The listeners' certificate files: both or neither, readable now; their contents are checked at startup. */
function buildServerTls(raw: Map<Key, Raw>, get: Get, adminTls: boolean): ServerTls | undefined {
  checkPair(raw, ["tls.certFile", "tls.keyFile"], "a certificate and its private key go together");
  const certFile = readableFile(raw, "tls.certFile", get("tls.certFile"));
  const keyFile = readableFile(raw, "tls.keyFile", get("tls.keyFile"));
  if (certFile === undefined || keyFile === undefined) {
    if (adminTls) fail(atKey(raw, "adminTls"), true, "without tls.certFile and tls.keyFile, whose certificate it would serve");
    return undefined;
  }
  return { certFile, keyFile };
}

/** The no-config default: one open namespace, so that a bare `natsedge` is usable at once. */
function embeddedNamespaces(): Record<string, NamespaceOptions> {
  const map = namespaceMap();
  map.public = {
    presence: true,
    joinLeave: true,
    clientPublish: true,
    anonymous: true,
    personal: false,
    history: { size: 100, ttl: 5 * MINUTE },
  };
  return map;
}

/**
 * Loads the configuration from `argv` (process.argv.slice(2)) and `env` (process.env).
 * Returns `{ help }` when --help or -h is among the arguments; throws ConfigError on bad input.
 */
export function loadConfig(
  argv: string[],
  env: Record<string, string | undefined>,
): { config: Config } | { help: string } {
  // Help first, so that it works even while the rest of the configuration is broken.
  if (argv.includes("--help") || argv.includes("-h")) return { help: HELP };

  const flags = readFlags(argv);
  const fromEnv = readEnv(env);
  const configFile = flags.config ?? fromEnv.config;
  const fromFile = configFile ? readConfigFile(configFile) : new Map<Key, Raw>();
  const raw = new Map([...fromFile, ...fromEnv.values, ...flags.values]);

  const get: Get = (key) => {
    const setting = SETTINGS[key];
    const fallback = setting.default === undefined ? undefined : { value: setting.default, origin: DEFAULT_ORIGIN };
    const input = raw.get(key) ?? fallback;
    return input && setting.kind.parse(input.value, { key, origin: input.origin, secret: setting.secret === true });
  };
  const withDefault: WithDefault = (key) => {
    const value = get(key);
    if (value === undefined) throw new Error(`natsedge bug: setting ${key} has no default`);
    return value;
  };

  const host = withDefault("host");
  const port = withDefault("port");
  const adminHost = get("adminHost") ?? host;
  const adminPort = withDefault("adminPort");
  if (adminPort !== 0 && adminPort === port && adminHost === host) {
    const at: At = { key: "adminPort", origin: raw.get("adminPort")?.origin ?? DEFAULT_ORIGIN };
    const portFrom = raw.get("port")?.origin.label ?? DEFAULT_ORIGIN.label;
    fail(at, adminPort, `a port other than port (${port}, from ${portFrom}) while adminHost equals host`);
  }
  const adminTls = withDefault("adminTls");
  const tls = buildServerTls(raw, get, adminTls);
  const auth = buildAuth(raw, get);
  const allowedOrigins = get("allowedOrigins");
  if (allowedOrigins?.includes("*") && auth?.cookie !== undefined) {
    // Browsers attach cookies to cross-site requests; with every origin allowed (and credentials,
    // which the cookie needs) any web page could act as the signed-in user and read their streams.
    throw new ConfigError(
      `${labelled(raw, "allowedOrigins")} allows every origin ("*") while ${labelled(raw, "auth.cookie")} is set: ` +
        "any web site could then use a visitor's cookie; list the origins instead",
    );
  }
  const namespaces = get("namespaces");
  // NATS settings do not count: `natsedge --nats host:4222` is the embedded default on NATS.
  const embedded = configFile === undefined && auth === undefined && namespaces === undefined;
  const nats = buildNats(raw, get, withDefault);
  const workers = withDefault("workers");
  if (workers > 1 && nats === undefined) {
    throw problem(
      atKey(raw, "workers"),
      `${workers} workers require NATS (nats.servers / --nats); without it each worker would have its own ` +
        "in-memory broker and clients on different workers would not see each other's publications",
    );
  }

  const config: Config = {
    host,
    port,
    adminHost,
    adminPort,
    adminTls,
    embedded,
    logLevel: withDefault("logLevel"),
    namespaces: embedded ? embeddedNamespaces() : namespaces ?? namespaceMap(),
    maxFrameSize: withDefault("maxFrameSize"),
    pingInterval: withDefault("pingInterval"),
    maxSubscriptions: withDefault("maxSubscriptions"),
    backpressureLimit: withDefault("backpressureLimit"),
    commandRate: withDefault("commandRate"),
    idempotencyWindow: withDefault("idempotencyWindow"),
    drainPeriod: withDefault("drainPeriod"),
    presenceGrace: withDefault("presenceGrace"),
    maxConnections: get("maxConnections") ?? defaultMaxConnections(),
    maxConnectionsPerIp: withDefault("maxConnectionsPerIp"),
    connectRate: withDefault("connectRate"),
    maxConnectionsPerUser: withDefault("maxConnectionsPerUser"),
    trustedProxies: get("trustedProxies") ?? [],
    maxHeldPolls: withDefault("maxHeldPolls"),
    maxPresenceMembers: withDefault("maxPresenceMembers"),
    bodyTimeout: withDefault("bodyTimeout"),
    demo: withDefault("demo"),
    workers,
  };
  setIfDefined(config, "tls", tls);
  setIfDefined(config, "apiKey", get("apiKey"));
  setIfDefined(config, "sessionSecret", get("sessionSecret"));
  setIfDefined(config, "allowedOrigins", allowedOrigins);
  setIfDefined(config, "auth", auth);
  setIfDefined(config, "nats", nats);
  return { config };
}
