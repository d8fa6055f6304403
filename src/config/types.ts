import type { EventType } from "../events/types.js";
/**
 * The validated configuration every other module reads. Durations are milliseconds, sizes bytes.
 * Nothing outside src/config sees raw (unvalidated) input.
 */

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface HistoryOptions {
  /** Publications kept per channel. */
  size: number;
  /** How long a publication stays in history, ms. */
  ttl: number;
}

/** Where one backend hook is answered, and what happens when it is not (see docs/backend.md). */
export interface HookSpec {
  /** `"nats"` (request to `<prefix>.hook.<kind>`) or an http(s) URL the gateway POSTs to. */
  target: string;
  /** How long the gateway waits for the answer, ms; unset: `hooks.timeout`. */
  timeout?: number;
  /** When the backend cannot answer: go on as if no hook were configured instead of refusing with 503. */
  failOpen: boolean;
}

/** The hooks of the whole gateway; subscribe and publish hooks are per namespace. */
export interface HooksConfig {
  connect?: HookSpec;
  refresh?: HookSpec;
  rpc?: HookSpec;
  /** Default wait for an answer, ms. */
  timeout: number;
  /** Hook calls in flight on one process; beyond it clients are refused with 503. */
  maxInFlight: number;
  /** Largest hook answer accepted, bytes. */
  maxResponseSize: number;
  /** Client request headers (lower case) forwarded to hooks. */
  headers: string[];
  /** Client cookies forwarded to hooks. */
  cookies: string[];
  /** Signs HTTP hook calls when set. */
  httpSecret?: string;
}

export interface NamespaceOptions {
  history?: HistoryOptions;
  /** Asked before a client subscribes to a channel of the namespace. */
  subscribeHook?: HookSpec;
  /** Asked before a client publication to the namespace is accepted. */
  publishHook?: HookSpec;
  presence: boolean;
  joinLeave: boolean;
  clientPublish: boolean;
  anonymous: boolean;
  personal: boolean;
}

export interface AuthConfig {
  hmacSecret?: string;
  /** PEM text (from `publicKey`, or read from `publicKeyFile` at load time). */
  publicKey?: string;
  /** Parsed JWKS document read from `jwksFile` at load time. */
  jwks?: { keys: Record<string, unknown>[] };
  /** The identity provider's JWKS, fetched at start-up and kept fresh (auth.jwksUrl). */
  jwksUrl?: RemoteJwks;
  audience?: string;
  issuer?: string;
  cookie?: string;
  /** Tokens without `exp` are refused unless this is false. */
  requireExp?: boolean;
}

export interface RemoteJwks {
  /** http(s) URL; http only to a loopback address. */
  url: string;
  /** Least time between two fetches caused by tokens naming an unknown `kid`, ms. */
  cooldown: number;
  /** Keys are fetched again once they are this old, ms. */
  maxAge: number;
}

export interface NatsTls {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
}

/** The certificate the client listener (and, with adminTls, the admin listener) serves. */
export interface ServerTls {
  /** PEM certificate chain, leaf first; absolute path. */
  certFile: string;
  /** PEM private key of the leaf certificate; absolute path. */
  keyFile: string;
}

export interface NatsConfig {
  servers: string[];
  /** First subject token(s) of every subject natsedge uses, e.g. `natsedge` -> `natsedge.ch.<channel>`. */
  prefix: string;
  user?: string;
  password?: string;
  token?: string;
  credsFile?: string;
  /** Present when TLS is required; the files are optional (system CAs otherwise). */
  tls?: NatsTls;
  streamReplicas: number;
  storage: "file" | "memory";
}

export interface Config {
  host: string;
  port: number;
  adminHost: string;
  adminPort: number;
  /** Present when the client listener serves TLS (wss://, https://). */
  tls?: ServerTls;
  /** The admin listener serves TLS too, with the same certificate; needs `tls`. */
  adminTls: boolean;
  apiKey?: string;
  /** Logs in to the admin console (/admin on the admin listener); no console when unset. */
  adminSecret?: string;
  /** Signs long-poll and SSE sessions; shared by all replicas. Random per process when unset. */
  sessionSecret?: string;
  /** Origin patterns; `undefined` = same-origin only (plus clients without Origin). */
  allowedOrigins?: string[];
  /** True when the gateway runs the no-config embedded default (any origin, auth off). */
  embedded: boolean;
  logLevel: LogLevel;
  /** `undefined` when no key source is configured: only anonymous namespaces can be used. */
  auth?: AuthConfig;
  namespaces: Record<string, NamespaceOptions>;
  /** Largest accepted inbound WebSocket message / HTTP body, bytes. */
  maxFrameSize: number;
  /** Server keepalive ping interval, ms (a peer silent for twice as long is closed). */
  pingInterval: number;
  /** Subscriptions one connection may hold. */
  maxSubscriptions: number;
  /** Outbound bytes buffered for one client before it is disconnected with 4008. */
  backpressureLimit: number;
  /** Commands per second one connection may send (token bucket; burst = 2x). 0 disables. */
  commandRate: number;
  /** Window in which a repeated publish idempotencyKey is delivered once, ms. */
  idempotencyWindow: number;
  /** Period over which clients are disconnected on shutdown, ms. */
  drainPeriod: number;
  /** How long a departed client lingers in presence so a quick reconnect causes no leave/join pair, ms. */
  presenceGrace: number;
  /** WebSocket and SSE connections one process holds; 0 = no limit. */
  maxConnections: number;
  /** Connections from one client address per process; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** New connections per second per client address (burst = 2x); 0 = no limit. */
  connectRate: number;
  /** Connections of one user across the cluster; 0 = no limit. */
  maxConnectionsPerUser: number;
  /** Addresses / CIDR blocks whose X-Forwarded-For is believed. */
  trustedProxies: string[];
  /** Long polls one session may hold at once on one process. */
  maxHeldPolls: number;
  /** Members a presence channel may have. */
  maxPresenceMembers: number;
  /** Time to receive a whole HTTP request body, ms. */
  bodyTimeout: number;
  /** How long a channel stays subscribed after its last long poll on this replica, ms. */
  pollWarmTime: number;
  /** Present when NATS servers are configured; the in-memory broker is used otherwise. */
  nats?: NatsConfig;
  /** Backend hooks (connect, refresh, rpc and their shared limits). */
  hooks: HooksConfig;
  /** Serve the chat demo page at /demo. */
  demo: boolean;
  /** Gateway processes sharing the port (SO_REUSEPORT); more than 1 requires NATS. */
  workers: number;
  /** Present when lifecycle events are on (events.types). */
  events?: EventsConfig;
  /** Present when tracing is on (tracing.otlpUrl). */
  tracing?: TracingConfig;
}

export interface TracingConfig {
  /** The OTLP/HTTP traces endpoint. */
  otlpUrl: string;
  /** Share of root spans sampled, 0 to 1. */
  sampleRatio: number;
  serviceName: string;
}

export interface EventsConfig {
  types: EventType[];
  webhook?: { url: string; secret: string };
}
