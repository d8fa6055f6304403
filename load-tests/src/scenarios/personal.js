/**
 * personal: N connections, each on its own channel c<i> plus a group channel shared by `group`
 * connections (Centrifugo's million-socket shape, scaled down). The publisher sends to a random
 * personal channel (share p) or a random group channel (1 - p) at a fixed rate. Also reports
 * NATS interest: channels per replica (natsedge_channels) and subscriptions in nats-server
 * (/subsz total, /connz per connection) — one per channel per replica, never per client.
 */
import { channelNames, closeClients, connSpecs, measureStep, openClients, startPublisher, withSystem } from "../run.js";
import { sleep } from "../procs.js";
import { perConnection, snapshot } from "../memory.js";

export const defaults = { connections: 2000, group: 10, rate: 2000, size: 64, personalShare: 0.8, duration: 15, warmup: 2 };
const SERVER_ROLES = { natsedge: ["gateway"], uws: ["server"], sio: ["server"] };

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const n = o.connections;
  const groups = Math.ceil(n / o.group);
  const size = o.sizes?.[0] ?? o.size;
  const results = {
    scenario: "personal",
    params: { connections: n, group: o.group, groups, channels: n + groups, rate: o.rate, personalShare: o.personalShare, size, duration: o.duration },
    systems: {},
  };
  const pattern = {
    kind: "weighted",
    groups: [
      { from: 0, to: n, weight: o.personalShare },
      { from: n, to: n + groups, weight: 1 - o.personalShare },
    ],
  };
  for (const kind of systems) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      await sleep(500);
      const before = await snapshot(sys, { samples: 1 });
      const specs = connSpecs(sys, n, (i) => [i, n + Math.floor(i / o.group)]);
      try {
        const { gen, open } = await openClients(ctx, sys, specs);
        const after = await snapshot(sys, { samples: 1 });
        const per = perConnection(before, after, n, SERVER_ROLES[kind]);
        const interest = {};
        if (kind === "natsedge") {
          interest.natsedgeChannelsPerReplica = await sys.gauge("natsedge_channels");
          interest.natsedgeSubscriptionsPerReplica = await sys.gauge("natsedge_subscriptions");
          interest.natsSubszTotal = (await sys.natsMonitor("/subsz")).num_subscriptions;
          const connz = await sys.natsMonitor("/connz?subs=1&limit=1024");
          interest.natsConnections = connz.connections.map((c) => ({ name: c.name ?? "", subscriptions: c.num_subscriptions ?? c.subscriptions_list?.length ?? 0 }));
          interest.expectedPerReplica = "own personal channels (~N/replicas) + groups with a local member (~all groups)";
        }
        const pub = await startPublisher(ctx, sys, channelNames(n + groups));
        const step = await measureStep(ctx, sys, gen, pub, { rate: o.rate, size, durationS: o.duration, warmupS: o.warmup, pattern });
        ctx.log(`[${kind}] interest ${JSON.stringify({ ...interest, natsConnections: undefined })}`);
        return { connect: open, rssPerConnBytes: Math.round(per.rssPerConn), heapPerConnBytes: Math.round(per.heapPerConn), interest, step };
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return results;
}
