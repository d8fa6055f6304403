/**
 * Property-based fuzzing of what reaches a gateway through NATS (NATS mode, private nats-server):
 * random bodies and Natsedge-* headers published straight to channel subjects, through JetStream
 * for a namespace with history and core NATS for one without, and random requests to the server
 * API subjects. Every push delivered to JSON and MessagePack subscribers must decode, API replies
 * must be results or documented errors, and history must still answer in both formats.
 */
import fc from "fast-check";
import { connect as natsConnect, headers as natsHeaders, type JetStreamClient, type MsgHdrs, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Frame } from "./helpers/client.js";
import {
  anyValue,
  canonical,
  channelArb,
  ERROR_CODES,
  expectServesNormalClient,
  expectWellFormed,
  FuzzSocket,
  jsonData,
  jsonText,
  msgpackOf,
  mutated,
  packr,
  unpackr,
} from "./helpers/fuzz.js";
import { rssKiB, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";

const CONFIG = `
sessionSecret: fuzz-nats-session-secret-0123456789abcd
commandRate: 0
connectRate: 0
maxConnectionsPerIp: 0
presenceGrace: 0s
namespaces:
  hist: { history: { size: 50, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }
  live: { clientPublish: true, anonymous: true }
`;
const CHANNELS = { hist: "hist.f", live: "live.f" } as const;
const MSGPACK = "application/msgpack";
const RSS_BOUND_KIB = 64 * 1024;
const API_OPS = ["publish", "disconnect", "presence", "presence_stats", "history"];

let nats: NatsCluster;
let gw: GatewayProcess;
let nc: NatsConnection;
let js: JetStreamClient;
let subscribers: FuzzSocket[] = [];

beforeAll(async () => {
  nats = await startNats(1);
  gw = await startGateway({ config: { yaml: CONFIG }, args: ["--nats", nats.servers] });
  nc = await natsConnect({ servers: nats.servers });
  js = nc.jetstream();
  subscribers = [];
  for (const format of ["json", "msgpack"] as const) {
    const s = new FuzzSocket(gw.wsUrl, format);
    subscribers.push(s);
    await s.opened;
    s.send([{ id: "c", op: "connect" }, ...Object.values(CHANNELS).map((ch) => ({ id: ch, op: "subscribe", ch }))]);
    await s.waitFor(() => (s.frames.filter((f) => f.ok !== undefined).length === 3 ? true : undefined), `${format} subscriber ready`);
  }
});

afterAll(async () => {
  for (const s of subscribers) s.terminate();
  await nc?.close();
  await gw?.stop();
  await nats?.stop();
});

/** Bodies a backend might publish: valid JSON (compact and pretty), MessagePack, mutated, random. */
const body = fc.oneof(
  jsonData.map((v) => ({ bytes: Buffer.from(JSON.stringify(v)), msgpack: false })),
  jsonData.map((v) => ({ bytes: Buffer.from(JSON.stringify(v, null, 2)), msgpack: false })),
  anyValue.map((v) => ({ bytes: msgpackOf(v), msgpack: true })),
  fc.tuple(mutated(jsonData.map((v) => Buffer.from(JSON.stringify(v)))), fc.boolean()).map(([bytes, msgpack]) => ({ bytes, msgpack })),
  fc.tuple(mutated(jsonData.map((v) => packr.pack(v))), fc.boolean()).map(([bytes, msgpack]) => ({ bytes, msgpack })),
  fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.boolean()).map(([b, msgpack]) => ({ bytes: Buffer.from(b), msgpack })),
);

/** The gateway's own headers with random values (nats.js refuses line breaks in values). */
const gatewayHeaders = fc.array(
  fc.tuple(
    fc.constantFrom("Natsedge-Ts", "Natsedge-Client", "Natsedge-User", "Natsedge-Event", "Natsedge-Other"),
    fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom("join", "leave", "%E0%A4%A", "-1", "1e999", "0")),
  ),
  { maxLength: 3 },
);

function headersFor(msgpack: boolean, extra: Array<[string, string]>): MsgHdrs {
  const h = natsHeaders();
  if (msgpack) h.set("Content-Type", MSGPACK);
  for (const [k, v] of extra) {
    try {
      h.set(k, v);
    } catch {
      /* a value nats.js refuses cannot be sent */
    }
  }
  return h;
}

const pubsOf = (s: FuzzSocket, ch: string): Frame[] => s.frames.filter((f) => f.push === "pub" && f.ch === ch);

/** The publications a subscriber received since `from`, comparable across formats. */
function publicationsOf(s: FuzzSocket, from: number): string[] {
  return s.received.slice(from).flatMap((r) => (r.frame?.push === "pub" ? [canonical({ ch: r.frame.ch, offset: r.frame.offset, data: r.frame.data })] : []));
}

let markers = 0;

/** Publishes a valid marker to both channels and waits until both subscribers got both. */
async function settle(): Promise<void> {
  const marker = ++markers;
  await js.publish(`natsedge.ch.${CHANNELS.hist}`, Buffer.from(JSON.stringify({ marker })));
  nc.publish(`natsedge.ch.${CHANNELS.live}`, Buffer.from(JSON.stringify({ marker })));
  for (const s of subscribers) {
    for (const ch of Object.values(CHANNELS)) {
      await s.waitFor(
        () => (pubsOf(s, ch).some((p) => (p.data as Frame | null)?.marker === marker) ? true : undefined),
        `${s.format} subscriber: marker ${marker} in ${ch}`,
      );
    }
  }
}

describe("NATS payloads under random bytes and headers", () => {
  it("every push decodes for JSON and MessagePack subscribers, and the gateway stays up", async () => {
    const before = rssKiB(gw.proc.pid as number);
    let published = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom("hist", "live") as fc.Arbitrary<keyof typeof CHANNELS>, body, gatewayHeaders), { minLength: 1, maxLength: 8 }), async (messages) => {
        const from = subscribers.map((s) => s.received.length);
        for (const [ns, b, extra] of messages) {
          const subject = `natsedge.ch.${CHANNELS[ns]}`;
          const h = headersFor(b.msgpack, extra);
          if (ns === "hist") await js.publish(subject, b.bytes, { headers: h });
          else nc.publish(subject, b.bytes, { headers: h });
          published++;
        }
        await settle();
        const label = jsonText(messages.map(([ns, b, extra]) => [ns, b.msgpack, b.bytes.toString("latin1").slice(0, 100), extra]));
        subscribers.forEach((s, i) => {
          expect(s.closeCode, s.format).toBeUndefined();
          expectWellFormed(s, `${s.format} subscriber after ${label}`, from[i]);
        });
        // Both formats got the same publications: none was delivered to only one of them.
        const [json, msgpack] = subscribers.map((s, i) => publicationsOf(s, from[i] as number));
        expect(msgpack, label).toEqual(json);
      }),
      { numRuns: 250, interruptAfterTimeLimit: 8_000 },
    );
    const grown = rssKiB(gw.proc.pid as number) - before;
    const delivered = subscribers.map((s) => `${s.format} ${s.frames.filter((f) => f.push === "pub").length}`).join(", ");
    console.log(`NATS payload fuzz: ${published} messages published, pushes received: ${delivered}, RSS +${grown} KiB`);
    expect(grown).toBeLessThan(RSS_BOUND_KIB);
  });

  it("answers server API requests over NATS with results or documented errors", async () => {
    const before = rssKiB(gw.proc.pid as number);
    const outcomes = new Map<string, number>();
    const params = fc.record(
      {
        channel: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(CHANNELS.hist, CHANNELS.live) }, { weight: 2, arbitrary: channelArb(["hist", "live"]) }),
        data: fc.oneof({ weight: 4, arbitrary: jsonData }, { weight: 1, arbitrary: anyValue }),
        idempotencyKey: fc.oneof({ weight: 4, arbitrary: fc.string({ maxLength: 130 }) }, { weight: 1, arbitrary: anyValue }),
        user: fc.oneof({ weight: 4, arbitrary: fc.string({ maxLength: 300 }) }, { weight: 1, arbitrary: anyValue }),
        limit: fc.oneof({ weight: 4, arbitrary: fc.oneof(fc.integer({ min: -1, max: 100 }), fc.stringMatching(/^\d{1,12}$/)) }, { weight: 1, arbitrary: anyValue }),
      },
      { requiredKeys: ["channel"] },
    );
    const request = fc.tuple(
      fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...API_OPS) }, { weight: 1, arbitrary: fc.stringMatching(/^[a-z_]{1,12}$/) }),
      fc.boolean(),
      fc.oneof(
        { weight: 4, arbitrary: params.map((p) => ({ json: Buffer.from(jsonText(p)), msgpack: msgpackOf(p) })) },
        { weight: 1, arbitrary: mutated(params.map((p) => Buffer.from(jsonText(p)))).map((b) => ({ json: b, msgpack: b })) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => ({ json: Buffer.from(b), msgpack: Buffer.from(b) })) },
        { weight: 1, arbitrary: fc.constant({ json: Buffer.alloc(0), msgpack: Buffer.alloc(0) }) },
      ),
    );
    const from = subscribers.map((s) => s.received.length);
    await fc.assert(
      fc.asyncProperty(request, async ([op, msgpack, b]) => {
        const reply = await nc.request(`natsedge.api.${op}`, msgpack ? b.msgpack : b.json, {
          timeout: 5_000,
          ...(msgpack && { headers: headersFor(true, []) }),
        });
        const label = `${op} ${msgpack ? "msgpack" : "json"} ${(msgpack ? b.msgpack : b.json).toString("latin1").slice(0, 200)}`;
        expect(reply.headers?.get("Content-Type") === MSGPACK, `${label}: reply encoded like the request`).toBe(msgpack);
        let result: unknown;
        expect(() => (result = msgpack ? unpackr.unpack(reply.data) : JSON.parse(Buffer.from(reply.data).toString("utf8"))), label).not.toThrow();
        expect(typeof result === "object" && result !== null && !Array.isArray(result), `${label}: ${jsonText(result)}`).toBe(true);
        const error = (result as Frame).error as Frame | undefined;
        if (error !== undefined) {
          expect(ERROR_CODES.has(error.code as number), `${label}: ${jsonText(result)}`).toBe(true);
          expect(typeof error.message, label).toBe("string");
        }
        const kind = error === undefined ? `${op} ok` : `${error.code as number}`;
        outcomes.set(kind, (outcomes.get(kind) ?? 0) + 1);
      }),
      { numRuns: 500, interruptAfterTimeLimit: 8_000 },
    );
    await settle();
    subscribers.forEach((s, i) => expectWellFormed(s, `${s.format} subscriber after API publishes`, from[i]));
    const grown = rssKiB(gw.proc.pid as number) - before;
    console.log(`NATS API fuzz: outcomes ${JSON.stringify(Object.fromEntries(outcomes))}, RSS +${grown} KiB`);
    expect(grown).toBeLessThan(RSS_BOUND_KIB);
  });

  it("history of the channel still answers in both formats, over WebSocket and the NATS API", async () => {
    for (const s of subscribers) {
      const from = s.received.length;
      s.send([{ id: "h", op: "history", ch: CHANNELS.hist }]);
      const reply = await s.waitFor(() => s.frames.find((f) => f.id === "h"), `${s.format} history`);
      expect(reply.error, jsonText(reply).slice(0, 300)).toBeUndefined();
      expect(((reply.ok as Frame).pubs as Frame[]).length).toBeGreaterThan(0);
      expectWellFormed(s, `${s.format} history`, from);
    }
    const request = { channel: CHANNELS.hist, limit: 50 };
    const json = await nc.request("natsedge.api.history", Buffer.from(JSON.stringify(request)), { timeout: 5_000 });
    expect((JSON.parse(Buffer.from(json.data).toString("utf8")) as Frame).pubs).toBeInstanceOf(Array);
    const mp = await nc.request("natsedge.api.history", packr.pack(request), { timeout: 5_000, headers: headersFor(true, []) });
    expect((unpackr.unpack(mp.data) as Frame).pubs).toBeInstanceOf(Array);
  });

  it("the process still serves a normal client", async () => {
    await expectServesNormalClient(gw, "live.after");
  });
});
