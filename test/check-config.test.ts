import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { formatConfig, HELP, loadConfig, REDACTED } from "../src/config/load.js";
import { envNames, SECRET_KEYS } from "../src/config/settings.js";
import type { Config } from "../src/config/types.js";
import { runCli } from "./helpers/gateway.js";

const dir = mkdtempSync(join(tmpdir(), "natsedge-check-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SECRET = "0123456789abcdef-secret-0123456789";
const FILE = join(dir, "natsedge.yaml");
writeFileSync(FILE, `port: 8100\napiKey: ${SECRET}-api\nnamespaces:\n  chat: { presence: true, history: { size: 10, ttl: 1m } }\n`);

function load(argv: string[], env: Record<string, string> = {}): Config {
  const loaded = loadConfig(argv, env);
  if ("help" in loaded) throw new Error("expected a config, got help");
  return loaded.config;
}

/** What check-config should print: the loaded config as JSON, secrets replaced. */
function expected(argv: string[], env: Record<string, string> = {}): unknown {
  const config: Record<string, unknown> = JSON.parse(JSON.stringify(load(argv, env)));
  if (config.apiKey !== undefined) config.apiKey = REDACTED;
  return config;
}

describe("natsedge --version", () => {
  it("prints the package version and exits 0, whatever else is on the command line", async () => {
    const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string };
    for (const args of [["--version"], ["--port", "70000", "--version"], ["--bogus", "--version"]]) {
      expect(await runCli(args)).toEqual({ code: 0, out: `${version}\n`, err: "" });
    }
  });
});

describe("natsedge check-config", () => {
  it("prints the effective configuration as JSON with secrets redacted and exits 0", async () => {
    const result = await runCli(["check-config", FILE]);
    expect(result).toMatchObject({ code: 0, err: "" });
    expect(JSON.parse(result.out)).toEqual(expected(["--config", FILE]));
    expect(result.out).toContain(`"apiKey": "${REDACTED}"`);
    expect(result.out).not.toContain(SECRET);
  });

  it("prints YAML with --format yaml, and reads env vars and flags over the file as start-up does", async () => {
    const env = { NATSEDGE_PORT: "8200", NATSEDGE_LOG_LEVEL: "debug" };
    const result = await runCli(["check-config", FILE, "--format", "yaml", "--port", "8300"], env);
    expect(result).toMatchObject({ code: 0, err: "" });
    const shown = parseYaml(result.out) as Config;
    expect(shown).toEqual(expected(["--config", FILE, "--port", "8300"], env));
    expect(shown).toMatchObject({ port: 8300, logLevel: "debug", apiKey: REDACTED });
  });

  it("checks NATSEDGE_CONFIG and the flags alone when no file is named", async () => {
    const result = await runCli(["check-config", "--format=json"], { NATSEDGE_CONFIG: FILE });
    expect(JSON.parse(result.out)).toEqual(expected(["--config", FILE]));
    const embedded = await runCli(["check-config"]);
    expect(JSON.parse(embedded.out)).toMatchObject({ embedded: true, namespaces: { public: { anonymous: true } } });
  });

  it("exits 2 with the same one line as start-up on a configuration error", async () => {
    const bad = join(dir, "bad.yaml");
    writeFileSync(bad, "port: 70000\n");
    // Certificates are checked before workers start, and so by check-config too.
    const junk = join(dir, "junk.pem");
    writeFileSync(junk, "not a certificate\n");
    for (const args of [["--config", bad], ["--tls-cert-file", junk, "--tls-key-file", junk], ["--nats-token", "x"]]) {
      const startup = await runCli(args);
      const check = await runCli(["check-config", ...args]);
      expect(startup.code).toBe(2);
      expect(startup.err).toMatch(/^natsedge: [^\n]+\n$/);
      expect(check).toEqual({ code: 2, out: "", err: startup.err });
    }
  });

  it("prints the help for --help or -h anywhere, as start-up does", async () => {
    const help = await runCli(["--help"]);
    expect(help.out).toContain("natsedge check-config [<file>]");
    for (const args of [["--help"], [FILE, "--format", "--help"], ["-h", "--bogus"]]) {
      expect(await runCli(["check-config", ...args])).toEqual({ code: 0, out: help.out, err: "" });
    }
  });

  it("refuses an unknown --format with one line and exit code 2", async () => {
    expect(await runCli(["check-config", FILE, "--format", "xml"])).toEqual({
      code: 2,
      out: "",
      err: 'natsedge: --format: "xml" is not allowed: one of json, yaml\n',
    });
  });
});

describe("redaction", () => {
  // Between them these set every secret setting (a token excludes a user and password).
  const value = (key: string): string => `${SECRET}-${key}`;
  const withSecrets = (keys: readonly string[]): Record<string, string> => {
    const env: Record<string, string> = { NATSEDGE_NATS: "localhost:4222" };
    for (const key of SECRET_KEYS.filter((secret) => keys.includes(secret))) env[envNames(key)[0] ?? key] = value(key);
    // The webhook's secret only comes with its URL and the events it sends.
    if (keys.includes("events.webhook.secret")) Object.assign(env, { NATSEDGE_EVENTS_WEBHOOK_URL: "https://hooks.example.com/natsedge", NATSEDGE_EVENTS_TYPES: "all" });
    return env;
  };
  const runs = [
    { ...withSecrets(SECRET_KEYS.filter((key) => key !== "nats.token")), NATSEDGE_NATS_USER: "edge" },
    withSecrets(["nats.token"]),
  ];

  it("covers every secret setting in the table", () => {
    const set = new Set(runs.flatMap((env) => Object.keys(env)));
    for (const key of SECRET_KEYS) expect(set, key).toContain(envNames(key)[0]);
    expect(SECRET_KEYS).toEqual(expect.arrayContaining(["apiKey", "sessionSecret", "auth.hmacSecret", "nats.password", "nats.token"]));
  });

  it("is listed in docs/configuration.md and --help exactly as the table marks it", () => {
    const docs = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
    const listed = /The values of ([^:]*?) are never printed/.exec(docs)?.[1]?.match(/`[^`]+`/g) ?? [];
    expect(listed.map((name) => name.slice(1, -1))).toEqual(SECRET_KEYS);
    expect(HELP.replace(/\s+/g, " ")).toContain(`the values of ${SECRET_KEYS.join(", ")} are never printed`);
  });

  it.each(["json", "yaml"] as const)("replaces every secret value in %s and keeps the rest", (format) => {
    for (const env of runs) {
      const config = load([], env);
      const text = formatConfig(config, format);
      const shown = (format === "json" ? JSON.parse(text) : parseYaml(text)) as Config;
      for (const key of SECRET_KEYS) {
        expect(text, key).not.toContain(value(key));
        const original = key.split(".").reduce<unknown>((at, part) => (at as Record<string, unknown> | undefined)?.[part], config);
        const printed = key.split(".").reduce<unknown>((at, part) => (at as Record<string, unknown> | undefined)?.[part], shown);
        // A secret the run sets is in the Config at its key's path, and printed as REDACTED there.
        if (env[envNames(key)[0] ?? key] !== undefined) expect([key, original, printed]).toEqual([key, value(key), REDACTED]);
      }
      expect(shown.nats?.servers).toEqual(["nats://localhost:4222"]);
      expect(config.nats?.servers).toEqual(["nats://localhost:4222"]);
    }
  });
});
