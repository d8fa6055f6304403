/**
 * Baseline: Socket.IO 4 with @socket.io/redis-adapter, one of N processes sharing a redis-server.
 * WebSocket transport only, no compression.
 *
 * Events:
 *   "sub"  (channels: string[], ack)   join the rooms, ack(true)
 *   "pub"  (channel, data)             io.to(channel).emit("m", channel, data) - local sockets and,
 *                                      through Redis, the other processes' sockets
 * GET /stats answers {rss, heapUsed, connections}.
 *
 * Usage: node baselines/socketio-server.js --port <port> --redis redis://127.0.0.1:<port>
 */
import { createServer } from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port ?? 3000);
const host = args.host ?? "127.0.0.1";

const pubClient = createClient({ url: args.redis ?? "redis://127.0.0.1:6379" });
const subClient = pubClient.duplicate();
pubClient.on("error", (err) => console.error("redis pub", err.message));
subClient.on("error", (err) => console.error("redis sub", err.message));
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer((req, res) => {
  if (req.url === "/stats") {
    const m = process.memoryUsage();
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, connections: io.engine.clientsCount }));
    return;
  }
  res.statusCode = 404;
  res.end();
});
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  pingInterval: 25_000,
  pingTimeout: 20_000,
  maxHttpBufferSize: 128 * 1024,
  adapter: createAdapter(pubClient, subClient),
});
io.on("connection", (socket) => {
  socket.on("sub", (channels, ack) => {
    socket.join(channels);
    if (typeof ack === "function") ack(true);
  });
  socket.on("pub", (channel, data) => {
    io.to(channel).emit("m", channel, data);
  });
});
httpServer.listen(port, host, () => console.log(`socketio listening on ${host}:${port}`));
const stop = () => {
  io.close();
  Promise.allSettled([pubClient.quit(), subClient.quit()]).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
