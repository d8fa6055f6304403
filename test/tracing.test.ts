/**
 * OpenTelemetry tracing end to end: two gateway processes on the shared nats-server
 * (127.0.0.1:4222, a prefix of this file's own) export to an OTLP/HTTP receiver this test runs
 * on 127.0.0.1. A client joins its own trace with `traceparent`; the publish on gateway A and the
 * fan-out on gateway B land in that trace, parented through the NATS `traceparent` header. A
 * gateway without tracing sends nothing.
 */
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { Signal } from "./helpers/signal.js";

const NATS_URL = "nats://127.0.0.1:4222";
const PREFIX = `tracetest_${randomBytes(4).toString("hex")}`;

interface ReceivedSpan {
  service: string;
  instance: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status?: { code?: number };
}

type OtlpAttr = { key: string; value: Record<string, unknown> };

/** A collector's OTLP/HTTP JSON traces endpoint: records every request and the spans in it. */
class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  /** Services named by each request, in arrival order. */
  readonly requests: string[][] = [];
  private readonly signal = new Signal();
  private constructor(private readonly server: Server, readonly url: string, readonly base: string) {}

  static async start(): Promise<OtlpReceiver> {
    // The server exists before the receiver that records what it takes.
    const self: { receiver?: OtlpReceiver } = {};
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (req.method !== "POST" || req.url !== "/v1/traces" || !String(req.headers["content-type"]).startsWith("application/json")) {
          res.writeHead(404).end();
          return;
        }
        self.receiver?.record(JSON.parse(Buffer.concat(chunks).toString("utf8")));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    self.receiver = new OtlpReceiver(server, `${base}/v1/traces`, base);
    return self.receiver;
  }

  private record(body: { resourceSpans: Array<{ resource: { attributes: OtlpAttr[] }; scopeSpans: Array<{ spans: Array<Record<string, unknown>> }> }> }): void {
    const services: string[] = [];
    for (const rs of body.resourceSpans) {
      const resource = attrs(rs.resource.attributes);
      const service = String(resource["service.name"]);
      services.push(service);
      for (const ss of rs.scopeSpans) {
        for (const s of ss.spans) {
          this.spans.push({
            ...(s as unknown as ReceivedSpan),
            service,
            instance: String(resource["service.instance.id"]),
            attributes: attrs(s.attributes as OtlpAttr[]),
          });
        }
      }
    }
    this.requests.push(services);
    this.signal.wake();
  }

  /** The first span of the trace (any trace: undefined) that `match` accepts, waiting for it to arrive. */
  span(traceId: string | undefined, match: (s: ReceivedSpan) => boolean, what: string): Promise<ReceivedSpan> {
    return this.signal.until(
      () => this.spans.find((s) => (traceId === undefined || s.traceId === traceId) && match(s)),
      what,
      15_000,
      () => `spans: ${JSON.stringify(this.spans.map((s) => [s.service, s.name, s.traceId, s.spanId, s.parentSpanId]))}`,
    );
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function attrs(list: OtlpAttr[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const { key, value } of list) out[key] = value.stringValue ?? value.boolValue ?? value.intValue ?? value.doubleValue;
  return out;
}

const traceId = (): string => randomBytes(16).toString("hex");
const spanId = (): string => randomBytes(8).toString("hex");

let receiver: OtlpReceiver;
let hookServer: Server;
let hookUrl: string;
/** The traceparent header of each hook call, in arrival order. */
const hookTraceparents: Array<string | undefined> = [];
let a: GatewayProcess;
let b: GatewayProcess;
let nc: NatsConnection;
/** The traceparent header of each NATS rpc hook call. */
const rpcTraceparents: Array<string | undefined> = [];
const open: TestClient[] = [];
const gateways: GatewayProcess[] = [];

function config(service: string, nats: boolean, tracing = true): string {
  return `
${tracing ? `tracing: { otlpUrl: "${receiver.url}", serviceName: ${service} }` : ""}
drainPeriod: 0s
${nats ? `nats: { servers: ["${NATS_URL}"], prefix: ${PREFIX}, storage: memory }
hooks: { rpc: nats }` : ""}
namespaces:
  chat: { clientPublish: true, anonymous: true, publishHook: "${hookUrl}" }
  news: { clientPublish: true, anonymous: true, history: { size: 10, ttl: 5m } }
`;
}

async function gateway(service: string, nats: boolean, tracing = true): Promise<GatewayProcess> {
  const g = await startGateway({ config: { yaml: config(service, nats, tracing) } });
  gateways.push(g);
  return g;
}

async function client(g: GatewayProcess, traceparent?: unknown): Promise<TestClient & { id: string }> {
  const c = new TestClient(g.wsUrl);
  open.push(c);
  await c.opened;
  const reply = await c.request("connect", traceparent === undefined ? {} : { traceparent });
  const ok = reply.ok as { client: string } | undefined;
  expect(ok).toBeDefined();
  return Object.assign(c, { id: ok!.client });
}

beforeAll(async () => {
  receiver = await OtlpReceiver.start();
  hookServer = createServer((req, res) => {
    hookTraceparents.push(req.headers.traceparent as string | undefined);
    req.resume();
    req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end('{"result":{}}'));
  });
  await new Promise<void>((resolve) => hookServer.listen(0, "127.0.0.1", resolve));
  hookUrl = `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/hook/publish`;
  nc = await natsConnect({ servers: NATS_URL });
  nc.subscribe(`${PREFIX}.hook.rpc`, {
    queue: "backends",
    callback: (err, msg) => {
      if (err) return;
      rpcTraceparents.push(msg.headers?.get("traceparent"));
      msg.respond(Buffer.from('{"result":{"data":"pong"}}'));
    },
  });
  await nc.flush();
  [a, b] = await Promise.all([gateway("gw-a", true), gateway("gw-b", true)]);
});

afterAll(async () => {
  for (const c of open) c.terminate();
  await Promise.all(gateways.map((g) => g.stop()));
  await receiver?.close();
  await new Promise<void>((resolve) => (hookServer ? hookServer.close(() => resolve()) : resolve()));
  if (!nc) return;
  const jsm = await nc.jetstreamManager();
  for (const s of await jsm.streams.list().next()) {
    if (s.config.name.startsWith(`${PREFIX}_`)) await jsm.streams.delete(s.config.name);
  }
  await nc.close();
});

describe("tracing across gateways", () => {
  for (const ch of ["chat.room", "news.today"]) {
    it(`joins the client's trace from connect to the other gateway's delivery (${ch})`, async () => {
      const trace = traceId();
      const parent = spanId();
      const traceparent = `00-${trace}-${parent}-01`;
      const subscriber = await client(b);
      expect((await subscriber.request("subscribe", { ch })).ok).toBeDefined();
      const publisher = await client(a, traceparent);
      expect((await publisher.request("subscribe", { ch, traceparent })).ok).toBeDefined();
      expect((await publisher.request("publish", { ch, data: { n: 1 }, traceparent })).ok).toBeDefined();
      await subscriber.waitFor(() => subscriber.pubs(ch)[0], "the publication on B");

      const byParent = (name: string, service: string) => (s: ReceivedSpan) => s.name === name && s.service === service;
      const connect = await receiver.span(trace, byParent("connect", "gw-a"), "connect span from A");
      expect(connect.parentSpanId).toBe(parent);
      expect(connect.attributes).toMatchObject({ "natsedge.transport": "websocket", "enduser.id": "" });
      const subscribe = await receiver.span(trace, byParent("subscribe", "gw-a"), "subscribe span from A");
      expect(subscribe.parentSpanId).toBe(parent);
      expect(subscribe.attributes["natsedge.channel"]).toBe(ch);
      const publish = await receiver.span(trace, byParent("publish", "gw-a"), "publish span from A");
      expect(publish.parentSpanId).toBe(parent);
      expect(publish.kind).toBe(4);
      expect(publish.attributes["natsedge.channel"]).toBe(ch);
      const deliver = await receiver.span(trace, byParent("deliver", "gw-b"), "deliver span from B");
      expect(deliver.parentSpanId).toBe(publish.spanId);
      expect(deliver.kind).toBe(5);
      expect(deliver.attributes).toMatchObject({ "natsedge.channel": ch, "natsedge.sent": "1" });
      // A delivers to its own subscriber (the publisher) in the same trace.
      const local = await receiver.span(trace, byParent("deliver", "gw-a"), "deliver span from A");
      expect(local.parentSpanId).toBe(publish.spanId);
      if (ch.startsWith("chat.")) {
        const hook = await receiver.span(trace, byParent("hook.publish", "gw-a"), "publish hook span from A");
        expect(hook.parentSpanId).toBe(publish.spanId);
        expect(hook.kind).toBe(3);
        expect(hook.attributes).toMatchObject({ "natsedge.hook.via": "http", "natsedge.hook.result": "ok" });
        // The backend is told the hook span, so its own spans can join the trace.
        expect(hookTraceparents).toContain(`00-${trace}-${hook.spanId}-01`);
      }
      expect(receiver.spans.filter((s) => s.traceId === trace).every((s) => s.status?.code !== 2)).toBe(true);
    });
  }

  it("puts a NATS hook call in the client's trace and tells the backend", async () => {
    const trace = traceId();
    const parent = spanId();
    const c = await client(a);
    expect(await c.request("rpc", { method: "ping", traceparent: `00-${trace}-${parent}-01` })).toMatchObject({ ok: { data: "pong" } });
    const hook = await receiver.span(trace, (s) => s.name === "hook.rpc", "rpc hook span");
    expect(hook.parentSpanId).toBe(parent);
    expect(hook.attributes).toMatchObject({ "natsedge.hook.via": "nats", "natsedge.hook.result": "ok" });
    expect(rpcTraceparents).toContain(`00-${trace}-${hook.spanId}-01`);
  });

  it("makes a backend's NATS publication with a traceparent the parent of every replica's delivery", async () => {
    const trace = traceId();
    const parent = spanId();
    const subscriber = await client(b);
    expect((await subscriber.request("subscribe", { ch: "chat.direct" })).ok).toBeDefined();
    const h = natsHeaders();
    h.set("traceparent", `00-${trace}-${parent}-01`);
    nc.publish(`${PREFIX}.ch.chat.direct`, Buffer.from('{"from":"backend"}'), { headers: h });
    await subscriber.waitFor(() => subscriber.pubs("chat.direct")[0], "the backend's publication");
    const deliver = await receiver.span(trace, (s) => s.name === "deliver" && s.service === "gw-b", "deliver span from B");
    expect(deliver.parentSpanId).toBe(parent);
  });

  it("traces long-poll and SSE connects", async () => {
    const trace = traceId();
    const parent = spanId();
    const traceparent = `00-${trace}-${parent}-01`;
    const res = await fetch(`${a.url}/lp/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ cmds: [{ id: 1, op: "connect", traceparent }, { id: 2, op: "publish", ch: "news.today", data: 3, traceparent }] }),
    });
    const replies = ((await res.json()) as { replies: Array<{ ok?: unknown }> }).replies;
    expect(replies.map((r) => r.ok !== undefined)).toEqual([true, true]);
    const connect = await receiver.span(trace, (s) => s.name === "connect", "long-poll connect span");
    expect(connect).toMatchObject({ parentSpanId: parent, attributes: { "natsedge.transport": "longpoll" } });
    const publish = await receiver.span(trace, (s) => s.name === "publish", "long-poll publish span");
    expect(publish).toMatchObject({ parentSpanId: parent, attributes: { "natsedge.transport": "longpoll" } });

    const stream = new AbortController();
    const sse = await fetch(`${b.url}/sse?ch=news.today`, { signal: stream.signal });
    expect(sse.status).toBe(200);
    try {
      const sseConnect = await receiver.span(undefined, (s) => s.name === "connect" && s.service === "gw-b" && s.attributes["natsedge.transport"] === "sse", "SSE connect span");
      expect(sseConnect.parentSpanId).toBeUndefined();
    } finally {
      stream.abort();
      await sse.body?.cancel().catch(() => undefined);
    }
  });

  it("starts a trace of its own for a command without a valid traceparent", async () => {
    const c = await client(a, "00-not-a-trace-01");
    const reply = await c.request("publish", { ch: "news.today", data: 2, traceparent: { evil: true } });
    expect(reply.ok).toBeDefined();
    const connect = await receiver.span(undefined, (s) => s.name === "connect" && s.attributes["natsedge.client"] === c.id, "connect span");
    const publish = await receiver.span(undefined, (s) => s.name === "publish" && s.attributes["natsedge.client"] === c.id, "publish span");
    expect(connect.parentSpanId).toBeUndefined();
    expect(publish.parentSpanId).toBeUndefined();
    expect(publish.traceId).not.toBe(connect.traceId);
  });
});

describe("tracing off", () => {
  it("sends nothing: only the traced gateway started after it reaches the receiver", async () => {
    const seen = receiver.requests.length;
    const off = await gateway("gw-off", false, false);
    const trace = traceId();
    const c = await client(off, `00-${trace}-${spanId()}-01`);
    await c.request("subscribe", { ch: "news.x", traceparent: `00-${trace}-${spanId()}-01` });
    expect((await c.request("publish", { ch: "news.x", data: 1, traceparent: `00-${trace}-${spanId()}-01` })).ok).toBeDefined();
    await c.waitFor(() => c.pubs("news.x")[0], "own publication");
    c.terminate();
    // Stopped: whatever it had queued would have gone out on the way down.
    await off.stop();
    const on = await gateway("gw-later", false);
    const later = traceId();
    await client(on, `00-${later}-${spanId()}-01`);
    await receiver.span(later, (s) => s.name === "connect", "the later gateway's connect span");
    const since = receiver.requests.slice(seen).flat();
    expect(since.length).toBeGreaterThan(0);
    expect(since.every((service) => service === "gw-later" || service === "gw-a" || service === "gw-b")).toBe(true);
    expect(receiver.spans.some((s) => s.traceId === trace)).toBe(false);
  });
});
