/**
 * The publisher thread: publishes benchmark data on a fixed schedule (message k of a run is due
 * at start + k / rate; each carries its due time, not the time it actually went out, so a
 * publisher or system that falls behind shows up as latency instead of silently slowing the
 * schedule: no coordinated omission).
 *
 * Transports: "nats" (plain core NATS publish to <prefix>.ch.<channel>, how a backend publishes to
 * natsedge), "uws" (P<ch> <data> frames to the raw uWS baseline), "sio" (42["pub",ch,data]
 * events to the first Socket.IO server).
 */
import { parentPort, workerData } from "node:worker_threads";
import { connect } from "nats";
import { setImmediate } from "node:timers";
import { Histogram } from "./histogram.js";
import { makeData } from "./payload.js";
import { clock, WsConn } from "./ws.js";

const cfg = workerData; // { transport, natsUrl, subjectPrefix, endpoint, channels: [names] }
let send; // (channelIndex, dataString) => void
let flush = async () => {};
let close = async () => {};
const seq = new Float64Array(cfg.channels.length);
let pubClosed = null; // why the publisher's connection closed, if it did

async function setup() {
  if (cfg.transport === "nats") {
    const nc = await connect({ servers: cfg.natsUrl, noEcho: true, name: "bench-publisher" });
    const subjects = cfg.channels.map((ch) => `${cfg.subjectPrefix}${ch}`);
    send = (c, data) => nc.publish(subjects[c], Buffer.from(data));
    flush = () => nc.flush();
    close = () => nc.drain();
    return;
  }
  const readBuffer = Buffer.allocUnsafe(64 * 1024);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("publisher connection timed out")), 10_000);
    let conn;
    const handler = {
      open() {
        if (cfg.transport === "uws") {
          clearTimeout(timer);
          resolve();
        }
      },
      message(c, buf, start, end) {
        const text = buf.toString("utf8", start, end);
        if (text === "2") c.send("3");
        else if (text[0] === "0") c.send("40");
        else if (text.startsWith("40")) {
          clearTimeout(timer);
          resolve();
        }
      },
      close(_c, reason) {
        clearTimeout(timer);
        pubClosed = reason;
        reject(new Error(`publisher connection closed: ${reason}`));
      },
    };
    const path = cfg.transport === "sio" ? "/socket.io/?EIO=4&transport=websocket" : "/ws";
    conn = new WsConn({ host: cfg.endpoint.host, port: cfg.endpoint.port, path, readBuffer, handler });
    const prefixes = cfg.channels.map((ch) =>
      cfg.transport === "uws" ? `P${ch} ` : `42["pub",${JSON.stringify(ch)},`,
    );
    const suffix = cfg.transport === "uws" ? "" : "]";
    send = (c, data) => conn.send(prefixes[c] + data + suffix);
    close = async () => conn.close();
  });
}

/** Channel picker for a run: round-robin, or weighted groups of channel index ranges. */
function picker(pattern) {
  if (!pattern || pattern.kind === "rr") {
    let i = 0;
    const n = cfg.channels.length;
    return () => {
      const c = i;
      i = i + 1 === n ? 0 : i + 1;
      return c;
    };
  }
  // weighted: [{from, to, weight}] - pick a group by weight, then a uniform channel in it
  const groups = pattern.groups;
  const total = groups.reduce((a, g) => a + g.weight, 0);
  return () => {
    let r = Math.random() * total;
    let g = groups[groups.length - 1];
    for (const x of groups) {
      if (r < x.weight) {
        g = x;
        break;
      }
      r -= x.weight;
    }
    return g.from + Math.floor(Math.random() * (g.to - g.from));
  };
}

/** For precise short sleeps: Atomics.wait blocks this thread without spinning the core. */
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Publishes `rate` messages/s for `durationMs`; returns what was sent and how late the sends were
 * against their slots (the publisher's own share of the measured latency).
 */
async function run(msg) {
  const { rate, durationMs, size } = msg;
  const pick = picker(msg.pattern);
  const total = Math.floor((rate * durationMs) / 1000);
  const start = clock.now() + 5;
  const lagHist = new Histogram();
  let k = 0;
  let maxBurst = 0;
  const maxPerTick = Math.max(1, Math.ceil(rate / 200)); // ~5 ms worth at most per turn
  const hardStop = start + durationMs + 10_000;
  while (k < total) {
    const now = clock.now();
    if (now > hardStop) break;
    const due = Math.min(total, Math.floor(((now - start) * rate) / 1000) + 1);
    let burst = 0;
    while (k < due && burst < maxPerTick) {
      const t = start + (k * 1000) / rate;
      const c = pick();
      seq[c]++;
      send(c, makeData(c, seq[c], t, size));
      lagHist.record((clock.now() - t) * 1000);
      k++;
      burst++;
    }
    if (burst > maxBurst) maxBurst = burst;
    if (k >= total) break;
    // Let queued writes (nats.js flushes in a microtask) and socket events run, then sleep until
    // the next slot: coarse with a timer, the last stretch (< 2 ms) with Atomics.wait.
    await new Promise((r) => setImmediate(r));
    const wait = start + (k * 1000) / rate - clock.now();
    if (wait > 2.5) await new Promise((r) => setTimeout(r, Math.min(wait, 50) - 2));
    const rest = start + (k * 1000) / rate - clock.now();
    if (rest > 0.02) Atomics.wait(sleeper, 0, 0, Math.min(rest, 2.5));
  }
  await flush();
  const lag = lagHist.summaryMs();
  return { sent: k, planned: total, lagMs: lag, maxLagMs: lag.max, maxBurst, last: Array.from(seq), closed: pubClosed };
}

parentPort.on("message", async (msg) => {
  let reply;
  try {
    switch (msg.type) {
      case "clock":
        reply = { t: performance.timeOrigin + performance.now() };
        break;
      case "offset":
        clock.offset = msg.offset;
        reply = {};
        break;
      case "setup":
        await setup();
        reply = {};
        break;
      case "run":
        reply = await run(msg);
        break;
      case "close":
        await close();
        reply = {};
        break;
      default:
        reply = { error: `unknown ${msg.type}` };
    }
  } catch (err) {
    reply = { error: String(err?.message ?? err) };
  }
  parentPort.postMessage({ id: msg.id, ...reply });
});
