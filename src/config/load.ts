/**
 * Builds the validated Config from defaults, a config file, NATSEDGE_* env vars and flags
 * (later sources win), and checks the settings that depend on each other. The entry point of
 * src/config: other modules import from here and types.ts only, so that the files behind it
 * (kinds, settings, sources, errors) can be rearranged without touching them.
 */

import { resolve } from "node:path";
import { defaultMaxConnections } from "../limits/open-files.js";
import { ConfigError, errorText, fail, problem, type At, type Origin } from "./errors.js";
import { isList, isObject, namespaceMap, parseJson, PEM, publicKey } from "./kinds.js";
import { embeddedNamespaces, HELP, KEYS, SETTINGS, type Key, type Values } from "./settings.js";
import { readSources, readText, type Raw } from "./sources.js";
import type { AuthConfig, Config, EventsConfig, HooksConfig, NatsConfig, NatsTls, ServerTls, TracingConfig } from "./types.js";

export { ConfigError, errorText, HELP };
export { SCHEMA_FILE, schemaText } from "./schema.js";
export { FORMATS, formatConfig, REDACTED, type Format } from "./redact.js";

const DEFAULT_ORIGIN: Origin = { label: "default" };

type Get = <K extends Key>(key: K) => Values[K] | undefined;
type WithDefault = <K extends Key>(key: K) => Values[K];

const KEY_SOURCES = ["auth.hmacSecret", "auth.publicKey", "auth.publicKeyFile", "auth.jwksFile", "auth.jwksUrl"] as const;
const CLAIMS = ["auth.audience", "auth.issuer", "auth.cookie", "auth.requireExp"] as const;
const JWKS_URL_TUNING = ["auth.jwksCooldown", "auth.jwksMaxAge"] as const;
const KEY_SOURCE_TEXT =
  "set one of auth.hmacSecret, auth.publicKey, auth.publicKeyFile, auth.jwksFile or auth.jwksUrl";

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

function buildAuth(raw: Map<Key, Raw>, get: Get, withDefault: WithDefault): AuthConfig | undefined {
  if (!raw.has("auth.jwksUrl")) {
    const tuning = JWKS_URL_TUNING.find((key) => raw.has(key));
    if (tuning) throw problem(atKey(raw, tuning), "needs auth.jwksUrl (NATSEDGE_AUTH_JWKS_URL, --auth-jwks-url), which is not set");
  }
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
  const jwksUrl = get("auth.jwksUrl");
  if (jwksUrl !== undefined) {
    auth.jwksUrl = { url: jwksUrl, cooldown: withDefault("auth.jwksCooldown"), maxAge: withDefault("auth.jwksMaxAge") };
  }
  setIfDefined(auth, "audience", get("auth.audience"));
  setIfDefined(auth, "issuer", get("auth.issuer"));
  setIfDefined(auth, "cookie", get("auth.cookie"));
  return auth;
}

const NATS_KEYS = KEYS.filter((key) => key.startsWith("nats.") && key !== "nats.servers");
const TLS_FILES = ["nats.tls.caFile", "nats.tls.certFile", "nats.tls.keyFile"] as const;

function buildEvents(raw: Map<Key, Raw>, get: Get): EventsConfig | undefined {
  checkPair(raw, ["events.webhook.url", "events.webhook.secret"], "webhook batches are always signed");
  const types = get("events.types");
  const url = get("events.webhook.url");
  const secret = get("events.webhook.secret");
  if (types === undefined) {
    if (url !== undefined) throw problem(atKey(raw, "events.webhook.url"), "needs events.types: without it no event is emitted");
    return undefined;
  }
  return url !== undefined && secret !== undefined ? { types, webhook: { url, secret } } : { types };
}

function buildTracing(raw: Map<Key, Raw>, get: Get, withDefault: WithDefault): TracingConfig | undefined {
  const otlpUrl = get("tracing.otlpUrl");
  if (otlpUrl === undefined) {
    for (const key of ["tracing.sampleRatio", "tracing.serviceName"] as const) {
      if (raw.has(key)) throw problem(atKey(raw, key), "needs tracing.otlpUrl: without it tracing is off");
    }
    return undefined;
  }
  return { otlpUrl, sampleRatio: withDefault("tracing.sampleRatio"), serviceName: withDefault("tracing.serviceName") };
}

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

/** The gateway-wide hooks; a hook answered over NATS needs NATS (namespace hooks are checked here too). */
function buildHooks(
  raw: Map<Key, Raw>,
  get: Get,
  withDefault: WithDefault,
  namespaces: Config["namespaces"],
  natsConfigured: boolean,
): HooksConfig {
  const hooks: HooksConfig = {
    timeout: withDefault("hooks.timeout"),
    maxInFlight: withDefault("hooks.maxInFlight"),
    maxResponseSize: withDefault("hooks.maxResponseSize"),
    headers: get("hooks.headers") ?? [],
    cookies: get("hooks.cookies") ?? [],
  };
  const httpSecret = get("hooks.httpSecret");
  if (httpSecret !== undefined) hooks.httpSecret = httpSecret;
  const needsNats = (where: string, at: At): void => {
    if (!natsConfigured) throw problem(at, `${where} is answered over NATS ("nats"), which needs nats.servers (--nats); or give an http(s) URL`);
  };
  for (const kind of ["connect", "refresh", "rpc"] as const) {
    const spec = get(`hooks.${kind}`);
    if (spec === undefined) continue;
    if (spec.target === "nats") needsNats(`hooks.${kind}`, atKey(raw, `hooks.${kind}`));
    hooks[kind] = spec;
  }
  for (const [name, ns] of Object.entries(namespaces)) {
    for (const kind of ["subscribeHook", "publishHook"] as const) {
      if (ns[kind]?.target === "nats") needsNats(`namespaces.${name}.${kind}`, atKey(raw, "namespaces"));
    }
  }
  return hooks;
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

  const { configFile, raw } = readSources(argv, env);

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
  const auth = buildAuth(raw, get, withDefault);
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

  const resolvedNamespaces = embedded ? embeddedNamespaces() : namespaces ?? namespaceMap();
  const hooks = buildHooks(raw, get, withDefault, resolvedNamespaces, nats !== undefined);

  const config: Config = {
    host,
    port,
    adminHost,
    adminPort,
    adminTls,
    embedded,
    logLevel: withDefault("logLevel"),
    namespaces: resolvedNamespaces,
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
    pollWarmTime: withDefault("pollWarmTime"),
    demo: withDefault("demo"),
    workers,
    hooks,
  };
  setIfDefined(config, "tls", tls);
  setIfDefined(config, "apiKey", get("apiKey"));
  setIfDefined(config, "adminSecret", get("adminSecret"));
  setIfDefined(config, "sessionSecret", get("sessionSecret"));
  setIfDefined(config, "allowedOrigins", allowedOrigins);
  setIfDefined(config, "auth", auth);
  setIfDefined(config, "nats", nats);
  setIfDefined(config, "events", buildEvents(raw, get));
  setIfDefined(config, "tracing", buildTracing(raw, get, withDefault));
  return { config };
}
