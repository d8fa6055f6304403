/**
 * The SDK's first reconnect attempt after a loss (reconnectJitter), in process with fake timers:
 * reconnectDelay() bounds, and a Client on a scripted WebSocket whose connection the "gateway"
 * drops, checked for when it tries again. The scripted socket stands in for the network only;
 * test/client.test.ts runs the same client against real gateway processes.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Client, DEFAULT_RECONNECT_JITTER, reconnectDelay, type ClientOptions } from "../src/client/index.js";
import type { WebSocketLike } from "../src/client/websocket.js";

describe("reconnectDelay()", () => {
  it("draws the first attempt from [0, jitter) and the later ones from the backoff", () => {
    const t = { jitter: 3_000, min: 500, max: 20_000 };
    expect(reconnectDelay(0, t, () => 0)).toBe(0);
    expect(reconnectDelay(0, t, () => 0.999999)).toBe(2_999);
    expect(reconnectDelay(1, t, () => 0.999999)).toBe(999);
    expect(reconnectDelay(10, t, () => 0.999999)).toBe(19_999);
    const firsts = Array.from({ length: 1_000 }, () => reconnectDelay(0, t));
    expect(Math.min(...firsts)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...firsts)).toBeLessThan(3_000);
    // Spread over the window, not bunched at one end (each third holds ~333 of 1,000).
    for (let k = 0; k < 3; k++) expect(firsts.filter((d) => d >= k * 1_000 && d < (k + 1) * 1_000).length).toBeGreaterThan(200);
  });
});

/** Every socket the client opens; the test plays the gateway's side. */
const sockets: FakeSocket[] = [];
class FakeSocket implements WebSocketLike {
  binaryType = "";
  onopen: ((ev: never) => void) | null = null;
  onclose: ((ev: never) => void) | null = null;
  onerror: ((ev: never) => void) | null = null;
  onmessage: ((ev: never) => void) | null = null;
  readonly openedAt = Date.now();
  constructor(readonly url: string) {
    sockets.push(this);
    // The upgrade completes on the next tick.
    setTimeout(() => (this.onopen as (ev: unknown) => void)?.({}), 0);
  }
  send(data: string | Uint8Array): void {
    for (const line of String(data).split("\n")) {
      const f = JSON.parse(line) as { id?: number; op?: string };
      if (f.op === "connect") setTimeout(() => this.receive({ id: f.id, ok: { client: `c${sockets.length}`, ping: 25 } }), 0);
    }
  }
  close(): void {}
  receive(frame: object): void {
    (this.onmessage as ((ev: unknown) => void) | null)?.({ data: JSON.stringify(frame) });
  }
  /** The gateway went away (1006) or closed it (a code of its own). */
  drop(code = 1006, reason = ""): void {
    (this.onclose as ((ev: unknown) => void) | null)?.({ code, reason });
  }
}

describe("Client: the first reconnect after a loss", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    sockets.length = 0;
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** A connected client on the scripted socket. */
  async function connected(opts: ClientOptions): Promise<Client> {
    const client = new Client("http://gateway.test", { WebSocket: FakeSocket, ...opts });
    await vi.advanceTimersByTimeAsync(10);
    expect(client.state).toBe("connected");
    return client;
  }

  /** Drops the current socket and returns how long the client waited before opening the next one. */
  async function nextAttemptAfterDrop(client: Client, code?: number, limitMs = 60_000): Promise<number> {
    const n = sockets.length;
    const droppedAt = Date.now();
    sockets[n - 1]?.drop(code);
    expect(client.state).toBe("disconnected");
    for (let waited = 0; sockets.length === n && waited < limitMs; waited += 10) await vi.advanceTimersByTimeAsync(10);
    expect(sockets.length, "the client opened a new socket").toBe(n + 1);
    return (sockets[n] as FakeSocket).openedAt - droppedAt;
  }

  it("waits less than reconnectJitter, and spreads the clients over the window", async () => {
    const WINDOW = 7_000;
    const delays: number[] = [];
    for (let i = 0; i < 40; i++) {
      const client = await connected({ reconnectJitter: WINDOW, minReconnectDelay: 100 });
      delays.push(await nextAttemptAfterDrop(client));
      client.disconnect();
    }
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThan(WINDOW);
    }
    // Not the backoff's [0, minReconnectDelay) of later attempts: most land well past 100 ms.
    expect(delays.filter((d) => d > 1_000).length, JSON.stringify(delays)).toBeGreaterThan(20);
  });

  it("applies the window to a close the gateway initiates too, and backs off from there", async () => {
    const client = await connected({ reconnectJitter: 1_000, minReconnectDelay: 200, maxReconnectDelay: 400 });
    // A server-initiated close (e.g. the replica draining) that allows reconnecting.
    expect(await nextAttemptAfterDrop(client, 1001)).toBeLessThan(1_000);
    // This attempt connects, so the next loss is again a first attempt.
    await vi.advanceTimersByTimeAsync(10);
    expect(client.state).toBe("connected");
    expect(await nextAttemptAfterDrop(client, 1006)).toBeLessThan(1_000);
    client.disconnect();
  });

  it("defaults to DEFAULT_RECONNECT_JITTER", async () => {
    const delays: number[] = [];
    for (let i = 0; i < 20; i++) {
      const client = await connected({});
      delays.push(await nextAttemptAfterDrop(client));
      client.disconnect();
    }
    expect(Math.max(...delays)).toBeLessThan(DEFAULT_RECONNECT_JITTER);
    expect(Math.max(...delays), JSON.stringify(delays)).toBeGreaterThan(DEFAULT_RECONNECT_JITTER / 4);
  });

  it("with reconnectJitter 0 tries again at once", async () => {
    const client = await connected({ reconnectJitter: 0 });
    expect(await nextAttemptAfterDrop(client)).toBe(0);
    client.disconnect();
  });
});
