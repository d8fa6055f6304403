/**
 * The client SDK against a scripted peer: a `ws` WebSocketServer on 127.0.0.1 that speaks just
 * enough protocol v1 (connect and subscribe replies, pushes) for each test to choose every frame
 * the client reads, and their order:
 *  - `history({reverse})` passes the field through, and leaves out options given as undefined;
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

interface Recorded {
  sub: Subscription<{ n: number }>;
  pubs: Publication<{ n: number }>[];
  subscribed: number;
  unrecovered: Position[];
  errors: NatsedgeError[];
}

const clients: Client[] = [];
const gateways: ScriptedGateway[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
  for (const g of gateways.splice(0)) g.close();
});

async function setup(
  format: Format = "json",
  opts: ClientOptions = {},
): Promise<{ gw: ScriptedGateway; client: Client; r: Recorded; peer: Peer; ch: string }> {
  const gw = await ScriptedGateway.start(format);
  gateways.push(gw);
  const client = new Client(gw.url, { WebSocket, transports: ["websocket"], format, ...opts });
  clients.push(client);
  client.on("error", () => tick.wake());
  const ch = "chat.room";
  const r = { pubs: [], subscribed: 0, unrecovered: [], errors: [] } as unknown as Recorded;
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
