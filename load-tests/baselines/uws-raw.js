/**
 * Baseline: raw uWebSockets.js pub/sub in one process, no broker (idle runs several side by side,
 * each on its own port with its share of the clients, when one cannot hold them). The ceiling natsedge is
 * compared against: same library, same socket settings as the gateway (no compression, automatic
 * pings, same backpressure cap), but nothing between the publisher's frame and app.publish.
 *
 * Protocol (text frames):
 *   client -> server  "S<ch>[,<ch>...]"   subscribe to the channels; answered "A"
 *   client -> server  "P<ch> <data>"      publish <data> (bytes, not parsed) to <ch>
 *   server -> client  {"ch":"<ch>","data":<data>}   one per publication (built once, app.publish)
 * GET /stats answers {rss, heapUsed, connections}.
 *
 * Usage: node baselines/uws-raw.js --port <port> [--host 127.0.0.1]
 */
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const port = Number(args.port ?? 9001);
const host = args.host ?? "127.0.0.1";

// Refuse the pure-JS fallback the package swaps in when the native binary does not load.
const pkgDir = path.dirname(require.resolve("uWebSockets.js/package.json"));
const native = require(path.join(pkgDir, "binaries", `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`));
const uWS = require("uWebSockets.js");
if (uWS !== native) throw new Error("uWebSockets.js loaded its JS fallback; refusing to run");

const MAX_FRAME = 64 * 1024;
const BACKPRESSURE = 1024 * 1024; // natsedge's default backpressureLimit
let connections = 0;
const heads = new Map();
const TAIL = Buffer.from("}");
const ACK = "A";

const app = uWS.App();
app.ws("/ws", {
  compression: uWS.DISABLED,
  maxPayloadLength: 2 * MAX_FRAME,
  idleTimeout: 48, // natsedge: 2 x pingInterval (25 s) rounded to 4 s
  sendPingsAutomatically: true,
  maxBackpressure: 4 * BACKPRESSURE + MAX_FRAME,
  closeOnBackpressureLimit: 1,
  open: () => {
    connections++;
  },
  close: () => {
    connections--;
  },
  message: (ws, message) => {
    const bytes = Buffer.from(message); // a view, valid during this callback only
    if (bytes[0] === 0x50 /* P */) {
      const sp = bytes.indexOf(0x20);
      if (sp < 0) return;
      const ch = bytes.toString("latin1", 1, sp);
      let head = heads.get(ch);
      if (!head) heads.set(ch, (head = Buffer.from(`{"ch":${JSON.stringify(ch)},"data":`)));
      app.publish(ch, Buffer.concat([head, bytes.subarray(sp + 1), TAIL]), false);
    } else if (bytes[0] === 0x53 /* S */) {
      for (const ch of bytes.toString("latin1", 1).split(",")) if (ch) ws.subscribe(ch);
      ws.send(ACK, false);
    }
  },
});
app.get("/stats", (res) => {
  const m = process.memoryUsage();
  res.writeHeader("content-type", "application/json").end(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, connections }));
});
app.listen(host, port, (sock) => {
  if (!sock) {
    console.error(`uws-raw: cannot listen on ${host}:${port}`);
    process.exit(1);
  }
  console.log(`uws-raw listening on ${host}:${port}`);
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
