/**
 * One generator worker: holds many subscribing WebSocket connections of one dialect, checks
 * sequence numbers per (connection, channel), and records delivery latency in a histogram.
 * Driven by the main thread through messages (see generator.js), as a worker thread or, when the
 * connections need more file descriptors than one process may open, as a child process of its own
 * (the same messages over the IPC channel; argv[2] carries what workerData would).
 */
import { parentPort, workerData } from "node:worker_threads";
import { dialects } from "./dialects.js";
import { Histogram } from "./histogram.js";
import { makeData, MARK, parseData, parsed } from "./payload.js";
import { clock, WsConn } from "./ws.js";
// The SDK's own reconnect schedule (the gateway build the benchmark runs against).
import { backoff, reconnectDelay } from "../../dist/client/backoff.js";

const port = parentPort ?? {
  on: (event, fn) => process.on(event, fn),
  postMessage: (m) => process.connected && process.send(m),
};
// The parent gone (closed or killed), nothing drives this process any more.
if (!parentPort) process.on("disconnect", () => process.exit(0));
const dialect = dialects[(workerData ?? JSON.parse(process.argv[2])).dialect];
const readBuffer = Buffer.allocUnsafe(256 * 1024);
const conns = new Set();
let closing = false;

const hist = new Histogram();
const stats = newStats();
function newStats() {
  return { received: 0, echoes: 0, bytes: 0, gaps: 0, dups: 0, foreign: 0, disconnects: 0, recovered: 0, recoveredPubs: 0, recoveredFalse: 0, unrecoveredSkipped: 0, subscribeRetries: 0, reordered: 0, notes: {} };
}
/** Counters since the step started (gaps, disconnects) vs since the window started (rates, latency). */
let step = newStats();

function note(reason) {
  const key = String(reason).slice(0, 100);
  step.notes[key] = (step.notes[key] ?? 0) + 1;
}

/**
 * Sequence accounting for channel j of a connection: a jump counts as a gap (lost) until the
 * missing sequences arrive late (then they count as `reordered`, not lost: publishers on different
 * replicas are not ordered between them); a repeat or any other step back is a duplicate. After a `recovered:false` answer the channel is marked for resync: the
 * next sequence is taken as the new position and what was skipped is counted apart (expected, not
 * loss).
 */
function account(st, j, s) {
  const last = st.last[j];
  if (st.resync && st.resync[j]) {
    st.resync[j] = 0;
    if (s > last + 1) step.unrecoveredSkipped += s - last - 1;
    if (s > last) st.last[j] = s;
    return;
  }
  if (s === last + 1) st.last[j] = s;
  else if (s > last) {
    step.gaps += s - last - 1;
    st.last[j] = s;
    remember(st, j, last + 1, s);
  } else if (st.spec.holes?.[j]?.delete(s)) {
    // Arrived late, not lost: publishers on different replicas (chat) are not ordered between them.
    step.gaps--;
    step.reordered++;
  } else step.dups++;
}

/** Holes of a jump, so that a late arrival fills one instead of counting as a duplicate (bounded). */
const MAX_HOLES = 256;
function remember(st, j, from, to) {
  st.spec.holes ??= [];
  const h = (st.spec.holes[j] ??= new Set());
  for (let x = from; x < to && h.size < MAX_HOLES; x++) h.add(x);
}

const OFFSET = Buffer.from('"offset":');

/** Reads the push's `"offset":N` between start and the data (natsedge history channels). */
function pushOffset(buf, start, limit) {
  let i = buf.indexOf(OFFSET, start);
  if (i < 0 || i >= limit) return -1;
  i += OFFSET.length;
  let v = 0;
  let ch;
  while ((ch = buf[i]) >= 48 && ch <= 57) {
    v = v * 10 + ch - 48;
    i++;
  }
  return v;
}

/**
 * A subscribe `ok` for channel j (natsedge with history): remember the channel's position and
 * epoch; with `recovered`, account the recovered publications (they come before live pushes).
 */
function position(conn, j, ok) {
  const st = conn.state;
  if (!st.track || j < 0 || j >= st.ci.length || typeof ok.epoch !== "string") return;
  if (ok.recovered === true) {
    step.recovered++;
    for (const p of ok.pubs ?? []) {
      const d = p.data;
      if (d && typeof d.s === "number" && d.c === st.ci[j]) {
        step.recoveredPubs++;
        account(st, j, d.s);
      } else stats.foreign++;
    }
  } else if (ok.recovered === false) {
    step.recoveredFalse++;
    st.resync[j] = 1;
  }
  st.spec.epoch[j] = ok.epoch;
  if (typeof ok.offset === "number") st.spec.off[j] = ok.offset;
}

/** Benchmark data (a payload with MARK): counted and timed, returning true; false for anything else. */
function data(conn, buf, start, end, now) {
  // A reply ({"id":…}) is control even when it carries recovered publications.
  const idx = buf[start + 2] === 0x69 ? -1 : buf.indexOf(MARK, start);
  if (idx >= 0 && idx < end && parseData(buf, idx, end)) {
    const st = conn.state;
    const c = parsed.c;
    const ci = st.ci;
    let j = 0;
    while (j < ci.length && ci[j] !== c) j++;
    if (j === ci.length) {
      stats.foreign++;
      return true;
    }
    if (st.track) {
      const off = pushOffset(buf, start, idx);
      if (off >= 0) st.spec.off[j] = off;
    }
    account(st, j, parsed.s);
    // A publisher gets its own message back (natsedge always sends it; the baselines do the
    // same work): counted apart, so latency and deliveries are those of the other members.
    if (parsed.s === st.ownSeq && j === st.ownJ) {
      stats.echoes++;
      return true;
    }
    stats.received++;
    stats.bytes += end - start;
    hist.record((now - parsed.t) * 1000);
    return true;
  }
  return false;
}

const handler = {
  open(conn) {
    dialect.open(conn);
  },
  message(conn, buf, start, end, now) {
    if (dialect.split) {
      dialect.split(conn, buf, start, end, (c, b, s, e) => {
        if (!data(c, b, s, e, now)) dialect.control(c, b.toString("utf8", s, e));
      });
      return;
    }
    if (!data(conn, buf, start, end, now)) dialect.control(conn, buf.toString("utf8", start, end));
  },
  close(conn, reason) {
    conns.delete(conn);
    const st = conn.state;
    if (st.churned && !closing) return void rejoin(conn.spec, st.last, 0);
    if (st.isReady && !closing) {
      step.disconnects++;
      note(reason);
      if (storm.armed) {
        storm.dropped++;
        reconnect(conn.spec, st.last, 0, clock.now());
      }
    }
    if (!st.isReady) st.fail(reason);
  },
};

/**
 * Opens one connection and runs the dialect's handshake; onReady(conn) once subscribed,
 * onFail(reason) if it fails first. `last` carries sequence positions over a reconnect.
 */
function connectOne(spec, endpoint, onReady, onFail, last) {
  let settled = false;
  const conn = new WsConn({
    host: endpoint.host,
    port: endpoint.port,
    path: dialect.path,
    localAddress: spec.localAddress,
    readBuffer,
    handler,
  });
  conn.spec = spec;
  // The connection that currently stands for this client (publishing goes through it).
  spec.conn = conn;
  const track = spec.history === true;
  if (track && !spec.off) {
    // Per (client, channel): last offset and epoch seen, kept across reconnects.
    spec.off = new Float64Array(spec.chanIdx.length);
    spec.epoch = new Array(spec.chanIdx.length).fill(null);
  }
  conn.state = {
    spec,
    track,
    token: spec.token,
    resync: track ? new Uint8Array(spec.chanIdx.length) : null,
    position: (j, ok) => position(conn, j, ok),
    // The SDK's retry of a refused subscribe (src/client/client.ts, subscribeFailed).
    retrySubscribe: (retryAfterS, resend) => {
      step.subscribeRetries++;
      setTimeout(resend, Math.max(Math.min(20_000, (retryAfterS ?? 0) * 1000), 500 + backoff(2, 500, 20_000)));
    },
    channels: spec.channels,
    ci: Int32Array.from(spec.chanIdx),
    last: last ?? new Float64Array(spec.chanIdx.length),
    isReady: false,
    pending: 0,
    ownSeq: -1,
    ownJ: -1,
    ready() {
      if (settled) return;
      settled = true;
      this.isReady = true;
      onReady(conn);
    },
    fail(reason) {
      if (!settled) {
        settled = true;
        conn.finish(reason);
        onFail(String(reason).slice(0, 100));
      } else note(reason);
    },
    note,
  };
  conns.add(conn);
  return conn;
}

function open(msg) {
  const specs = msg.conns;
  const started = performance.now();
  let next = 0;
  let inflight = 0;
  let ok = 0;
  let failed = 0;
  const failures = {};
  return new Promise((resolve) => {
    const deadline = setTimeout(() => finish(true), msg.timeoutMs);
    let done = false;
    const finish = (timedOut) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      if (timedOut) failures[`timeout with ${specs.length - ok - failed} pending`] = specs.length - ok - failed;
      resolve({ ok, failed: specs.length - ok, failures, ms: Math.round(performance.now() - started) });
    };
    const settle = () => {
      inflight--;
      if (ok + failed === specs.length) finish(false);
      else pump();
    };
    const pump = () => {
      while (!done && inflight < msg.concurrency && next < specs.length) {
        const spec = specs[next++];
        inflight++;
        connectOne(
          spec,
          spec,
          () => {
            ok++;
            settle();
          },
          (reason) => {
            failed++;
            failures[reason] = (failures[reason] ?? 0) + 1;
            settle();
          },
        );
      }
    };
    pump();
  });
}

// --- reconnect storm ----------------------------------------------------------------------------

/**
 * While armed, a ready connection that the server drops reconnects like an SDK client
 * (src/client/backoff.ts, reconnectDelay): first attempt after a full-jitter delay in
 * [0, jitter), later attempts with the SDK's backoff (full jitter, 0.5 s doubling, capped at
 * 20 s), each attempt to a random endpoint (a load balancer that does not know which replica is
 * down), at most 30 attempts.
 */
const storm = { armed: false, timing: { jitter: 2000, min: 500, max: 20_000 }, endpoints: [], dropped: 0, reconnected: [], attempts: 0, failures: {}, gaveUp: 0 };

function reconnect(spec, last, attempt, droppedAt) {
  if (!storm.armed || closing) return;
  const delay = reconnectDelay(attempt, storm.timing);
  setTimeout(() => {
    if (!storm.armed || closing) return;
    storm.attempts++;
    const ep = storm.endpoints[Math.floor(Math.random() * storm.endpoints.length)];
    connectOne(
      spec,
      ep,
      () => storm.reconnected.push(clock.now()),
      (reason) => {
        storm.failures[reason] = (storm.failures[reason] ?? 0) + 1;
        if (attempt + 1 >= 30) storm.gaveUp++;
        else reconnect(spec, last, attempt + 1, droppedAt);
      },
      last,
    );
  }, delay);
}

// --- churn (soak) -------------------------------------------------------------------------------

/**
 * Churn: `count` random ready connections close themselves (as a client leaving) and the same
 * client connects again at once to a random endpoint, resubscribing with `since` on history
 * channels, so that nothing is lost across it. Not counted as disconnects; failed rejoins retry
 * after a second, at most 30 times.
 */
const churn = { closed: 0, back: 0, failed: 0, gaveUp: 0, endpoints: [] };

function rejoin(spec, last, attempt) {
  if (closing) return;
  const ep = churn.endpoints.length ? churn.endpoints[Math.floor(Math.random() * churn.endpoints.length)] : spec;
  connectOne(
    spec,
    ep,
    () => churn.back++,
    () => {
      churn.failed++;
      if (attempt + 1 >= 30) churn.gaveUp++;
      else setTimeout(() => rejoin(spec, last, attempt + 1), 1000);
    },
    last,
  );
}

function churnSome(count) {
  const ready = [...conns].filter((c) => c.state.isReady && !c.state.churned);
  for (let k = 0; k < count && ready.length; k++) {
    const i = Math.floor(Math.random() * ready.length);
    const conn = ready[i];
    ready[i] = ready[ready.length - 1];
    ready.pop();
    conn.state.churned = true;
    churn.closed++;
    conn.close();
  }
}

// --- connections that publish (chat) ---------------------------------------------------------

/** Last sequence number given out per channel index, kept across runs like the receivers' positions. */
const chanSeq = new Map();

/**
 * This thread's share of a chat load: the channels its `publishes` connections are on, each
 * published to by its members in turn, the channels round-robin, `msg.rate` messages/s in all.
 * Data carries the time it was sent (the generator shares a thread with receivers, so its timers
 * run late by a millisecond or so; that is reported as publisher lag, not as system latency).
 */
async function publish(msg) {
  const rooms = new Map();
  for (const conn of conns) {
    const st = conn.state;
    if (!st.isReady || !st.spec.publishes) continue;
    st.ci.forEach((c, j) => {
      let room = rooms.get(c);
      if (!room) rooms.set(c, (room = { c, ch: st.channels[j], members: [], next: 0 }));
      room.members.push({ spec: st.spec, j });
    });
  }
  const list = [...rooms.values()];
  const rate = msg.rate;
  const total = list.length && rate > 0 ? Math.floor((rate * msg.durationMs) / 1000) : 0;
  const lagHist = new Histogram();
  const start = clock.now() + 5;
  const hardStop = start + msg.durationMs + 10_000;
  const maxPerTick = Math.max(1, Math.ceil(rate / 200));
  let k = 0;
  let r = 0;
  let skipped = 0;
  while (k < total && clock.now() < hardStop) {
    const due = Math.min(total, Math.floor(((clock.now() - start) * rate) / 1000) + 1);
    for (let burst = 0; k < due && burst < maxPerTick; burst++, k++) {
      const room = list[r];
      r = r + 1 === list.length ? 0 : r + 1;
      // The member in turn, or the next one while it is away (churn): the room's messages stay numbered without holes.
      let m;
      for (let tries = 0; tries < room.members.length && !m; tries++) {
        const cand = room.members[room.next];
        room.next = room.next + 1 === room.members.length ? 0 : room.next + 1;
        if (cand.spec.conn?.state.isReady && !cand.spec.conn.closed) m = { conn: cand.spec.conn, j: cand.j };
      }
      if (!m) {
        skipped++;
        continue;
      }
      const s = (chanSeq.get(room.c) ?? 0) + 1;
      chanSeq.set(room.c, s);
      m.conn.state.ownSeq = s;
      m.conn.state.ownJ = m.j;
      const now = clock.now();
      dialect.publish(m.conn, room.ch, makeData(room.c, s, now, msg.size));
      lagHist.record((now - (start + (k * 1000) / rate)) * 1000);
    }
    if (k >= total) break;
    const wait = start + (k * 1000) / rate - clock.now();
    // No spinning: this core also runs the receivers, and a late send is only publisher lag.
    await new Promise((resolve) => setTimeout(resolve, Math.max(1, wait)));
  }
  const last = [];
  for (const room of list) last[room.c] = chanSeq.get(room.c);
  return { sent: k - skipped, planned: total, skipped, lagHist: lagHist.snapshot(), last };
}

/** Waits until every connection has seen the last sequence of each of its channels. */
async function tail(msg) {
  const expect = msg.expect; // array: channel index -> last sequence published
  const deadline = performance.now() + msg.timeoutMs;
  const missing = () => {
    let m = 0;
    for (const conn of conns) {
      const st = conn.state;
      if (!st.isReady) continue;
      for (let j = 0; j < st.ci.length; j++) {
        const want = expect[st.ci[j]] ?? 0;
        if (st.last[j] < want) m += want - st.last[j];
      }
    }
    return m;
  };
  let m = missing();
  while (m > 0 && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    m = missing();
  }
  return { missing: m };
}

port.on("message", async (msg) => {
  let reply;
  switch (msg.type) {
    case "clock":
      reply = { t: performance.timeOrigin + performance.now() };
      break;
    case "offset":
      clock.offset = msg.offset;
      reply = {};
      break;
    case "open":
      reply = await open(msg);
      break;
    case "reset":
      if (msg.scope === "step") step = newStats();
      stats.received = 0;
      stats.echoes = 0;
      stats.bytes = 0;
      stats.foreign = 0;
      hist.reset();
      reply = {};
      break;
    case "collect":
      reply = {
        received: stats.received,
        echoes: stats.echoes,
        bytes: stats.bytes,
        foreign: stats.foreign,
        gaps: step.gaps,
        dups: step.dups,
        recovered: step.recovered,
        recoveredPubs: step.recoveredPubs,
        recoveredFalse: step.recoveredFalse,
        unrecoveredSkipped: step.unrecoveredSkipped,
        subscribeRetries: step.subscribeRetries,
        reordered: step.reordered,
        disconnects: step.disconnects,
        notes: step.notes,
        open: conns.size,
        hist: hist.snapshot(),
      };
      break;
    case "storm":
      Object.assign(storm, { armed: msg.armed, timing: msg.timing ?? storm.timing, endpoints: msg.endpoints ?? storm.endpoints });
      if (msg.reset) Object.assign(storm, { dropped: 0, reconnected: [], attempts: 0, failures: {}, gaveUp: 0 });
      reply = {};
      break;
    case "stormStats":
      reply = { dropped: storm.dropped, reconnected: storm.reconnected, attempts: storm.attempts, failures: storm.failures, gaveUp: storm.gaveUp, open: conns.size };
      break;
    case "churn":
      if (msg.endpoints) churn.endpoints = msg.endpoints;
      churnSome(msg.count ?? 0);
      reply = { ...churn, endpoints: undefined };
      break;
    case "tail":
      reply = await tail(msg);
      break;
    case "publish":
      reply = await publish(msg);
      break;
    case "close":
      closing = true;
      for (const c of [...conns]) c.close();
      reply = {};
      break;
    default:
      reply = { error: `unknown ${msg.type}` };
  }
  port.postMessage({ id: msg.id, ...reply });
});
