/**
 * idle: N connections, each with 2 subscriptions, nobody publishes. Per connection: server RSS
 * growth (gateways / baseline servers; also including the broker), JS heap growth, kernel memory,
 * and the idle CPU of the whole system under test over the window (long enough to include a
 * keepalive ping cycle with the default 30 s).
 * Shapes: shared (channels c<i mod 100> and c<100 + (i div 100) mod 100>) or personal
 * (c<i> and a group channel of 10).
 * Every process holds at most perProcess connections (the open-files limit is per process): past
 * that the generator runs as several processes, and each system gets as many server processes as
 * it takes (natsedge replicas, raw uWS processes on their own ports, Socket.IO processes); the
 * figures per connection are summed over a system's server processes.
 */
import { closeClients, connSpecs, perProcess, startGenerator, withSystem } from "../run.js";
import { CpuWindow, sleep } from "../procs.js";
import { perConnection, snapshot } from "../memory.js";

export const defaults = { connections: 15_000, duration: 30, shape: "shared" };

const SERVER_ROLES = { natsedge: ["gateway"], uws: ["server"], sio: ["server"] };

/** The server processes each system gets for n connections: what is asked for (or the default), more if that is too few. */
export function serverProcesses(ctx, n) {
  const fit = Math.ceil(n / perProcess(ctx));
  return {
    natsedge: { replicas: Math.max(ctx.opts.replicas ?? 2, fit) },
    uws: { uwsProcs: Math.max(ctx.opts.uwsProcs ?? 1, fit) },
    sio: { sioProcs: Math.max(ctx.opts.sioProcs ?? 2, fit) },
  };
}

export function channelsFor(shape, n) {
  if (shape === "personal") return (i) => [i, n + Math.floor(i / 10)];
  return (i) => [i % 100, 100 + (Math.floor(i / 100) % 100)];
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const n = o.connections;
  const servers = serverProcesses(ctx, n);
  const results = { scenario: "idle", params: { connections: n, duration: o.duration, shape: o.shape, perProcess: perProcess(ctx) }, systems: {} };
  for (const kind of systems) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      const count = (role) => sys.procs.filter((p) => p.role === role).length;
      const serverProcs = SERVER_ROLES[kind].reduce((a, r) => a + count(r), 0);
      ctx.log(`[${kind}] ${serverProcs} server processes, up to ${Math.ceil(n / serverProcs)} connections each`);
      await sleep(1000);
      const before = await snapshot(sys);
      const specs = connSpecs(sys, n, channelsFor(o.shape, n));
      const half = Math.floor(n / 2);
      try {
        // Two halves: the growth from the first half to all of them is the marginal cost of a
        // connection, free of one-off growth (buffers, arenas) that the average from zero also
        // carries. V8's young generation is not always done growing at N/2: it grows with what
        // survives its collections, up to 16 MiB per semi-space (see docs/benchmarks.md).
        const gen = await startGenerator(ctx, sys, n);
        const concurrency = ctx.opts.connectConcurrency ?? 100;
        const first = await gen.open(specs.slice(0, half), { concurrency, timeoutMs: 300_000 });
        await sleep(2000);
        const mid = await snapshot(sys, { samples: 5 });
        const second = await gen.open(specs.slice(half), { concurrency, timeoutMs: 300_000 });
        const open = { ok: first.ok + second.ok, failed: first.failed + second.failed, ms: first.ms + second.ms, failures: { ...first.failures, ...second.failures } };
        ctx.log(`[${kind}] ${open.ok}/${n} connections subscribed in ${open.ms} ms`);
        if (open.failed > 0) throw new Error(`${open.failed} connections failed: ${JSON.stringify(open.failures).slice(0, 300)}`);
        await sleep(2000);
        const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid, ...gen.pids()] });
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
          // server: the processes the per-connection figures are summed over; broker: nats-server / redis-server
          processes: { server: serverProcs, broker: count("nats") + count("redis"), generator: gen.processes },
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
    }, servers[kind]);
  }
  return results;
}
