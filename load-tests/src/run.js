/**
 * Shared scenario machinery: system lifecycle, connection specs, and one measured publish step
 * (warm-up, measured window, tail check, CPU accounting, verdict).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { CpuWindow, sleep, waitQuiet } from "./procs.js";
import { Generator, Publisher } from "./generator.js";
import { startSystem } from "./topology.js";

/** Pins this process (every thread so far; threads created later inherit it). */
export function pinSelf(cpus) {
  try {
    execFileSync("taskset", ["-a", "-p", "-c", cpus.join(","), String(process.pid)], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Runs fn(system) with the system started and always stopped. */
export async function withSystem(ctx, kind, fn, extra = {}) {
  ctx.log(`[${kind}] starting`);
  const nodeArgs = ctx.opts.profile && kind !== "sio" ? ["--cpu-prof", "--cpu-prof-dir", path.join(ctx.logDir, `prof-${kind}`)] : [];
  if (ctx.opts.heapSnapshot) nodeArgs.push("--heapsnapshot-signal=SIGUSR2", "--diagnostic-dir", path.join(ctx.logDir, `heap-${kind}`));
  if (ctx.opts.nodeArgs && kind !== "sio") nodeArgs.push(...String(ctx.opts.nodeArgs).split(" ").filter(Boolean));
  for (const d of ["prof", "heap"]) mkdirSync(path.join(ctx.logDir, `${d}-${kind}`), { recursive: true });
  const sys = await startSystem(kind, { ...ctx.opts, sutCpus: ctx.sutCpus, logDir: ctx.logDir, nodeArgs, ...extra });
  sys.perSource = ctx.opts.perSource;
  ctx.onAbort = () => sys.stop();
  try {
    const lag0 = await sys.loopLag?.().catch(() => null);
    const result = await fn(sys);
    // Over the whole run (connecting included), for scenarios that have no measured window.
    const lag1 = lag0 && (await sys.loopLag().catch(() => null));
    if (lag1 && result && typeof result === "object") result.eventLoopLagWholeRun = lagBetween(lag0, lag1);
    return result;
  } finally {
    ctx.log(`[${kind}] stopping`);
    await sys.stop();
    ctx.onAbort = undefined;
  }
}

/**
 * Event-loop lag per gateway between two sys.loopLag() snapshots (cumulative buckets of
 * natsedge_event_loop_lag_seconds): p50 and p99 in ms read the way Prometheus's
 * histogram_quantile reads them (linear inside a bucket), and how many samples (10 ms ticks) that is.
 * A replica restarted in between starts from zero: its second snapshot is taken as is.
 */
export function lagBetween(before, after) {
  return after.map((buckets, g) => {
    const prev = before?.[g] ?? [];
    const restarted = (buckets.at(-1)?.count ?? 0) < (prev.at(-1)?.count ?? 0);
    const counts = buckets.map((b, i) => b.count - (restarted ? 0 : (prev[i]?.count ?? 0)));
    const total = counts.at(-1) ?? 0;
    const quantile = (q) => {
      if (!total) return null;
      const rank = q * total;
      const i = counts.findIndex((c) => c >= rank);
      const lower = i > 0 ? buckets[i - 1].le : 0;
      const below = i > 0 ? counts[i - 1] : 0;
      const upper = buckets[i].le;
      const v = upper === Infinity ? lower : lower + ((upper - lower) * (rank - below)) / (counts[i] - below);
      return Math.round(v * 1e5) / 100;
    };
    return { p50Ms: quantile(0.5), p99Ms: quantile(0.99), samples: total };
  });
}

/** Size of the box's ephemeral port range (net.ipv4.ip_local_port_range; 28,232 by default). */
function ephemeralPorts() {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/u).map(Number);
    return hi - lo + 1;
  } catch {
    return 28_232;
  }
}

/**
 * Loopback source ports. A plain connect() picks a source port unique per destination (address
 * and port) and may reuse a loopback port in TIME_WAIT (net.ipv4.tcp_tw_reuse), so each server
 * port can take about the whole ephemeral range from 127.0.0.1. Past PER_SOURCE connections to one
 * endpoint the clients bind source addresses 127.0.0.2-254 instead; a bind() picks a port unique
 * on its address over every destination and skips ports in TIME_WAIT, so each address gets at most
 * PER_SOURCE connections in all, and each call takes addresses after the last one used (a previous
 * system's closed connections hold theirs for a minute). `--per-source N` lowers the limit (to try
 * the bound path with few connections).
 */
const PER_SOURCE = Math.min(20_000, Math.floor(ephemeralPorts() * 0.7));
let nextSource = process.pid % 253;

/**
 * Connection specs: connection i goes to endpoint i mod E and subscribes to channelsOf(i)
 * (channel indexes; names are `${prefix}c<idx>`).
 */
export function connSpecs(sys, n, channelsOf, prefix = "bench.") {
  const E = sys.endpoints.length;
  const perSource = sys.perSource ?? PER_SOURCE;
  const sources = Math.ceil(n / E) > perSource ? Math.ceil(n / perSource) : 0;
  const base = nextSource;
  nextSource = (nextSource + sources) % 253;
  const specs = new Array(n);
  for (let i = 0; i < n; i++) {
    const ep = sys.endpoints[i % E];
    const idx = channelsOf(i);
    const spec = { host: ep.host, port: ep.port, epIndex: i % E, chanIdx: idx, channels: idx.map((c) => `${prefix}c${c}`) };
    if (sources) spec.localAddress = `127.0.0.${2 + ((base + (i % sources)) % 253)}`;
    specs[i] = spec;
  }
  return specs;
}

export function channelNames(count, prefix = "bench.") {
  return Array.from({ length: count }, (_, c) => `${prefix}c${c}`);
}

/** This process's open-files limit (every generator connection is a file descriptor here). */
export function fdLimit() {
  try {
    const m = /^Max open files\s+(\d+)/mu.exec(readFileSync("/proc/self/limits", "utf8"));
    return m ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

/** Refuses a connection count one process (of the generator) cannot hold. */
export function checkFds(n) {
  const limit = fdLimit();
  if (n + 500 > limit) {
    throw new Error(
      `${n} connections in one process need more file descriptors than it may open (${limit}, ` +
        "the hard limit here; raising it needs CAP_SYS_RESOURCE): lower --per-process",
    );
  }
}

/**
 * Connections one process takes at most, generator or server (a connection is a file descriptor
 * at each end, and the open-files limit is per process): --per-process, else 18,000 or the limit
 * less room for everything else the process opens.
 */
export function perProcess(ctx) {
  return ctx.opts.perProcess ?? Math.max(1_000, Math.min(18_000, fdLimit() - 2_000));
}

/**
 * A generator for n connections: worker threads of this process while one process holds them,
 * else (or with --gen-procs N) child processes, as many as it takes for perProcess(ctx) each and
 * at least as many as there would be threads.
 */
export async function startGenerator(ctx, sys, n) {
  const needed = Math.ceil(n / perProcess(ctx));
  const processes = ctx.opts.genProcs || needed > 1 ? Math.max(Number(ctx.opts.genProcs) || 0, needed, ctx.genThreads) : 0;
  checkFds(Math.ceil(n / Math.max(1, processes)));
  const gen = new Generator({ dialect: sys.dialect, threads: ctx.genThreads, processes });
  ctx.closers.push(() => gen.close());
  if (processes) ctx.log(`[${sys.kind}] generator: ${processes} processes, up to ${Math.ceil(n / processes)} connections each`);
  await gen.start();
  return gen;
}

/** Starts the generator and opens the connections; throws if any failed. */
export async function openClients(ctx, sys, specs, { allowFailures = false } = {}) {
  const gen = await startGenerator(ctx, sys, specs.length);
  const r = await gen.open(specs, { concurrency: ctx.opts.connectConcurrency ?? 100, timeoutMs: ctx.opts.connectTimeoutMs ?? 180_000 });
  ctx.log(`[${sys.kind}] ${r.ok}/${specs.length} connections subscribed in ${r.ms} ms (${Math.round((r.ok / r.ms) * 1000)}/s)`);
  if (r.failed > 0 && !allowFailures) {
    throw new Error(`${r.failed} of ${specs.length} connections failed: ${JSON.stringify(r.failures).slice(0, 400)}`);
  }
  return { gen, open: r };
}

export async function startPublisher(ctx, sys, channels) {
  const pub = new Publisher(sys.publisherCfg(channels));
  ctx.closers.push(() => pub.close());
  await pub.start();
  return pub;
}

/** Closes what the scenario opened (publisher, generator), in reverse order. */
export async function closeClients(ctx) {
  while (ctx.closers.length) {
    const c = ctx.closers.pop();
    await c().catch(() => {});
  }
}

/**
 * One step at a fixed publish rate: warm-up, then a measured window while the publisher keeps
 * going, then a tail check (every connection must have the last sequence of each of its channels).
 */
export async function measureStep(ctx, sys, gen, pub, { rate, size, pattern, durationS, warmupS, tailTimeoutMs = 5_000, drainTimeoutMs = 60_000 }) {
  if (sys.partitioned) throw new Error(`${sys.kind} runs as several processes without a broker: publications would not reach the other processes' clients`);
  const genPids = gen.pids?.() ?? [];
  const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid, ...genPids], ...sys.pidsByRole() });
  if (ctx.opts.quietWait) await waitQuiet([...sys.pids(), ...genPids], ctx.opts.quietWait, ctx.opts.quietLimit ?? 25, ctx.log);
  await gen.reset("step");
  const running = pub.run({ rate, durationMs: (warmupS + durationS) * 1000, size, pattern });
  await sleep(warmupS * 1000);
  await gen.reset("window");
  const lag0 = await sys.loopLag?.();
  cpu.start();
  const sent = await running;
  const c = cpu.stop();
  const lag1 = lag0 && (await sys.loopLag());
  const win = await gen.collect();
  const tail = await gen.tail(sent.last, tailTimeoutMs);
  const after = await gen.collect();
  // A step that fell behind leaves a backlog (socket and uWS buffers); give it time to drain so
  // the next step does not measure it, and say whether it did.
  let drain = tail;
  const drainStarted = performance.now();
  if (tail.missing > 0) drain = await gen.tail(sent.last, drainTimeoutMs);
  const lat = win.hist.summaryMs();
  const deliveredPerS = win.received / c.wallS;
  const sutUs = c.groups.sut.cpuMicros;
  const genCores = ctx.genCpus.length;
  const step = {
    rate,
    size,
    published: sent.sent,
    planned: sent.planned,
    publisherMaxLagMs: sent.maxLagMs,
    publisherLagMs: sent.lagMs,
    windowS: Math.round(c.wallS * 100) / 100,
    received: win.received,
    deliveredPerS: Math.round(deliveredPerS),
    payloadBytesPerMsg: win.received ? Math.round(win.bytes / win.received) : null,
    gaps: after.gaps,
    tailMissing: tail.missing,
    undrained: drain.missing,
    drainMs: tail.missing > 0 ? Math.round(performance.now() - drainStarted) : 0,
    dups: after.dups,
    disconnects: after.disconnects,
    openConnections: after.open,
    notes: after.notes,
    echoes: after.echoes,
    latencyMs: lat,
    eventLoopLag: lag1 ? lagBetween(lag0, lag1) : null,
    cpu: {
      sutPctOfCore: c.groups.sut.pctOfCore,
      sutKernelShare: c.groups.sut.kernelShare,
      sutUsPerDelivery: win.received ? Math.round((sutUs / win.received) * 1000) / 1000 : null,
      generatorPctOfCore: c.groups.generator.pctOfCore,
      byRole: Object.fromEntries(Object.entries(c.groups).filter(([k]) => k !== "sut" && k !== "generator").map(([k, v]) => [k, v.pctOfCore])),
      usPerPublishedByRole: Object.fromEntries(
        Object.entries(c.groups)
          .filter(([k]) => k !== "generator")
          // The window covers rate x wallS of the fixed schedule (sent.sent includes the warm-up).
          .map(([k, v]) => [k, Math.round((v.cpuMicros / (rate * c.wallS)) * 10) / 10]),
      ),
      cores: c.cores,
      otherLoadPctOfCore: c.otherLoadPctOfCore,
    },
  };
  step.clientBound = step.cpu.generatorPctOfCore >= 90 * genCores;
  const reasons = [];
  if (step.published < step.planned) reasons.push(`publisher sent ${step.published}/${step.planned}`);
  if (sent.closed) reasons.push(`publisher connection closed (${sent.closed})`);
  if (lat.p99 === null || lat.p99 > ctx.maxP99Ms) reasons.push(`p99 ${lat.p99} ms > ${ctx.maxP99Ms} ms`);
  if (step.gaps > 0) reasons.push(`${step.gaps} sequence gaps`);
  if (step.tailMissing > 0) {
    reasons.push(
      step.undrained > 0
        ? `${step.undrained} never arrived`
        : `${step.tailMissing} still queued 5 s after the last publish (drained after ${(step.drainMs / 1000).toFixed(1)} s more)`,
    );
  }
  if (step.disconnects > 0) reasons.push(`${step.disconnects} disconnects`);
  step.clean = reasons.length === 0;
  step.verdict = step.clean ? "clean" : reasons.join("; ");
  ctx.log(
    `[${sys.kind}] rate ${rate}/s size ${size}: ${step.deliveredPerS} deliveries/s, p50 ${lat.p50} p99 ${lat.p99} p99.9 ${lat.p999} max ${lat.max} ms, ` +
      `SUT ${step.cpu.sutPctOfCore}% (kernel ${Math.round((step.cpu.sutKernelShare ?? 0) * 100)}%) ${step.cpu.sutUsPerDelivery} us/msg, generator ${step.cpu.generatorPctOfCore}%, other load ${c.otherLoadPctOfCore}%, publisher lag p99 ${sent.lagMs.p99} ms${
      step.eventLoopLag ? `, event-loop lag p99 ${step.eventLoopLag.map((l) => l.p99Ms).join(" / ")} ms` : ""
    } -> ${step.verdict}`,
  );
  return step;
}
