/**
 * storm: N connected clients (JWT signed here with the gateways' HS256 secret, 2 subscriptions
 * each to channels of the history namespace `room`) over the replicas while the publisher keeps
 * `rate` msgs/s flowing; replica 0 is SIGKILLed and started again on the same
 * port. Its clients reconnect on the SDK's own schedule (reconnectDelay from the built SDK):
 * first attempt after a full-jitter delay in [0, jitter) (default: the SDK's default
 * reconnectJitter), then the SDK's exponential backoff, each attempt to a random replica (a load
 * balancer that does not know the replica is down), resubscribing on arrival. Reported: T99 / T100 (kill -> 99 % / all of the dropped clients
 * subscribed again), peak reconnects/s, failed attempts, NATS subscription churn (nats-server
 * /subsz inserts/removes; natsedge_channels before/after), RSS of the restarted replica.
 * Each client remembers per channel the last offset/epoch it saw and resubscribes with
 * `since: {offset, epoch}`; recovered publications are checked like live ones, so the sequence
 * gaps per (client, channel) are the messages lost (must be 0), next to duplicates and the
 * subscribes answered `recovered:false` (what those skip is counted apart, not as loss).
 * JetStream reads per recovery: from the kill until every client is back, the benchmark counts
 * the JetStream API requests about the namespace's stream at nats-server (subscribed to
 * `$JS.API.>`, as in the history scenario) and the gateways' natsedge_recoveries_total
 * (subscribes with `since`), and divides.
 * Default 10,000 clients; past 18,000 (--per-process) the generator runs as several processes,
 * each within the 20,000-file limit. natsedge only. The second variant of the
 * research plan (reset every socket, process stays up) is not implemented.
 */
import { createHmac } from "node:crypto";
import { connect } from "nats";
import { DEFAULT_RECONNECT_JITTER } from "../../../dist/client/index.js";
import { closeClients, connSpecs, openClients, startPublisher, channelNames, withSystem } from "../run.js";
import { rssBytes, sleep } from "../procs.js";
import { clock } from "../ws.js";

export const defaults = { connections: 10_000, rate: 200, jitter: DEFAULT_RECONNECT_JITTER, timeout: 60 };

const HMAC_SECRET = "bench-storm-hmac-secret-0123456789abcdef";
const NAMESPACE = "room";
const HISTORY = { size: 1000, ttl: "5m" };
const STREAM = `natsedge_ns_${NAMESPACE}`;

/** Sum of a counter's series in each gateway's /metrics text, by the label `label` and in all. */
function counterByLabel(texts, name, label) {
  const out = { total: 0 };
  const re = new RegExp(`^${name}(?:\\{([^}]*)\\})? ([0-9.e+-]+)$`, "gmu");
  for (const text of texts) {
    for (const m of text.matchAll(re)) {
      const v = Number(m[2]);
      const key = label ? (new RegExp(`${label}="([^"]*)"`, "u").exec(m[1] ?? "")?.[1] ?? "") : "";
      out.total += v;
      if (key) out[key] = (out[key] ?? 0) + v;
    }
  }
  return out;
}

/** b - a per key (a restarted replica's counters start from zero: its share of a is its pre-kill count, gone). */
function minus(b, a) {
  return Object.fromEntries(Object.entries(b).map(([k, v]) => [k, v - (a[k] ?? 0)]));
}

const b64url = (x) => Buffer.from(x).toString("base64url");
/** HS256 JWT with node:crypto (docs/protocol.md, Tokens): sub = user, exp in an hour. */
export function signJwt(claims, secret) {
  const head = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const n = o.connections;
  const results = {
    scenario: "storm",
    params: { connections: n, rate: o.rate, jitterMs: o.jitter, sdkDefaultJitterMs: DEFAULT_RECONNECT_JITTER, auth: "HS256 JWT", namespace: NAMESPACE, history: HISTORY },
    systems: {},
  };
  const gatewayConfig = { auth: { hmacSecret: HMAC_SECRET }, namespaces: { [NAMESPACE]: { history: HISTORY } } };
  for (const kind of systems.filter((s) => s === "natsedge")) {
    results.systems[kind] = await withSystem(ctx, kind, async (sys) => {
      const specs = connSpecs(sys, n, (i) => [i % 100, 100 + (Math.floor(i / 100) % 100)], `${NAMESPACE}.`);
      const exp = Math.floor(Date.now() / 1000) + 3600;
      for (let i = 0; i < n; i++) {
        specs[i].token = signJwt({ sub: `user${i}`, exp }, HMAC_SECRET);
        specs[i].history = true;
      }
      try {
        const { gen, open } = await openClients(ctx, sys, specs);
        const pub = await startPublisher(ctx, sys, channelNames(200, `${NAMESPACE}.`));
        const total = o.jitter / 1000 + 15; // publishing through the storm; the measurement does not wait for it
        const running = pub.run({ rate: o.rate, durationMs: total * 1000, size: 64, pattern: { kind: "rr" } });
        running.catch(() => {}); // awaited below; an earlier failure must not surface as this one
        await sleep(3000);
        const victim = sys.gateways[0];
        const steadyRss = rssBytes(victim.entry.pid);
        const subsBefore = await sys.natsMonitor("/subsz");
        const channelsBefore = await sys.gauge("natsedge_channels");
        const nc = await connect({ servers: sys.nats.url });
        ctx.closers.push(() => nc.close());
        const js = { requests: 0, byKind: {}, counting: true };
        nc.subscribe("$JS.API.>", {
          callback: (_err, m) => {
            if (!js.counting || !m.subject.includes(STREAM)) return;
            js.requests++;
            const what = m.subject.slice("$JS.API.".length, m.subject.indexOf(`.${STREAM}`));
            js.byKind[what] = (js.byKind[what] ?? 0) + 1;
          },
        });
        await nc.flush();
        // The survivor's counters before; the victim's die with it and restart from zero.
        const texts0 = await sys.metricsText();
        const survivors0 = texts0.slice(1);
        const recov0 = counterByLabel(survivors0, "natsedge_recoveries_total", "result");
        const recovSource0 = counterByLabel(survivors0, "natsedge_recoveries_total", "source");
        const refused0 = counterByLabel(survivors0, "natsedge_jetstream_refused_total").total;
        await gen.storm({ armed: true, reset: true, timing: { jitter: o.jitter, min: 500, max: 20_000 }, endpoints: sys.endpoints });
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
        js.counting = false;
        const texts1 = await sys.metricsText();
        const recoveries = minus(counterByLabel(texts1, "natsedge_recoveries_total", "result"), recov0);
        // recent: answered from a gateway's memory; history: read from the stream.
        const recoveriesBySource = minus(counterByLabel(texts1, "natsedge_recoveries_total", "source"), recovSource0);
        const refused = counterByLabel(texts1, "natsedge_jetstream_refused_total").total - refused0;
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
        // Every connection must end with the last sequence of both its channels.
        const tail = await gen.tail(sent.last, 10_000);
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
          jetstream: {
            requestsDuringStorm: js.requests,
            byKind: js.byKind,
            recoveries,
            recoveriesBySource,
            requestsPerRecovery: recoveries.total ? Math.round((js.requests / recoveries.total) * 100) / 100 : null,
            refusedDuringStorm: refused,
          },
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
          lostGaps: win.gaps,
          tailMissing: tail.missing,
          duplicates: win.dups,
          recoveredSubscribes: win.recovered,
          recoveredPubs: win.recoveredPubs,
          recoveredFalse: win.recoveredFalse,
          skippedAfterRecoveredFalse: win.unrecoveredSkipped,
          subscribeRetries: win.subscribeRetries,
          openAtEnd: win.open,
        };
        ctx.log(
          `[${kind}] storm: ${r.reconnected}/${r.dropped} back, T50 ${r.t50Ms} ms, T99 ${r.t99Ms} ms, T100 ${r.t100Ms} ms, peak ${peak}/s, ${r.failedAttempts} failed attempts, SUB inserts ${r.nats.subInsertsDuringStorm}; ` +
            `JetStream requests ${js.requests} for ${recoveries.total} recoveries (${recoveriesBySource.recent ?? 0} from gateway memory; ${r.jetstream.requestsPerRecovery} per recovery, ${refused} refused); ` +
            `recovered ${r.recoveredSubscribes} subscribes (${r.recoveredPubs} pubs), recovered:false ${r.recoveredFalse}, lost ${r.lostGaps} (tail missing ${r.tailMissing}), duplicates ${r.duplicates}`,
        );
        return r;
      } finally {
        await closeClients(ctx);
      }
    }, { gatewayConfig });
  }
  return results;
}
