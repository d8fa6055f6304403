import { connect, createServer, type Server, type Socket } from "node:net";

/**
 * A loopback TCP proxy that injects faults into whatever it carries (a gateway's NATS
 * connection): added latency, stalls, resets, refusing new connections (a partition).
 */
export interface FaultProxy {
  readonly port: number;
  /** nats://127.0.0.1:<port> */
  readonly url: string;
  /** Delay added to every chunk, each way. */
  latencyMs: number;
  /** New connections are closed at once (the target is unreachable). */
  refuse: boolean;
  /** Data stops moving both ways (connections stay open, like a dead path); false resumes it. */
  stall(on: boolean): void;
  /** Resets every carried connection. */
  drop(): void;
  /** Connections carried so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function startFaultProxy(target: { host?: string; port: number }): Promise<FaultProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let stalled = false;
  let accepted = 0;
  const held: Array<() => void> = [];
  const pipe = (from: Socket, to: Socket): void => {
    from.on("data", (chunk: Buffer) => {
      const send = (): void => {
        if (!to.destroyed) to.write(chunk);
      };
      const forward = (): void => {
        if (stalled) held.push(send);
        else send();
      };
      // Order is kept: every chunk waits the same time, and held chunks resume in order.
      if (proxy.latencyMs > 0) setTimeout(forward, proxy.latencyMs);
      else forward();
    });
  };
  const server: Server = createServer((client) => {
    if (proxy.refuse) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = connect(target.port, target.host ?? "127.0.0.1");
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of pair) {
      s.on("error", end);
      s.on("close", end);
    }
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  const proxy: FaultProxy = {
    port,
    url: `nats://127.0.0.1:${port}`,
    latencyMs: 0,
    refuse: false,
    get accepted() {
      return accepted;
    },
    stall(on: boolean) {
      stalled = on;
      if (!on) for (const send of held.splice(0)) send();
    },
    drop() {
      for (const [a, b] of pairs) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
    },
    async close() {
      proxy.drop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}
