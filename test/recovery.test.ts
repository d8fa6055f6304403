import { describe, expect, it } from "vitest";
import { api, TestClient, type Format, type Frame } from "./helpers/client.js";
import { ok, useGateway } from "./helpers/suite.js";

/**
 * Subscribe with `since`: what a reconnecting client gets back, in and out of the retained
 * history, and that recovered publications and live pushes meet without a gap or a duplicate
 * even while a publisher is streaming.
 */

const API_KEY = "recovery-test-api-key-0123456789";
const CONFIG = `
namespaces:
  chat: {history: {size: 100, ttl: 5m}, presence: true, joinLeave: true, clientPublish: true, anonymous: true}
  tiny: {history: {size: 3, ttl: 5m}, clientPublish: true, anonymous: true}
`;
const FORMATS: Format[] = ["json", "msgpack"];

const shared = useGateway({ config: { yaml: CONFIG }, args: ["--api-key", API_KEY, "--command-rate", "0"] });
const { connect } = shared;

let seq = 0;
const chan = (ns: string): string => `${ns}.r${++seq}`;

/** Connects by hand, to learn the client id the gateway assigned. */
async function connectWithId(format: Format): Promise<{ c: TestClient; client: string }> {
  const c = shared.track(new TestClient(shared.gw.wsUrl, { format }));
  await c.opened;
  return { c, client: ok(await c.request("connect")).client as string };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);
const offsets = (pubs: unknown): unknown[] => (pubs as Frame[]).map((p) => p.offset);

async function apiPublish(ch: string, data: unknown): Promise<number> {
  const res = await api(shared.gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data } });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.offset as number;
}

describe.each(FORMATS)("recovery over %s", (format) => {
  it("in range: exactly the missed publications, in order, then live pushes without a duplicate", async () => {
    const ch = chan("chat");
    const a = await connect(format);
    const { c: p, client: pId } = await connectWithId(format);
    const first = ok(await a.request("subscribe", { ch }));
    expect(first).toEqual({ offset: 0, epoch: expect.any(String) });
    const epoch = first.epoch as string;
    ok(await p.request("publish", { ch, data: "seen 1" }));
    ok(await p.request("publish", { ch, data: "seen 2" }));
    await a.waitFor(() => (a.pubs(ch).length === 2 ? true : undefined), "two live pubs");
    const last = a.pubs(ch).at(-1)?.offset as number;
    expect(last).toBe(2);
    a.close();
    await a.closed;

    // Five missed: three from the server API, two from a client.
    expect(await apiPublish(ch, "missed 3")).toBe(3);
    expect(await apiPublish(ch, "missed 4")).toBe(4);
    expect(ok(await p.request("publish", { ch, data: "missed 5" }))).toMatchObject({ offset: 5 });
    expect(await apiPublish(ch, "missed 6")).toBe(6);
    expect(ok(await p.request("publish", { ch, data: "missed 7" }))).toMatchObject({ offset: 7 });

    const b = await connect(format);
    const seen = b.record();
    const reply = ok(await b.request("subscribe", { ch, since: { offset: last, epoch } }));
    expect(reply).toEqual({
      offset: 7,
      epoch,
      recovered: true,
      pubs: [
        { offset: 3, data: "missed 3" },
        { offset: 4, data: "missed 4" },
        { offset: 5, data: "missed 5", info: { client: pId, user: "" } },
        { offset: 6, data: "missed 6" },
        { offset: 7, data: "missed 7", info: { client: pId, user: "" } },
      ],
    });
    expect(b.pubs(ch)).toEqual([]);

    for (let i = 8; i <= 10; i++) ok(await p.request("publish", { ch, data: `live ${i}` }));
    expect(await apiPublish(ch, "live 11")).toBe(11);
    await b.waitFor(() => (b.pubs(ch).some((x) => x.offset === 11) ? true : undefined), "live 11");
    expect(b.pubs(ch).map((x) => [x.offset, x.data])).toEqual([
      [8, "live 8"],
      [9, "live 9"],
      [10, "live 10"],
      [11, "live 11"],
    ]);
    // The reply came before any live push.
    const firstPush = seen.findIndex((f) => f.push === "pub");
    const replyAt = seen.findIndex((f) => f.ok !== undefined && (f.ok as Frame).recovered === true);
    expect(replyAt).toBeGreaterThanOrEqual(0);
    expect(replyAt).toBeLessThan(firstPush);
  });

  it("nothing missed: recovered with an empty pubs list", async () => {
    const ch = chan("chat");
    const a = await connect(format);
    const { epoch } = ok(await a.request("subscribe", { ch }));
    for (let i = 1; i <= 3; i++) ok(await a.request("publish", { ch, data: i }));
    await a.waitFor(() => (a.pubs(ch).length === 3 ? true : undefined), "three pubs");
    ok(await a.request("unsubscribe", { ch }));
    expect(ok(await a.request("subscribe", { ch, since: { offset: 3, epoch } }))).toEqual({
      offset: 3,
      epoch,
      recovered: true,
      pubs: [],
    });
    // Also on a channel nobody has published to yet.
    const fresh = chan("chat");
    const b = await connect(format);
    const pos = ok(await b.request("subscribe", { ch: fresh }));
    ok(await b.request("unsubscribe", { ch: fresh }));
    expect(ok(await b.request("subscribe", { ch: fresh, since: { offset: 0, epoch: pos.epoch } }))).toEqual({
      offset: 0,
      epoch: pos.epoch,
      recovered: true,
      pubs: [],
    });
  });

  it("out of range (history trimmed by size): not recovered, current position, no pubs", async () => {
    const ch = chan("tiny");
    const a = await connect(format);
    const { epoch } = ok(await a.request("subscribe", { ch }));
    ok(await a.request("unsubscribe", { ch }));
    for (let i = 1; i <= 10; i++) expect(await apiPublish(ch, { n: i })).toBe(i);

    const notRecovered = ok(await a.request("subscribe", { ch, since: { offset: 0, epoch } }));
    expect(notRecovered.recovered).toBe(false);
    expect(notRecovered.offset).toBe(10);
    expect(notRecovered.epoch).toBe(epoch);
    expect(notRecovered.pubs ?? []).toEqual([]);
    // Live delivery goes on from the current position.
    expect(await apiPublish(ch, { n: 11 })).toBe(11);
    expect(await a.nextPush((x) => x.push === "pub" && x.ch === ch)).toMatchObject({ offset: 11, data: { n: 11 } });

    // The edge of the retained window (the last 3: offsets 9, 10, 11).
    ok(await a.request("unsubscribe", { ch }));
    const edge = ok(await a.request("subscribe", { ch, since: { offset: 8, epoch } }));
    expect(edge).toMatchObject({ recovered: true, offset: 11, epoch });
    expect(offsets(edge.pubs)).toEqual([9, 10, 11]);
    ok(await a.request("unsubscribe", { ch }));
    const past = ok(await a.request("subscribe", { ch, since: { offset: 7, epoch } }));
    expect(past).toMatchObject({ recovered: false, offset: 11, epoch });
    expect(past.pubs ?? []).toEqual([]);
  });

  it("wrong epoch, or an offset the stream never reached: not recovered, no pubs", async () => {
    const ch = chan("chat");
    const a = await connect(format);
    const { epoch } = ok(await a.request("subscribe", { ch }));
    for (let i = 1; i <= 4; i++) ok(await a.request("publish", { ch, data: i }));
    ok(await a.request("unsubscribe", { ch }));

    const other = `${epoch as string}x`;
    const wrong = ok(await a.request("subscribe", { ch, since: { offset: 2, epoch: other } }));
    expect(wrong).toMatchObject({ recovered: false, offset: 4, epoch });
    expect(wrong.pubs ?? []).toEqual([]);
    ok(await a.request("unsubscribe", { ch }));
    const future = ok(await a.request("subscribe", { ch, since: { offset: 9, epoch } }));
    expect(future).toMatchObject({ recovered: false, offset: 4, epoch });
    expect(future.pubs ?? []).toEqual([]);
  });

  it("while a publisher streams, every offset arrives exactly once across pubs and live pushes", async () => {
    const N = 300;
    const ch = chan("chat");
    const observer = await connect(format);
    const { epoch } = ok(await observer.request("subscribe", { ch }));
    const publisher = await connect(format);
    // Joiners connect beforehand so only the subscribe itself races the stream.
    const points = [20, 70, 120, 170, 220, 270];
    const joiners = await Promise.all(
      points.map(async (at, i) => {
        const c = await connect(format);
        return { at, c, seen: c.record(), withSince: i % 3 !== 2, since: 0, id: 0 };
      }),
    );

    let sent = 0;
    const stream = (async () => {
      const deadline = Date.now() + 10_000;
      for (; sent < N && Date.now() < deadline; sent++) {
        publisher.send({ id: `s${sent}`, op: "publish", ch, data: { i: sent + 1 } });
        await new Promise((r) => setTimeout(r, 1));
      }
    })();

    for (const j of joiners) {
      await observer.waitFor(() => (observer.pubs(ch).length >= j.at ? true : undefined), `observer at ${j.at}`);
      j.since = (observer.pubs(ch).at(-1)?.offset as number) - 10;
      j.id = 10_000 + j.at;
      j.c.send(
        j.withSince
          ? { id: j.id, op: "subscribe", ch, since: { offset: j.since, epoch } }
          : { id: j.id, op: "subscribe", ch },
      );
    }
    await stream;
    expect(sent).toBe(N);
    const replies = await Promise.all(
      range(0, N - 1).map((i) => publisher.waitFor(() => publisher.replies.get(`s${i}`), `publish ${i}`)),
    );
    expect(replies.map((r) => ok(r).offset)).toEqual(range(1, N));
    // Subscribed before the first publication, the observer saw everything live.
    await observer.waitFor(() => (observer.pubs(ch).length >= N ? true : undefined), "observer complete");
    expect(observer.pubs(ch).map((x) => x.offset)).toEqual(range(1, N));

    let midStream = 0;
    for (const j of joiners) {
      const reply = ok(await j.c.waitFor(() => j.c.replies.get(j.id), `subscribe ${j.at}`));
      expect(reply.epoch).toBe(epoch);
      await j.c.waitFor(
        () => (reply.offset === N || j.c.pubs(ch).some((x) => x.offset === N) ? true : undefined),
        `joiner ${j.at} complete`,
      );
      // Arrival order: the reply (with its recovered pubs) then the pushes.
      const sequence: unknown[] = [];
      for (const f of j.seen) {
        if (f.id === j.id) sequence.push(...offsets((f.ok as Frame).pubs ?? []));
        else if (f.push === "pub" && f.ch === ch) sequence.push(f.offset);
      }
      const from = j.withSince ? j.since + 1 : (reply.offset as number) + 1;
      if (j.withSince) expect(reply.recovered, `joiner at ${j.at}`).toBe(true);
      else expect(reply.pubs).toBeUndefined();
      expect(sequence, `joiner at ${j.at} (since ${j.since}, reply offset ${String(reply.offset)})`).toEqual(
        range(from, N),
      );
      if ((reply.offset as number) < N) midStream++;
    }
    // The race was real: most joiners subscribed while publications were still coming.
    expect(midStream).toBeGreaterThanOrEqual(3);
  });
});
