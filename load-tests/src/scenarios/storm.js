/**
 * storm: N connected clients (2 subscriptions each, shared channels) over the replicas while the
 * publisher keeps `rate` msgs/s flowing; replica 0 is SIGKILLed and started again on the same
 * port. Its clients reconnect like browser clients: first attempt after a full-jitter delay in
 * [0, window), then exponential backoff, each attempt to a random replica (a load balancer that
 * does not know the replica is down), resubscribing on arrival. Reported: T99 / T100 (kill -> 99 % / all of the dropped clients
 * subscribed again), peak reconnects/s, failed attempts, NATS subscription churn (nats-server
 * /subsz inserts/removes; natsedge_channels before/after), RSS of the restarted replica.
 * natsedge only; the channels have no history, so publications during a client's gap are missed
 * by design and counted separately, not as loss. The second variant of the research plan (reset
 * every socket, process stays up) is not implemented.
 */
import { closeClients, connSpecs, openClients, startPublisher, channelNames, withSystem } from "../run.js";
import { rssBytes, sleep } from "../procs.js";
import { clock } from "../ws.js";

export const defaults = { connections: 10_000, rate: 200, window: 5, timeout: 60 };

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const n = o.connections;
  const results = { scenario: "storm", params: { connections: n, rate: o.rate, windowS: o.window }, systems: {} };
  for (const kind of systems.filter((s) => s === "natsedge")) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      const specs = connSpecs(sys, n, (i) => [i % 100, 100 + (Math.floor(i / 100) % 100)]);
      try {
        const { gen, open } = await openClients(ctx, sys, specs);
        const pub = await startPublisher(ctx, sys, channelNames(200));
        const total = o.window + 15; // publishing through the storm; the measurement does not wait for it
        const running = pub.run({ rate: o.rate, durationMs: total * 1000, size: 64, pattern: { kind: "rr" } });
        running.catch(() => {}); // awaited below; an earlier failure must not surface as this one
        await sleep(3000);
        const victim = sys.gateways[0];
        const steadyRss = rssBytes(victim.entry.pid);
        const subsBefore = await sys.natsMonitor("/subsz");
        const channelsBefore = await sys.gauge("natsedge_channels");
        await gen.storm({ armed: true, reset: true, windowMs: o.window * 1000, endpoints: sys.endpoints });
        await gen.reset("step");
        ctx.log(`[${kind}] SIGKILL replica 0 (${victim.port}) with ${Math.round(n / sys.endpoints.length)} clients`);
        const t0 = clock.now();
        const restart = await sys.killAndRestart(0);
        ctx.log(`[${kind}] replica 0 ready again after ${restart.readyAfterMs} ms`);
        let peakRss = 0;
        let st = await gen.stormStats();
        const deadline = Date.now() + o.timeout * 1000;
        while (Date.now() < deadline && (st.dropped === 0 || st.reconnected.length + st.gaveUp < st.dropped)) {
          await sleep(200);
          peakRss = Math.max(peakRss, rssBytes(sys.gateways[0].entry.pid) ?? 0);
          st = await gen.stormStats();
        }
        const done = clock.now();
        await sleep(2000);
        peakRss = Math.max(peakRss, rssBytes(sys.gateways[0].entry.pid) ?? 0);
        const afterRss = rssBytes(sys.gateways[0].entry.pid);
        const subsAfter = await sys.natsMonitor("/subsz");
        const channelsAfter = await sys.gauge("natsedge_channels");
        const times = st.reconnected.map((t) => t - t0);
        const at = (q) => (times.length ? times[Math.min(times.length - 1, Math.ceil(q * st.dropped) - 1)] : null);
        let peak = 0;
        for (let i = 0, j = 0; i < times.length; i++) {
          while (times[i] - times[j] > 1000) j++;
          peak = Math.max(peak, i - j + 1);
        }
        await gen.storm({ armed: false });
        const sent = await running;
        const win = await gen.collect();
        const r = {
          connections: n,
          connect: open,
          dropped: st.dropped,
          reconnected: st.reconnected.length,
          gaveUp: st.gaveUp,
          failedAttempts: Object.values(st.failures).reduce((a, b) => a + b, 0),
          attempts: st.attempts,
          failures: st.failures,
          replicaReadyAfterMs: restart.readyAfterMs,
          t50Ms: at(0.5) === null ? null : Math.round(at(0.5)),
          t99Ms: st.reconnected.length >= Math.ceil(0.99 * st.dropped) ? Math.round(at(0.99)) : null,
          t100Ms: st.reconnected.length >= st.dropped ? Math.round(at(1)) : null,
          peakReconnectsPerS: peak,
          stormMs: Math.round(done - t0),
          nats: {
            subInsertsDuringStorm: subsAfter.num_inserts - subsBefore.num_inserts,
            subRemovesDuringStorm: subsAfter.num_removes - subsBefore.num_removes,
            subscriptionsBefore: subsBefore.num_subscriptions,
            subscriptionsAfter: subsAfter.num_subscriptions,
            channelsPerReplicaBefore: channelsBefore,
            channelsPerReplicaAfter: channelsAfter,
            distinctChannels: 200,
          },
          restartedReplicaRss: { steadyBefore: steadyRss, peak: peakRss, after: afterRss },
          published: sent.sent,
          missedDuringGap: win.gaps,
          openAtEnd: win.open,
        };
        ctx.log(
          `[${kind}] storm: ${r.reconnected}/${r.dropped} back, T50 ${r.t50Ms} ms, T99 ${r.t99Ms} ms, T100 ${r.t100Ms} ms, peak ${peak}/s, ${r.failedAttempts} failed attempts, SUB inserts ${r.nats.subInsertsDuringStorm}`,
        );
        return r;
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return results;
}
