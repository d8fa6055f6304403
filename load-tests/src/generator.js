/**
 * Main-thread side of the load generator: a pool of generator workers (gen-worker.js) holding the
 * subscribing connections, and one publisher thread (pub-worker.js). The workers are threads of
 * this process, or child processes of their own when the connections need more file descriptors
 * than one process may open. All of them share the main thread's clock (offset measured by
 * ping-pong at start), so send and receive times compare.
 */
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { Histogram } from "./histogram.js";

/** Request/reply by id with one worker; subclasses carry the messages (thread port or process IPC). */
class Peer {
  constructor(name) {
    this.name = name;
    this.seq = 0;
    this.waiting = new Map();
  }

  receive(m) {
    const w = this.waiting.get(m.id);
    if (!w) return;
    this.waiting.delete(m.id);
    if (m.error) w.reject(new Error(m.error));
    else w.resolve(m);
  }

  fail(err) {
    for (const w of this.waiting.values()) w.reject(err);
    this.waiting.clear();
  }

  call(type, payload = {}, timeoutMs = 120_000) {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`${this.name} call ${type} timed out`));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      try {
        this.post({ id, type, ...payload });
      } catch (err) {
        this.waiting.get(id)?.reject(err);
        this.waiting.delete(id);
      }
    });
  }

  /** Offset of the worker's clock against this one: minimum-RTT sample of a few ping-pongs. */
  async syncClock() {
    let best = { rtt: Infinity, offset: 0 };
    for (let i = 0; i < 9; i++) {
      const t0 = performance.timeOrigin + performance.now();
      const { t } = await this.call("clock");
      const t1 = performance.timeOrigin + performance.now();
      if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: t - (t0 + t1) / 2 };
    }
    await this.call("offset", { offset: best.offset });
    return best;
  }
}

class Thread extends Peer {
  constructor(file, data) {
    super(`${file} thread`);
    this.worker = new Worker(new URL(file, import.meta.url), { workerData: data });
    this.worker.on("message", (m) => this.receive(m));
    this.worker.on("error", (err) => {
      process.stderr.write(`${file} thread failed: ${err?.stack ?? err}\n`);
      this.fail(err);
    });
    this.worker.on("exit", (code) => this.fail(new Error(`worker exited (${code})`)));
  }

  post(m) {
    this.worker.postMessage(m);
  }

  terminate() {
    return this.worker.terminate();
  }
}

/**
 * A worker in a child process of its own: its own open-files limit. It inherits this process's
 * CPU affinity and nice value; structured-clone IPC carries the same messages a thread gets.
 */
class Proc extends Peer {
  constructor(file, data) {
    super(`${file} process ${data.index}`);
    this.child = fork(fileURLToPath(new URL(file, import.meta.url)), [JSON.stringify(data)], {
      serialization: "advanced",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    this.pid = this.child.pid;
    this.exited = false;
    this.child.on("message", (m) => this.receive(m));
    this.child.on("error", (err) => this.fail(err));
    this.child.on("exit", (code, signal) => {
      this.exited = true;
      this.fail(new Error(`${this.name} exited (${code ?? signal})`));
    });
  }

  post(m) {
    this.child.send(m);
  }

  /** Disconnecting makes it exit (its sockets close with it); SIGKILL if it has not after 5 s. */
  async terminate() {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    if (this.child.connected) this.child.disconnect();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

export class Generator {
  /**
   * `threads` worker threads in this process, or with `processes` > 0 that many child processes
   * (one worker each) instead. Either way `threads` lists the workers, each with call().
   */
  constructor({ dialect, threads, processes = 0 }) {
    this.dialect = dialect;
    this.processes = processes > 0 ? processes : 1;
    this.threads =
      processes > 0
        ? Array.from({ length: processes }, (_, i) => new Proc("./gen-worker.js", { dialect, index: i }))
        : Array.from({ length: threads }, (_, i) => new Thread("./gen-worker.js", { dialect, index: i }));
  }

  /** The child processes holding connections (none when they are threads of this process). */
  pids() {
    return this.threads.filter((t) => t instanceof Proc && !t.exited).map((t) => t.pid);
  }

  async start() {
    await Promise.all(this.threads.map((t) => t.syncClock()));
  }

  /**
   * Opens connections (specs: {host, port, channels, chanIdx, localAddress?, thread?}), spread
   * evenly over the workers unless a spec names its worker, each worker keeping `concurrency`
   * handshakes in flight.
   */
  async open(specs, { concurrency = 64, timeoutMs = 120_000 } = {}) {
    const parts = this.threads.map(() => []);
    specs.forEach((s, i) => parts[(s.thread ?? i) % parts.length].push(s));
    // Each thread's share of a chat load: the channels it publishes to.
    this.published = parts.map((p) => new Set(p.filter((s) => s.publishes).flatMap((s) => s.chanIdx)).size);
    const started = performance.now();
    const results = await Promise.all(
      this.threads.map((t, i) => t.call("open", { conns: parts[i], concurrency, timeoutMs }, timeoutMs + 10_000)),
    );
    const failures = {};
    for (const r of results) for (const [k, v] of Object.entries(r.failures)) failures[k] = (failures[k] ?? 0) + v;
    const ms = performance.now() - started;
    return {
      ok: results.reduce((a, r) => a + r.ok, 0),
      failed: results.reduce((a, r) => a + r.failed, 0),
      failures,
      ms: Math.round(ms),
    };
  }

  reset(scope) {
    return Promise.all(this.threads.map((t) => t.call("reset", { scope })));
  }

  async collect() {
    const parts = await Promise.all(this.threads.map((t) => t.call("collect")));
    const notes = {};
    for (const p of parts) for (const [k, v] of Object.entries(p.notes)) notes[k] = (notes[k] ?? 0) + v;
    const sum = (k) => parts.reduce((a, p) => a + p[k], 0);
    return {
      received: sum("received"),
      bytes: sum("bytes"),
      foreign: sum("foreign"),
      gaps: sum("gaps"),
      dups: sum("dups"),
      recovered: sum("recovered"),
      recoveredPubs: sum("recoveredPubs"),
      recoveredFalse: sum("recoveredFalse"),
      unrecoveredSkipped: sum("unrecoveredSkipped"),
      subscribeRetries: sum("subscribeRetries"),
      reordered: sum("reordered"),
      disconnects: sum("disconnects"),
      open: sum("open"),
      echoes: sum("echoes"),
      notes,
      hist: Histogram.merge(parts.map((p) => p.hist)),
    };
  }

  storm(opts) {
    return Promise.all(this.threads.map((t) => t.call("storm", opts)));
  }

  async stormStats() {
    const parts = await Promise.all(this.threads.map((t) => t.call("stormStats")));
    const failures = {};
    for (const p of parts) for (const [k, v] of Object.entries(p.failures)) failures[k] = (failures[k] ?? 0) + v;
    return {
      dropped: parts.reduce((a, p) => a + p.dropped, 0),
      reconnected: parts.flatMap((p) => p.reconnected).sort((a, b) => a - b),
      attempts: parts.reduce((a, p) => a + p.attempts, 0),
      gaveUp: parts.reduce((a, p) => a + p.gaveUp, 0),
      open: parts.reduce((a, p) => a + p.open, 0),
      failures,
    };
  }

  /**
   * The connections publish themselves (chat): `rate` messages/s in all, each thread sending for
   * the channels its connections were opened with `publishes: true` for (a channel's publishers
   * must all be in one thread: it numbers the channel's messages). Same result shape as
   * Publisher.run, so measureStep takes a generator as its publisher.
   */
  async run({ rate, durationMs, size }) {
    const all = (this.published ?? []).reduce((a, n) => a + n, 0);
    const parts = await Promise.all(
      this.threads.map((t, i) => t.call("publish", { rate: all ? (rate * this.published[i]) / all : 0, durationMs, size }, durationMs + 30_000)),
    );
    const last = [];
    for (const p of parts) p.last.forEach((v, c) => (last[c] = Math.max(last[c] ?? 0, v)));
    const lag = Histogram.merge(parts.map((p) => p.lagHist)).summaryMs();
    return {
      sent: parts.reduce((a, p) => a + p.sent, 0),
      planned: parts.reduce((a, p) => a + p.planned, 0),
      lagMs: lag,
      maxLagMs: lag.max,
      last: Array.from(last, (v) => v ?? 0),
      closed: null,
    };
  }

  async tail(expect, timeoutMs) {
    const parts = await Promise.all(this.threads.map((t) => t.call("tail", { expect, timeoutMs }, timeoutMs + 10_000)));
    return { missing: parts.reduce((a, p) => a + p.missing, 0) };
  }

  async close() {
    await Promise.allSettled(this.threads.map((t) => t.call("close", {}, 5_000)));
    await new Promise((r) => setTimeout(r, 300));
    await Promise.allSettled(this.threads.map((t) => t.terminate()));
  }
}

export class Publisher {
  constructor(cfg) {
    this.thread = new Thread("./pub-worker.js", cfg);
  }

  async start() {
    await this.thread.syncClock();
    await this.thread.call("setup", {}, 30_000);
  }

  /** rate msgs/s for durationMs; pattern: {kind:"rr"} or {kind:"weighted", groups:[{from,to,weight}]}. */
  run({ rate, durationMs, size, pattern }) {
    return this.thread.call("run", { rate, durationMs, size, pattern }, durationMs + 30_000);
  }

  async close() {
    await this.thread.call("close", {}, 5_000).catch(() => {});
    await this.thread.terminate();
  }
}
