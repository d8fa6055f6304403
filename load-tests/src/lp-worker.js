/**
 * Long-poll generator thread: pollers that connect once (POST /lp/rpc) and then poll
 * (POST /lp/poll) their channel in a loop, each request to the next replica in turn (no sticky
 * sessions: the signed session and the cursor carry everything). Records delivery latency and
 * sequence gaps like the WebSocket generator.
 */
import http from "node:http";
import { parentPort, workerData } from "node:worker_threads";
import { Histogram } from "./histogram.js";
import { MARK, parseData, parsed } from "./payload.js";
import { clock } from "./ws.js";

const { endpoints, pollers, prefix, pollTimeoutS } = workerData;
const agents = endpoints.map(() => new http.Agent({ keepAlive: true, maxSockets: Math.max(1, pollers) }));
const hist = new Histogram();
let stats = { polls: 0, pollsWithData: 0, received: 0, errors: 0, gaps: 0, dups: 0, errorNotes: {} };
let running = false;
let stopAt = 0;
let rr = 0;

function post(ep, agent, path, body) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(body));
    const req = http.request(
      { host: ep.host, port: ep.port, path, method: "POST", agent, headers: { "content-type": "application/json", "content-length": data.length }, timeout: (pollTimeoutS + 10) * 1000 },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks), now: clock.now() }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("request timeout")));
    req.on("error", reject);
    req.end(data);
  });
}

function next() {
  const i = rr;
  rr = (rr + 1) % endpoints.length;
  return i;
}

async function poller(p) {
  const ch = `${prefix}c${p.c}`;
  const i0 = next();
  const hello = await post(endpoints[i0], agents[i0], "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] });
  const session = JSON.parse(hello.body.toString()).replies[0].ok.session;
  let cursor = null;
  p.ready();
  await p.go;
  while (running && clock.now() < stopAt) {
    const i = next();
    let res;
    try {
      res = await post(endpoints[i], agents[i], "/lp/poll", { session, subs: { [ch]: cursor }, timeout: pollTimeoutS });
    } catch (err) {
      note(`poll failed: ${err.message}`);
      continue;
    }
    if (res.status !== 200) {
      note(`poll ${res.status}: ${res.body.toString().slice(0, 80)}`);
      continue;
    }
    stats.polls++;
    const answer = JSON.parse(res.body.toString());
    const sub = answer.subs?.[ch];
    if (sub && sub.offset !== undefined) cursor = { offset: sub.offset, epoch: sub.epoch };
    if (sub?.recovered === false) note("recovered:false");
    if (answer.errors) note(`errors ${JSON.stringify(answer.errors).slice(0, 80)}`);
    const pubs = answer.pubs ?? [];
    if (pubs.length) stats.pollsWithData++;
    for (const pub of pubs) {
      const buf = Buffer.from(JSON.stringify(pub.data));
      const idx = buf.indexOf(MARK);
      if (idx < 0 || !parseData(buf, idx, buf.length)) continue;
      if (p.last > 0 || p.started) {
        if (parsed.s > p.last + 1) stats.gaps += parsed.s - p.last - 1;
        else if (parsed.s <= p.last) stats.dups++;
      }
      p.started = true;
      if (parsed.s > p.last) p.last = parsed.s;
      stats.received++;
      hist.record((res.now - parsed.t) * 1000);
    }
  }
}

function note(k) {
  stats.errors++;
  stats.errorNotes[k] = (stats.errorNotes[k] ?? 0) + 1;
}

const ps = [];
parentPort.on("message", async (msg) => {
  let reply = {};
  switch (msg.type) {
    case "clock":
      reply = { t: performance.timeOrigin + performance.now() };
      break;
    case "offset":
      clock.offset = msg.offset;
      break;
    case "setup": {
      // msg.chans: channel index per poller of this thread
      let go;
      const goP = new Promise((r) => (go = r));
      const readies = [];
      for (const c of msg.chans) {
        let ready;
        readies.push(new Promise((r) => (ready = r)));
        const p = { c, last: 0, started: false, ready, go: goP };
        ps.push(p);
        p.done = poller(p).catch((err) => note(`poller died: ${err.message}`));
      }
      running = true;
      stopAt = Infinity;
      await Promise.all(readies);
      ps.go = go;
      break;
    }
    case "start":
      stopAt = clock.now() + msg.durationMs;
      ps.go();
      break;
    case "reset":
      stats = { ...stats, polls: 0, pollsWithData: 0, received: 0 };
      hist.reset();
      break;
    case "collect":
      reply = { ...stats, hist: hist.snapshot(), last: ps.map((p) => [p.c, p.last]) };
      break;
    case "stop":
      // Held polls are cut off (their sockets destroyed), not waited out.
      running = false;
      for (const a of agents) a.destroy();
      await Promise.race([Promise.all(ps.map((p) => p.done)), new Promise((r) => setTimeout(r, 3000))]);
      break;
  }
  parentPort.postMessage({ id: msg.id, ...reply });
});
