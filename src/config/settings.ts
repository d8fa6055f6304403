/**
 * Every setting is described once, in SETTINGS; the file keys, env var names, flag names,
 * defaults, validation and --help text all derive from that table.
 */

import { formatHelp } from "./help.js";
import {
  addressList,
  boolean,
  duration,
  eventTypes,
  filePath,
  hook,
  host,
  integer,
  keysUrl,
  logLevel,
  matching,
  namespaceMap,
  nameList,
  namespaces,
  natsPrefix,
  natsServers,
  nonEmpty,
  oneOf,
  origins,
  ratio,
  publicKey,
  secretText,
  size,
  webhookUrl,
  type Kind,
} from "./kinds.js";
import type { EventType } from "../events/types.js";
import type { HookSpec, LogLevel, NamespaceOptions } from "./types.js";

/** Parsed value of each setting; the file key is the property name. */
export interface Values {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  "tls.certFile": string;
  "tls.keyFile": string;
  adminTls: boolean;
  apiKey: string;
  adminSecret: string;
  sessionSecret: string;
  allowedOrigins: string[];
  logLevel: LogLevel;
  "auth.hmacSecret": string;
  "auth.publicKey": string;
  "auth.publicKeyFile": string;
  "auth.jwksFile": string;
  "auth.jwksUrl": string;
  "auth.jwksCooldown": number;
  "auth.jwksMaxAge": number;
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
  pollWarmTime: number;
  demo: boolean;
  workers: number;
  "events.types": EventType[];
  "events.webhook.url": string;
  "events.webhook.secret": string;
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
  "hooks.connect": HookSpec;
  "hooks.refresh": HookSpec;
  "hooks.rpc": HookSpec;
  "hooks.timeout": number;
  "hooks.maxInFlight": number;
  "hooks.maxResponseSize": number;
  "hooks.headers": string[];
  "hooks.cookies": string[];
  "hooks.httpSecret": string;
  "tracing.otlpUrl": string;
  "tracing.sampleRatio": number;
  "tracing.serviceName": string;
}

export type Key = keyof Values;

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
const NATS_FILE_NOTE = "; checked to be readable at startup";
const RELOAD_NOTE = "; checked at startup, reloaded on SIGHUP and when the file changes";

export const SETTINGS: { readonly [K in Key]: Setting<Values[K]> } = {
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
  adminSecret: {
    kind: secretText,
    about: "Secret that logs in to the admin web console at /admin on the admin listener; unset, there is no console (404)",
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
    about: "Shared secret client JWTs are signed with (HS256, HS384 or HS512)",
    secret: true,
  },
  "auth.publicKey": {
    kind: publicKey,
    about: "Public key (RSA, EC P-256/P-384/P-521 or Ed25519) client JWTs are verified with; \\n escapes become newlines",
  },
  "auth.publicKeyFile": {
    kind: filePath,
    about: "File holding the PEM public key client JWTs are verified with, read at startup",
  },
  "auth.jwksFile": {
    kind: filePath,
    about: 'JWKS file (a JSON object with a non-empty "keys" array) whose keys verify client JWTs, read at startup',
  },
  "auth.jwksUrl": {
    kind: keysUrl,
    about:
      "URL of the identity provider's JWKS, fetched before the client port opens, again every auth.jwksMaxAge and when a token names an unknown kid",
  },
  "auth.jwksCooldown": {
    kind: duration("a duration from 1s to 1h", SECOND, 60 * MINUTE),
    about: "Least time between two auth.jwksUrl fetches caused by tokens naming an unknown kid (or after a failed fetch)",
    default: "30s",
  },
  "auth.jwksMaxAge": {
    kind: duration("a duration from 1s to 1d", SECOND, 24 * 60 * MINUTE),
    about: "How old the keys from auth.jwksUrl may get before they are fetched again",
    default: "10m",
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
  pollWarmTime: {
    kind: duration("a duration from 1s to 10m", SECOND, 10 * MINUTE),
    about: "How long a replica keeps a channel subscribed in NATS after its last long poll ended (no SUB/UNSUB per poll)",
    default: "30s",
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
  "events.types": {
    kind: eventTypes,
    about:
      "Lifecycle events to emit (to <nats.prefix>.event.<type> and the webhook; see docs/events.md), or all",
    defaultText: "none (no events)",
  },
  "events.webhook.url": {
    kind: webhookUrl,
    about: "URL that receives the events as signed JSON batches (POST); needs events.webhook.secret and events.types",
  },
  "events.webhook.secret": {
    kind: secretText,
    about: "Secret the webhook batches are signed with (HMAC-SHA256, header Natsedge-Signature)",
    secret: true,
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
  "hooks.connect": {
    kind: hook(true),
    about: "Backend hook that authenticates clients connecting without a JWT (docs/backend.md; failOpen: the anonymous rules apply)",
    noFlag: true,
  },
  "hooks.refresh": {
    kind: hook(false),
    about: "Backend hook asked by a refresh without a token, and at the expiry of a hook-authenticated WebSocket connection",
    noFlag: true,
  },
  "hooks.rpc": { kind: hook(false), about: "Backend hook answering the client op rpc", noFlag: true },
  "hooks.timeout": {
    kind: duration("a duration from 10ms to 60s", 10, 60 * SECOND),
    about: "How long a hook call waits for the backend unless the hook sets its own timeout (503 beyond, or failOpen)",
    default: "2s",
  },
  "hooks.maxInFlight": {
    kind: integer(1, 1_000_000),
    about: "Hook calls one process has in flight at once; beyond it clients are refused with 503 and retryAfter (or failOpen)",
    default: "1000",
  },
  "hooks.maxResponseSize": {
    kind: size("a size from 1KiB to 16MiB", KIB, 16 * MIB),
    about: "Largest hook answer accepted; a larger one is a failed call",
    default: "64KiB",
  },
  "hooks.headers": {
    kind: nameList("header"),
    about: "Client request headers forwarded to hooks (nothing else is forwarded)",
    defaultText: "none",
  },
  "hooks.cookies": {
    kind: nameList("cookie"),
    about: "Client cookies forwarded to hooks (nothing else is forwarded)",
    defaultText: "none",
  },
  "hooks.httpSecret": {
    kind: secretText,
    about: "Secret HTTP hook calls are signed with (HMAC-SHA256, header Natsedge-Signature), so the backend can refuse calls not from a gateway",
    secret: true,
  },
  "tracing.otlpUrl": {
    kind: webhookUrl,
    about:
      "OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces) spans are sent to as JSON; unset, tracing is off (docs/deploy.md#tracing)",
  },
  "tracing.sampleRatio": {
    kind: ratio,
    about: "Share of new traces recorded, decided at a trace's root; a client's or publisher's traceparent decides for its own trace. Needs tracing.otlpUrl",
    default: "1",
  },
  "tracing.serviceName": {
    kind: nonEmpty,
    about: "The service.name spans are reported under. Needs tracing.otlpUrl",
    default: "natsedge",
  },
};

// Object.keys gives string[]; the guard narrows it to Key[] without a cast.
export const KEYS = Object.keys(SETTINGS).filter((key): key is Key => key in SETTINGS);

/** Settings whose values are never printed: errors give their length, check-config redacts them. */
export const SECRET_KEYS = KEYS.filter((key) => SETTINGS[key].secret === true);

/** "auth.publicKeyFile" -> "NATSEDGE_AUTH_PUBLIC_KEY_FILE" */
const envName = (key: string): string => `NATSEDGE_${key.replace(/\./g, "_").replace(/[A-Z]/g, "_$&")}`.toUpperCase();
/** "auth.publicKeyFile" -> "--auth-public-key-file" */
const flagName = (key: string): string => `--${key.replace(/\./g, "-").replace(/[A-Z]/g, "-$&")}`.toLowerCase();

/** The names a setting goes by: its alias first, then its key. */
function settingNames(key: Key): string[] {
  const { alias } = SETTINGS[key];
  return alias === undefined ? [key] : [alias, key];
}
export const envNames = (key: Key): string[] => settingNames(key).map(envName);
export const flagNames = (key: Key): string[] => (SETTINGS[key].noFlag ? [] : settingNames(key).map(flagName));

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
  SECRET_KEYS,
);

/** The no-config default: one open namespace, so that a bare `natsedge` is usable at once. */
export function embeddedNamespaces(): Record<string, NamespaceOptions> {
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
