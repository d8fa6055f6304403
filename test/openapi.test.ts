/**
 * docs/openapi.yaml against a running gateway: every operation in the spec is served and answers
 * what its response schemas say, and every route the gateway serves under /api is in the spec.
 */
import { readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ServerOperations } from "../src/api/operations.js";
import type { Cluster } from "../src/cluster/cluster.js";
import type { Config } from "../src/config/types.js";
import type { Hub } from "../src/hub/hub.js";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { signToken } from "./helpers/tokens.js";

const KEY = "openapi-test-key-0123456789abcdef";
const SECRET = "openapi-test-secret-at-least-32-bytes!!";

interface Parameter {
  name?: string;
  in?: string;
  required?: boolean;
  example?: unknown;
  $ref?: string;
}
interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: { content: { "application/json": { example: unknown } } };
  responses: Record<string, unknown>;
}
interface Spec {
  openapi: string;
  paths: Record<string, Partial<Record<"get" | "post", Operation>>>;
  components: { parameters: Record<string, Parameter> };
}

const spec = parse(readFileSync(new URL("../docs/openapi.yaml", import.meta.url), "utf8")) as Spec;
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addSchema(spec as object, "openapi");

/** The JSON pointer escape of one path segment. */
const esc = (s: string): string => s.replace(/~/g, "~0").replace(/\//g, "~1");

/** Validates `body` against the spec's response schema of `status` (following a $ref'd response). */
function check(path: string, method: string, status: number, body: unknown): void {
  const op = spec.paths[path]?.[method as "get"] as Operation;
  const declared = op.responses[String(status)] as { $ref?: string } | undefined;
  expect(declared, `${method.toUpperCase()} ${path} declares ${status}`).toBeDefined();
  const base = declared?.$ref
    ? `openapi${declared.$ref}`
    : `openapi#/paths/${esc(path)}/${method}/responses/${status}`;
  const validate = ajv.getSchema(`${base}/content/application~1json/schema`);
  expect(validate, `schema of ${method} ${path} ${status}`).toBeDefined();
  const valid = validate?.(body);
  expect(valid, `${method.toUpperCase()} ${path} ${status}: ${JSON.stringify(body)} ${ajv.errorsText(validate?.errors)}`).toBe(true);
}

const errorShape = ajv.getSchema("openapi#/components/schemas/Error") as ReturnType<typeof ajv.compile>;

function parameters(op: Operation): Parameter[] {
  return (op.parameters ?? []).map((p) => (p.$ref ? (spec.components.parameters[p.$ref.split("/").pop() as string] as Parameter) : p));
}

const operations = Object.entries(spec.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([method, op]) => ({ path, method: method as "get" | "post", op: op as Operation })),
);

let gw: GatewayProcess;
let alice: TestClient;

beforeAll(async () => {
  gw = await startGateway({
    config: {
      yaml:
        `apiKey: ${KEY}\ntrustedProxies: ["127.0.0.1"]\nauth:\n  hmacSecret: "${SECRET}"\n` +
        `namespaces:\n  chat: { presence: true, history: { size: 10, ttl: 5m }, anonymous: true }\n  news: { anonymous: true }\n`,
    },
  });
  // Something to report: a user in a channel with presence and history.
  alice = await TestClient.connect(gw.wsUrl, await signToken({ sub: "alice", info: { name: "Alice" } }, SECRET));
  expect((await alice.request("subscribe", { ch: "chat.room1" })).ok).toBeDefined();
  await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.room1", data: { text: "first" } } });
});

afterAll(async () => {
  alice?.terminate();
  await gw?.stop();
});

describe("docs/openapi.yaml", () => {
  it("is OpenAPI 3.1 and its schemas compile", () => {
    expect(spec.openapi).toMatch(/^3\.1\./);
    for (const { path, method, op } of operations) {
      for (const status of Object.keys(op.responses)) {
        const r = op.responses[status] as { $ref?: string };
        const base = r.$ref ? `openapi${r.$ref}` : `openapi#/paths/${esc(path)}/${method}/responses/${status}`;
        expect(ajv.getSchema(`${base}/content/application~1json/schema`), `${method} ${path} ${status}`).toBeDefined();
      }
    }
  });

  it.each(operations)("$method $path: the example is served and answers the 200 schema", async ({ path, method, op }) => {
    let target = path;
    if (method === "get") {
      const query = new URLSearchParams();
      for (const p of parameters(op)) if (p.example !== undefined) query.set(p.name as string, String(p.example));
      if (query.size > 0) target += `?${query}`;
    }
    const body = op.requestBody?.content["application/json"].example;
    const res = await api(gw.url, method === "get" ? "GET" : "POST", target, { key: KEY, body });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    check(path, method, 200, res.body);
    // Without the key: 401 in the documented error shape. Wrong keys are throttled per address,
    // so each comes from its own (X-Forwarded-For from the trusted proxy 127.0.0.1).
    const from = { "x-forwarded-for": `192.0.2.${operations.findIndex((o) => o.op === op) + 1}` };
    const refused = await api(gw.url, method === "get" ? "GET" : "POST", target, { body, headers: from });
    expect(refused.status).toBe(401);
    check(path, method, 401, refused.body);
    // Without its required parameters: 400, where it has any.
    const required = method === "post" || parameters(op).some((p) => p.required);
    if (required) {
      const bad = await api(gw.url, method === "get" ? "GET" : "POST", path, { key: KEY, body: method === "post" ? {} : undefined });
      expect(bad.status, `${path} without parameters`).toBe(400);
      check(path, method, 400, bad.body);
    }
  });

  it("answers with content: the examples' results are not trivially empty", async () => {
    // The unsubscribe example ended alice's subscription; the server makes it again.
    await api(gw.url, "POST", "/api/subscribe", { key: KEY, body: { user: "alice", channel: "chat.room1" } });
    await alice.nextPush((p) => p.push === "sub", "subscribe push");
    const batch = await api(gw.url, "POST", "/api/batch", {
      key: KEY,
      body: spec.paths["/api/batch"]?.post?.requestBody?.content["application/json"].example,
    });
    const results = batch.body.results as Frame[];
    expect(results[1]).toMatchObject({ pubs: [{ data: 1 }] });
    expect(results[2]).toEqual({ clients: 1, users: 1 });
    expect(results[3]).toMatchObject({ error: { code: 400 } });
    const channels = await api(gw.url, "GET", "/api/channels?pattern=chat.>", { key: KEY });
    expect(channels.body).toEqual({ channels: { "chat.room1": { subscribers: 1 } } });
    check("/api/channels", "get", 200, channels.body);
    const presence = await api(gw.url, "GET", "/api/presence?channel=chat.room1", { key: KEY });
    expect(Object.values(presence.body.clients as Frame)).toEqual([{ user: "alice", info: { name: "Alice" } }]);
  });

  it("lists every route the gateway serves under /api, and the gateway serves every path in it", async () => {
    // The route table both adapters serve, read from the code (the constructor only stores).
    const routes = new ServerOperations({} as Config, {} as Hub, {} as Cluster).routes();
    const served = routes.map((r) => `${r.method} /api/${r.name}`).sort();
    const documented = operations.map(({ path, method }) => `${method.toUpperCase()} ${path}`).sort();
    expect(documented).toEqual(served);
    // The other method, and paths beside them, are not served.
    for (const { path, method } of operations) {
      const other = await api(gw.url, method === "get" ? "POST" : "GET", path, { key: KEY, body: method === "get" ? {} : undefined });
      expect(other.status, `${path} with the other method`).toBe(404);
      expect(errorShape(other.body), ajv.errorsText(errorShape.errors)).toBe(true);
    }
    for (const p of ["/api/", "/api/publish/x", "/api/Publish", "/api/__proto__", "/api/toString"]) {
      expect((await api(gw.url, "GET", p, { key: KEY })).status, p).toBe(404);
      expect((await api(gw.url, "POST", p, { key: KEY, body: {} })).status, p).toBe(404);
    }
  });
});
