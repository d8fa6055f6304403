/**
 * fanout: one channel, N subscribers (spread over the system's endpoints), the publisher ramps the
 * rate in steps (x factor) until a step is not clean (p99 above the limit, or any loss, or a
 * disconnect); then one step between the last clean and the first failed rate refines the result.
 * A step that fails while other jobs use more than --quiet-limit % of a core (the box is shared) is
 * repeated, at most twice. Reported: the highest clean step per payload size.
 */
import { closeClients, connSpecs, measureStep, openClients, startPublisher, withSystem } from "../run.js";
import { sleep, waitQuiet } from "../procs.js";

export const defaults = {
  subscribers: 1000,
  sizes: [64, 1024],
  startRate: { natsedge: 50, uws: 50, sio: 10 },
  factor: 2,
  maxRate: 100_000,
  maxSteps: 12,
  duration: 4,
  warmup: 1,
  refine: true,
};

/**
 * One system, one round: each payload size ramped on a freshly started system (a failed step can
 * leave backlogs and dropped clients behind).
 */
async function runOne(ctx, kind, o) {
  const bySize = {};
  let connect;
  for (const size of o.sizes) {
    bySize[size] = await withSystem(ctx, kind, async (sys) => {
      const specs = connSpecs(sys, o.subscribers, () => [0]);
      const { gen, open } = await openClients(ctx, sys, specs);
      connect ??= open;
      const pub = await startPublisher(ctx, sys, ["bench.c0"]);
      try {
        const steps = [];
        let rate = typeof o.startRate === "object" ? o.startRate[kind] : o.startRate;
        let best;
        let failed;
        const limit = ctx.opts.quietLimit ?? 25;
        /** A step that failed while other jobs were busy on the box is repeated (at most twice). */
        const measure = async (r) => {
          for (let attempt = 0; ; attempt++) {
            const step = await measureStep(ctx, sys, gen, pub, { rate: r, size, durationS: o.duration, warmupS: o.warmup });
            const disturbed = !step.clean && step.cpu.otherLoadPctOfCore > limit && step.undrained === 0 && step.openConnections === o.subscribers;
            if (!disturbed || attempt >= 2) return step;
            step.disturbed = true;
            steps.push(step);
            ctx.log(`[${kind}] step at ${r}/s failed while other jobs used ${step.cpu.otherLoadPctOfCore} % of a core: repeating it`);
            await waitQuiet(sys.pids(), 30, limit, ctx.log);
          }
        };
        for (let i = 0; i < o.maxSteps && rate <= o.maxRate; i++) {
          const step = await measure(rate);
          steps.push(step);
          if (!step.clean) {
            failed = step;
            break;
          }
          best = step;
          rate = Math.round(rate * o.factor);
        }
        // Refine between the last clean and the failed rate, if the failed step left nothing behind.
        if (o.refine && best && failed && failed.openConnections === o.subscribers && failed.undrained === 0) {
          const mid = Math.round(Math.sqrt(best.rate * failed.rate));
          if (mid > best.rate && mid < failed.rate) {
            await sleep(1000);
            const step = await measure(mid);
            steps.push(step);
            if (step.clean) best = step;
          }
        }
        return { best: best ?? null, firstFailed: failed ?? null, steps };
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return { connect, bySize };
}

/** Of several rounds, the one whose highest clean step is the median (per payload size). */
function medianRound(rounds, sizes) {
  const out = { connect: rounds[0].connect, bySize: {} };
  for (const size of sizes) {
    const have = rounds.filter((r) => r.bySize[size]);
    if (have.length === 0) continue;
    const score = (r) => r.bySize[size].best?.deliveredPerS ?? 0;
    const sorted = [...have].sort((a, b) => score(a) - score(b));
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    out.bySize[size] = {
      ...median.bySize[size],
      rounds: have.map((r) => ({
        rate: r.bySize[size].best?.rate ?? null,
        deliveredPerS: r.bySize[size].best?.deliveredPerS ?? null,
        usPerDelivery: r.bySize[size].best?.cpu.sutUsPerDelivery ?? null,
        p99: r.bySize[size].best?.latencyMs.p99 ?? null,
      })),
      medianOf: have.length,
    };
  }
  return out;
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const rounds = o.rounds ?? 1;
  const results = {
    scenario: "fanout",
    params: { subscribers: o.subscribers, sizes: o.sizes, duration: o.duration, warmup: o.warmup, factor: o.factor, rounds },
    systems: {},
  };
  const all = Object.fromEntries(systems.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    for (const kind of systems) {
      if (rounds > 1) ctx.log(`[${kind}] round ${r + 1}/${rounds}`);
      all[kind].push(await runOne(ctx, kind, o));
    }
  }
  for (const kind of systems) results.systems[kind] = rounds > 1 ? medianRound(all[kind], o.sizes) : all[kind][0];
  return results;
}
