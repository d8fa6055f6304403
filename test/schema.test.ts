import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import { afterAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { ConfigError, loadConfig, SCHEMA_FILE, schemaText } from "../src/config/load.js";

const ROOT = new URL("..", import.meta.url).pathname;
const read = (file: string): string => readFileSync(join(ROOT, file), "utf8");

const schema: unknown = JSON.parse(schemaText());
const validate = new Ajv2020({ allErrors: true }).compile(schema as object);
const errors = (): string => JSON.stringify(validate.errors);

/** The fenced yaml and json blocks of a Markdown file, with the line each starts on. */
function fencedBlocks(file: string): { at: string; text: string; language: string }[] {
  const blocks: { at: string; text: string; language: string }[] = [];
  const lines = read(file).split("\n");
  lines.forEach((line, i) => {
    const language = /^```(yaml|yml|json)$/.exec(line)?.[1];
    if (language === undefined) return;
    const end = lines.indexOf("```", i + 1);
    blocks.push({ at: `${file}:${i + 1}`, text: lines.slice(i + 1, end).join("\n"), language });
  });
  return blocks;
}

/** The natsedge configs and templates in deploy/ (natsedge.yml there is Grafana's); placeholders get sample values. */
function deployConfigs(dir = "deploy"): { at: string; text: string }[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) return deployConfigs(path);
    if (!/^natsedge\.yaml(\.tmpl)?$/.test(entry.name)) return [];
    const samples: Record<string, string> = { DRAIN_PERIOD: "5s", NATS_SERVERS: "nats://127.0.0.1:4222", STREAM_REPLICAS: "3" };
    return [{ at: path, text: read(path).replace(/@([A-Z_]+)@/g, (_, name: string) => samples[name] ?? `@${name}@`) }];
  });
}

describe("the config file schema", () => {
  const dir = mkdtempSync(join(tmpdir(), "natsedge-schema-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`is committed as ${SCHEMA_FILE} exactly as the settings table generates it (npm run schema)`, () => {
    expect(read(SCHEMA_FILE)).toBe(schemaText());
  });

  it("describes every setting's default as a value it accepts", () => {
    const defaults: [string, unknown][] = [];
    const walk = (properties: Record<string, { default?: unknown; anyOf?: { properties?: object }[] }>, path: string): void => {
      for (const [name, property] of Object.entries(properties)) {
        if ("default" in property) defaults.push([`${path}${name}`, property.default]);
        for (const choice of property.anyOf ?? []) if (choice.properties) walk(choice.properties as typeof properties, `${path}${name}.`);
      }
    };
    walk((schema as { properties: Parameters<typeof walk>[0] }).properties, "");
    expect(defaults.length).toBeGreaterThan(20);
    for (const [key, value] of defaults) {
      const file = key.split(".").reduceRight<unknown>((inner, name) => ({ [name]: inner }), value);
      expect(validate(file), `${key}: ${JSON.stringify(value)} ${errors()}`).toBe(true);
    }
  });

  const docs = ["README.md", ...readdirSync(join(ROOT, "docs")).filter((name) => name.endsWith(".md")).map((name) => `docs/${name}`)];
  const examples = docs.flatMap(fencedBlocks);

  it("accepts every yaml and json example in README.md and docs/", () => {
    // README has one, configuration.md three, security.md two: guard against finding none.
    expect(examples.length).toBeGreaterThanOrEqual(6);
    for (const { at, text, language } of examples) {
      const data: unknown = language === "json" ? JSON.parse(text) : parseYaml(text);
      expect(validate(data), `${at}: ${errors()}`).toBe(true);
    }
  });

  it("accepts every natsedge config in deploy/", () => {
    const configs = deployConfigs();
    expect(configs.map(({ at }) => at)).toEqual(expect.arrayContaining([
      "deploy/compose/natsedge.yaml",
      "deploy/k8s/natsedge.yaml",
      "deploy/local/natsedge.yaml.tmpl",
    ]));
    for (const { at, text } of configs) expect(validate(parseYaml(text)), `${at}: ${errors()}`).toBe(true);
  });

  it("accepts what the loader accepts in a file's own forms: strings of digits, null values, the $schema key", () => {
    const file = {
      $schema: `../${SCHEMA_FILE}`,
      port: "8000",
      apiKey: null,
      pingInterval: 30,
      maxFrameSize: "1MiB",
      demo: "true",
      allowedOrigins: "https://a.example.com, https://b.example.com",
      trustedProxies: ["10.0.0.0/8", "::1"],
      nats: { servers: "localhost:4222", tls: { caFile: "ca.pem" } },
      namespaces: { chat: null, news: { presence: true, joinLeave: true, history: { size: "10", ttl: "500ms" } } },
    };
    expect(validate(file), errors()).toBe(true);
    expect(validate(null), errors()).toBe(true);
    expect(validate({ nats: { servers: ["nats://a:4222"], tls: true } }), errors()).toBe(true);
    const named = join(dir, "named.json");
    writeFileSync(named, JSON.stringify({ $schema: file.$schema, port: 1 }));
    const loaded = loadConfig(["--config", named], {});
    expect("config" in loaded && loaded.config.port).toBe(1);
  });

  // Each is wrong for the loader too, so the schema and the loader are seen to agree on it.
  const wrong: [string, unknown][] = [
    ["an unknown key", { prot: 8000 }],
    ["a dotted key at the top level", { "auth.hmacSecret": "0123456789abcdef-secret-01234567" }],
    ["an unknown key in a group", { auth: { secret: "x" } }],
    ["a port out of range", { port: 70000 }],
    ["a log level that does not exist", { logLevel: "loud" }],
    ["a short secret", { apiKey: "short" }],
    ["a compound duration", { pingInterval: "1h30m" }],
    ["a size in bits", { maxFrameSize: "1Mb" }],
    ["a boolean as yes", { demo: "yes" }],
    ["credentials in a NATS URL", { nats: { servers: ["nats://user:pw@host:4222"] } }],
    ["an unknown key in nats.tls", { nats: { servers: ["host:4222"], tls: { ca: "x" } } }],
    ["a namespace name with a dot", { namespaces: { "a.b": {} } }],
    ["an unknown namespace option", { namespaces: { chat: { presense: true } } }],
    ["joinLeave without presence", { namespaces: { chat: { joinLeave: true } } }],
    ["history without ttl", { namespaces: { chat: { history: { size: 10 } } } }],
    ["a namespace flag as a string", { namespaces: { chat: { presence: "true" } } }],
    ["a list at the top level", [{ port: 1 }]],
  ];
  it.each(wrong.map(([what, data], i) => [what, data, i] as const))("refuses %s, as the loader does", (_, data, i) => {
    expect(validate(data)).toBe(false);
    const file = join(dir, `${i}.json`);
    writeFileSync(file, JSON.stringify(data));
    expect(() => loadConfig(["--config", file], {})).toThrow(ConfigError);
  });
});
