/**
 * History reads: the NATS implementation (bulk reads with ephemeral consumers) against the memory
 * one on the same publications, for every combination of limit, since and reverse; what a read
 * costs in JetStream requests (independent of the channel's length, and exactly what `reads`
 * says); that no consumer outlives a read; and that a `since` read never claims completeness
 * across a hole that trimming made while it walked. In-process against a private nats-server,
 * then end to end through gateways in memory and NATS mode.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, type JetStreamClient, type NatsConnection } from "nats";
import type { HistoryOptions, NamespaceOptions, NatsConfig } from "../src/config/types.js";
import type { HistoryQuery, HistoryResult } from "../src/history/history.js";
import { MemoryHistory } from "../src/history/memory.js";
import { NatsHistory } from "../src/history/nats.js";
import { createLogger } from "../src/log.js";
import { Metrics } from "../src/metrics.js";
import { encodePublication } from "../src/nats/codec.js";
import { NatsLink } from "../src/nats/connection.js";
import { JsLimiter } from "../src/nats/js-limiter.js";
import { Streams, type Jsm } from "../src/nats/streams.js";
import { Subjects } from "../src/nats/subjects.js";
import { Payload } from "../src/protocol/payload.js";
import type { StreamPosition } from "../src/publication.js";
import { api, TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";
import { eventually } from "./helpers/signal.js";

const PREFIX = "hist";
const ns = (size: number): NamespaceOptions => ({
  history: { size, ttl: 3_600_000 },
  presence: false,
  joinLeave: false,
  clientPublish: true,
  anonymous: true,
  personal: false,
});
const NAMESPACES: Record<string, NamespaceOptions> = { h: ns(50), big: ns(5_000), tiny: ns(5), mid: ns(1_200) };
const opts = (n: string): HistoryOptions => NAMESPACES[n]?.history as HistoryOptions;

let nats: NatsCluster;
let link: NatsLink;
let jsm: Jsm;
let js: JetStreamClient;
let history: NatsHistory;
const subjects = new Subjects(PREFIX);
/** JetStream API requests this process sent, by subject, counted at the connection. */
const sent: string[] = [];
/** When set, runs before the pull request it is given goes out (which waits for it). */
let beforePull: ((subject: string) => Promise<void> | undefined) | undefined;

beforeAll(async () => {
  nats = await startNats(1);
  const log = createLogger("error");
  const metrics = new Metrics();
  const config: NatsConfig = { servers: [nats.servers], prefix: PREFIX, streamReplicas: 1, storage: "memory" };
  link = await NatsLink.open(config, "history-test", log, metrics);
  jsm = (await link.nc.jetstreamManager()) as Jsm;
  js = link.nc.jetstream();
  const streams = new Streams(jsm, subjects, NAMESPACES, config, 60_000, false, log);
  await streams.ensureAll();
  history = new NatsHistory(jsm, streams, subjects, metrics, link, new JsLimiter());
  // Every JetStream API request leaves as a publish on $JS.API.> (nats.js requests publish too).
  const nc = link.nc as NatsConnection & { publish: (...a: unknown[]) => unknown };
  const publish = nc.publish.bind(nc);
  nc.publish = (subject: unknown, ...rest: unknown[]) => {
    if (typeof subject !== "string" || !subject.startsWith("$JS.API.")) return publish(subject, ...rest);
    sent.push(subject);
    const delay = subject.includes(".CONSUMER.MSG.NEXT.") ? beforePull?.(subject) : undefined;
    if (!delay) return publish(subject, ...rest);
    void delay.then(() => publish(subject, ...rest));
  };
});

afterAll(async () => {
  await history?.close();
  await link?.drain();
  await nats?.stop();
});

/** Publishes `data` to a channel through JetStream, as the broker does; returns its sequence. */
async function publish(ch: string, data: unknown): Promise<number> {
  const { body, headers } = encodePublication({ ch, data: Payload.fromValue(data), ts: Date.now() });
  return (await js.publish(subjects.channel(ch), body, { headers })).seq;
}

const streamOf = (namespace: string): string => subjects.namespaceStream(namespace);
const consumersOf = async (namespace: string): Promise<number> => (await jsm.streams.info(streamOf(namespace))).state.consumer_count;
const datas = (r: HistoryResult): unknown[] => r.pubs.map((p) => p.data.value());

/** A read whose `reads` must equal the JetStream requests it sent (deletions included). */
async function counted(ch: string, o: HistoryOptions, q: HistoryQuery): Promise<HistoryResult> {
  const before = sent.length;
  const r = await history.read(ch, o, q);
  await history.close(); // the consumers' deletions, which run after the answer
  expect(sent.length - before, `requests of ${JSON.stringify(q)}: ${sent.slice(before).join(" ")}`).toBe(r.reads);
  return r;
}

describe("NATS history against memory history", () => {
  it("answers every combination of limit, since and reverse like memory mode", async () => {
    const memory = new MemoryHistory();
    const ch = "h.cmp";
    const o = opts("h");
    // 80 publications, 30 more than the history keeps, interleaved with another channel so that
    // the channel's sequences skip; memory gets the same publications in the same order.
    const natsSeqs: number[] = [];
    const memOffsets: number[] = [];
    for (let i = 1; i <= 80; i++) {
      natsSeqs.push(await publish(ch, { i }));
      if (i % 3 === 0) await publish("h.noise", { i });
      memOffsets.push(memory.append({ ch, data: Payload.fromValue({ i }), ts: Date.now() }, o).offset);
    }
    const natsTop = await history.read(ch, o, { limit: 0 });
    const memTop = await memory.read(ch, o, { limit: 0 });
    expect(natsTop.position.offset).toBe(natsSeqs.at(-1));
    // Positions "after the k-th publication" in each backend (k = 0: from the start).
    const at = (k: number, top: StreamPosition, offsets: number[]): StreamPosition => ({
      offset: k === 0 ? 0 : (offsets[k - 1] as number),
      epoch: top.epoch,
    });
    // 10: long gone; 31: the oldest retained; 80: the newest. (30, gone while all after it are
    // still there, is where the modes differ by design: see docs/protocol.md.)
    const sinces = [undefined, 0, 10, 31, 40, 79, 80];
    const limits = [undefined, 1, 3, 10, 49, 50, 100];
    let compared = 0;
    for (const k of sinces) {
      for (const limit of limits) {
        for (const reverse of [false, true]) {
          const q = (top: StreamPosition, offsets: number[]): HistoryQuery => ({
            ...(k === undefined ? {} : { since: at(k, top, offsets) }),
            ...(limit === undefined ? {} : { limit }),
            reverse,
          });
          const n = await counted(ch, o, q(natsTop.position, natsSeqs));
          const m = await memory.read(ch, o, q(memTop.position, memOffsets));
          const what = `since #${k} limit ${limit} reverse ${reverse}`;
          expect(datas(n), what).toEqual(datas(m));
          expect(n.complete, what).toBe(m.complete);
          expect(n.position, what).toEqual(natsTop.position);
          // Offsets are the stream's sequences of the very publications memory returned.
          expect(
            n.pubs.map((p) => p.offset),
            what,
          ).toEqual(m.pubs.map((p) => natsSeqs[memOffsets.indexOf(p.offset as number)]));
          compared++;
        }
      }
    }
    expect(compared).toBe(sinces.length * limits.length * 2);
    await memory.close();
    expect(await consumersOf("h")).toBe(0);
  });

  it("answers an empty channel and a foreign epoch like memory mode", async () => {
    const o = opts("h");
    const empty = await counted("h.empty", o, { limit: 10, reverse: true });
    expect(empty).toMatchObject({ pubs: [], complete: true, position: { offset: 0 } });
    const seq = await publish("h.epoch", "x");
    const foreign = await counted("h.epoch", o, { since: { offset: seq - 1, epoch: "other" } });
    expect(foreign).toMatchObject({ pubs: [], complete: false });
    const ahead = await counted("h.epoch", o, { since: { offset: seq + 100, epoch: empty.position.epoch }, reverse: true });
    expect(ahead).toMatchObject({ pubs: [], complete: false });
  });
});

describe("what a NATS history read costs", () => {
  it("the same few requests for a channel of 10 and one of 3,000, and never a consumer left behind", async () => {
    const short = "big.short";
    const long = "big.long";
    for (let i = 1; i <= 10; i++) await publish(short, i);
    // Published in parallel batches: 3,000 awaited one by one would dominate the test's time.
    for (let i = 0; i < 3_000; i += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, j) => publish(long, i + j + 1)));
    }
    const o = opts("big");
    const cost: Record<string, number[]> = {};
    for (const ch of [short, long]) {
      const top = await counted(ch, o, { limit: 0 });
      const newest1 = await counted(ch, o, { limit: 1 });
      const newest10 = await counted(ch, o, { limit: 10 });
      const reverse5 = await counted(ch, o, { limit: 5, reverse: true });
      const position = (i: number): StreamPosition => ({ offset: newest10.pubs[i]?.offset as number, epoch: top.position.epoch });
      const since2 = await counted(ch, o, { since: position(7) });
      const since4 = await counted(ch, o, { since: position(5) });
      const back = await counted(ch, o, { since: position(5), limit: 3, reverse: true });
      expect(datas(newest1)).toEqual([ch === short ? 10 : 3_000]);
      expect(datas(reverse5)).toEqual(datas(newest10).slice(5).reverse());
      expect(datas(since2)).toEqual(datas(newest10).slice(8));
      expect(datas(since4)).toEqual(datas(newest10).slice(6));
      expect([since2.complete, since4.complete]).toEqual([true, true]);
      expect(datas(back)).toEqual(datas(newest10).slice(2, 5).reverse());
      cost[ch] = [top.reads, newest1.reads, newest10.reads, reverse5.reads, since2.reads, since4.reads, back.reads];
    }
    expect(cost[long]).toEqual(cost[short]);
    expect(cost[short]).toEqual([
      1, // last_by_subj
      1, // the same message is the newest one
      4, // last_by_subj, then a consumer: create, one pull, delete
      4,
      4, // last_by_subj, two next_by_subj gets, the coverage re-check
      9, // three gets, then coverage and a consumer (create, pull, delete), the re-check
      6, // a consumer counting what lies after `since`, then one to read
    ]);
    // Reading all of a long channel costs a pull per 1,000 messages, no more.
    const all = await counted(long, o, {});
    expect(all.pubs).toHaveLength(3_000);
    expect(all.reads).toBe(1 + 1 + 3 + 1);
    expect(await consumersOf("big")).toBe(0);
  });

  it("finds the newest N of a channel interleaved with busier ones in a few consumers", async () => {
    const o = opts("big");
    const ch = "big.sparse";
    let n = 0;
    for (let round = 0; round < 40; round++) {
      // One publication of the channel among 19 of others, in parallel batches.
      await Promise.all(Array.from({ length: 19 }, (_, j) => publish(`big.busy${j % 4}`, round)));
      await publish(ch, ++n);
    }
    for (const limit of [1, 5, 20, 40, 100]) {
      const r = await counted(ch, o, { limit });
      expect(datas(r)).toEqual(Array.from({ length: Math.min(limit, n) }, (_, i) => n - Math.min(limit, n) + 1 + i));
      // last_by_subj + at most 8 probes (each created and deleted) + a pull.
      expect(r.reads).toBeLessThanOrEqual(1 + 2 * 8 + 1);
    }
    expect(await consumersOf("big")).toBe(0);
  });
});

describe("trimming while a since read walks", () => {
  it("answers incomplete when the position was trimmed between the walk and the re-check", async () => {
    const o = opts("tiny");
    const ch = "tiny.seam";
    const seqs: number[] = [];
    for (let i = 1; i <= 8; i++) seqs.push(await publish(ch, i));
    const top = await history.read(ch, o, { limit: 0 });
    const since = { offset: seqs[5] as number, epoch: top.position.epoch };
    expect(await counted(ch, o, { since })).toMatchObject({ complete: true, pubs: [expect.anything(), expect.anything()] });
    // Five more publications push the message at `since` (and the two after it) out of the
    // history while the read is between its walk and its re-check.
    history.beforeRecheck = async () => {
      for (let i = 9; i <= 13; i++) await publish(ch, i);
    };
    try {
      const r = await counted(ch, o, { since });
      expect(r).toMatchObject({ complete: false, pubs: [] });
    } finally {
      history.beforeRecheck = undefined;
    }
  });

  it("answers incomplete when trimming overtakes the walk between two pulls", async () => {
    const o = opts("mid");
    const ch = "mid.overtaken";
    const publishMany = async (from: number, count: number): Promise<number[]> => {
      const seqs: number[] = [];
      for (let i = 0; i < count; i += 200) {
        seqs.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => publish(ch, from + i + j)))));
      }
      return seqs;
    };
    const seqs = await publishMany(1, 1_200);
    const since = { offset: Math.min(...seqs), epoch: (await history.read(ch, o, { limit: 0 })).position.epoch };
    // The walk takes 1,000 messages with its first pull; before its second pull goes out, 1,200
    // newer publications trim everything it has not read yet. The consumer then moves on to what
    // is left, so the walk itself sees no gap.
    let pulls = 0;
    beforePull = () => (++pulls === 2 ? publishMany(1_201, 1_200).then(() => undefined) : undefined);
    try {
      const r = await history.read(ch, o, { since });
      expect(pulls).toBeGreaterThanOrEqual(2);
      expect(r).toMatchObject({ complete: false, pubs: [] });
    } finally {
      beforePull = undefined;
    }
  });

  it("never answers complete with a hole while a publisher races the reads", async () => {
    const o = opts("tiny");
    const ch = "tiny.race";
    let published = 0;
    const seqOf = new Map<number, number>();
    const next = async (): Promise<void> => {
      const i = ++published;
      seqOf.set(i, await publish(ch, i));
    };
    for (let i = 0; i < 5; i++) await next();
    const epoch = (await history.read(ch, o, { limit: 0 })).position.epoch;
    let stop = false;
    const publisher = (async () => {
      while (!stop && published < 5_000) await next();
    })();
    let complete = 0;
    let incomplete = 0;
    try {
      for (let round = 0; round < 300 && (complete < 20 || incomplete < 20); round++) {
        // A position a few publications back: sometimes still there at the end, sometimes not.
        const k = Math.max(1, published - 1 - (round % 6));
        const since = { offset: seqOf.get(k) as number, epoch };
        const r = await history.read(ch, o, { since });
        if (!r.complete) {
          incomplete++;
          expect(r.pubs).toEqual([]);
          continue;
        }
        complete++;
        const got = datas(r) as number[];
        // Exactly the publications after k, in order, up to the position the answer names.
        expect(got, `after #${k}`).toEqual(Array.from({ length: got.length }, (_, i) => k + 1 + i));
        expect(r.pubs.at(-1)?.offset ?? since.offset).toBe(r.position.offset);
      }
    } finally {
      stop = true;
      await publisher;
    }
    expect(complete).toBeGreaterThan(0);
    expect(incomplete).toBeGreaterThan(0);
    await history.close();
    expect(await consumersOf("tiny")).toBe(0);
  });
});

describe("history through gateways in memory and NATS mode", () => {
  const KEY = "history-test-api-key-0123456789ab";
  const CONFIG = "namespaces:\n  e: {history: {size: 20, ttl: 1h}, clientPublish: true, anonymous: true}\n";
  const gws: GatewayProcess[] = [];
  beforeAll(async () => {
    gws.push(await startGateway({ config: { yaml: CONFIG }, args: ["--api-key", KEY] }));
    gws.push(await startGateway({ config: { yaml: CONFIG }, args: ["--api-key", KEY, "--nats", nats.servers] }));
  });
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.stop()));
  });

  it("answers limit and reverse alike over HTTP in both modes, and leaves no consumer behind", async () => {
    const ch = "e.x";
    for (const gw of gws) {
      for (let i = 1; i <= 30; i++) {
        expect((await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: ch, data: i } })).status).toBe(200);
      }
    }
    const range = (from: number, to: number): number[] =>
      from <= to ? Array.from({ length: to - from + 1 }, (_, i) => from + i) : range(to, from).reverse();
    const cases: Array<[string, number[]]> = [
      ["", range(11, 30)],
      ["&limit=1", [30]],
      ["&limit=5", range(26, 30)],
      ["&limit=50", range(11, 30)],
      ["&reverse=true", range(30, 11)],
      ["&limit=1&reverse=true", [30]],
      ["&limit=5&reverse=true", range(30, 26)],
      ["&limit=3&reverse=false", range(28, 30)],
    ];
    for (const [query, expected] of cases) {
      for (const gw of gws) {
        const res = await api(gw.url, "GET", `/api/history?channel=${ch}${query}`, { key: KEY });
        expect(res.status, query).toBe(200);
        expect((res.body.pubs as Array<{ data: unknown }>).map((p) => p.data), `${gw.url} ${query}`).toEqual(expected);
      }
    }
    for (const gw of gws) {
      const bad = await api(gw.url, "GET", `/api/history?channel=${ch}&reverse=yes`, { key: KEY });
      expect(bad).toEqual({ status: 400, body: { error: { code: 400, message: "reverse must be true or false" } } });
    }
    // The client `history` op takes the same `reverse`, and pages backwards with since.
    for (const gw of gws) {
      const c = await TestClient.connect(gw.wsUrl);
      try {
        const page = await c.request("history", { ch, limit: 3, reverse: true });
        const pubs = (page.ok as { pubs: Array<{ data: unknown; offset: number }> }).pubs;
        expect(pubs.map((p) => p.data)).toEqual([30, 29, 28]);
        const epoch = (page.ok as { epoch: string }).epoch;
        const older = await c.request("history", { ch, limit: 3, reverse: true, since: { offset: pubs[2]?.offset, epoch } });
        expect((older.ok as { pubs: Array<{ data: unknown }> }).pubs.map((p) => p.data)).toEqual([27, 26, 25]);
        expect((await c.request("history", { ch, reverse: "yes" })).error).toMatchObject({ code: 400, message: "reverse must be true or false" });
      } finally {
        c.close();
      }
    }
    // The same over NATS request/reply, with a JSON boolean.
    const nc = await natsConnect({ servers: nats.servers });
    try {
      const reply = await nc.request("natsedge.api.history", JSON.stringify({ channel: ch, limit: 2, reverse: true }), { timeout: 5_000 });
      const body = JSON.parse(new TextDecoder().decode(reply.data)) as { pubs: Array<{ data: unknown }> };
      expect(body.pubs.map((p) => p.data)).toEqual([30, 29]);
    } finally {
      await nc.close();
    }
    await eventually(
      async () => ((await jsm.streams.info("natsedge_ns_e")).state.consumer_count === 0 ? true : undefined),
      "the gateway's history consumers to be deleted",
    );
  });
});
