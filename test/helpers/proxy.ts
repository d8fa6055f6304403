import { connect, createServer, type Server, type Socket } from "node:net";

/**
 * A loopback TCP proxy in front of a gateway that can refuse WebSocket upgrades (as some
 * corporate proxies do) while passing plain HTTP (long-poll) through, and can cut the
 * connections it carries. It looks only at the first request of each TCP connection: WebSocket
 * clients (browsers, `ws`) open a fresh connection for every upgrade, and fetch never upgrades.
 */
export interface TestProxy {
  /** Where new connections go (change it to follow a gateway restarted on another port). */
  target: { host?: string; port: number };
  readonly port: number;
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** While true, `GET /ws` upgrades are answered `403` and the connection is closed. */
  blockWebSocket: boolean;
  /** WebSocket upgrade requests seen, passed through and refused; plain HTTP connections. */
  readonly stats: { upgradeRequests: number; upgrades: number; refused: number; http: number };
  /** Destroys every proxied WebSocket connection (the client sees 1006). */
  dropWebSockets(): void;
  /**
   * Existing connections stop carrying data but stay open, like a dead network path (no FIN,
   * no RST); new connections work.
   */
  freeze(): void;
  close(): Promise<void>;
}

const MAX_HEAD = 64 * 1024;

export async function startProxy(target: { host?: string; port: number }, opts: { blockWebSocket?: boolean } = {}): Promise<TestProxy> {
  const sockets = new Map<Socket, "ws" | "http" | "pending">();
  const pairs = new Set<[Socket, Socket]>();
  const stats = { upgradeRequests: 0, upgrades: 0, refused: 0, http: 0 };
  const proxy: TestProxy = {
    target,
    port: 0,
    url: "",
    blockWebSocket: opts.blockWebSocket ?? false,
    stats,
    dropWebSockets() {
      for (const [s, kind] of sockets) if (kind === "ws") s.destroy();
    },
    freeze() {
      for (const [c, u] of pairs) {
        c.unpipe(u);
        u.unpipe(c);
        c.pause();
        u.pause();
      }
      pairs.clear();
    },
    close() {
      for (const s of sockets.keys()) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };

  const server: Server = createServer((client) => {
    sockets.set(client, "pending");
    client.on("close", () => sockets.delete(client));
    client.on("error", () => undefined);
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEAD) client.destroy();
        return;
      }
      client.off("data", onData);
      client.pause();
      const text = head.subarray(0, end).toString("latin1");
      const isUpgrade = /^GET \/ws[ ?]/.test(text) && /^upgrade:\s*websocket\s*$/im.test(text);
      if (isUpgrade) stats.upgradeRequests++;
      if (isUpgrade && proxy.blockWebSocket) {
        stats.refused++;
        client.end("HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nwebsocket blocked\r\n\r\n");
        return;
      }
      if (isUpgrade) stats.upgrades++;
      else stats.http++;
      sockets.set(client, isUpgrade ? "ws" : "http");
      const upstream = connect(proxy.target.port, proxy.target.host ?? "127.0.0.1");
      sockets.set(upstream, isUpgrade ? "ws" : "http");
      upstream.on("close", () => {
        sockets.delete(upstream);
        client.destroy();
      });
      client.on("close", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
      const pair: [Socket, Socket] = [client, upstream];
      pairs.add(pair);
      upstream.on("close", () => pairs.delete(pair));
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
      client.resume();
    };
    client.on("data", onData);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  Object.assign(proxy, { port, url: `http://127.0.0.1:${port}` });
  return proxy;
}
