/**
 * idle: N connections, each with 2 subscriptions, nobody publishes. Per connection: server RSS
 * growth (gateways / baseline servers; also including the broker), JS heap growth, kernel memory,
 * and the idle CPU of the whole system under test over the window (long enough to include a
 * keepalive ping cycle with the default 30 s).
 * Shapes: shared (channels c<i mod 100> and c<100 + (i div 100) mod 100>) or personal
 * (c<i> and a group channel of 10).
 */
import { Generator } from "../generator.js";
import { checkFds, closeClients, connSpecs, withSystem } from "../run.js";
import { CpuWindow, sleep } from "../procs.js";
import { perConnection, snapshot } from "../memory.js";

export const defaults = { connections: 15_000, duration: 30, shape: "shared" };

const SERVER_ROLES = { natsedge: ["gateway"], uws: ["server"], sio: ["server"] };

export function channelsFor(shape, n) {
  if (shape === "personal") return (i) => [i, n + Math.floor(i / 10)];
  return (i) => [i % 100, 100 + (Math.floor(i / 100) % 100)];
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const n = o.connections;
  checkFds(n);
  const results = { scenario: "idle", params: { connections: n, duration: o.duration, shape: o.shape }, systems: {} };
  for (const kind of systems) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      await sleep(1000);
      const before = await snapshot(sys);
      const specs = connSpecs(sys, n, channelsFor(o.shape, n));
      const half = Math.floor(n / 2);
      try {
        // Two halves: the growth from the first half to all of them is the marginal cost of a
        // connection, free of one-off growth (buffers, arenas) that the average from zero also
        // carries. V8's young generation is not always done growing at N/2: it grows with what
        // survives its collections, up to 16 MiB per semi-space (see docs/benchmarks.md).
        const gen = new Generator({ dialect: sys.dialect, threads: ctx.genThreads });
        ctx.closers.push(() => gen.close());
        await gen.start();
        const concurrency = ctx.opts.connectConcurrency ?? 100;
        const first = await gen.open(specs.slice(0, half), { concurrency, timeoutMs: 300_000 });
        await sleep(2000);
        const mid = await snapshot(sys, { samples: 5 });
        const second = await gen.open(specs.slice(half), { concurrency, timeoutMs: 300_000 });
        const open = { ok: first.ok + second.ok, failed: first.failed + second.failed, ms: first.ms + second.ms, failures: { ...first.failures, ...second.failures } };
        ctx.log(`[${kind}] ${open.ok}/${n} connections subscribed in ${open.ms} ms`);
        if (open.failed > 0) throw new Error(`${open.failed} connections failed: ${JSON.stringify(open.failures).slice(0, 300)}`);
        await sleep(2000);
        const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid] });
        cpu.start();
        await sleep(o.duration * 1000);
        const c = cpu.stop();
        const after = await snapshot(sys, { samples: 5 });
        if (ctx.opts.heapSnapshot) {
          // --heap-snapshot: the servers were started with --heapsnapshot-signal=SIGUSR2
          for (const p of sys.procs.filter((x) => x.role === "gateway" || x.role === "server")) process.kill(p.entry.pid, "SIGUSR2");
          await sleep(15_000);
        }
        const stats = await gen.collect();
        const per = perConnection(before, after, n, SERVER_ROLES[kind]);
        const marginal = perConnection(mid, after, n - half, SERVER_ROLES[kind]);
        const extra = {};
        if (kind === "natsedge") {
          extra.natsedgeChannels = await sys.gauge("natsedge_channels");
          extra.natsedgeConnections = await sys.gauge("natsedge_connections");
          extra.natsSubscriptions = (await sys.natsMonitor("/subsz")).num_subscriptions;
        }
        const r = {
          connections: n,
          connect: { ...open, perS: Math.round((open.ok / open.ms) * 1000) },
          openAtEnd: stats.open,
          disconnects: stats.disconnects,
          rssPerConnBytes: Math.round(marginal.rssPerConn),
          rssPerConnInclBrokerBytes: Math.round(marginal.rssPerConnInclBroker),
          heapPerConnBytes: Math.round(marginal.heapPerConn),
          rssPerConnAvgBytes: Math.round(per.rssPerConn),
          heapPerConnAvgBytes: Math.round(per.heapPerConn),
          kernelTcpPerConnPairBytes: Math.round(marginal.kernelTcpPerConnPair),
          kernelSlabPerConnPairBytes: Math.round(marginal.kernelSlabPerConnPair),
          rssDeltaByRole: per.rssByRole,
          before,
          mid,
          after,
          idleCpuPctOfCore: c.groups.sut.pctOfCore,
          idleCpuWindowS: Math.round(c.wallS),
          otherLoadPctOfCore: c.otherLoadPctOfCore,
          ...extra,
        };
        ctx.log(
          `[${kind}] idle ${n}: RSS ${(r.rssPerConnBytes / 1024).toFixed(2)} KiB/conn marginal, ${(r.rssPerConnAvgBytes / 1024).toFixed(2)} average (incl. broker ${(r.rssPerConnInclBrokerBytes / 1024).toFixed(2)}), heap ${(r.heapPerConnBytes / 1024).toFixed(2)} KiB/conn, idle CPU ${r.idleCpuPctOfCore}%`,
        );
        return r;
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return results;
}
