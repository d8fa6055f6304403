/**
 * chat: R rooms of M members, the members of each room spread over the endpoints (natsedge: the
 * gateway replicas). The members publish over their own WebSocket, `rate` messages/s in all
 * (rooms round-robin, a room's members in turn), and every other member of the room receives.
 * Latency is from the publishing client's send to each other member's receive. Reported besides:
 * deliveries/s, CPU of the gateways and of nats-server apart (the baselines: server, redis), in %
 * of a core and in µs per chat message, and the gateways' event-loop lag over the window.
 */
import { closeClients, connSpecs, measureStep, openClients, withSystem } from "../run.js";

export const defaults = { rooms: 500, members: 10, rate: 500, size: 128, duration: 20, warmup: 2 };

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const size = o.sizes?.[0] ?? o.size;
  const n = o.rooms * o.members;
  const results = {
    scenario: "chat",
    params: { rooms: o.rooms, members: o.members, connections: n, rate: o.rate, size, duration: o.duration, deliveriesPerS: o.rate * (o.members - 1) },
    systems: {},
  };
  for (const kind of systems) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      // Member m of room r is connection r*M+m: consecutive connections alternate endpoints, so a
      // room has members on every replica. A room's publishers share one generator thread, which
      // numbers the room's messages.
      const specs = connSpecs(sys, n, (i) => [Math.floor(i / o.members)], "chat.");
      for (const s of specs) Object.assign(s, { publishes: true, thread: s.chanIdx[0] });
      try {
        const { gen, open } = await openClients(ctx, sys, specs);
        const step = await measureStep(ctx, sys, gen, gen, { rate: o.rate, size, durationS: o.duration, warmupS: o.warmup });
        return { connect: open, step };
      } finally {
        await closeClients(ctx);
      }
    });
  }
  return results;
}
