/**
 * longpoll: P pollers (connect over POST /lp/rpc, then POST /lp/poll in a loop), every request
 * to the next replica in turn, on C channels of a history namespace (so nothing published between
 * two polls is lost: the cursor recovers it from JetStream). The publisher sends `rate` msgs/s
 * round-robin over the channels through NATS. Reports polls/s, deliveries/s, delivery latency
 * (publish schedule -> poll answer received), loss and SUT CPU.
 */
import { Worker } from "node:worker_threads";
import { Histogram } from "../histogram.js";
import { CpuWindow, sleep } from "../procs.js";
import { channelNames, closeClients, startPublisher, withSystem } from "../run.js";

export const defaults = { pollers: 200, channels: 10, rate: 50, size: 64, duration: 15, warmup: 2, pollTimeout: 25 };

export class LpThread {
  constructor(data) {
    this.w = new Worker(new URL("../lp-worker.js", import.meta.url), { workerData: data });
    this.seq = 0;
    this.waiting = new Map();
    this.w.on("message", (m) => {
      this.waiting.get(m.id)?.(m);
      this.waiting.delete(m.id);
    });
  }
  call(type, payload = {}) {
    const id = ++this.seq;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.w.postMessage({ id, type, ...payload });
    });
  }
  async syncClock() {
    let best = { rtt: Infinity, offset: 0 };
    for (let i = 0; i < 5; i++) {
      const t0 = performance.timeOrigin + performance.now();
      const { t } = await this.call("clock");
      const t1 = performance.timeOrigin + performance.now();
      if (t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: t - (t0 + t1) / 2 };
    }
    await this.call("offset", { offset: best.offset });
  }
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const size = o.sizes?.[0] ?? o.size;
  const results = { scenario: "longpoll", params: { pollers: o.pollers, channels: o.channels, rate: o.rate, size, duration: o.duration }, systems: {} };
  for (const kind of systems.filter((s) => s === "natsedge")) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      const threads = Array.from({ length: ctx.genThreads }, () => new LpThread({ endpoints: sys.endpoints, pollers: o.pollers, prefix: "lp.", pollTimeoutS: o.pollTimeout }));
      ctx.closers.push(async () => {
        await Promise.all(threads.map((t) => t.call("stop")));
        await Promise.all(threads.map((t) => t.w.terminate()));
      });
      try {
        await Promise.all(threads.map((t) => t.syncClock()));
        const parts = threads.map(() => []);
        for (let i = 0; i < o.pollers; i++) parts[i % threads.length].push(i % o.channels);
        await Promise.all(threads.map((t, i) => t.call("setup", { chans: parts[i] })));
        ctx.log(`[${kind}] ${o.pollers} pollers connected`);
        const pub = await startPublisher(ctx, sys, channelNames(o.channels, "lp."));
        const total = o.warmup + o.duration;
        await Promise.all(threads.map((t) => t.call("start", { durationMs: (total + 3) * 1000 })));
        const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid], ...sys.pidsByRole() });
        const running = pub.run({ rate: o.rate, durationMs: total * 1000, size, pattern: { kind: "rr" } });
        await sleep(o.warmup * 1000);
        await Promise.all(threads.map((t) => t.call("reset")));
        cpu.start();
        const sent = await running;
        const c = cpu.stop();
        const win = await Promise.all(threads.map((t) => t.call("collect")));
        await sleep(2500); // last polls come back
        const fin = await Promise.all(threads.map((t) => t.call("collect")));
        const hist = Histogram.merge(win.map((w) => w.hist));
        const polls = win.reduce((a, w) => a + w.polls, 0);
        const received = win.reduce((a, w) => a + w.received, 0);
        let tailMissing = 0;
        for (const f of fin) for (const [ch, last] of f.last) tailMissing += Math.max(0, (sent.last[ch] ?? 0) - last);
        const errorNotes = {};
        for (const f of fin) for (const [k, v] of Object.entries(f.errorNotes)) errorNotes[k] = (errorNotes[k] ?? 0) + v;
        const r = {
          published: sent.sent,
          pollsPerS: Math.round(polls / c.wallS),
          pollsWithDataShare: polls ? Math.round((win.reduce((a, w) => a + w.pollsWithData, 0) / polls) * 1000) / 1000 : null,
          deliveredPerS: Math.round(received / c.wallS),
          latencyMs: hist.summaryMs(),
          gaps: fin.reduce((a, f) => a + f.gaps, 0),
          dups: fin.reduce((a, f) => a + f.dups, 0),
          tailMissing,
          errors: fin.reduce((a, f) => a + f.errors, 0),
          errorNotes,
          cpu: {
            sutPctOfCore: c.groups.sut.pctOfCore,
            sutUsPerPoll: polls ? Math.round((c.groups.sut.cpuMicros / polls) * 10) / 10 : null,
            generatorPctOfCore: c.groups.generator.pctOfCore,
            byRole: { gateway: c.groups.gateway?.pctOfCore, nats: c.groups.nats?.pctOfCore },
            otherLoadPctOfCore: c.otherLoadPctOfCore,
          },
        };
        ctx.log(`[${kind}] longpoll: ${r.pollsPerS} polls/s, ${r.deliveredPerS} deliveries/s, p50 ${r.latencyMs.p50} p99 ${r.latencyMs.p99} ms, gaps ${r.gaps}, missing ${tailMissing}, errors ${r.errors}`);
        return r;
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return results;
}
