/**
 * Property-based fuzzing of loadConfig: random config files (JSON, YAML and neither), mutations
 * of the full example in docs/configuration.md, random NATSEDGE_* variables and flags. Whatever
 * the input, loadConfig returns a config (or the help text) or throws ConfigError with one line:
 * the CLI turns that into exit code 2 and that line, and anything else into a stack trace.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { stringify as toYaml } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../src/config/load.js";
import { jsonText, mutated } from "./helpers/fuzz.js";

const FUZZ = { numRuns: 300, interruptAfterTimeLimit: 4_000 };

const dir = mkdtempSync(join(tmpdir(), "natsedge-fuzz-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The settings as docs/configuration.md lists them: file key, environment variables, flags.
const doc = readFileSync(new URL("../docs/configuration.md", import.meta.url), "utf8");
const rows = [...doc.matchAll(/^\| `([A-Za-z.]+)` \| (.+?) \| (.+?) \|/gm)];
const FILE_KEYS = rows.map((r) => r[1] as string);
const ENV_NAMES = rows.flatMap((r) => [...(r[2] as string).matchAll(/`(NATSEDGE_[A-Z_]+)`/g)].map((m) => m[1] as string));
const FLAGS = rows.flatMap((r) => [...(r[3] as string).matchAll(/`(--[a-z-]+)`/g)].map((m) => m[1] as string));
const fence = (lang: string, after: string): string => {
  const from = doc.indexOf(after);
  const start = doc.indexOf("```" + lang + "\n", from) + lang.length + 4;
  return doc.slice(start, doc.indexOf("```", start));
};
const EXAMPLE_YAML = fence("yaml", "## Full example");
const EXAMPLE_JSON = fence("json", "## Full example");
const NATS_YAML = fence("yaml", "## Running against NATS");

/** Names with line breaks: a message naming one must still be one line. */
const LINE_BREAKS = fc.constantFrom("a\nb", "\r", "x\u2028y", "\u0085");

/** Values of the kinds settings take, the edges around them and things of the wrong kind. */
const scalar = fc.oneof(
  fc.constantFrom(
    "30s", "0", "1", "-1", "8000", "65536", "1e3", "64KiB", "16MiB", "1GiB", "100B", "5m", "1h30m", "0.5s", "true", "false", "yes",
    "", " ", "info", "silent", "file", "memory", "127.0.0.1", "::1", "[::1]", "localhost", "nats://127.0.0.1:4222", "tls://[::1]:1",
    "nats://u:p@h:1", "h:0", "*", "https://*.example.com", "http://a:99999", "10.0.0.0/8", "fd00::/129", "natsedge.prod", "a..b",
    "-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----", "x".repeat(32), "%", "\u0000", "a\nb",
  ),
  fc.string({ maxLength: 40 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
);
const value: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    scalar,
    fc.array(tie("v"), { maxLength: 3 }),
    fc.dictionary(fc.oneof(fc.constantFrom("size", "ttl", "presence", "history", "caFile", "anonymous", "chat"), fc.string({ maxLength: 8 })), tie("v"), { maxKeys: 4 }),
  ),
})).v;

const namespaceOptions = fc.dictionary(
  fc.oneof(fc.constantFrom("history", "presence", "joinLeave", "clientPublish", "anonymous", "personal", "other"), LINE_BREAKS),
  fc.oneof(fc.boolean(), fc.record({ size: value, ttl: value }, { requiredKeys: [] }), value),
  { maxKeys: 4 },
);
const namespaces = fc.dictionary(fc.oneof(fc.constantFrom("chat", "news", "__proto__", "constructor", "a.b", ""), fc.string({ maxLength: 70 }), LINE_BREAKS), fc.oneof(namespaceOptions, value), { maxKeys: 3 });

/** A settings mapping: mostly real keys (dotted ones nested as in files), some unknown ones. */
const settings = fc
  .array(
    fc.tuple(
      fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...FILE_KEYS) }, { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 10 }), LINE_BREAKS) }),
      value,
      namespaces,
    ),
    { maxLength: 8 },
  )
  .map((entries) => {
    const out: Record<string, unknown> = {};
    for (const [key, v, ns] of entries) {
      const path = key === "namespaces" ? ["namespaces"] : key.split(".");
      let at = out;
      for (const part of path.slice(0, -1)) {
        const next = at[part];
        at = (at[part] = typeof next === "object" && next !== null && !Array.isArray(next) ? next : {}) as Record<string, unknown>;
      }
      at[path[path.length - 1] as string] = key === "namespaces" ? ns : v;
    }
    return out;
  });

/** YAML only: anchors and aliases (also circular), tags, merge keys, flow and block styles. */
const yamlSnippet = fc.constantFrom(
  "&a [*a]", "&b {x: *b}", "!!binary aGVsbG8=", "!!set {a, b}", "!!timestamp 2001-12-14", "!!float .nan", ".inf", "0x1F", "0o17",
  "1_000", "~", "[1, [2, [3]]]", "{<<: {size: 1}, ttl: 1s}", "!custom x", "'single'", '"\\u0000"', "|\n  block\n  text", ">-\n  folded",
  "*undefinedAlias", "? [a]\n  : 1", "!!str 8000", "!!int '8000'", "- a\n- b",
);

/** One file: its text (deeply nested and circular values spliced in as text) and its extension. */
const configFile = fc.oneof(
  fc.tuple(settings, fc.constantFrom(".json", ".conf", "")).map(([s, ext]) => ({ text: jsonText(s), ext })),
  fc.tuple(settings, fc.constantFrom(".yaml", ".yml", "")).map(([s, ext]) => ({ text: toYaml(s), ext })),
  fc
    .tuple(fc.constantFrom(...FILE_KEYS.filter((k) => !k.includes("."))), fc.integer({ min: 1, max: 100_000 }), fc.constantFrom("[", '{"a":'), fc.constantFrom(".json", ".yaml", ""))
    .map(([key, depth, open, ext]) => ({ text: `{"${key}":${open.repeat(depth)}1${(open === "[" ? "]" : "}").repeat(depth)}}`, ext })),
  fc
    .array(fc.tuple(fc.constantFrom(...FILE_KEYS.filter((k) => !k.includes(".")), "auth", "nats", "nope"), fc.oneof(yamlSnippet, scalar.map((s) => jsonText(s)))), { minLength: 1, maxLength: 5 })
    .chain((lines) => fc.constantFrom(".yaml", ".yml", "").map((ext) => ({ text: lines.map(([k, v]) => `${k}: ${v}`).join("\n"), ext }))),
  fc.tuple(mutated(fc.constantFrom(EXAMPLE_YAML, NATS_YAML).map((t) => Buffer.from(t))), fc.constantFrom(".yaml", ".yml", "")).map(([b, ext]) => ({ text: b.toString("utf8"), ext })),
  fc.tuple(mutated(fc.constant(Buffer.from(EXAMPLE_JSON))), fc.constantFrom(".json", "")).map(([b, ext]) => ({ text: b.toString("utf8"), ext })),
  fc.tuple(fc.string({ maxLength: 200, unit: "binary" }), fc.constantFrom(".json", ".yaml", "")).map(([text, ext]) => ({ text, ext })),
);

const text = fc.oneof(scalar.map((s) => (typeof s === "string" ? s : jsonText(s))), fc.string({ maxLength: 30 }));
const env = fc.dictionary(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...ENV_NAMES) }, { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 12 }), LINE_BREAKS).map((s) => `NATSEDGE_${s}`) }), text, { maxKeys: 5 });
const flags = fc
  .array(
    fc.oneof(
      fc.tuple(fc.constantFrom(...FLAGS), text).map(([f, v]) => [f, v]),
      fc.tuple(fc.constantFrom(...FLAGS), text).map(([f, v]) => [`${f}=${v}`]),
      fc.constantFrom(["--"], ["-x"], ["--nope", "1"], ["--port"], ["--host", "--port"], ["-h"]).map((a) => [...a]),
      fc.oneof(fc.string({ maxLength: 12 }), LINE_BREAKS, LINE_BREAKS.map((s) => `--${s}`)).map((s) => [s]),
    ),
    { maxLength: 4 },
  )
  .map((parts) => parts.flat());

let files = 0;

/** Calls loadConfig; fails on anything but a result or a non-empty one-line ConfigError. */
function check(argv: string[], environment: Record<string, string>): void {
  try {
    loadConfig(argv, environment);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw new Error(`loadConfig threw ${String(err)} for ${JSON.stringify({ argv, environment }).slice(0, 500)}`, { cause: err });
    expect(err.message.length).toBeGreaterThan(0);
    expect(err.message, "a ConfigError message is one line").not.toMatch(/[\r\n\u2028\u2029]/);
  }
}

describe("loadConfig under random input", () => {
  it("random and mutated config files, with random variables and flags: a config or a one-line ConfigError", () => {
    fc.assert(
      fc.property(configFile, env, flags, fc.boolean(), (file, environment, argv, byEnv) => {
        // A file name may hold a line break too, and error messages name the file.
        const path = join(dir, `c${files++}${files % 10 === 0 ? "\n" : ""}${file.ext}`);
        writeFileSync(path, file.text);
        if (byEnv) check(argv, { ...environment, NATSEDGE_CONFIG: path });
        else check(["--config", path, ...argv], environment);
        rmSync(path, { force: true });
      }),
      FUZZ,
    );
  });

  it("random variables and flags without a file: a config or a one-line ConfigError", () => {
    fc.assert(
      fc.property(env, flags, (environment, argv) => check(argv, environment)),
      FUZZ,
    );
  });

  it("the documented examples load as they are", () => {
    for (const [text, ext] of [[EXAMPLE_YAML, ".yaml"], [EXAMPLE_JSON, ".json"]] as const) {
      const path = join(dir, `example${ext}`);
      writeFileSync(path, text);
      expect(loadConfig(["--config", path], {})).toHaveProperty("config");
    }
  });
});
