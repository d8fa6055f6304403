import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseDuration, parseSize } from "../src/config/duration.js";
import { ConfigError, HELP, loadConfig } from "../src/config/load.js";
import { MAX_CONFIG_DEPTH, nestingBound } from "../src/config/nesting.js";
import { defaultMaxConnections } from "../src/limits/open-files.js";
import { runCli } from "./helpers/gateway.js";
import type { Config } from "../src/config/types.js";

type Env = Record<string, string | undefined>;

const dir = mkdtempSync(join(tmpdir(), "natsedge-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let dirs = 0;
/** Writes `text` to `name` in a fresh directory and returns the file's absolute path. */
function write(name: string, text: string): string {
  return writeBeside(join(dir, `${dirs++}`, "_"), name, text);
}

/** Writes `text` to `name` in the directory of `file`. */
function writeBeside(file: string, name: string, text: string): string {
  const path = join(dirname(file), name);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  return path;
}

function load(argv: string[] = [], env: Env = {}): Config {
  const result = loadConfig(argv, env);
  if ("help" in result) throw new Error("expected a config, got help");
  return result.config;
}

/** Asserts a one-line ConfigError that starts with `key` and contains every fragment. */
function fails(argv: string[], env: Env, key: string, ...fragments: string[]): string {
  let error: unknown;
  try {
    load(argv, env);
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(ConfigError);
  const message = (error as ConfigError).message;
  expect(message.startsWith(key), `${JSON.stringify(message)} should start with ${key}`).toBe(true);
  expect(message).not.toContain("\n");
  for (const fragment of fragments) expect(message).toContain(fragment);
  return message;
}

const SECRET = "0123456789abcdef-secret-01234567";
const EMBEDDED_PUBLIC = {
  presence: true,
  joinLeave: true,
  clientPublish: true,
  anonymous: true,
  personal: false,
  history: { size: 100, ttl: 300_000 },
};
const PEM = generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }).toString();

describe("defaults and the embedded default", () => {
  it("runs the embedded default with no input at all", () => {
    expect(load()).toEqual({
      host: "0.0.0.0",
      port: 8000,
      adminHost: "0.0.0.0",
      adminPort: 9100,
      adminTls: false,
      embedded: true,
      logLevel: "info",
      namespaces: { public: EMBEDDED_PUBLIC },
      maxFrameSize: 64 * 1024,
      pingInterval: 25_000,
      maxSubscriptions: 128,
      backpressureLimit: 1024 * 1024,
      commandRate: 100,
      idempotencyWindow: 300_000,
      drainPeriod: 5_000,
      presenceGrace: 5_000,
      maxConnections: defaultMaxConnections(),
      maxConnectionsPerIp: 1000,
      connectRate: 100,
      maxConnectionsPerUser: 100,
      trustedProxies: [],
      maxHeldPolls: 4,
      maxPresenceMembers: 10_000,
      bodyTimeout: 10_000,
      pollWarmTime: 30_000,
      demo: false,
      workers: 1,
      hooks: { timeout: 2_000, maxInFlight: 1000, maxResponseSize: 64 * 1024, headers: [], cookies: [] },
    });
  });

  it("derives maxConnections from the open-files limit, and takes 0 for no limit", () => {
    const dir = mkdtempSync(join(tmpdir(), "natsedge-limits-"));
    const limits = (soft: string): string => {
      const file = join(dir, `limits-${soft}`);
      writeFileSync(file, `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                20000                files\n`);
      return file;
    };
    expect(defaultMaxConnections(limits("20000"))).toBe(18_000);
    expect(defaultMaxConnections(limits("1024"))).toBe(921);
    expect(defaultMaxConnections(limits("unlimited"))).toBe(1_000_000);
    expect(defaultMaxConnections(join(dir, "missing"))).toBe(10_000);
    rmSync(dir, { recursive: true, force: true });
    expect(load(["--max-connections", "0"]).maxConnections).toBe(0);
    expect(load(["--max-connections", "500"]).maxConnections).toBe(500);
  });

  it("takes trusted proxies as addresses and CIDR blocks", () => {
    expect(load(["--trusted-proxies", "10.0.0.0/8, 127.0.0.1,FD00::/8"]).trustedProxies).toEqual(["10.0.0.0/8", "127.0.0.1", "fd00::/8"]);
    fails(["--trusted-proxies", "10.0.0.0/33"], {}, "trustedProxies (from --trusted-proxies)", "CIDR");
    fails(["--trusted-proxies", "proxy.local"], {}, "trustedProxies", "IP addresses or CIDR blocks");
    fails(["--trusted-proxies", "1.2.3.4/8/9"], {}, "trustedProxies");
  });

  it("leaves optional settings unset rather than undefined-valued", () => {
    const config = load();
    for (const key of ["apiKey", "allowedOrigins", "auth", "nats", "tls"]) expect(Object.hasOwn(config, key)).toBe(false);
  });

  it("stays embedded with settings that are neither namespaces nor auth, keeping allowedOrigins", () => {
    const config = load(["--port", "0", "--allowed-origins", "https://a.example"], { NATSEDGE_API_KEY: "k".repeat(32) });
    expect(config.embedded).toBe(true);
    expect(config.allowedOrigins).toEqual(["https://a.example"]);
    expect(config.namespaces).toEqual({ public: EMBEDDED_PUBLIC });
  });

  it("is not embedded with a config file, even an empty one, and then has no namespaces", () => {
    const config = load(["--config", write("empty.yaml", "")]);
    expect(config.embedded).toBe(false);
    expect(config.namespaces).toEqual({});
  });

  it("is not embedded with an auth key source", () => {
    const config = load([], { NATSEDGE_AUTH_HMAC_SECRET: SECRET });
    expect(config.embedded).toBe(false);
    expect(config.namespaces).toEqual({});
    expect(config.auth).toEqual({ hmacSecret: SECRET, requireExp: true });
  });

  it("is not embedded with namespaces, even an empty set", () => {
    expect(load([], { NATSEDGE_NAMESPACES: "{}" })).toMatchObject({ embedded: false, namespaces: {} });
  });

  it("defaults adminHost to host", () => {
    expect(load(["--host", "127.0.0.1"]).adminHost).toBe("127.0.0.1");
    expect(load(["--host", "127.0.0.1", "--admin-host", "::1"]).adminHost).toBe("::1");
  });
});

describe("help", () => {
  it("returns the help for --help or -h anywhere, even next to bad input", () => {
    expect(loadConfig(["--help"], {})).toEqual({ help: HELP });
    expect(loadConfig(["--port", "1", "-h"], {})).toEqual({ help: HELP });
    expect(loadConfig(["--bogus", "--help"], { NATSEDGE_BOGUS: "1" })).toEqual({ help: HELP });
  });

  it("documents every flag, env var and file key with its default, as does docs/configuration.md", () => {
    const docs = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
    const envs = new Set(docs.match(/NATSEDGE_[A-Z_]+[A-Z]/g));
    const flags = new Set(docs.match(/--[a-z]+(-[a-z]+)*/g));
    // Guard against the regexes silently matching nothing.
    expect(envs.size).toBeGreaterThan(20);
    for (const env of envs) expect(HELP).toContain(env);
    for (const flag of flags) expect(HELP).toContain(flag);
    for (const [match] of HELP.matchAll(/NATSEDGE_[A-Z_]+[A-Z]|--[a-z]+(-[a-z]+)*/g)) expect(docs).toContain(match);
    for (const text of ["file auth.hmacSecret", "file maxFrameSize", "Default: 64KiB", "Default: 25s"]) {
      expect(HELP).toContain(text);
    }
  });
});

describe("sources and precedence", () => {
  const file = (): string => write("natsedge.yaml", "port: 1001\nhost: 10.0.0.1\nlogLevel: warn\n");

  it("lets the file override defaults, env override the file, and flags override env", () => {
    const env = { NATSEDGE_PORT: "1002", NATSEDGE_LOG_LEVEL: "debug" };
    const config = load(["--config", file(), "--log-level", "trace"], env);
    expect(config).toMatchObject({ host: "10.0.0.1", port: 1002, logLevel: "trace" });
  });

  it("reads the config file from NATSEDGE_CONFIG, and --config wins over it", () => {
    expect(load([], { NATSEDGE_CONFIG: file() }).port).toBe(1001);
    const other = write("other.yaml", "port: 2002\n");
    expect(load(["--config", other], { NATSEDGE_CONFIG: file() }).port).toBe(2002);
  });

  it("accepts --name value and --name=value, the last repeat winning", () => {
    expect(load(["--port", "1234"]).port).toBe(1234);
    expect(load(["--port=1234"]).port).toBe(1234);
    expect(load(["--port=1", "--port=2"]).port).toBe(2);
    expect(load([`--config=${file()}`]).port).toBe(1001);
  });

  it("ignores variables without the NATSEDGE_ prefix and undefined values", () => {
    expect(load([], { PORT: "x", natsedge_port: "x", NATSEDGE_PORT: undefined }).port).toBe(8000);
  });

  it("rejects unknown flags, stray arguments and flags without a value", () => {
    fails(["--nats-url", "nats://x:4222"], {}, "--nats-url", "unknown flag");
    fails(["--nats.servers", "x:4222"], {}, "--nats.servers", "unknown flag");
    fails(["--namespaces", "{}"], {}, "--namespaces", "unknown flag");
    fails(["-p", "1"], {}, "-p", "unexpected argument");
    fails(["serve"], {}, "serve", "unexpected argument");
    fails(["--port"], {}, "--port", "needs a value");
    fails(["--host", "--port", "1"], {}, "--host", "needs a value");
  });

  it("rejects unknown NATSEDGE_ variables", () => {
    fails([], { NATSEDGE_NATS_URL: "nats://x:4222" }, "NATSEDGE_NATS_URL", "unknown environment variable");
    fails([], { NATSEDGE_PROT: "1" }, "NATSEDGE_PROT", "unknown environment variable");
  });

  it("rejects empty values from flags and env", () => {
    fails(["--host="], {}, "host (from --host)", '""');
    fails([], { NATSEDGE_API_KEY: "" }, "apiKey (from NATSEDGE_API_KEY)");
    fails([], { NATSEDGE_CONFIG: "" }, "config (from NATSEDGE_CONFIG)");
  });
});

describe("config files", () => {
  it("loads the full YAML example from docs/configuration.md", () => {
    const all = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
    const docs = all.slice(all.indexOf("## Full example"));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(docs)?.[1];
    const json = /```json\n([\s\S]*?)```/.exec(docs)?.[1];
    expect(yaml).toBeDefined();
    const fromYaml = load(["--config", write("natsedge.yaml", yaml ?? "")]);
    expect(fromYaml).toMatchObject({
      adminHost: "127.0.0.1",
      allowedOrigins: ["https://app.example.com", "https://*.example.com", "http://localhost:3000"],
      auth: { hmacSecret: "change-me-to-32-or-more-random-bytes", audience: "natsedge", cookie: "natsedge_token" },
      embedded: false,
    });
    expect(fromYaml.namespaces.chat).toEqual({
      presence: true,
      joinLeave: true,
      clientPublish: true,
      anonymous: false,
      personal: false,
      history: { size: 100, ttl: 600_000 },
    });
    expect(fromYaml.namespaces.status).toEqual({
      presence: false,
      joinLeave: false,
      clientPublish: false,
      anonymous: false,
      personal: false,
    });
    // The JSON version of the example says the same thing.
    expect(load(["--config", write("natsedge.json", json ?? "")])).toEqual(fromYaml);
  });

  it("reads numbers as numbers or digit strings, durations as seconds and sizes as bytes", () => {
    const settings = { port: "8001", adminPort: 9001, pingInterval: 30, maxFrameSize: 2048 };
    const file = write("c.json", JSON.stringify(settings));
    expect(load(["--config", file])).toMatchObject({ ...settings, port: 8001, pingInterval: 30_000 });
  });

  it("tries JSON, then YAML, for other extensions", () => {
    expect(load(["--config", write("c.conf", '{"port": 1111}')]).port).toBe(1111);
    expect(load(["--config", write("c.conf", "port: 2222\n")]).port).toBe(2222);
    fails(["--config", write("c.conf", "port: [1\n")], {}, "config (from --config)", "not valid JSON or YAML");
  });

  it("treats a key with an empty value as not set", () => {
    const file = write("c.yaml", "port:\napiKey: ~\nauth:\n");
    expect(load(["--config", file])).toMatchObject({ port: 8000, embedded: false });
  });

  it("rejects unreadable files, bad syntax and a top level that is not a mapping", () => {
    fails(["--config", join(dir, "missing.yaml")], {}, "config (from --config)", "cannot be read", "ENOENT");
    fails(["--config", dir], {}, "config (from --config)", "cannot be read");
    fails(["--config", write("c.json", "{port: 1}")], {}, "config (from --config)", "not valid JSON");
    fails(["--config", write("c.yaml", "port: 1\nport: 2\n")], {}, "config (from --config)", "not valid YAML");
    fails(["--config", write("c.yaml", "- port\n")], {}, "config (from --config)", "top level is a mapping");
    fails(["--config", write("c.json", "42")], {}, "config (from --config)", "top level is a mapping");
  });

  it("rejects unknown keys at every level, naming the key and the file", () => {
    const file = write("c.yaml", "natsServers: nats://localhost:4222\n");
    fails(["--config", file], {}, `natsServers (from ${file})`, "unknown key", "allowed here: host, port");
    fails(["--config", write("c.yaml", "auth:\n  secret: x\n")], {}, "auth.secret", "unknown key", "hmacSecret");
    fails(["--config", write("c.yaml", "auth: yes\n")], {}, "auth (from", "a mapping of hmacSecret");
    fails(["--config", write("c.yaml", "auth.hmacSecret: x\n")], {}, "auth.hmacSecret (from", "unknown key");
    fails(["--config", write("c.yaml", "embedded: true\n")], {}, "embedded (from", "unknown key");
  });

  it("rejects values of the wrong type", () => {
    fails(["--config", write("c.yaml", "port: 80.5\n")], {}, "port (from", "80.5 is not allowed");
    fails(["--config", write("c.yaml", "port: true\n")], {}, "port (from", "true is not allowed");
    fails(["--config", write("c.yaml", "host: [a]\n")], {}, "host (from", '["a"] is not allowed');
    fails(["--config", write("c.yaml", "pingInterval: 2.5\n")], {}, "pingInterval (from", "2.5 is not allowed");
    fails(["--config", write("c.yaml", "logLevel: {a: 1}\n")], {}, "logLevel (from", "one of fatal");
  });

  // Found by test/fuzz-config.test.ts: showing such a value threw a TypeError or RangeError, which
  // the CLI printed as a stack trace with exit code 1 instead of one line with exit code 2.
  it("rejects values JSON cannot show (an alias inside itself, deep nesting) with one line", async () => {
    const cycle = write("c.yaml", "port: &a [*a]\n");
    fails(["--config", cycle], {}, "port (from", "a list that cannot be shown is not allowed");
    fails(["--config", write("c.yaml", "logLevel: &m {a: *m}\n")], {}, "logLevel (from", "a mapping that cannot be shown");
    const cli = await runCli(["--config", cycle]);
    expect(cli.code).toBe(2);
    expect(cli.err.trim().split("\n")).toEqual([expect.stringMatching(/^natsedge: port \(from .*\): a list that cannot be shown/)]);
  });

  // Found by test/fuzz-config.test.ts: a stack overflow inside the YAML parser, a few deep files
  // in a row, aborted the process ("RegExpCompiler Allocation failed") instead of throwing.
  it("refuses a file nested deeper than MAX_CONFIG_DEPTH before parsing it, in every style", () => {
    const deep = (n: number): Record<string, string> => ({
      flow: `{"host":${"[".repeat(n)}${"]".repeat(n)}}`,
      block: Array.from({ length: Math.min(n, 1000) }, (_, i) => `${" ".repeat(2 * i)}k${i}:`).join("\n"),
      compact: `host: ${"- ".repeat(n)}1`,
    });
    for (const [style, text] of Object.entries(deep(100_000))) {
      for (const ext of [".json", ".yaml", ""]) fails(["--config", write(`c${ext}`, text)], {}, "config (from", `nests deeper than ${MAX_CONFIG_DEPTH} levels`);
      expect(nestingBound(text), style).toBeGreaterThan(MAX_CONFIG_DEPTH);
    }
    for (const [style, text] of Object.entries(deep(MAX_CONFIG_DEPTH - 2))) expect(nestingBound(text), style).toBeLessThanOrEqual(MAX_CONFIG_DEPTH);
    expect(nestingBound("a: ']]]]'\nb: [[[[1]]]]")).toBe(5);
  });

  // Found by test/fuzz-config.test.ts: names are echoed as given, and may hold line breaks.
  it("keeps a message one line when a name in it holds a line break", () => {
    fails(["--fo\no"], {}, "--fo\\u000ao: unknown flag");
    fails(["a\r\nb"], {}, "a\\u000d\\u000ab: unexpected argument");
    fails([], { "NATSEDGE_A\nB": "1" }, "NATSEDGE_A\\u000aB: unknown environment variable");
    fails(["--config", write("c.json", JSON.stringify({ "a\u2028b": 1 }))], {}, "a\\u2028b (from", "unknown key");
  });
});

describe("numbers, durations and sizes", () => {
  it("parses integers strictly", () => {
    for (const bad of ["8000x", "", "1e3", "08.5", "-1", " 8000", "0x1f", "+80"]) {
      fails(["--port", bad], {}, "port (from --port)", `${JSON.stringify(bad)} is not allowed: an integer from 0`);
    }
    expect(load(["--port", "08000"]).port).toBe(8000);
  });

  it("enforces integer ranges, allowing port 0", () => {
    fails(["--port", "70000"], {}, "port (from --port)", '"70000" is not allowed: an integer from 0 to 65535');
    fails(["--admin-port", "65536"], {}, "adminPort");
    fails(["--max-subscriptions", "0"], {}, "maxSubscriptions", "from 1 to 100000");
    fails(["--max-subscriptions", "100001"], {}, "maxSubscriptions");
    fails(["--command-rate", "1000001"], {}, "commandRate", "0 = no limit");
    expect(load(["--port", "0", "--admin-port", "0"])).toMatchObject({ port: 0, adminPort: 0 });
    expect(load(["--command-rate", "0"]).commandRate).toBe(0);
  });

  const parsers: Array<{
    what: string;
    parse: (text: string) => number | undefined;
    good: Array<[text: string, value: number]>;
    bad: string[];
  }> = [
    {
      what: "durations",
      parse: parseDuration,
      good: [
        ["500ms", 500],
        ["30s", 30_000],
        ["5m", 300_000],
        ["1h", 3_600_000],
        ["2d", 172_800_000],
        ["30", 30_000],
        ["0", 0],
      ],
      bad: ["", "s", "1.5s", "-1s", "1 s", "1S", "1M", "1h30m", "1w", "1e3", "99999999999999999d"],
    },
    {
      what: "sizes",
      parse: parseSize,
      good: [
        ["64KiB", 65_536],
        ["1MiB", 1_048_576],
        ["1GiB", 1_073_741_824],
        ["512KB", 512_000],
        ["1MB", 1_000_000],
        ["1048576", 1_048_576],
        ["100B", 100],
      ],
      bad: ["", "KiB", "1.5MiB", "1 MiB", "1kib", "1Mb", "1K", "1TiB", "-1"],
    },
  ];
  for (const { what, parse, good, bad } of parsers) {
    it(`parses ${what}`, () => {
      for (const [text, value] of good) expect(parse(text), text).toBe(value);
      for (const text of bad) expect(parse(text), text).toBeUndefined();
    });
  }

  it("applies duration settings and their ranges", () => {
    expect(load(["--ping-interval", "2s", "--idempotency-window", "1h", "--drain-period", "0"])).toMatchObject({
      pingInterval: 2_000,
      idempotencyWindow: 3_600_000,
      drainPeriod: 0,
    });
    expect(load([], { NATSEDGE_PING_INTERVAL: "60" }).pingInterval).toBe(60_000);
    fails(["--ping-interval", "1999ms"], {}, "pingInterval (from --ping-interval)", "a duration from 2s to 10m");
    fails(["--ping-interval", "11m"], {}, "pingInterval");
    fails(["--idempotency-window", "500ms"], {}, "idempotencyWindow", "from 1s to 1h");
    fails(["--idempotency-window", "2h"], {}, "idempotencyWindow");
    fails(["--drain-period", "601s"], {}, "drainPeriod", "from 0 to 10m");
    fails(["--drain-period", "5 s"], {}, "drainPeriod");
  });

  it("applies size settings and their ranges", () => {
    expect(load(["--max-frame-size", "1KiB", "--backpressure-limit", "1GiB"])).toMatchObject({
      maxFrameSize: 1024,
      backpressureLimit: 1024 ** 3,
    });
    expect(load(["--max-frame-size", "16MiB"]).maxFrameSize).toBe(16 * 1024 ** 2);
    fails(["--max-frame-size", "1000"], {}, "maxFrameSize (from --max-frame-size)", "a size from 1KiB to 16MiB");
    fails(["--max-frame-size", "17MB"], {}, "maxFrameSize");
    fails(["--backpressure-limit", "16KB"], {}, "backpressureLimit", "from 16KiB to 1GiB");
    fails(["--backpressure-limit", "2GB"], {}, "backpressureLimit");
  });
});

describe("simple settings", () => {
  it("validates hosts", () => {
    for (const host of ["0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "gateway.internal"]) {
      expect(load(["--host", host]).host).toBe(host);
    }
    for (const bad of ["[::1]", "a b", "http://x", "-x.example", "x..y"]) {
      fails(["--host", bad], {}, "host (from --host)", "an IP address");
    }
    fails([], { NATSEDGE_ADMIN_HOST: "no such host!" }, "adminHost (from NATSEDGE_ADMIN_HOST)");
  });

  it("rejects the admin listener on the client listener's address", () => {
    fails(["--port", "9100"], {}, "adminPort (from default)", "a port other than port (9100, from --port)");
    fails(["--admin-port", "8000"], {}, "adminPort (from --admin-port)");
    expect(load(["--port", "9100", "--admin-host", "127.0.0.1"]).adminPort).toBe(9100);
  });

  it("validates logLevel", () => {
    expect(load(["--log-level", "silent"]).logLevel).toBe("silent");
    fails(["--log-level", "verbose"], {}, "logLevel (from --log-level)", "one of fatal, error, warn, info, debug");
    fails(["--log-level", "INFO"], {}, "logLevel");
  });

  it("validates apiKey without echoing it", () => {
    const key = "k".repeat(32);
    expect(load(["--api-key", key]).apiKey).toBe(key);
    const message = fails(["--api-key", "hunter2-hunter2-hunter2-hunter2"], {}, "apiKey (from --api-key)", "31 characters", "at least 32", "openssl rand");
    expect(message).not.toContain("hunter2");
  });

  it("validates and normalises allowedOrigins", () => {
    const env = { NATSEDGE_ALLOWED_ORIGINS: "https://App.Example.com, http://localhost:3000,*" };
    expect(load([], env).allowedOrigins).toEqual(["https://app.example.com", "http://localhost:3000", "*"]);
    const good = ["https://*.example.com", "http://127.0.0.1:8080", "http://[::1]:3000", "capacitor://localhost"];
    expect(load(["--allowed-origins", good.join(",")]).allowedOrigins).toEqual(good);
    const yaml = write("c.yaml", "allowedOrigins: [https://a.example, https://b.example]\n");
    expect(load(["--config", yaml]).allowedOrigins).toEqual(["https://a.example", "https://b.example"]);
    const bad = ["https://example.com/", "example.com", "https://*", "https://a.*.com", "https://x:0", "https://x:70000"];
    for (const origins of [...bad, "https://a,", " "]) {
      fails(["--allowed-origins", origins], {}, "allowedOrigins (from --allowed-origins)", "scheme://host[:port]");
    }
    fails(["--config", write("c.yaml", "allowedOrigins: []\n")], {}, "allowedOrigins");
    fails(["--config", write("c.yaml", "allowedOrigins: [1]\n")], {}, "allowedOrigins", "1 is not allowed");
  });
});

describe("namespaces", () => {
  const ns = (namespaces: unknown): Config["namespaces"] =>
    load([], { NATSEDGE_NAMESPACES: JSON.stringify(namespaces) }).namespaces;
  const off = { presence: false, joinLeave: false, clientPublish: false, anonymous: false, personal: false };

  it("fills in defaults and parses history", () => {
    expect(ns({ chat: { presence: true, history: { size: "10", ttl: "90s" } }, "a_b-9": {} })).toEqual({
      chat: { ...off, presence: true, history: { size: 10, ttl: 90_000 } },
      "a_b-9": off,
    });
    expect(ns({ n: { history: { size: 100000, ttl: 30 } } }).n?.history).toEqual({ size: 100_000, ttl: 30_000 });
  });

  it("does not expose Object.prototype members as namespaces", () => {
    const namespaces = ns({ chat: {} });
    expect(namespaces.constructor).toBeUndefined();
    expect(namespaces.toString).toBeUndefined();
    // An object literal cannot hold an own "__proto__" key, hence the JSON text.
    const proto = load([], { NATSEDGE_NAMESPACES: '{"__proto__":{"anonymous":true}}' }).namespaces;
    expect(Object.keys(proto)).toEqual(["__proto__"]);
    expect(Object.hasOwn(proto, "__proto__")).toBe(true);
  });

  it("replaces the file's namespaces with NATSEDGE_NAMESPACES as a whole", () => {
    const file = write("c.yaml", "namespaces:\n  a: {}\n  b: {}\n");
    expect(Object.keys(load(["--config", file]).namespaces)).toEqual(["a", "b"]);
    expect(Object.keys(load(["--config", file], { NATSEDGE_NAMESPACES: '{"c":{}}' }).namespaces)).toEqual(["c"]);
  });

  it("validates names and the shape of the mapping", () => {
    const env = (value: string): Env => ({ NATSEDGE_NAMESPACES: value });
    fails([], env("{nope"), "namespaces (from NATSEDGE_NAMESPACES)", "not valid JSON");
    fails([], env("[]"), "namespaces (from NATSEDGE_NAMESPACES)", "a mapping of namespace name to options");
    fails([], env('{"a.b":{}}'), "namespaces", '"a.b" is not allowed', "1 to 64 characters");
    fails([], env(JSON.stringify({ ["x".repeat(65)]: {} })), "namespaces", "1 to 64 characters");
    fails([], env('{"":{}}'), "namespaces", '"" is not allowed');
    fails([], env('{"chat":true}'), "namespaces.chat (from NATSEDGE_NAMESPACES)", "a mapping of namespace options");
    fails(["--config", write("c.yaml", "namespaces: chat\n")], {}, "namespaces (from");
  });

  it("validates options", () => {
    const env = (chat: unknown): Env => ({ NATSEDGE_NAMESPACES: JSON.stringify({ chat }) });
    fails([], env({ presense: true }), "namespaces.chat.presense", "unknown key", "allowed here: history, presence");
    fails([], env({ presence: "true" }), "namespaces.chat.presence", '"true" is not allowed: true or false');
    fails([], env({ joinLeave: true }), "namespaces.chat.joinLeave", "needs presence: true");
    expect(ns({ chat: { joinLeave: true, presence: true } }).chat).toMatchObject({ joinLeave: true, presence: true });
  });

  it("validates history", () => {
    const env = (history: unknown): Env => ({ NATSEDGE_NAMESPACES: JSON.stringify({ chat: { history } }) });
    fails([], env({ size: 10 }), "namespaces.chat.history.ttl", "missing", "needs both size and ttl");
    fails([], env({ ttl: "1m" }), "namespaces.chat.history.size", "missing");
    fails([], env({ size: 0, ttl: "1m" }), "namespaces.chat.history.size", "an integer from 1 to 100000");
    fails([], env({ size: 100001, ttl: "1m" }), "namespaces.chat.history.size");
    fails([], env({ size: 10, ttl: 0 }), "namespaces.chat.history.ttl", "greater than 0");
    fails([], env({ size: 10, ttl: "soon" }), "namespaces.chat.history.ttl");
    fails([], env({ size: 10, ttl: "1m", max: 1 }), "namespaces.chat.history.max", "unknown key");
    fails([], env(10), "namespaces.chat.history", "a mapping with size and ttl");
  });

  it("accepts a YAML namespace with no options", () => {
    const file = write("c.yaml", "namespaces:\n  chat:\n");
    expect(load(["--config", file]).namespaces.chat).toEqual(off);
  });
});

describe("auth", () => {
  it("uses an HMAC secret of at least 32 characters, without echoing a short one", () => {
    expect(load(["--auth-hmac-secret", SECRET]).auth).toEqual({ hmacSecret: SECRET, requireExp: true });
    const message = fails(["--auth-hmac-secret", "tooshort"], {}, "auth.hmacSecret (from --auth-hmac-secret)", "at least 32");
    expect(message).not.toContain("tooshort");
  });

  it("requires exp by default and lets it be switched off", () => {
    expect(load(["--auth-hmac-secret", SECRET, "--auth-require-exp", "false"]).auth).toEqual({ hmacSecret: SECRET, requireExp: false });
    fails(["--auth-require-exp", "false"], {}, "auth.requireExp (from --auth-require-exp)", "needs a key source");
  });

  it("refuses every origin together with a cookie token", () => {
    const message = fails(
      ["--auth-hmac-secret", SECRET, "--auth-cookie", "tok", "--allowed-origins", "https://a.example,*"],
      {},
      "allowedOrigins (from --allowed-origins)",
      "auth.cookie (from --auth-cookie)",
    );
    expect(message).toMatch(/every origin/);
    expect(load(["--auth-hmac-secret", SECRET, "--auth-cookie", "tok", "--allowed-origins", "https://a.example"]).allowedOrigins).toEqual([
      "https://a.example",
    ]);
    expect(load(["--auth-hmac-secret", SECRET, "--allowed-origins", "*"]).allowedOrigins).toEqual(["*"]);
  });

  it("takes PEM text, turning literal \\n into newlines", () => {
    expect(load([], { NATSEDGE_AUTH_PUBLIC_KEY: PEM }).auth).toEqual({ requireExp: true, publicKey: PEM });
    const oneLine = PEM.replace(/\n/g, "\\n");
    expect(load([`--auth-public-key=${oneLine}`]).auth?.publicKey).toBe(PEM);
    // A PEM value is not mistaken for a flag even though it starts with dashes.
    expect(load(["--auth-public-key", PEM]).auth?.publicKey).toBe(PEM);
    const privatePem = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    fails(["--auth-public-key", privatePem], {}, "auth.publicKey (from --auth-public-key)", "BEGIN PUBLIC KEY");
    fails(["--auth-public-key", "abc"], {}, "auth.publicKey");
  });

  it("reads publicKeyFile relative to the config file, or else the working directory", () => {
    const config = write("natsedge.yaml", "auth:\n  publicKeyFile: keys/public.pem\n");
    const pemFile = writeBeside(config, "keys/public.pem", PEM);
    expect(load(["--config", config]).auth).toEqual({ requireExp: true, publicKey: PEM });
    // From a flag the same relative name is looked up in the working directory, not beside the file.
    const empty = writeBeside(config, "empty.yaml", "");
    const inCwd = join(process.cwd(), "keys", "public.pem");
    fails(["--config", empty, "--auth-public-key-file", "keys/public.pem"], {}, "auth.publicKeyFile", inCwd);
    expect(load(["--auth-public-key-file", relative(process.cwd(), pemFile)]).auth).toEqual({ requireExp: true, publicKey: PEM });
    expect(load([], { NATSEDGE_AUTH_PUBLIC_KEY_FILE: pemFile }).auth).toEqual({ requireExp: true, publicKey: PEM });
  });

  it("rejects a publicKeyFile that cannot be read or holds no public key", () => {
    fails(["--auth-public-key-file", join(dir, "nope.pem")], {}, "auth.publicKeyFile (from --auth-public-key-f", "ENOENT");
    fails(["--auth-public-key-file", write("bad.pem", "hello")], {}, "auth.publicKeyFile", "BEGIN PUBLIC KEY");
  });

  it("reads and checks a JWKS file", () => {
    const jwks = { keys: [{ kty: "OKP", crv: "Ed25519", x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }] };
    const file = write("jwks.json", JSON.stringify(jwks));
    expect(load(["--auth-jwks-file", file]).auth).toEqual({ requireExp: true, jwks });
    const relativeInFile = write("natsedge.yaml", "auth:\n  jwksFile: jwks.json\n");
    writeBeside(relativeInFile, "jwks.json", JSON.stringify(jwks));
    expect(load(["--config", relativeInFile]).auth).toEqual({ requireExp: true, jwks });
    for (const bad of ["{", "[]", "{}", '{"keys":[]}', '{"keys":{}}', '{"keys":[1]}', '{"keys":[[]]}']) {
      fails(["--auth-jwks-file", write("jwks.json", bad)], {}, "auth.jwksFile (from --auth-jwks-file)");
    }
  });

  it("takes a JWKS URL with its cooldown and max age, and refuses unsafe URLs", () => {
    const url = "https://idp.example.com/.well-known/jwks.json";
    expect(load(["--auth-jwks-url", url]).auth).toEqual({ requireExp: true, jwksUrl: { url, cooldown: 30_000, maxAge: 600_000 } });
    const file = write("c.yaml", `auth:\n  jwksUrl: ${url}\n  jwksCooldown: 5s\n  jwksMaxAge: 1h\n`);
    expect(load(["--config", file]).auth?.jwksUrl).toEqual({ url, cooldown: 5_000, maxAge: 3_600_000 });
    const env = { NATSEDGE_AUTH_JWKS_URL: "http://127.0.0.1:8080/jwks", NATSEDGE_AUTH_JWKS_MAX_AGE: "90s" };
    expect(load([], env).auth?.jwksUrl).toEqual({ url: "http://127.0.0.1:8080/jwks", cooldown: 30_000, maxAge: 90_000 });
    for (const loopback of ["http://localhost/jwks", "http://[::1]:9/k", "http://127.1.2.3/k"]) {
      expect(load(["--auth-jwks-url", loopback]).auth?.jwksUrl?.url).toBe(loopback);
    }
    // Keys over plain http to another host could be swapped on the way.
    for (const bad of ["http://idp.example.com/jwks", "http://10.0.0.1/jwks", "ftp://idp/jwks", "file:///etc/jwks.json", "idp/jwks", ""]) {
      fails(["--auth-jwks-url", bad], {}, "auth.jwksUrl (from --auth-jwks-url)", "an https:// URL");
    }
    const message = fails(["--auth-jwks-url", "https://user:hunter2@idp/jwks"], {}, "auth.jwksUrl", "credentials");
    expect(message).not.toContain("hunter2");
    fails(["--auth-jwks-url", url, "--auth-jwks-cooldown", "0"], {}, "auth.jwksCooldown", "a duration from 1s to 1h");
    fails(["--auth-jwks-url", url, "--auth-jwks-max-age", "2d"], {}, "auth.jwksMaxAge", "a duration from 1s to 1d");
  });

  it("needs auth.jwksUrl for its cooldown and max age, and allows no other key source beside it", () => {
    fails(["--auth-hmac-secret", SECRET, "--auth-jwks-cooldown", "5s"], {}, "auth.jwksCooldown (from --auth-jwks-cooldown)", "needs auth.jwksUrl");
    fails([], { NATSEDGE_AUTH_JWKS_MAX_AGE: "5m" }, "auth.jwksMaxAge (from NATSEDGE_AUTH_JWKS_MAX_AGE)", "needs auth.jwksUrl");
    const message = fails(["--auth-jwks-url", "https://idp/jwks", "--auth-jwks-file", "x.json"], {}, "auth:", "only one key source");
    expect(message).toContain("auth.jwksUrl (from --auth-jwks-url)");
    expect(message.split("\n")).toHaveLength(1);
  });

  it("allows only one key source, across all sources", () => {
    const pemFile = write("public.pem", PEM);
    const env = { NATSEDGE_AUTH_HMAC_SECRET: SECRET };
    const both = ["auth.hmacSecret (from NATSEDGE_AUTH_HMAC_SECRET)", "auth.publicKeyFile (from --auth-public-key-file)"];
    fails(["--auth-public-key-file", pemFile], env, "auth:", ...both);
    fails(["--auth-public-key", PEM, "--auth-public-key-file", pemFile], {}, "auth:", "only one key source");
    const file = write("c.yaml", `auth:\n  hmacSecret: ${SECRET}\n`);
    fails(["--config", file, "--auth-jwks-file", "x.json"], {}, "auth:", `auth.hmacSecret (from ${file})`);
  });

  it("sets audience, issuer and cookie alongside a key source, and needs one for them", () => {
    const argv = ["--auth-hmac-secret", SECRET, "--auth-audience=aud", "--auth-issuer=https://iss", "--auth-cookie=tok_en"];
    expect(load(argv).auth).toEqual({ hmacSecret: SECRET, audience: "aud", issuer: "https://iss", cookie: "tok_en", requireExp: true });
    fails(["--auth-audience", "aud"], {}, "auth.audience (from --auth-audience)", "needs a key source: set one of");
    fails([], { NATSEDGE_AUTH_ISSUER: "iss" }, "auth.issuer (from NATSEDGE_AUTH_ISSUER)", "needs a key source");
    fails(["--config", write("c.yaml", "auth:\n  cookie: tok\n")], {}, "auth.cookie (from", "needs a key source");
  });

  it("validates the claims and the cookie name", () => {
    const withKey = ["--auth-hmac-secret", SECRET];
    fails([...withKey, "--auth-audience="], {}, "auth.audience", "a non-empty string");
    fails([...withKey, "--auth-issuer="], {}, "auth.issuer");
    for (const bad of ["a b", "a;b", "a=b", "(a)", "a,b", ""]) {
      fails([...withKey, `--auth-cookie=${bad}`], {}, "auth.cookie (from --auth-cookie)", "a cookie name");
    }
  });
});

describe("presenceGrace and workers", () => {
  const nats = ["--nats", "localhost:4222"];

  it("defaults presenceGrace to 5s and takes durations from 0 to 60s from every source", () => {
    expect(load().presenceGrace).toBe(5_000);
    expect(load(["--presence-grace", "0"]).presenceGrace).toBe(0);
    expect(load(["--presence-grace", "60s"]).presenceGrace).toBe(60_000);
    expect(load([], { NATSEDGE_PRESENCE_GRACE: "1500ms" }).presenceGrace).toBe(1_500);
    const file = write("c.yaml", "presenceGrace: 10\n");
    expect(load(["--config", file]).presenceGrace).toBe(10_000);
    expect(load(["--config", file], { NATSEDGE_PRESENCE_GRACE: "2s" }).presenceGrace).toBe(2_000);
    const both = load(["--config", file, "--presence-grace=3s"], { NATSEDGE_PRESENCE_GRACE: "2s" });
    expect(both.presenceGrace).toBe(3_000);
  });

  it("rejects presenceGrace outside 0 to 60s", () => {
    fails(["--presence-grace", "61s"], {}, "presenceGrace (from --presence-grace)", "a duration from 0 to 60s");
    fails(["--presence-grace", "2m"], {}, "presenceGrace");
    fails([], { NATSEDGE_PRESENCE_GRACE: "-1s" }, "presenceGrace (from NATSEDGE_PRESENCE_GRACE)");
    fails(["--config", write("c.yaml", "presenceGrace: 1.5\n")], {}, "presenceGrace (from", "1.5 is not allowed");
  });

  it("defaults workers to 1 and allows more with NATS", () => {
    expect(load().workers).toBe(1);
    expect(load(["--workers", "1"]).workers).toBe(1);
    expect(load([...nats, "--workers", "64"]).workers).toBe(64);
    expect(load([], { NATSEDGE_WORKERS: "4", NATSEDGE_NATS: "localhost:4222" }).workers).toBe(4);
    const file = write("c.yaml", "workers: 8\nnats:\n  servers: [localhost:4222]\n");
    expect(load(["--config", file]).workers).toBe(8);
  });

  it("rejects workers outside 1 to 64", () => {
    for (const bad of ["0", "65", "2.5", "many"]) {
      fails([...nats, "--workers", bad], {}, "workers (from --workers)", "an integer from 1 to 64");
    }
  });

  it("requires NATS for more than one worker", () => {
    fails(["--workers", "2"], {}, "workers (from --workers)", "2 workers require NATS (nats.servers / --nats)");
    fails([], { NATSEDGE_WORKERS: "4" }, "workers (from NATSEDGE_WORKERS)", "require NATS");
    fails(["--config", write("c.yaml", "workers: 3\n")], {}, "workers (from", "require NATS");
  });
});

describe("nats", () => {
  const SERVER = "nats://localhost:4222";
  const nats = ["--nats", SERVER];
  /** Arguments loading a YAML file with nats.servers set and `rest` inside the nats mapping. */
  const natsFile = (rest: string): string[] => ["--config", write("c.yaml", `nats:\n  servers: [${SERVER}]\n${rest}`)];
  const yamlFile = (yaml: string): string[] => ["--config", write("c.yaml", yaml)];

  it("is unset without servers, and the embedded rule ignores it", () => {
    expect(Object.hasOwn(load(), "nats")).toBe(false);
    const config = load(nats);
    expect(config.embedded).toBe(true);
    expect(config.namespaces).toEqual({ public: EMBEDDED_PUBLIC });
    const withFile = load(["--config", write("c.yaml", `nats:\n  servers: [${SERVER}]\n`)]);
    expect(withFile).toMatchObject({ embedded: false, namespaces: {} });
    expect(withFile.nats?.servers).toEqual([SERVER]);
  });

  it("fills in defaults and leaves optional fields unset", () => {
    const config = load(nats).nats;
    expect(config).toEqual({ servers: [SERVER], prefix: "natsedge", streamReplicas: 1, storage: "file" });
    for (const key of ["user", "password", "token", "credsFile", "tls"]) {
      expect(Object.hasOwn(config ?? {}, key)).toBe(false);
    }
  });

  it("reads servers from every name, normalising host:port to nats://host:port", () => {
    const expected = ["nats://a.example:4222", "tls://10.0.0.1:4443", "nats://[::1]:4222"];
    const list = "a.example:4222, tls://10.0.0.1:4443 ,nats://[::1]:4222";
    expect(load(["--nats", list]).nats?.servers).toEqual(expected);
    expect(load([`--nats-servers=${list}`]).nats?.servers).toEqual(expected);
    expect(load([], { NATSEDGE_NATS: list }).nats?.servers).toEqual(expected);
    expect(load([], { NATSEDGE_NATS_SERVERS: list }).nats?.servers).toEqual(expected);
    const yamlList = write(
      "c.yaml",
      'nats:\n  servers:\n    - a.example:4222\n    - tls://10.0.0.1:4443\n    - "[::1]:4222"\n',
    );
    expect(load(["--config", yamlList]).nats?.servers).toEqual(expected);
    const yamlString = write("c.yaml", `nats:\n  servers: "${list}"\n`);
    expect(load(["--config", yamlString]).nats?.servers).toEqual(expected);
    const json = write("c.json", JSON.stringify({ nats: { servers: ["a.example:04222"] } }));
    expect(load(["--config", json]).nats?.servers).toEqual(["nats://a.example:4222"]);
    expect(load(["--nats", "NATS-1.Internal:1,localhost:65535"]).nats?.servers).toEqual([
      "nats://NATS-1.Internal:1",
      "nats://localhost:65535",
    ]);
  });

  it("takes servers from the file, then env, then flags; --nats and --nats-servers are one flag", () => {
    const file = write("c.yaml", "nats:\n  servers: [file:4222]\n  prefix: fromfile\n");
    const env = { NATSEDGE_NATS_SERVERS: "env:4222" };
    expect(load(["--config", file]).nats).toMatchObject({ servers: ["nats://file:4222"], prefix: "fromfile" });
    expect(load(["--config", file], env).nats).toMatchObject({ servers: ["nats://env:4222"], prefix: "fromfile" });
    expect(load(["--config", file, "--nats", "flag:4222"], env).nats?.servers).toEqual(["nats://flag:4222"]);
    expect(load(["--nats", "a:1", "--nats-servers", "b:2"]).nats?.servers).toEqual(["nats://b:2"]);
    expect(load(["--nats-servers", "b:2", "--nats", "a:1"]).nats?.servers).toEqual(["nats://a:1"]);
  });

  it("rejects both NATSEDGE_NATS and NATSEDGE_NATS_SERVERS", () => {
    const env = { NATSEDGE_NATS: "a:4222", NATSEDGE_NATS_SERVERS: "a:4222" };
    fails([], env, "nats.servers (from NATSEDGE_NATS", "NATSEDGE_NATS_SERVERS", "set only one of these variables");
  });

  it("rejects bad server entries and empty lists", () => {
    const bad = [
      "localhost",
      "nats://localhost",
      "http://localhost:4222",
      "NATS://localhost:4222",
      "tls:/localhost:4222",
      "localhost:0",
      "localhost:65536",
      "localhost:123456",
      "localhost:-1",
      "::1:4222",
      "[::1]",
      "[1.2.3.4]:4222",
      "[nope]:4222",
      "10.0.0.256:4222",
      "1.2.3:4222",
      "-bad.example:4222",
      "a..b:4222",
      "a b:4222",
      "localhost:4222/path",
      "a:1,",
      ",a:1",
      "a:1,,b:2",
      "",
      " ",
    ];
    for (const servers of bad) {
      fails(["--nats", servers], {}, "nats.servers (from --nats)", "nats://host:port, tls://host:port or host:port");
    }
    fails(["--config", write("c.yaml", "nats:\n  servers: []\n")], {}, "nats.servers (from", "[] is not allowed");
    fails(["--config", write("c.yaml", "nats:\n  servers: [4222]\n")], {}, "nats.servers (from", "4222 is not allowed");
    fails(["--config", write("c.yaml", "nats:\n  servers: {a: 1}\n")], {}, "nats.servers (from");
  });

  it("rejects credentials in server URLs without echoing them", () => {
    const message = fails(
      ["--nats", "nats://alice:hunter2@localhost:4222"],
      {},
      "nats.servers (from --nats)",
      "credentials (user:password@) is not allowed",
      "nats.user and nats.password",
    );
    expect(message).not.toContain("hunter2");
    fails([], { NATSEDGE_NATS: "tok@localhost:4222" }, "nats.servers (from NATSEDGE_NATS)", "credentials");
  });

  it("rejects every other nats setting without servers, naming it", () => {
    const cases: [string[], Env, string][] = [
      [["--nats-prefix", "x"], {}, "nats.prefix (from --nats-prefix)"],
      [[], { NATSEDGE_NATS_USER: "u", NATSEDGE_NATS_PASSWORD: "p" }, "nats.user (from NATSEDGE_NATS_USER)"],
      [[], { NATSEDGE_NATS_PASSWORD: "p" }, "nats.password (from NATSEDGE_NATS_PASSWORD)"],
      [["--nats-token", "t"], {}, "nats.token (from --nats-token)"],
      [["--nats-creds-file", "x.creds"], {}, "nats.credsFile (from --nats-creds-file)"],
      [["--nats-tls", "false"], {}, "nats.tls (from --nats-tls)"],
      [["--nats-tls-ca-file", "ca.pem"], {}, "nats.tls.caFile (from --nats-tls-ca-file)"],
      [["--nats-tls-cert-file", "c.pem"], {}, "nats.tls.certFile (from --nats-tls-cert-file)"],
      [["--nats-tls-key-file", "k.pem"], {}, "nats.tls.keyFile (from --nats-tls-key-file)"],
      [["--nats-stream-replicas", "3"], {}, "nats.streamReplicas (from --nats-stream-replicas)"],
      [[], { NATSEDGE_NATS_STORAGE: "memory" }, "nats.storage (from NATSEDGE_NATS_STORAGE)"],
    ];
    for (const [argv, env, key] of cases) fails(argv, env, key, "needs nats.servers");
    const file = write("c.yaml", "nats:\n  prefix: app\n");
    fails(["--config", file], {}, `nats.prefix (from ${file})`, "needs nats.servers");
    fails(["--config", write("c.yaml", "nats:\n  tls: true\n")], {}, "nats.tls (from", "needs nats.servers");
    // An empty `nats:` or `servers:` sets nothing, so it is not an error.
    expect(Object.hasOwn(load(["--config", write("c.yaml", "nats:\n  servers:\n")]), "nats")).toBe(false);
    expect(Object.hasOwn(load(["--config", write("c.yaml", "nats:\n")]), "nats")).toBe(false);
  });

  it("validates the file's nats mapping and its keys", () => {
    const file = write("c.yaml", "nats: nats://localhost:4222\n");
    fails(["--config", file], {}, `nats (from ${file})`, "is not allowed: a mapping of servers, prefix, user");
    fails(yamlFile("nats:\n  server: x:1\n"), {}, "nats.server (from", "unknown key", "allowed here: servers, prefix");
    fails(natsFile("  tls:\n    ca: x\n"), {}, "nats.tls.ca (from", "unknown key", "here: caFile, certFile, keyFile");
    fails(yamlFile("nats.servers: [x:1]\n"), {}, "nats.servers (from", "unknown key");
    fails(yamlFile("auth:\n  servers: x\n"), {}, "auth.servers", "unknown key", "allowed here: hmacSecret");
  });

  it("validates the prefix", () => {
    for (const prefix of ["natsedge", "a", "app.natsedge", "A_b-9.x", "x".repeat(64), "a.b.c.d"]) {
      expect(load([...nats, "--nats-prefix", prefix]).nats?.prefix).toBe(prefix);
    }
    expect(load(nats, { NATSEDGE_NATS_PREFIX: "env" }).nats?.prefix).toBe("env");
    for (const bad of ["", ".", "a.", ".a", "a..b", "a.*", "a.>", ">", "a b", "a\tb", "x".repeat(65), "é"]) {
      const at = "nats.prefix (from --nats-prefix)";
      fails([...nats, `--nats-prefix=${bad}`], {}, at, "tokens of A-Z, a-z, 0-9, _ and -");
    }
    fails(natsFile("  prefix: 12\n"), {}, "nats.prefix (from", "12 is not allowed");
  });

  it("takes a user with a password, a token, or a creds file", () => {
    expect(load([...nats, "--nats-user", "alice", "--nats-password", "s3cret"]).nats).toMatchObject({
      user: "alice",
      password: "s3cret",
    });
    const env = { NATSEDGE_NATS_USER: "bob", NATSEDGE_NATS_PASSWORD: "pw" };
    expect(load(nats, env).nats).toMatchObject({ user: "bob", password: "pw" });
    expect(load(nats, { NATSEDGE_NATS_TOKEN: "tok" }).nats?.token).toBe("tok");
    const file = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  user: carol\n  password: from-file\n`);
    expect(load(["--config", file, "--nats-password", "from-flag"]).nats).toMatchObject({
      user: "carol",
      password: "from-flag",
    });
  });

  it("needs user and password together", () => {
    fails([...nats, "--nats-user", "alice"], {}, "nats.user (from --nats-user)", "needs nats.password too");
    fails(nats, { NATSEDGE_NATS_PASSWORD: "pw" }, "nats.password (from NATSEDGE_NATS_PASSWORD)", "needs nats.user too");
  });

  it("rejects a token with a user or password, and a creds file with anything else", () => {
    const creds = write("nats.creds", "creds");
    fails(
      [...nats, "--nats-token", "t", "--nats-user", "u", "--nats-password", "p"],
      {},
      "nats.token (from --nats-token)",
      "cannot be combined with nats.user (from --nats-user) and nats.password (from --nats-password)",
    );
    fails([...nats, "--nats-token", "t", "--nats-user", "u"], {}, "nats.token", "cannot be combined with nats.user");
    fails([...nats, "--nats-token", "t"], { NATSEDGE_NATS_PASSWORD: "p" }, "nats.token", "nats.password (from NATSED");
    fails([...nats, "--nats-creds-file", creds, "--nats-token", "t"], {}, "nats.credsFile (from --nats-creds-file)",
      "cannot be combined with nats.token (from --nats-token)");
    const userPassword = { NATSEDGE_NATS_USER: "u", NATSEDGE_NATS_PASSWORD: "p" };
    fails([...nats, "--nats-creds-file", creds], userPassword, "nats.credsFile", "nats.user (from NATSEDGE_NATS_USER)");
  });

  it("never echoes the password or token", () => {
    const password = fails([...nats, "--nats-user", "u", "--nats-password="], {}, "nats.password", "0 characters");
    expect(password).toContain("a value of 0 characters");
    const file = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  token: 123456789\n`);
    const token = fails(["--config", file], {}, "nats.token (from", "a number is not allowed");
    expect(token).not.toContain("123456789");
    const pw = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  user: u\n  password: [hunter2]\n`);
    expect(fails(["--config", pw], {}, "nats.password (from", "an object is not allowed")).not.toContain("hunter2");
  });

  it("checks the creds file and stores its resolved path", () => {
    const config = write("natsedge.yaml", `nats:\n  servers: [${SERVER}]\n  credsFile: secrets/app.creds\n`);
    const creds = writeBeside(config, "secrets/app.creds", "-----BEGIN NATS USER JWT-----\n");
    expect(load(["--config", config]).nats?.credsFile).toBe(creds);
    expect(load([...nats, "--nats-creds-file", relative(process.cwd(), creds)]).nats?.credsFile).toBe(creds);
    expect(load(nats, { NATSEDGE_NATS_CREDS_FILE: creds }).nats?.credsFile).toBe(creds);
    // From a flag, a relative name is looked up in the working directory.
    const inCwd = join(process.cwd(), "secrets", "app.creds");
    const at = "nats.credsFile (from --nats-creds-file)";
    fails([...nats, "--nats-creds-file", "secrets/app.creds"], {}, at, inCwd, "cannot be read", "ENOENT");
    fails([...nats, "--nats-creds-file", dir], {}, "nats.credsFile", "cannot be read");
    fails([...nats, "--nats-creds-file="], {}, "nats.credsFile", '"" is not allowed: a file path');
  });

  it("turns TLS on with nats.tls, with any TLS file, or with a tls:// server", () => {
    expect(Object.hasOwn(load(nats).nats ?? {}, "tls")).toBe(false);
    expect(load([...nats, "--nats-tls", "true"]).nats?.tls).toEqual({});
    expect(load([...nats, "--nats-tls=false"]).nats?.tls).toBeUndefined();
    expect(load(nats, { NATSEDGE_NATS_TLS: "true" }).nats?.tls).toEqual({});
    expect(load(["--nats", "tls://localhost:4222"]).nats?.tls).toEqual({});
    expect(load(["--nats", "a:1,tls://b:2", "--nats-tls", "true"]).nats?.tls).toEqual({});
    const ca = write("ca.pem", "ca");
    expect(load([...nats, "--nats-tls-ca-file", ca]).nats?.tls).toEqual({ caFile: ca });
    const yaml = (tls: string, env: Env = {}): Config["nats"] => load(natsFile(`  tls: ${tls}\n`), env).nats;
    expect(yaml("true")?.tls).toEqual({});
    expect(yaml("{}")?.tls).toEqual({});
    expect(yaml("false")?.tls).toBeUndefined();
    expect(yaml("")?.tls).toBeUndefined();
    expect(yaml("true", { NATSEDGE_NATS_TLS: "false" })?.tls).toBeUndefined();
    expect(yaml("false", { NATSEDGE_NATS_TLS: "true" })?.tls).toEqual({});
  });

  it("resolves TLS files against the config file's directory and checks them", () => {
    const tls = "  tls:\n    caFile: tls/ca.pem\n    certFile: tls/cert.pem\n    keyFile: tls/key.pem\n";
    const config = write("natsedge.yaml", `nats:\n  servers: [${SERVER}]\n${tls}`);
    const caFile = writeBeside(config, "tls/ca.pem", "ca");
    const certFile = writeBeside(config, "tls/cert.pem", "cert");
    const keyFile = writeBeside(config, "tls/key.pem", "key");
    expect(load(["--config", config]).nats?.tls).toEqual({ caFile, certFile, keyFile });
    // Flags override single files; env and flags resolve against the working directory.
    const other = write("other.pem", "other");
    const overridden = load(["--config", config, "--nats-tls-ca-file", other]).nats?.tls;
    expect(overridden).toEqual({ caFile: other, certFile, keyFile });
    const env = { NATSEDGE_NATS_TLS_CERT_FILE: relative(process.cwd(), certFile), NATSEDGE_NATS_TLS_KEY_FILE: keyFile };
    expect(load(nats, env).nats?.tls).toEqual({ certFile, keyFile });
    const at = "nats.tls.caFile (from --nats-tls-ca-file)";
    fails([...nats, "--nats-tls-ca-file", join(dir, "nope.pem")], {}, at, "cannot be read", "ENOENT");
    const missingKey = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  tls: {certFile: c.pem, keyFile: k.pem}\n`);
    writeBeside(missingKey, "c.pem", "cert");
    fails(["--config", missingKey], {}, "nats.tls.keyFile (from", "cannot be read", join(dirname(missingKey), "k.pem"));
  });

  it("needs certFile and keyFile together", () => {
    const pem = write("x.pem", "x");
    const cert = "nats.tls.certFile (from --nats-tls-cert-file)";
    fails([...nats, "--nats-tls-cert-file", pem], {}, cert, "needs nats.tls.keyFile too");
    const key = "nats.tls.keyFile (from NATSEDGE_NATS_TLS_KEY_FILE)";
    fails(nats, { NATSEDGE_NATS_TLS_KEY_FILE: pem }, key, "needs nats.tls.certFile too");
  });

  it("rejects nats.tls false next to a TLS file or a tls:// server", () => {
    const pem = write("ca.pem", "ca");
    fails([...nats, "--nats-tls", "false", "--nats-tls-ca-file", pem], {}, "nats.tls (from --nats-tls)",
      "false is not allowed while nats.tls.caFile (from --nats-tls-ca-file) is set, which requires TLS");
    const at = "nats.tls (from --nats-tls)";
    fails(["--nats", "a:1,tls://b:2", "--nats-tls", "false"], {}, at, "nats.servers has tls://b:2");
    const file = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  tls:\n    caFile: ca.pem\n`);
    writeBeside(file, "ca.pem", "ca");
    const env = { NATSEDGE_NATS_TLS: "false" };
    fails(["--config", file], env, "nats.tls (from NATSEDGE_NATS_TLS)", `nats.tls.caFile (from ${file})`);
  });

  it("rejects nats.tls values other than true, false or a mapping", () => {
    for (const bad of ["yes", "TRUE", "1", "on"]) {
      fails([...nats, "--nats-tls", bad], {}, "nats.tls (from --nats-tls)", "true or false");
    }
    fails(natsFile("  tls: [a]\n"), {}, "nats.tls (from", "or false (in the file also a mapping of caFile");
    fails(natsFile("  tls: 1\n"), {}, "nats.tls (from", "1 is not allowed");
    fails(natsFile('  tls: "yes"\n'), {}, "nats.tls (from", '"yes" is not allowed');
  });

  it("validates streamReplicas and storage", () => {
    expect(load([...nats, "--nats-stream-replicas", "5", "--nats-storage", "memory"]).nats).toMatchObject({
      streamReplicas: 5,
      storage: "memory",
    });
    expect(load(nats, { NATSEDGE_NATS_STREAM_REPLICAS: "3", NATSEDGE_NATS_STORAGE: "file" }).nats).toMatchObject({
      streamReplicas: 3,
      storage: "file",
    });
    const file = write("c.yaml", `nats:\n  servers: [${SERVER}]\n  streamReplicas: 3\n  storage: memory\n`);
    expect(load(["--config", file]).nats).toMatchObject({ streamReplicas: 3, storage: "memory" });
    for (const bad of ["0", "6", "1.5", "three"]) {
      const at = "nats.streamReplicas (from --nats-stream-replicas)";
      fails([...nats, "--nats-stream-replicas", bad], {}, at, "an integer from 1 to 5");
    }
    for (const bad of ["disk", "File", "MEMORY", ""]) {
      fails([...nats, `--nats-storage=${bad}`], {}, "nats.storage (from --nats-storage)", "one of file, memory");
    }
  });

  it("loads the Running against NATS example from docs/configuration.md", () => {
    const docs = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
    const yaml = /## Running against NATS[\s\S]*?```yaml\n([\s\S]*?)```/.exec(docs)?.[1];
    expect(yaml).toBeDefined();
    const config = write("natsedge.yaml", yaml ?? "");
    const creds = writeBeside(config, "secrets/natsedge.creds", "creds");
    const caFile = writeBeside(config, "secrets/nats-ca.pem", "ca");
    expect(load(["--config", config])).toMatchObject({ workers: 4, presenceGrace: 5_000, embedded: false });
    expect(load(["--config", config]).nats).toEqual({
      servers: ["tls://nats-1.internal:4222", "tls://nats-2.internal:4222", "tls://nats-3.internal:4222"],
      prefix: "natsedge.prod",
      credsFile: creds,
      tls: { caFile },
      streamReplicas: 3,
      storage: "file",
    });
  });
});

describe("tls", () => {
  it("is off unless both files are set; adminTls defaults to false", () => {
    const config = load();
    expect(config.tls).toBeUndefined();
    expect(config.adminTls).toBe(false);
  });

  it("resolves the files like the other file settings: against the config file's directory, else the working directory", () => {
    const file = write("c.yaml", "tls:\n  certFile: keys/cert.pem\n  keyFile: keys/key.pem\nadminTls: true\n");
    const certFile = writeBeside(file, "keys/cert.pem", "cert");
    const keyFile = writeBeside(file, "keys/key.pem", "key");
    expect(load(["--config", file])).toMatchObject({ tls: { certFile, keyFile }, adminTls: true });
    const env = { NATSEDGE_TLS_CERT_FILE: relative(process.cwd(), certFile), NATSEDGE_TLS_KEY_FILE: keyFile };
    expect(load(["--admin-tls", "false"], env)).toMatchObject({ tls: { certFile, keyFile }, adminTls: false });
    // Only the files' readability is checked here; whether they hold a certificate and its key is
    // checked at start-up (test/tls.test.ts).
    expect(load(["--tls-cert-file", certFile, "--tls-key-file", keyFile]).tls).toEqual({ certFile, keyFile });
  });

  it("needs certFile and keyFile together, readable", () => {
    const pem = write("x.pem", "x");
    fails(["--tls-cert-file", pem], {}, "tls.certFile (from --tls-cert-file)", "needs tls.keyFile too");
    fails([], { NATSEDGE_TLS_KEY_FILE: pem }, "tls.keyFile (from NATSEDGE_TLS_KEY_FILE)", "needs tls.certFile too");
    const missing = join(dir, "nope.pem");
    fails(["--tls-cert-file", pem, "--tls-key-file", missing], {}, "tls.keyFile (from --tls-key-file)", "cannot be read", "ENOENT");
  });

  it("rejects adminTls without the files, and tls as anything but a mapping of them", () => {
    fails(["--admin-tls", "true"], {}, "adminTls (from --admin-tls)", "without tls.certFile and tls.keyFile");
    fails(["--admin-tls", "yes"], {}, "adminTls (from --admin-tls)", "true or false");
    fails(["--config", write("c.yaml", "tls: true\n")], {}, "tls (from", "a mapping of certFile, keyFile");
    fails(["--config", write("c.yaml", "tls:\n  caFile: ca.pem\n")], {}, "tls.caFile (from", "unknown key; allowed here: certFile, keyFile");
  });
});
