/**
 * The server API across two gateway processes on the shared nats-server (127.0.0.1:4222), each
 * test file run under its own subject prefix: server-side subscriptions reach a user's
 * connections on every replica, channels and info gather every gateway, and the NATS adapter
 * serves the same operations as HTTP.
 */
import { randomBytes } from "node:crypto";
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from "nats";
import { Packr } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { signToken } from "./helpers/tokens.js";

const NATS_URL = "nats://127.0.0.1:4222";
const PREFIX = `apitest_${randomBytes(4).toString("hex")}`;
const KEY = "api-cluster-key-0123456789abcdefgh";
const SECRET = "api-cluster-secret-at-least-32-bytes!!";
const CONFIG = `
apiKey: ${KEY}
presenceGrace: 0s
auth:
  hmacSecret: "${SECRET}"
nats:
  servers: ["${NATS_URL}"]
  prefix: ${PREFIX}
  storage: memory
  streamReplicas: 1
namespaces:
  chat: { history: { size: 100, ttl: 5m }, presence: true, anonymous: true }
  live: { anonymous: true }
`;
const packr = new Packr({ useRecords: false });

let a: GatewayProcess;
let b: GatewayProcess;
let nc: NatsConnection;
const open: TestClient[] = [];

async function client(gw: GatewayProcess, user?: string, format: "json" | "msgpack" = "json"): Promise<TestClient> {
  const c = await TestClient.connect(gw.wsUrl, user === undefined ? undefined : await signToken({ sub: user }, SECRET), { format });
  open.push(c);
  return c;
}

/** A server API request over NATS, JSON or MessagePack. */
async function natsApi(op: string, body: unknown, format: "json" | "msgpack" = "json"): Promise<Frame> {
  if (format === "json") {
    const msg = await nc.request(`${PREFIX}.api.${op}`, Buffer.from(JSON.stringify(body)), { timeout: 5_000 });
    return JSON.parse(Buffer.from(msg.data).toString("utf8")) as Frame;
  }
  const h = natsHeaders();
  h.set("Content-Type", "application/msgpack");
  const msg = await nc.request(`${PREFIX}.api.${op}`, packr.pack(body), { timeout: 5_000, headers: h });
  expect(msg.headers?.get("Content-Type")).toBe("application/msgpack");
  return packr.unpack(msg.data) as Frame;
}

beforeAll(async () => {
  [a, b] = await Promise.all([startGateway({ config: { yaml: CONFIG } }), startGateway({ config: { yaml: CONFIG } })]);
  nc = await natsConnect({ servers: NATS_URL });
});

afterAll(async () => {
  for (const c of open) c.terminate();
  await Promise.all([a, b].map((g) => g?.stop()));
  if (nc) {
    // The streams this file's gateways created on the shared server.
    const jsm = await nc.jetstreamManager();
    for (const s of await jsm.streams.list().next()) {
      if (s.config.name.startsWith(`${PREFIX}_`)) await jsm.streams.delete(s.config.name);
    }
    await nc.close();
  }
});

describe("server API across replicas", () => {
  it("subscribe and unsubscribe reach the user's connections on every replica, over HTTP and NATS", async () => {
    const onA = await client(a, "carol");
    const onB = await client(b, "carol", "msgpack");
    const other = await client(b, "dave");
    const res = await api(a.url, "POST", "/api/subscribe", { key: KEY, body: { user: "carol", channel: "chat.srv" } });
    expect(res).toEqual({ status: 200, body: {} });
    for (const c of [onA, onB]) {
      expect(await c.nextPush((p) => p.push === "sub", `${c.format} subscribe push`)).toEqual({
        push: "sub",
        ch: "chat.srv",
        offset: expect.any(Number),
        epoch: expect.any(String),
      });
    }
    const published = await api(b.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.srv", data: "live" } });
    for (const c of [onA, onB]) {
      expect(await c.nextPush((p) => p.push === "pub", "pub")).toEqual({ push: "pub", ch: "chat.srv", offset: published.body.offset, data: "live" });
    }
    expect(await natsApi("presence_stats", { channel: "chat.srv" })).toEqual({ clients: 2, users: 1 });

    expect(await natsApi("unsubscribe", { user: "carol", channel: "chat.srv" })).toEqual({});
    for (const c of [onA, onB]) {
      expect(await c.nextPush((p) => p.push === "unsub", "unsub push")).toEqual({ push: "unsub", ch: "chat.srv", code: 403, reason: "unsubscribed by server" });
    }
    // Over NATS the same checks answer in the body.
    expect(await natsApi("subscribe", { user: "", channel: "chat.srv" })).toEqual({ error: { code: 400, message: "user must be a string of 1 to 256 characters" } });
    expect(await natsApi("subscribe", { user: "carol", channel: "nope.x" }, "msgpack")).toMatchObject({ error: { code: 404 } });
    // A subscribe by NATS reaches both replicas too.
    expect(await natsApi("subscribe", { user: "carol", channel: "live.srv" }, "msgpack")).toEqual({});
    for (const c of [onA, onB]) expect(await c.nextPush((p) => p.push === "sub", "live subscribe push")).toEqual({ push: "sub", ch: "live.srv" });
    expect(other.pushes.filter((p) => p.push === "sub")).toEqual([]);
  });

  it("channels and info gather every gateway", async () => {
    const c1 = await client(a);
    const c2 = await client(b);
    for (const c of [c1, c2]) expect((await c.request("subscribe", { ch: "chat.gather1" })).ok).toBeDefined();
    expect((await c2.request("subscribe", { ch: "live.gather2" })).ok).toBeDefined();
    const http = await api(a.url, "GET", "/api/channels?pattern=chat.gather1", { key: KEY });
    expect(http).toEqual({ status: 200, body: { channels: { "chat.gather1": { subscribers: 2 } } } });
    const live = (await natsApi("channels", { pattern: "live.>" }, "msgpack")).channels as Frame;
    expect(live["live.gather2"]).toEqual({ subscribers: 1 });
    expect(Object.keys(live).every((ch) => ch.startsWith("live."))).toBe(true);
    const both = await natsApi("channels", { pattern: "*.*" });
    expect(both.channels).toMatchObject({ "chat.gather1": { subscribers: 2 }, "live.gather2": { subscribers: 1 } });
    expect(await natsApi("channels", { pattern: "*.*", limit: 1 })).toMatchObject({ truncated: true });
    expect(await natsApi("channels", { pattern: 5 })).toEqual({ error: { code: 400, message: "pattern must be a channel pattern (see Permissions)" } });
    expect(await natsApi("channels", { limit: 1001 })).toMatchObject({ error: { code: 400, message: "limit must be an integer from 1 to 1000" } });

    const info = await api(b.url, "GET", "/api/info", { key: KEY });
    const nodes = info.body.nodes as Frame[];
    expect(nodes).toHaveLength(2);
    expect(new Set(nodes.map((n) => n.node)).size).toBe(2);
    for (const n of nodes) {
      expect(n.connections).toBeGreaterThanOrEqual(1);
      expect(n.channels).toBeGreaterThanOrEqual(1);
    }
    expect(((await natsApi("info", {})).nodes as Frame[]).map((n) => n.node).sort()).toEqual(nodes.map((n) => n.node).sort());
  });

  it("broadcast and batch over NATS, JSON and MessagePack", async () => {
    const sub = await client(b);
    for (const ch of ["chat.bc1", "live.bc2"]) expect((await sub.request("subscribe", { ch })).ok).toBeDefined();
    const bc = await natsApi("broadcast", { channels: ["chat.bc1", "live.bc2", "nope.bc3"], data: { v: [1, 2] } }, "msgpack");
    expect(bc).toEqual({ results: [{ offset: expect.any(Number), epoch: expect.any(String) }, {}, { error: { code: 404, message: 'unknown namespace "nope"' } }] });
    for (const ch of ["chat.bc1", "live.bc2"]) expect(await sub.nextPush((p) => p.push === "pub" && p.ch === ch, ch)).toMatchObject({ data: { v: [1, 2] } });

    for (const format of ["json", "msgpack"] as const) {
      const batch = await natsApi(
        "batch",
        {
          commands: [
            { op: "publish", params: { channel: "chat.bt", data: format } },
            { op: "history", params: { channel: "chat.bt", limit: 1 } },
            { op: "presence", params: { channel: "live.bt" } },
            { op: "broadcast", params: { channels: ["chat.bt"], data: 1 } },
          ],
        },
        format,
      );
      const results = batch.results as Frame[];
      expect(results).toHaveLength(4);
      const offset = (results[0] as Frame).offset;
      expect(results[1]).toEqual({ offset, epoch: expect.any(String), pubs: [{ offset, data: format }] });
      expect(results[2]).toEqual({ error: { code: 400, message: "namespace live has no presence" } });
      expect(results[3]).toMatchObject({ error: { code: 400 } });
    }
    expect(await natsApi("batch", { commands: new Array(101).fill({ op: "publish" }) })).toEqual({
      error: { code: 400, message: "commands must be an array of 1 to 100 commands" },
    });
  });

  it("ignores control messages from NATS that are malformed or address every anonymous connection", async () => {
    const anon = await client(a);
    const named = await client(a, "erin");
    for (const bad of [
      { kind: "subscribe", user: "", ch: "live.ctl" },
      { kind: "subscribe", user: "erin", ch: 5 },
      { kind: "subscribe", user: "erin", ch: "live..x" },
      { kind: "unsubscribe", user: "erin", ch: "live.ctl" },
      { kind: "nope", user: "erin" },
    ]) {
      nc.publish(`${PREFIX}.ctl`, packr.pack(bad));
    }
    nc.publish(`${PREFIX}.ctl`, Buffer.from("not msgpack"));
    // Control messages arrive in order: once this one is seen, the ones before it were handled.
    nc.publish(`${PREFIX}.ctl`, packr.pack({ kind: "subscribe", user: "erin", ch: "live.ctl" }));
    expect(await named.nextPush((p) => p.push === "sub", "erin's subscribe")).toEqual({ push: "sub", ch: "live.ctl" });
    expect(named.pushes.filter((p) => p.push === "sub" || p.push === "unsub")).toEqual([]);
    expect((await anon.request("ping")).ok).toEqual({});
    expect(anon.pushes).toEqual([]);
  });

  it("info leaves out a gateway that has stopped", async () => {
    await b.stop();
    const info = await api(a.url, "GET", "/api/info", { key: KEY });
    expect((info.body.nodes as Frame[]).length).toBe(1);
  });
});
