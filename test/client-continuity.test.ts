/**
 * The client SDK against a scripted peer: a `ws` WebSocketServer on 127.0.0.1 that speaks just
 * enough protocol v1 (connect and subscribe replies, pushes) for each test to choose every frame
 * the client reads, and their order. It covers the SDK's side of the continuity contract:
 *  - an `unsub` push with `resubscribe` makes the client subscribe again at once, with `since` =
 *    the last position delivered, keeping its Subscription; the recovered publications are
 *    merged without gap or duplicate, and a `recovered:false` reply takes the unrecovered path;
 *  - an `unsub` push without it still ends the subscription (403) or retries it (429);
 *  - a 429 with `retryAfter` delays the retry at least that long, within maxReconnectDelay;
 *  - `history({reverse})` passes the field through, and leaves out options given as undefined;
 *  - server-side subscriptions: a `sub` push read with the connect reply is not lost; after a
 *    reconnect one the server makes again is filled from history merged with the live
 *    publications held meanwhile, one it does not is subscribed by the client after the fence;
 *  - MessagePack: what the client sends is what the gateway's decoder accepts (no extension
 *    types, `undefined` as nil), and 64-bit integers arrive as numbers.
 * The end-to-end behaviour against real gateways is in client.test.ts and client-fallback.test.ts.
 */
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import { afterEach, describe, expect, it } from "vitest";
import { Client, type ClientOptions, type NatsedgeError, type Position, type Publication, type Subscription } from "../src/client/index.js";
import { pack, unpackAll } from "../src/protocol/msgpack.js";
import { Signal } from "./helpers/signal.js";

type Frame = Record<string, unknown>;
type Format = "json" | "msgpack";

/** Woken by every frame the peer reads and every handler the client calls. */
const tick = new Signal();
const until = <T>(check: () => T | undefined, what: string, timeoutMs = 5_000, context = (): string => ""): Promise<T> =>
  tick.until(check, what, timeoutMs, context);

/** One connection to the scripted peer: the commands it read, in order, and a way to answer. */
class Peer {
  readonly received: Frame[] = [];
  /** Messages the gateway's decoder would have refused (it closes with 4004). */
  readonly refused: string[] = [];
  private readonly taken = new Set<Frame>();
  private readonly arrived = new Map<Frame, number>();

  constructor(
    private readonly socket: WebSocket,
    private readonly format: Format,
  ) {
    socket.on("message", (data: Buffer, isBinary) => {
      const at = performance.now();
      try {
        const frames = isBinary
          ? (unpackAll(data, 100) as Frame[])
          : data
              .toString()
              .split("\n")
              .filter((l) => l !== "")
              .map((l) => JSON.parse(l) as Frame);
        for (const f of frames) this.arrived.set(f, at);
        this.received.push(...frames);
      } catch (err) {
        this.refused.push((err as Error).message);
        socket.close(4004, "protocol violation");
      }
      tick.wake();
    });
  }

  /** The first command `op` not taken yet. */
  take(op: string, timeoutMs = 5_000): Promise<Frame> {
    return until(
      () => {
        const f = this.received.find((x) => x.op === op && !this.taken.has(x));
        if (f) this.taken.add(f);
        return f;
      },
      `a ${op} command`,
      timeoutMs,
      () => `received: ${JSON.stringify(this.received)}`,
    );
  }

  /** When the frame arrived (performance.now()). */
  arrival(f: Frame): number {
    return this.arrived.get(f) as number;
  }

  ops(): unknown[] {
    return this.received.map((f) => f.op);
  }

  /** Cuts the connection (the client sees 1006 and reconnects). */
  drop(): void {
    this.socket.terminate();
  }

  /** Frames in one message, so that the client reads them in one go. */
  send(...frames: Frame[]): void {
    if (this.format === "json") this.socket.send(frames.map((f) => JSON.stringify(f)).join("\n"));
    else this.socket.send(Buffer.concat(frames.map((f) => pack(f))));
  }

  reply(cmd: Frame, ok: Frame, ...after: Frame[]): void {
    this.send({ id: cmd.id, ok }, ...after);
  }
}

class ScriptedGateway {
  readonly peers: Peer[] = [];

  private constructor(
    private readonly wss: WebSocketServer,
    readonly format: Format,
  ) {
    wss.on("connection", (socket) => {
      this.peers.push(new Peer(socket, format));
      tick.wake();
    });
  }

  static async start(format: Format = "json"): Promise<ScriptedGateway> {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/ws" });
    await once(wss, "listening");
    return new ScriptedGateway(wss, format);
  }

  get url(): string {
    return `http://127.0.0.1:${(this.wss.address() as AddressInfo).port}`;
  }

  /** The next connection, with its `connect` answered. */
  async accept(): Promise<Peer> {
    const n = this.peers.length;
    const peer = await until(() => this.peers[n], "a connection");
    const connect = await peer.take("connect");
    peer.reply(connect, { client: `client-${n + 1}`, user: "", node: "scripted", ping: 25 });
    return peer;
  }

  close(): void {
    for (const c of this.wss.clients) c.terminate();
    this.wss.close();
  }
}

const clients: Client[] = [];
const gateways: ScriptedGateway[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const g of gateways.splice(0)) g.close();
});

async function setup(format: Format = "json", opts: ClientOptions = {}) {
  const gw = await ScriptedGateway.start(format);
  gateways.push(gw);
  const client = new Client(gw.url, { WebSocket, transports: ["websocket"], format, ...opts });
  clients.push(client);
  client.on("error", () => tick.wake());
  const ch = "chat.room";
  // What the handlers saw; each call wakes `tick`.
  const r = {
    sub: undefined as unknown as Subscription<{ n: number }>,
    pubs: [] as Publication<{ n: number }>[],
    subscribed: 0,
    unrecovered: [] as Position[],
    errors: [] as NatsedgeError[],
  };
  r.sub = client.subscribe<{ n: number }>(ch, {
    onPublication: (p) => {
      r.pubs.push(p);
      tick.wake();
    },
    onSubscribed: () => {
      r.subscribed++;
      tick.wake();
    },
    onUnrecovered: (pos) => {
      r.unrecovered.push(pos);
      tick.wake();
    },
    onError: (e) => {
      r.errors.push(e);
      tick.wake();
    },
  });
  const peer = await gw.accept();
  return { gw, client, r, peer, ch };
}

const pub = (ch: string, offset: number, n: number): Frame => ({ push: "pub", ch, offset, data: { n } });
type Recorded = Awaited<ReturnType<typeof setup>>["r"];
const ns = (r: Recorded): number[] => r.pubs.map((p) => p.data.n);
const offsets = (r: Recorded): unknown[] => r.pubs.map((p) => p.offset);

describe("an unsub push with resubscribe", () => {
  // A retry after a transient error waits at least minReconnectDelay (5 s here): a subscribe
  // well before that is the immediate resubscribe, not the backoff path.
  const SLOW_RETRY: ClientOptions = { minReconnectDelay: 5_000, maxReconnectDelay: 10_000 };

  it("subscribes again at once with since = the last position, and merges the recovery without gap or duplicate", async () => {
    const { gw, client, r, peer, ch } = await setup("json", SLOW_RETRY);
    const first = await peer.take("subscribe");
    expect(first).not.toHaveProperty("since");
    peer.reply(first, { offset: 3, epoch: "E1" }, pub(ch, 4, 1), pub(ch, 5, 2));
    await until(() => r.pubs.length === 2 || undefined, "the first two publications");
    expect(r.subscribed).toBe(1);

    peer.send({ push: "unsub", ch, code: 410, reason: "history gap", resubscribe: true });
    const again = await peer.take("subscribe", 2_000);
    expect(again.since).toEqual({ offset: 5, epoch: "E1" });
    expect(r.sub.active).toBe(false);
    // The recovery overlaps live publications read in the same message: 7 and 8 come twice.
    peer.reply(
      again,
      { offset: 8, epoch: "E1", recovered: true, pubs: [6, 7, 8].map((o) => ({ offset: o, data: { n: o - 3 } })) },
      pub(ch, 7, 4),
      pub(ch, 8, 5),
      pub(ch, 9, 6),
    );
    peer.send(pub(ch, 9, 6), pub(ch, 10, 7));
    await until(() => r.pubs.length >= 7 || undefined, "seven publications", 5_000, () => JSON.stringify(r.pubs));

    expect(ns(r)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(offsets(r)).toEqual([4, 5, 6, 7, 8, 9, 10]);
    expect(r.sub.position).toEqual({ offset: 10, epoch: "E1" });
    expect(r.unrecovered).toEqual([]);
    expect(r.errors).toEqual([]);
    expect(r.subscribed).toBe(2);
    expect(r.sub.active).toBe(true);
    // The same Subscription, on the same connection.
    expect(client.subscriptions.get(ch)).toBe(r.sub);
    expect(gw.peers).toHaveLength(1);
    expect(peer.ops()).toEqual(["connect", "subscribe", "subscribe"]);
  });

  it("takes the unrecovered path when the reply says recovered:false, and continues in the new epoch", async () => {
    const { r, peer, ch } = await setup("json", SLOW_RETRY);
    peer.reply(await peer.take("subscribe"), { offset: 3, epoch: "E1" }, pub(ch, 4, 1));
    await until(() => r.pubs.length === 1 || undefined, "the first publication");

    peer.send({ push: "unsub", ch, code: 410, reason: "stream recreated", resubscribe: true });
    const again = await peer.take("subscribe", 2_000);
    expect(again.since).toEqual({ offset: 4, epoch: "E1" });
    peer.reply(again, { offset: 2, epoch: "E2", recovered: false, pubs: [] }, pub(ch, 3, 2));
    await until(() => r.pubs.length === 2 || undefined, "the publication in the new epoch");

    expect(r.unrecovered).toEqual([{ offset: 2, epoch: "E2" }]);
    expect(ns(r)).toEqual([1, 2]);
    expect(offsets(r)).toEqual([4, 3]);
    expect(r.sub.position).toEqual({ offset: 3, epoch: "E2" });
    expect(r.errors).toEqual([]);
  });
});

describe("an unsub push without resubscribe", () => {
  it("403: the subscription ends and nothing is resubscribed", async () => {
    const { client, r, peer, ch } = await setup();
    peer.reply(await peer.take("subscribe"), { offset: 3, epoch: "E1" });
    await until(() => r.subscribed === 1 || undefined, "subscribed");
    peer.send({ push: "unsub", ch, code: 403, reason: "not allowed by token" });
    await until(() => r.errors[0], "onError");
    expect(r.errors[0]).toMatchObject({ code: 403, message: "not allowed by token" });
    expect(client.subscriptions.has(ch)).toBe(false);
    // A resubscribe would be sent at once, so before this ping.
    const ping = client.command({ op: "ping" });
    peer.reply(await peer.take("ping"), {});
    await ping;
    expect(peer.ops()).toEqual(["connect", "subscribe", "ping"]);
  });

  it("429 with retryAfter: retried from the position, no sooner than retryAfter", async () => {
    const { client, r, peer, ch } = await setup("json", { minReconnectDelay: 10, maxReconnectDelay: 5_000 });
    peer.reply(await peer.take("subscribe"), { offset: 3, epoch: "E1" }, pub(ch, 4, 1));
    await until(() => r.pubs.length === 1 || undefined, "the first publication");
    const sentAt = performance.now();
    peer.send({ push: "unsub", ch, code: 429, reason: "too many subscriptions", retryAfter: 1 });
    const again = await peer.take("subscribe");
    expect(peer.arrival(again) - sentAt).toBeGreaterThanOrEqual(990);
    expect(again.since).toEqual({ offset: 4, epoch: "E1" });
    expect(r.errors[0]).toMatchObject({ code: 429, retryAfter: 1 });
    expect(client.subscriptions.get(ch)).toBe(r.sub);
  });
});

describe("a 429 subscribe error with retryAfter", () => {
  it("waits at least retryAfter before retrying", async () => {
    const { r, peer } = await setup("json", { minReconnectDelay: 10, maxReconnectDelay: 5_000 });
    const first = await peer.take("subscribe");
    const sentAt = performance.now();
    peer.send({ id: first.id, error: { code: 429, message: "too many commands", retryAfter: 1 } });
    const again = await peer.take("subscribe");
    const waited = peer.arrival(again) - sentAt;
    expect(waited).toBeGreaterThanOrEqual(990);
    expect(waited).toBeLessThan(3_000);
    expect(r.errors[0]).toMatchObject({ code: 429, message: "too many commands", retryAfter: 1 });
    peer.reply(again, { offset: 0, epoch: "E1" });
    await until(() => r.subscribed === 1 || undefined, "subscribed after the retry");
  });

  it("but no longer than maxReconnectDelay", async () => {
    const { peer } = await setup("json", { minReconnectDelay: 10, maxReconnectDelay: 300 });
    const first = await peer.take("subscribe");
    const sentAt = performance.now();
    peer.send({ id: first.id, error: { code: 429, message: "too many commands", retryAfter: 30 } });
    const waited = peer.arrival(await peer.take("subscribe", 5_000)) - sentAt;
    expect(waited).toBeGreaterThanOrEqual(290);
    expect(waited).toBeLessThan(3_000);
  });
});

describe("history()", () => {
  it("passes reverse through as the command's field and leaves out undefined options", async () => {
    const { r, peer, ch } = await setup();
    const h = r.sub.history({ limit: 2, reverse: true, since: undefined });
    const cmd = await peer.take("history");
    expect(cmd).toEqual({ id: cmd.id, op: "history", ch, limit: 2, reverse: true });
    peer.reply(cmd, { offset: 9, epoch: "E1", pubs: [{ offset: 9, data: { n: 9 } }, { offset: 8, data: { n: 8 } }] });
    expect(await h).toEqual({
      offset: 9,
      epoch: "E1",
      pubs: [
        { ch, offset: 9, data: { n: 9 } },
        { ch, offset: 8, data: { n: 8 } },
      ],
    });
  });
});

describe("MessagePack", () => {
  it("decodes 64-bit integers as numbers", async () => {
    const { r, peer, ch } = await setup("msgpack");
    // BigInt is packed as int64 (0xd3), as a backend's encoder may do for any integer.
    peer.reply(await peer.take("subscribe"), { offset: 3n, epoch: "E1" }, { push: "pub", ch, offset: 4n, data: { n: 1n, big: 2n ** 40n } });
    await until(() => r.pubs.length === 1 || undefined, "the publication");
    expect(r.pubs[0]).toEqual({ ch, offset: 4, data: { n: 1, big: 2 ** 40 } });
    expect(r.sub.position).toEqual({ offset: 4, epoch: "E1" });
  });

  it("sends undefined as nil, in frames the gateway accepts", async () => {
    const { r, peer } = await setup("msgpack");
    peer.reply(await peer.take("subscribe"), { offset: 3, epoch: "E1" });
    const published = r.sub.publish({ n: 2, missing: undefined, list: [1, undefined] } as unknown as { n: number });
    const cmd = await peer.take("publish");
    expect(peer.refused).toEqual([]);
    expect(cmd.data).toEqual({ n: 2, missing: null, list: [1, null] });
    peer.reply(cmd, { offset: 4, epoch: "E1" });
    expect(await published).toEqual({ offset: 4, epoch: "E1" });
  });
});

describe("server-side subscriptions", () => {
  const ch = "feed.x";
  /** A client with no subscription of its own, recording the server-side one it is given. */
  async function serverSetup() {
    const gw = await ScriptedGateway.start();
    gateways.push(gw);
    const client = new Client(gw.url, { WebSocket, transports: ["websocket"], reconnectJitter: 1, minReconnectDelay: 10, maxReconnectDelay: 20 });
    clients.push(client);
    const r = {
      sub: undefined as Subscription | undefined,
      announced: 0,
      pubs: [] as Publication<{ n: number }>[],
      subscribed: 0,
      unrecovered: [] as Position[],
    };
    const wake = <A>(f: (a: A) => void) => (a: A): void => {
      f(a);
      tick.wake();
    };
    client.on("serverSubscribed", (sub) => {
      r.announced++;
      r.sub = sub;
      sub.setHandlers({
        onPublication: wake((p) => r.pubs.push(p as Publication<{ n: number }>)),
        onSubscribed: () => {
          r.subscribed++;
          tick.wake();
        },
        onUnrecovered: wake((pos) => r.unrecovered.push(pos)),
      });
      tick.wake();
    });
    /** The `index`th connection with its connect command (not answered). */
    const connection = async (index: number): Promise<{ peer: Peer; connect: Frame }> => {
      const peer = await until(() => gw.peers[index], `connection ${index + 1}`);
      return { peer, connect: await peer.take("connect") };
    };
    return { client, r, connection };
  }
  const hello = (n: number): Frame => ({ client: `client-${n}`, user: "u", node: "scripted", ping: 25 });
  const ns2 = (pubs: Publication<{ n: number }>[]): number[] => pubs.map((p) => p.data.n);

  it("a sub push and a publication read in one message with the connect reply are not lost", async () => {
    const { r, connection } = await serverSetup();
    const { peer, connect } = await connection(0);
    peer.reply(connect, hello(1), { push: "sub", ch, offset: 5, epoch: "E1" }, pub(ch, 6, 6));
    await until(() => r.pubs.length === 1 || undefined, "the publication", 5_000, () => JSON.stringify(r));
    expect(r.announced).toBe(1);
    expect(r.sub?.server).toBe(true);
    expect(r.sub?.position).toEqual({ offset: 6, epoch: "E1" });
    expect(r.subscribed).toBe(1);
  });

  it("made again after a reconnect: the gap is read from history and merged with the live publications held meanwhile", async () => {
    const { client, r, connection } = await serverSetup();
    const one = await connection(0);
    one.peer.reply(one.connect, hello(1), { push: "sub", ch, offset: 5, epoch: "E1" }, pub(ch, 6, 6));
    await until(() => r.pubs.length === 1 || undefined, "publication 6");
    one.peer.drop();

    const two = await connection(1);
    // The server makes it again at the channel's position (9); 10 is live.
    two.peer.reply(two.connect, hello(2), { push: "sub", ch, offset: 9, epoch: "E1" }, pub(ch, 10, 10));
    const history = await two.peer.take("history");
    expect(history).toMatchObject({ ch, since: { offset: 6, epoch: "E1" } });
    // Live while the read is on its way: held, not delivered ahead of 7..9.
    two.peer.send(pub(ch, 11, 11));
    const ping = await two.peer.take("ping");
    expect(r.pubs.length).toBe(1);
    two.peer.reply(history, { offset: 11, epoch: "E1", pubs: [7, 8, 9, 10, 11].map((o) => ({ offset: o, data: { n: o } })) });
    two.peer.reply(ping, {});
    two.peer.send(pub(ch, 12, 12));
    await until(() => r.pubs.length >= 7 || undefined, "seven publications", 5_000, () => JSON.stringify(r.pubs));
    expect(ns2(r.pubs)).toEqual([6, 7, 8, 9, 10, 11, 12]);
    expect(r.unrecovered).toEqual([]);
    expect(r.subscribed).toBe(2);
    expect(r.announced).toBe(1);
    // The server made it: the client does not subscribe itself (a command sent after the ping
    // reply arrives after anything that reply made the client send).
    const stats = client.command({ op: "presence_stats", ch });
    two.peer.reply(await two.peer.take("presence_stats"), { clients: 1, users: 1 });
    await stats;
    expect(two.peer.ops()).not.toContain("subscribe");
  });

  it("not made again after a reconnect (server API): subscribed by the client with since once the ping fence is answered", async () => {
    const { r, connection } = await serverSetup();
    const one = await connection(0);
    one.peer.reply(one.connect, hello(1));
    one.peer.send({ push: "sub", ch, offset: 5, epoch: "E1" }, pub(ch, 6, 6));
    await until(() => r.pubs.length === 1 || undefined, "publication 6");
    one.peer.drop();

    const two = await connection(1);
    two.peer.reply(two.connect, hello(2));
    const ping = await two.peer.take("ping");
    expect(two.peer.ops()).not.toContain("subscribe");
    two.peer.reply(ping, {});
    const sub = await two.peer.take("subscribe");
    expect(sub).toMatchObject({ ch, since: { offset: 6, epoch: "E1" } });
    two.peer.reply(sub, { offset: 7, epoch: "E1", recovered: true, pubs: [{ offset: 7, data: { n: 7 } }] }, pub(ch, 8, 8));
    await until(() => r.pubs.length >= 3 || undefined, "three publications", 5_000, () => JSON.stringify(r.pubs));
    expect(ns2(r.pubs)).toEqual([6, 7, 8]);
    expect(r.subscribed).toBe(2);
    expect(r.announced).toBe(1);
  });
});
