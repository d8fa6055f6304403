/**
 * Three gateway replicas over a three-node NATS cluster (streams with 3 replicas): fan-out,
 * backend publishes straight into NATS, presence / history / disconnect across replicas, the
 * NATS request/reply API, one broker subscription per channel, idempotent publish and per-channel
 * ordering under concurrent publishers.
 */
import { Packr, Unpackr } from "msgpackr";
import { connect, headers as natsHeaders, RequestStrategy, type Msg, type NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type ClientOptions, type Frame } from "../helpers/client.js";
import type { GatewayProcess } from "../helpers/gateway.js";
import { startNats, type NatsCluster } from "../helpers/nats.js";
import {
  API_KEY,
  gatewayYaml,
  metric,
  pubsIn,
  sign,
  startReplicas,
  strictlyIncreasing,
  waitForPub,
  waitForPush,
  waitUntil,
  within,
} from "./util.js";

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

let nats: NatsCluster | undefined;
const gws: GatewayProcess[] = [];
let backend: NatsConnection | undefined;
const open: TestClient[] = [];

function gw(i: 1 | 2 | 3): GatewayProcess {
  return gws[i - 1] as GatewayProcess;
}

async function client(g: GatewayProcess, user?: string, opts?: ClientOptions & { info?: unknown }): Promise<TestClient> {
  const token = user === undefined ? undefined : await sign(user, opts?.info);
  const c = await TestClient.connect(g.wsUrl, token, opts);
  open.push(c);
  return c;
}

/** The `ok` of the client's connect reply (TestClient.connect sends it with id 1). */
function hello(c: TestClient): { client: string; user: string; node: string } {
  return (c.replies.get(1) as Frame).ok as { client: string; user: string; node: string };
}

async function subscribe(c: TestClient, ch: string): Promise<Record<string, unknown>> {
  const r = await c.request("subscribe", { ch });
  expect(r.error, JSON.stringify(r)).toBeUndefined();
  return r.ok as Record<string, unknown>;
}

function dataOf(c: TestClient, ch: string): unknown[] {
  return pubsIn(c, ch).map((p) => p.data);
}

function jsonRequest(subject: string, body: unknown): Promise<Msg> {
  return (backend as NatsConnection).request(subject, Buffer.from(JSON.stringify(body)), { timeout: 10_000 });
}

function msgpackRequest(subject: string, body: unknown): Promise<Msg> {
  const h = natsHeaders();
  h.set("Content-Type", "application/msgpack");
  return (backend as NatsConnection).request(subject, packr.pack(body), { timeout: 10_000, headers: h });
}

function jsonReply(m: Msg): Record<string, unknown> {
  return JSON.parse(Buffer.from(m.data).toString("utf8")) as Record<string, unknown>;
}

beforeAll(async () => {
  nats = await startNats(3);
  await startReplicas(3, nats.servers, gatewayYaml({ replicas: 3 }), gws);
  backend = await connect({ servers: nats.servers });
}, 120_000);

afterEach(() => {
  for (const c of open.splice(0)) c.terminate();
});

afterAll(async () => {
  for (const c of open.splice(0)) c.terminate();
  await backend?.close().catch(() => undefined);
  await Promise.allSettled(gws.map((g) => g.stop()));
  await nats?.stop();
}, 60_000);

describe("three replicas over a three-node NATS cluster", () => {
  it("created every stream with 3 replicas", async () => {
    const jsm = await (backend as NatsConnection).jetstreamManager();
    const names: string[] = [];
    for await (const s of jsm.streams.list()) {
      names.push(s.config.name);
      expect(s.config.num_replicas, s.config.name).toBe(3);
      expect(s.cluster?.replicas ?? [], s.config.name).toHaveLength(2);
    }
    expect(names.sort()).toEqual(["natsedge_idem", "natsedge_nodes", "natsedge_ns_chat", "natsedge_presence", "natsedge_revoked", "natsedge_ucount"]);
  });

  it("fans out client and backend publications across replicas and drops invalid payloads", async () => {
    const ch = "chat.cross";
    const sub = await client(gw(1));
    const subMp = await client(gw(1), undefined, { format: "msgpack" });
    const pub = await client(gw(3), "pat");
    await subscribe(sub, ch);
    await subscribe(subMp, ch);

    // A WebSocket client on replica 3.
    const r = await pub.request("publish", { ch, data: { src: "ws-r3" } });
    const offset = (r.ok as { offset: number }).offset;
    expect(offset).toBeGreaterThan(0);
    const p1 = await waitForPub(sub, ch, (p) => p.offset === offset, "pub from replica 3");
    expect(p1).toMatchObject({ data: { src: "ws-r3" }, info: { user: "pat", client: hello(pub).client } });

    // A backend with a plain NATS client: JSON body, then MessagePack body.
    const nc = backend as NatsConnection;
    nc.publish(`natsedge.ch.${ch}`, Buffer.from(JSON.stringify({ src: "backend-json", list: [1, 2, 3] })));
    const mh = natsHeaders();
    mh.set("Content-Type", "application/msgpack");
    nc.publish(`natsedge.ch.${ch}`, packr.pack({ src: "backend-msgpack", nested: { ok: true } }), { headers: mh });
    const pj = await waitForPub(sub, ch, (p) => (p.data as { src?: string }).src === "backend-json", "backend JSON pub");
    expect(pj.info).toBeUndefined();
    expect(pj.data).toEqual({ src: "backend-json", list: [1, 2, 3] });
    const pm = await waitForPub(subMp, ch, (p) => (p.data as { src?: string }).src === "backend-msgpack", "backend msgpack pub (msgpack client)");
    expect(pm.data).toEqual({ src: "backend-msgpack", nested: { ok: true } });
    await waitForPub(sub, ch, (p) => (p.data as { src?: string }).src === "backend-msgpack", "backend msgpack pub (JSON client)");

    // An invalid JSON body is stored by the stream but dropped by every gateway, and counted.
    const invalidBefore = await metric(gw(1), "natsedge_invalid_payloads_total");
    nc.publish(`natsedge.ch.${ch}`, Buffer.from("{not json"));
    nc.publish(`natsedge.ch.${ch}`, Buffer.from(JSON.stringify({ src: "after-invalid" })));
    await waitForPub(sub, ch, (p) => (p.data as { src?: string }).src === "after-invalid", "marker after the invalid body");
    await waitForPub(subMp, ch, (p) => (p.data as { src?: string }).src === "after-invalid", "marker after the invalid body (msgpack)");
    expect(await metric(gw(1), "natsedge_invalid_payloads_total")).toBe(invalidBefore + 1);
    const expected = [
      { src: "ws-r3" },
      { src: "backend-json", list: [1, 2, 3] },
      { src: "backend-msgpack", nested: { ok: true } },
      { src: "after-invalid" },
    ];
    expect(dataOf(sub, ch)).toEqual(expected);
    expect(dataOf(subMp, ch)).toEqual(expected);
    expect(strictlyIncreasing(pubsIn(sub, ch).map((p) => p.offset as number))).toBe(true);

    // The same for a channel without history (core NATS subject, no stream in between). The
    // subscription's interest reaches the other cluster nodes asynchronously (route gossip), so
    // the backend first publishes warm-up messages until one arrives.
    const lch = "live.cross";
    await subscribe(sub, lch);
    let warm = 0;
    await waitUntil(() => {
      if (pubsIn(sub, lch).length > 0) return true;
      nc.publish(`natsedge.ch.${lch}`, Buffer.from(JSON.stringify({ warm: ++warm })));
      return undefined;
    }, "a warm-up message on the live channel", 10_000, 100);
    await waitForPub(sub, lch, (p) => (p.data as { warm?: number }).warm === warm, "the last warm-up message");
    const liveBefore = await metric(gw(1), "natsedge_invalid_payloads_total");
    nc.publish(`natsedge.ch.${lch}`, Buffer.from("]]]"));
    nc.publish(`natsedge.ch.${lch}`, Buffer.from(JSON.stringify({ src: "live-after-invalid" })));
    await waitForPub(sub, lch, (p) => (p.data as { src?: string }).src === "live-after-invalid", "live marker");
    expect(await metric(gw(1), "natsedge_invalid_payloads_total")).toBe(liveBefore + 1);
    expect(dataOf(sub, lch).filter((d) => (d as { warm?: number }).warm === undefined)).toEqual([{ src: "live-after-invalid" }]);
  });

  it("answers presence, presence_stats and history identically on every replica (ops and HTTP API)", async () => {
    const ch = "chat.agree";
    const members = [
      await client(gw(1), "alice"),
      await client(gw(2), "bob"),
      await client(gw(3), "carol", { info: { name: "Carol" } }),
      await client(gw(3)),
    ];
    for (const m of members) await subscribe(m, ch);
    for (let i = 1; i <= 3; i++) {
      const r = await api(gw(2).url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { i } } });
      expect(r.status).toBe(200);
    }
    const expectedClients = {
      [hello(members[0] as TestClient).client]: { user: "alice" },
      [hello(members[1] as TestClient).client]: { user: "bob" },
      [hello(members[2] as TestClient).client]: { user: "carol", info: { name: "Carol" } },
      [hello(members[3] as TestClient).client]: { user: "" },
    };
    // Presence entries are written just after each subscribe reply: wait until all four are in.
    await waitUntil(async () => {
      const r = await api(gw(1).url, "GET", `/api/presence_stats?channel=${ch}`, { key: API_KEY });
      return r.body.clients === 4 ? true : undefined;
    }, "4 clients in presence");

    const answers: Record<string, unknown[]> = { presence: [], stats: [], history: [] };
    for (const g of gws) {
      const reader = await client(g);
      const pr = await reader.request("presence", { ch });
      const st = await reader.request("presence_stats", { ch });
      const hi = await reader.request("history", { ch });
      answers.presence?.push(pr.ok, (await api(g.url, "GET", `/api/presence?channel=${ch}`, { key: API_KEY })).body);
      answers.stats?.push(st.ok, (await api(g.url, "GET", `/api/presence_stats?channel=${ch}`, { key: API_KEY })).body);
      answers.history?.push(hi.ok, (await api(g.url, "GET", `/api/history?channel=${ch}`, { key: API_KEY })).body);
    }
    for (const a of answers.presence ?? []) expect(a).toEqual({ clients: expectedClients });
    for (const a of answers.stats ?? []) expect(a).toEqual({ clients: 4, users: 3 });
    const first = answers.history?.[0] as { offset: number; epoch: string; pubs: Array<{ data: unknown; offset: number }> };
    expect(first.pubs.map((p) => p.data)).toEqual([{ i: 1 }, { i: 2 }, { i: 3 }]);
    expect(first.offset).toBe(first.pubs[2]?.offset);
    for (const a of answers.history ?? []) expect(a).toEqual(first);
  });

  it("POST /api/disconnect on replica 2 closes the user's connections on every replica with 4003", async () => {
    const dave = [await client(gw(1), "dave"), await client(gw(2), "dave"), await client(gw(3), "dave")];
    const erin = await client(gw(1), "erin");
    const r = await api(gw(2).url, "POST", "/api/disconnect", { key: API_KEY, body: { user: "dave" } });
    expect(r).toEqual({ status: 200, body: {} });
    for (const c of dave) {
      const closed = await within(c.closed, 10_000, "the close");
      expect(closed.code).toBe(4003);
      expect(c.pushes.find((p) => p.push === "disconnect")).toMatchObject({ code: 4003, reconnect: false });
    }
    expect((await erin.request("ping")).ok).toEqual({});
  });

  it("pushes join and leave across replicas", async () => {
    const ch = "chat.joinleave";
    const obs1 = await client(gw(1));
    const obs2 = await client(gw(2), undefined, { format: "msgpack" });
    await subscribe(obs1, ch);
    await subscribe(obs2, ch);
    const frank = await client(gw(3), "frank", { info: { team: "blue" } });
    await subscribe(frank, ch);
    const frankId = hello(frank).client;
    const isFrank = (kind: string) => (p: Frame) =>
      p.push === kind && p.ch === ch && (p.info as { client?: string }).client === frankId;
    for (const o of [obs1, obs2]) {
      const j = await waitForPush(o, isFrank("join"), "frank's join");
      expect(j.info).toEqual({ client: frankId, user: "frank", info: { team: "blue" } });
    }
    expect((await frank.request("unsubscribe", { ch })).ok).toEqual({});
    for (const o of [obs1, obs2]) await waitForPush(o, isFrank("leave"), "frank's leave after unsubscribe");

    // A connection that goes away (no unsubscribe) leaves too.
    const gina = await client(gw(2), "gina");
    await subscribe(gina, ch);
    const ginaId = hello(gina).client;
    await waitForPush(obs1, (p) => p.push === "join" && (p.info as { client?: string }).client === ginaId, "gina's join");
    gina.terminate();
    const leave = await waitForPush(obs1, (p) => p.push === "leave" && (p.info as { client?: string }).client === ginaId, "gina's leave");
    expect(leave).toMatchObject({ ch, info: { user: "gina" } });
  });

  it("serves the API over NATS request/reply with JSON and MessagePack bodies", async () => {
    const ch = "chat.natsapi";
    const sub = await client(gw(1));
    const sok = await subscribe(sub, ch);
    const hank = await client(gw(3), "hank");

    const pj = jsonReply(await jsonRequest("natsedge.api.publish", { channel: ch, data: { via: "nats-json" } }));
    expect(pj).toEqual({ offset: expect.any(Number), epoch: sok.epoch });
    const pmMsg = await msgpackRequest("natsedge.api.publish", { channel: ch, data: { via: "nats-msgpack", n: [1, 2] } });
    expect(pmMsg.headers?.get("Content-Type")).toBe("application/msgpack");
    const pm = unpackr.unpack(Buffer.from(pmMsg.data)) as { offset: number; epoch: string };
    expect(pm).toEqual({ offset: expect.any(Number), epoch: sok.epoch });
    expect(pm.offset).toBeGreaterThan(pj.offset as number);
    await waitForPub(sub, ch, (p) => p.offset === pm.offset, "msgpack API publication");
    expect(pubsIn(sub, ch).map((p) => [p.offset, p.data])).toEqual([
      [pj.offset, { via: "nats-json" }],
      [pm.offset, { via: "nats-msgpack", n: [1, 2] }],
    ]);

    // Presence: the subscriber shows up (its entry is written just after the subscribe reply).
    const subId = hello(sub).client;
    const presence = await waitUntil(async () => {
      const r = jsonReply(await jsonRequest("natsedge.api.presence", { channel: ch })) as { clients?: Record<string, unknown> };
      return r.clients && subId in r.clients ? r : undefined;
    }, "subscriber in NATS API presence");
    expect(presence).toEqual({ clients: { [subId]: { user: "" } } });
    const statsMp = unpackr.unpack(Buffer.from((await msgpackRequest("natsedge.api.presence_stats", { channel: ch })).data));
    expect(statsMp).toEqual({ clients: 1, users: 0 });

    // History in both encodings.
    const hj = jsonReply(await jsonRequest("natsedge.api.history", { channel: ch, limit: 10 }));
    expect(hj).toMatchObject({ offset: pm.offset, epoch: sok.epoch });
    expect((hj.pubs as Array<{ data: unknown }>).map((p) => p.data)).toEqual([{ via: "nats-json" }, { via: "nats-msgpack", n: [1, 2] }]);
    const hm = unpackr.unpack(Buffer.from((await msgpackRequest("natsedge.api.history", { channel: ch, limit: 1 })).data)) as {
      offset: number;
      pubs: Array<{ offset: number; data: unknown }>;
    };
    expect(hm.offset).toBe(pm.offset);
    expect(hm.pubs).toEqual([{ offset: pm.offset, data: { via: "nats-msgpack", n: [1, 2] } }]);

    // Disconnect reaches hank on replica 3 whichever replica answered the request.
    expect(jsonReply(await jsonRequest("natsedge.api.disconnect", { user: "hank" }))).toEqual({});
    const closed = await within(hank.closed, 10_000, "hank's close");
    expect(closed.code).toBe(4003);

    // Errors come back as {error}; an unknown op and a non-object body.
    expect(jsonReply(await jsonRequest("natsedge.api.nosuch", {}))).toMatchObject({ error: { code: 404 } });
    expect(jsonReply(await jsonRequest("natsedge.api.publish", [1, 2]))).toMatchObject({ error: { code: 400 } });
    const bad = await (backend as NatsConnection).request("natsedge.api.publish", Buffer.from("{nope"), { timeout: 10_000 });
    expect(jsonReply(bad)).toMatchObject({ error: { code: 400 } });

    // The replicas share one queue group: a request is answered exactly once.
    const replies: Msg[] = [];
    const answers = await (backend as NatsConnection).requestMany(
      "natsedge.api.presence_stats",
      Buffer.from(JSON.stringify({ channel: ch })),
      { strategy: RequestStrategy.Timer, maxWait: 1_500 },
    );
    for await (const m of answers) replies.push(m);
    expect(replies).toHaveLength(1);
  });

  it("holds one broker subscription per channel per replica (natsedge_channels)", async () => {
    const ch = "chat.gauge";
    // Clients of earlier tests were terminated; wait until every replica has let go of them.
    for (const g of gws) await waitUntil(async () => ((await metric(g, "natsedge_channels")) === 0 ? true : undefined), "no channels");
    const five: TestClient[] = [];
    for (let i = 0; i < 5; i++) five.push(await client(gw(2), i % 2 === 0 ? `u${i}` : undefined));
    await Promise.all(five.map((c) => subscribe(c, ch)));
    expect(await metric(gw(2), "natsedge_channels")).toBe(1);
    expect(await metric(gw(2), "natsedge_subscriptions")).toBe(5);
    expect(await metric(gw(1), "natsedge_channels")).toBe(0);
    expect(await metric(gw(3), "natsedge_channels")).toBe(0);
    // Still one subscription: every one of the five gets a publication once.
    const r = await api(gw(1).url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { g: 1 } } });
    for (const c of five) await waitForPub(c, ch, (p) => p.offset === r.body.offset, "gauge pub");
    for (const c of five) expect(pubsIn(c, ch)).toHaveLength(1);
    await Promise.all(five.map((c, i) => (i < 2 ? c.request("unsubscribe", { ch }) : Promise.resolve(c.close()))));
    await waitUntil(async () => ((await metric(gw(2), "natsedge_channels")) === 0 ? true : undefined), "channel released");
    expect(await metric(gw(2), "natsedge_subscriptions")).toBe(0);
  });

  it("stores and delivers an idempotent publish once, whichever replica it came through", async () => {
    const ch = "chat.idem";
    const sub = await client(gw(2));
    await subscribe(sub, ch);
    const c1 = await client(gw(1), "ivan");
    const c3 = await client(gw(3), "ivan");

    // One after the other through replicas 1 and 3, then again through the HTTP API on 2.
    const a1 = await c1.request("publish", { ch, data: { k: "A" }, idempotencyKey: "key-A" });
    const a3 = await c3.request("publish", { ch, data: { k: "A" }, idempotencyKey: "key-A" });
    const a2 = await api(gw(2).url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { k: "A" }, idempotencyKey: "key-A" } });
    const offA = (a1.ok as { offset: number }).offset;
    expect(a3.ok).toMatchObject({ offset: offA });
    expect(a2.body).toMatchObject({ offset: offA });
    // At the same moment through replicas 1 and 3.
    const [b1, b3] = await Promise.all([
      c1.request("publish", { ch, data: { k: "B" }, idempotencyKey: "key-B" }),
      c3.request("publish", { ch, data: { k: "B" }, idempotencyKey: "key-B" }),
    ]);
    expect((b1.ok as { offset: number }).offset).toBe((b3.ok as { offset: number }).offset);

    const m = await c3.request("publish", { ch, data: { k: "marker" } });
    await waitForPub(sub, ch, (p) => p.offset === (m.ok as { offset: number }).offset, "marker");
    expect(dataOf(sub, ch)).toEqual([{ k: "A" }, { k: "B" }, { k: "marker" }]);
    const h = await api(gw(3).url, "GET", `/api/history?channel=${ch}`, { key: API_KEY });
    expect((h.body.pubs as Array<{ data: unknown; offset: number }>).map((p) => [p.offset, p.data])).toEqual([
      [offA, { k: "A" }],
      [(b1.ok as { offset: number }).offset, { k: "B" }],
      [(m.ok as { offset: number }).offset, { k: "marker" }],
    ]);
  });

  it("keeps one per-channel order across replicas under concurrent publishers", async () => {
    const ch = "chat.order";
    const PER = 100;
    const subs = [await client(gw(1)), await client(gw(2)), await client(gw(3)), await client(gw(1), undefined, { format: "msgpack" })];
    for (const s of subs) await subscribe(s, ch);
    const pubs = [await client(gw(1), "p1"), await client(gw(2), "p2"), await client(gw(3), "p3")];
    const replies = await Promise.all(
      pubs.map((c, i) =>
        Promise.all(Array.from({ length: PER }, (_, k) => c.request("publish", { ch, data: { p: i + 1, n: k + 1 } }, 60_000))),
      ),
    );
    const replyOffsets = replies.map((rs) => rs.map((r) => (r.ok as { offset: number } | undefined)?.offset as number));
    for (const offs of replyOffsets) {
      expect(offs.every((o) => typeof o === "number")).toBe(true);
      // A connection's commands run in order, so its publications are stored in order.
      expect(strictlyIncreasing(offs)).toBe(true);
    }
    for (const s of subs) {
      await s.waitFor(() => (pubsIn(s, ch).length >= 3 * PER ? true : undefined), `${3 * PER} pubs`, 30_000);
    }
    const orders = subs.map((s) => pubsIn(s, ch).map((p) => p.offset as number));
    for (const s of subs) {
      const got = pubsIn(s, ch);
      expect(got).toHaveLength(3 * PER);
      for (let p = 1; p <= 3; p++) {
        const ns = got.filter((f) => (f.data as { p: number }).p === p).map((f) => (f.data as { n: number }).n);
        expect(ns).toEqual(Array.from({ length: PER }, (_, k) => k + 1));
      }
    }
    for (const o of orders) {
      expect(strictlyIncreasing(o)).toBe(true);
      expect(o).toEqual(orders[0]);
    }
    expect([...(orders[0] as number[])].sort((a, b) => a - b)).toEqual(replyOffsets.flat().sort((a, b) => a - b));
  }, 90_000);
});
