/**
 * Hostile and broken clients against one gateway: random bytes, oversized frames, frames of the
 * wrong shape, too many frames, deep nesting, bad encodings. Healthy clients connected throughout
 * must not notice, the process must stay up, and each bad client must get a 400 error reply or be
 * closed (4004 for frames that are not frames; uWS drops oversized or non-UTF-8 messages itself).
 */
import { Packr } from "msgpackr";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Format, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";

const MAX_FRAME = 8 * 1024;
const ALPHABET = [..."{}[]\":,\n 0123456789.-+eEtrufalsn\\abcxyzé€😀\u0000\u007f"];
const CH = "public.garbage";

const packr = new Packr({ useRecords: false });

/** Deterministic PRNG (mulberry32), so a failure can be reproduced. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A client for sending garbage; `frames` (from TestClient) holds every reply, with or without an id. */
class RawClient extends TestClient {
  constructor(url: string, format: Format = "json") {
    super(url, { format });
  }
  errors(): Frame[] {
    return this.frames.filter((f) => "error" in f);
  }
}

let gw: GatewayProcess;
let healthyJson: TestClient;
let healthyMsgpack: TestClient;
const bad: TestClient[] = [];

async function rawClient(format: Format = "json", connect = false): Promise<RawClient> {
  const c = new RawClient(gw.wsUrl, format);
  bad.push(c);
  await c.opened;
  if (connect) expect((await c.request("connect")).ok).toBeDefined();
  return c;
}

/** Resolves with the close code, or "open" once a ping sent after the garbage is answered. */
async function outcome(c: RawClient, probeId: string): Promise<number | "open"> {
  const probe = { id: probeId, op: "ping" };
  if (c.ws.readyState === c.ws.OPEN) {
    if (c.format === "json") c.ws.send(JSON.stringify(probe), { binary: false });
    else c.ws.send(packr.pack(probe), { binary: true });
  }
  return Promise.race([
    c.closed.then((r) => r.code),
    c.waitFor(() => (c.replies.has(probeId) ? ("open" as const) : undefined), `probe ${probeId}`, 5_000),
  ]);
}

beforeAll(async () => {
  gw = await startGateway({ args: ["--max-frame-size", `${MAX_FRAME}`] });
  healthyJson = await TestClient.connect(gw.wsUrl);
  healthyMsgpack = await TestClient.connect(gw.wsUrl, undefined, { format: "msgpack" });
  for (const c of [healthyJson, healthyMsgpack]) expect((await c.request("subscribe", { ch: CH })).ok).toBeDefined();
});

afterAll(async () => {
  for (const c of [healthyJson, healthyMsgpack, ...bad]) c?.terminate();
  await gw?.stop();
});

describe("garbage in", () => {
  it("random bytes as text and binary frames on JSON and msgpack connections", async () => {
    const rand = prng(0xdecafbad);
    const kinds: Array<{ format: Format; binary: boolean }> = [
      { format: "json", binary: false },
      { format: "json", binary: true },
      { format: "msgpack", binary: true },
      { format: "msgpack", binary: false },
    ];
    const clients: Array<{ c: RawClient; binary: boolean }> = [];
    // 4 kinds x 10 connections x 5 messages = 200 random messages.
    for (const kind of kinds) {
      for (let i = 0; i < 10; i++) {
        const c = await rawClient(kind.format);
        for (let m = 0; m < 5; m++) {
          const len = 1 + Math.floor(rand() * 300);
          if (i % 2 === 0) {
            // Raw random bytes (as text frames almost never valid UTF-8).
            const bytes = Buffer.alloc(len);
            for (let b = 0; b < len; b++) bytes[b] = Math.floor(rand() * 256);
            c.ws.send(bytes, { binary: kind.binary });
          } else {
            // Random but valid UTF-8, heavy on JSON punctuation, so the frame decoder itself is hit.
            let text = "";
            for (let b = 0; b < len; b++) text += ALPHABET[Math.floor(rand() * ALPHABET.length)];
            c.ws.send(Buffer.from(text, "utf8"), { binary: kind.binary });
          }
        }
        clients.push({ c, binary: kind.binary });
      }
    }
    const results = await Promise.all(clients.map(({ c }, i) => outcome(c, `p${i}`)));
    results.forEach((r, i) => {
      const { c, binary } = clients[i] as (typeof clients)[number];
      const label = `${c.format} connection, ${binary ? "binary" : "text"} garbage: ${String(r)} ${JSON.stringify(c.frames)}`;
      if (r === "open") {
        // Only possible when every random message happened to decode: each got a 400.
        expect(c.errors().length, label).toBeGreaterThan(0);
        for (const e of c.errors()) expect(e.error, label).toMatchObject({ code: 400 });
      } else if (c.format === "json" && binary) {
        expect(r, label).toBe(4004); // binary on a JSON connection
      } else if (c.format === "msgpack" && !binary) {
        // Text on a msgpack connection: 4004, unless uWS already dropped it for invalid UTF-8.
        expect([4004, 1006, 1007], label).toContain(r);
      } else {
        // Not JSON / not MessagePack: 4004; not UTF-8 text: uWS drops the socket (1006).
        expect([4004, 1006, 1007], label).toContain(r);
      }
    });
    // Everything but raw bytes in text frames reaches the gateway's own decoder.
    expect(results.filter((r) => r === 4004).length).toBeGreaterThanOrEqual(25);
  });

  it("refuses a message over maxFrameSize with 413, and closes beyond twice that", async () => {
    for (const format of ["json", "msgpack"] as const) {
      const over = await rawClient(format, true);
      const frame = { id: 98, op: "publish", ch: CH, data: "x".repeat(MAX_FRAME) };
      over.ws.send(format === "json" ? JSON.stringify(frame) : packr.pack(frame));
      const refused = await over.waitFor(() => over.errors()[0], "413 error");
      expect(refused).toMatchObject({ error: { code: 413 } });
      expect(over.replies.has(98)).toBe(false);
      expect((await over.request("ping")).ok).toEqual({});

      const huge = await rawClient(format, true);
      const hugeFrame = { id: 99, op: "publish", ch: CH, data: "x".repeat(2 * MAX_FRAME) };
      huge.ws.send(format === "json" ? JSON.stringify(hugeFrame) : packr.pack(hugeFrame));
      const { code } = await huge.closed;
      // uWS refuses the payload before our code sees it: 1009 if it says so, else a dropped socket.
      expect([1009, 1006], `${format}: ${code}`).toContain(code);
      expect(huge.replies.has(99)).toBe(false);
    }
    // Just under the limit is a normal frame.
    const ok = await rawClient("json", true);
    const reply = await ok.request("publish", { ch: "public.big", data: "y".repeat(MAX_FRAME - 100) });
    expect(reply.ok).toBeDefined();
  });

  it("answers JSON that is not an object with 400 and keeps the connection", async () => {
    const c = await rawClient("json", true);
    const values = ["[1,2]", "[]", "42", "-1.5e300", "null", "true", '"connect"', '[{"op":"ping"}]', "{}"];
    for (const v of values) c.ws.send(v);
    expect(await outcome(c, "after")).toBe("open");
    const errors = c.errors();
    expect(errors).toHaveLength(values.length);
    for (const e of errors) expect(e).toEqual({ error: { code: 400, message: expect.any(String) } });

    const m = await rawClient("msgpack", true);
    const mvalues: unknown[] = [[1, 2], 42, null, "connect", true, {}];
    for (const v of mvalues) m.ws.send(packr.pack(v));
    expect(await outcome(m, "after")).toBe("open");
    expect(m.errors()).toHaveLength(mvalues.length);
    for (const e of m.errors()) expect(e.error).toMatchObject({ code: 400 });
  });

  it("answers every field of the wrong type with 400", async () => {
    for (const format of ["json", "msgpack"] as const) {
      const c = await rawClient(format, true);
      expect((await c.request("subscribe", { ch: "public.typed" })).ok).toBeDefined();
      const withId: Frame[] = [
        { id: 10, op: 5 },
        { id: 11, op: null },
        { id: 12 },
        { id: 13, op: "subscribe", ch: ["public", "x"] },
        { id: 14, op: "subscribe", ch: 7 },
        { id: 15, op: "subscribe", ch: "public.x", since: "yesterday" },
        { id: 16, op: "subscribe", ch: "public.y", since: { offset: -1, epoch: "e" } },
        { id: 17, op: "subscribe", ch: "public.z", since: { offset: 1.5, epoch: "e" } },
        { id: 18, op: "subscribe", ch: "public.w", since: { offset: 1, epoch: 5 } },
        { id: 19, op: "history", ch: "public.typed", limit: -1 },
        { id: 20, op: "history", ch: "public.typed", limit: 1e12 },
        { id: 21, op: "history", ch: "public.typed", limit: 1.5 },
        { id: 22, op: "history", ch: "public.typed", limit: "10" },
        { id: 23, op: "history", ch: "public.typed", limit: 0 },
        { id: 24, op: "publish", ch: "public.typed" },
        { id: 25, op: "publish", ch: "public.typed", data: 1, idempotencyKey: 5 },
        { id: 26, op: "publish", ch: { a: 1 }, data: 1 },
        { id: 27, op: "refresh", token: 42 },
        { id: 28, op: "refresh" },
        { id: 29, op: "unsubscribe", ch: 3 },
        { id: 30, op: "presence", ch: true },
        { id: 31, op: "presence_stats", ch: null },
        { id: 32, op: "definitely-not-an-op" },
        { id: 33, op: "connect" }, // already connected
        { id: 34, op: "subscribe", ch: "public..x" },
        { id: 35, op: "subscribe", ch: "public.*" },
        { id: 36, op: "subscribe", ch: "x".repeat(300) },
      ];
      // Frames whose id itself is invalid: answered without an id.
      const badId: Frame[] = [
        { id: { a: 1 }, op: "ping" },
        { id: [1], op: "ping" },
        { id: -1, op: "ping" },
        { id: 1.5, op: "ping" },
        { id: "i".repeat(65), op: "ping" },
        { id: true, op: "ping" },
      ];
      c.send([...withId, ...badId]);
      expect(await outcome(c, "typed")).toBe("open");
      for (const f of withId) {
        const reply = c.frames.find((r) => r.id === f.id);
        expect(reply, `${format} ${JSON.stringify(f).slice(0, 80)}`).toBeDefined();
        expect(reply?.error, `${format} ${JSON.stringify(f).slice(0, 80)}`).toMatchObject({ code: 400 });
      }
      const anonymous = c.frames.filter((r) => "error" in r && !("id" in r));
      expect(anonymous).toHaveLength(badId.length);
      for (const r of anonymous) expect(r.error).toMatchObject({ code: 400 });
      // The subscription made before the garbage still works.
      expect((await c.request("unsubscribe", { ch: "public.typed" })).ok).toEqual({});
    }

    // Before connect: a token of the wrong type is a bad request, and the connection can still connect.
    const fresh = await rawClient("json");
    expect((await fresh.request("connect", { token: 42 })).error).toMatchObject({ code: 400 });
    expect((await fresh.request("connect", { token: ["a"] })).error).toMatchObject({ code: 400 });
    expect((await fresh.request("connect")).ok).toBeDefined();
  });

  it("closes 4004 on more than 100 frames in one message, accepts exactly 100", async () => {
    for (const format of ["json", "msgpack"] as const) {
      const ok = await rawClient(format, true);
      ok.send(Array.from({ length: 100 }, (_, i) => ({ id: 1000 + i, op: "ping" })));
      await ok.waitFor(() => (ok.replies.has(1099) ? true : undefined), `${format}: 100 replies`);
      expect([...ok.replies.keys()].filter((k) => typeof k === "number" && k >= 1000)).toHaveLength(100);

      const over = await rawClient(format, true);
      over.send(Array.from({ length: 101 }, (_, i) => ({ id: 1000 + i, op: "ping" })));
      expect((await over.closed).code).toBe(4004);
      expect(over.pushes.find((p) => p.push === "disconnect")).toMatchObject({ code: 4004 });
      expect(over.replies.has(1000)).toBe(false);
    }
  });

  it("rejects deeply nested data without poisoning the channel", async () => {
    const depth = Math.floor((MAX_FRAME - 100) / 2);
    const c = await rawClient("json", true);
    c.ws.send(`{"id":"deep","op":"publish","ch":"${CH}","data":${"[".repeat(depth)}${"]".repeat(depth)}}`);
    const deep = await c.waitFor(() => c.replies.get("deep"), "reply to the deep publish");
    expect(deep.error).toMatchObject({ code: 400 });
    // Also deep objects, and moderately deep data that a msgpack subscriber cannot take either.
    for (const d of [2000, 1200]) {
      const obj = `${'{"a":'.repeat(d)}1${"}".repeat(d)}`;
      if (obj.length > MAX_FRAME - 100) {
        c.ws.send(`{"id":"obj${d}","op":"publish","ch":"${CH}","data":${"[".repeat(d)}${"]".repeat(d)}}`);
      } else {
        c.ws.send(`{"id":"obj${d}","op":"publish","ch":"${CH}","data":${obj}}`);
      }
      const r = await c.waitFor(() => c.replies.get(`obj${d}`), `reply to depth ${d}`);
      expect(r.error, `depth ${d}`).toMatchObject({ code: 400 });
    }
    // Deep MessagePack: not decodable (or rejected).
    const m = await rawClient("msgpack", true);
    const nested = Buffer.concat([
      Buffer.from([0x84]),
      packr.pack("id"),
      packr.pack("deep"),
      packr.pack("op"),
      packr.pack("publish"),
      packr.pack("ch"),
      packr.pack(CH),
      packr.pack("data"),
      Buffer.alloc(MAX_FRAME - 200, 0x91),
      packr.pack(1),
    ]);
    m.ws.send(nested);
    const mres = await Promise.race([
      m.closed.then((r) => r.code),
      m.waitFor(() => m.replies.get("deep"), "deep msgpack reply").then((r) => (r.error as Frame | undefined)?.code),
    ]);
    expect([4004, 400]).toContain(mres);

    // The channel's history is still readable, by JSON and msgpack clients alike.
    for (const format of ["json", "msgpack"] as const) {
      const h = await rawClient(format, true);
      const hist = await h.request("history", { ch: CH });
      expect(hist.ok, `${format} history`).toBeDefined();
    }
    // Nesting well within reason still goes through.
    const fine = await c.request("publish", { ch: CH, data: { a: [{ b: [[[1]]] }] } });
    expect(fine.ok).toBeDefined();
  });

  it("closes 4004 on invalid UTF-8 or non-JSON text and on invalid MessagePack", async () => {
    const cases: Array<{ format: Format; data: Buffer | string; binary: boolean }> = [
      { format: "json", data: Buffer.from([0x7b, 0x22, 0x6f, 0x70, 0xff, 0xfe, 0x22, 0x7d]), binary: false },
      { format: "json", data: Buffer.from([0xed, 0xa0, 0x80]), binary: false }, // lone surrogate
      { format: "json", data: '{"id":1,"op":"ping"', binary: false },
      { format: "json", data: '{"id":1,"op":"ping"}\n{broken', binary: false },
      { format: "json", data: "\n\n  \n", binary: false }, // no frames at all
      { format: "msgpack", data: Buffer.from([0xc1]), binary: true }, // never-used byte
      { format: "msgpack", data: Buffer.from([0x85, 0xa2, 0x69]), binary: true }, // truncated map
      { format: "msgpack", data: Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), binary: true }, // array32 of 4G
      { format: "msgpack", data: Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61]), binary: true }, // str32 of 2G
    ];
    for (const k of cases) {
      const c = await rawClient(k.format, true);
      c.ws.send(k.data, { binary: k.binary });
      const { code } = await c.closed;
      expect([4004, 1006, 1007], `${k.format} ${JSON.stringify(k.data)}`).toContain(code);
    }
  });

  it("leaves healthy clients and the process untouched", async () => {
    const publisher = await TestClient.connect(gw.wsUrl, undefined, { format: "msgpack" });
    bad.push(publisher);
    const reply = await publisher.request("publish", { ch: CH, data: { after: "garbage" } });
    expect(reply.ok).toBeDefined();
    for (const c of [healthyJson, healthyMsgpack]) {
      const push = await c.waitFor(
        () => c.pubs(CH).find((p) => (p.data as Frame | undefined)?.after === "garbage"),
        `${c.format}: publication after the garbage`,
      );
      expect(push.data).toEqual({ after: "garbage" });
      expect(c.pushes.filter((p) => p.push === "disconnect")).toEqual([]);
      expect((await c.request("ping")).ok).toEqual({});
      // Nothing from the garbage reached the healthy subscribers but well-formed publications.
      for (const p of c.pubs(CH)) expect(JSON.stringify(p.data).length).toBeLessThan(1000);
    }
    expect(gw.proc.exitCode).toBeNull();
    const health = await fetch(`${gw.adminUrl}/healthz`);
    expect(health.status).toBe(200);
    // No internal errors or crashes were logged.
    const severe = gw.lines.filter((l) => /"level":(50|60)/.test(l));
    expect(severe.map((l) => l.slice(0, 300))).toEqual([]);
  });
});
