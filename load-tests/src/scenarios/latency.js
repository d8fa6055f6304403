/**
 * latency: fixed moderate load. N connections over C channels (connection i on channel i mod C),
 * the publisher sends `rate` messages/s round-robin over the channels for `duration` seconds.
 * With --rounds R the systems run R times, interleaved, and the round with the median p99 is
 * reported (all rounds' percentiles are kept).
 */
import { channelNames, closeClients, connSpecs, measureStep, openClients, startPublisher, withSystem } from "../run.js";

export const defaults = { connections: 5000, channels: 100, rate: 1000, size: 256, duration: 20, warmup: 2 };

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const size = o.sizes?.[0] ?? o.size;
  const rounds = o.rounds ?? 1;
  const results = {
    scenario: "latency",
    params: { connections: o.connections, channels: o.channels, rate: o.rate, size, duration: o.duration, rounds, deliveriesPerS: o.rate * (o.connections / o.channels) },
    systems: {},
  };
  const all = Object.fromEntries(systems.map((k) => [k, []]));
  for (let r = 0; r < rounds; r++) {
    for (const kind of systems) {
      if (rounds > 1) ctx.log(`[${kind}] round ${r + 1}/${rounds}`);
      all[kind].push(
        await withSystem(ctx, kind, async (sys) => {
          const specs = connSpecs(sys, o.connections, (i) => [i % o.channels]);
          try {
            const { gen, open } = await openClients(ctx, sys, specs);
            const pub = await startPublisher(ctx, sys, channelNames(o.channels));
            const step = await measureStep(ctx, sys, gen, pub, { rate: o.rate, size, durationS: o.duration, warmupS: o.warmup, pattern: { kind: "rr" } });
            return { connect: open, step };
          } finally {
            await closeClients(ctx);
          }
        }),
      );
    }
  }
  for (const kind of systems) {
    const runs = all[kind];
    const sorted = [...runs].sort((a, b) => (a.step.latencyMs.p99 ?? Infinity) - (b.step.latencyMs.p99 ?? Infinity));
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    results.systems[kind] = rounds > 1 ? { ...median, rounds: runs.map((x) => ({ ...x.step.latencyMs, otherLoad: x.step.cpu.otherLoadPctOfCore, usPerDelivery: x.step.cpu.sutUsPerDelivery })) } : median;
  }
  return results;
}
