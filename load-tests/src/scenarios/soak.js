/**
 * soak: everything at once for --minutes (default 30) against 2 replicas on NATS, looking for
 * what only time shows (leaks, creeping lag), not for peak rates:
 *   chat       R rooms x M members over WebSocket, the members publishing (`chatRate` msgs/s in all)
 *   broadcast  B WebSocket subscribers of one channel, a publisher through NATS (`bcastRate` msgs/s)
 *   long-poll  P pollers on C channels, a publisher through NATS (`lpRate` msgs/s)
 *   churn      `churn` % of the WebSocket clients per minute close and come back at once (to a
 *              random replica), resubscribing with `since`
 * Every channel is in a history namespace, so nothing may be lost across churn. A sequence hole
 * that fills later is counted as late, not lost: chat members publish through different replicas,
 * which are not ordered between them.
 *
 * Every 10 s, per gateway: RSS (/proc/<pid>/status), JS heap used (nodejs_heap_size_used_bytes),
 * open file descriptors (/proc/<pid>/fd), event-loop lag p99 over those 10 s
 * (natsedge_event_loop_lag_seconds); and deliveries, sequence gaps and duplicates.
 *
 * Verdict: a least-squares slope per gateway over the second half of the run (the first half is
 * warm-up: pools, JIT, V8's heap sizing) for each resource; the run fails (exit 1) if a slope is
 * above its threshold (--max-rss-growth MiB/h, --max-heap-growth MiB/h, --max-fd-growth fds/h,
 * --max-lag-growth ms/h), or if anything was lost or duplicated. The series go to an SVG chart
 * (--chart, default results/<run>/soak.svg).
 */
import { readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { rssBytes, sleep } from "../procs.js";
import { channelNames, closeClients, connSpecs, lagBetween, openClients, startPublisher, withSystem } from "../run.js";
import { svgChart } from "../svg-chart.js";
import { parseLagBuckets, parseMetric } from "../topology.js";
import { LpThread } from "./longpoll.js";

/**
 * A load the 2-core box carries for the whole run: at 200 chat msgs/s and 2,000 broadcast
 * deliveries × 20/s the core shared by the gateways and nats-server saturates, and after ~4.5
 * minutes nats-server stalls the gateways' connections (readloop 2-8 s), JetStream publishes
 * time out and channels lose continuity: an overload, which a soak for leaks must not measure.
 */
export const defaults = {
  minutes: 30,
  rooms: 200,
  members: 10,
  chatRate: 100,
  broadcast: 2000,
  bcastRate: 10,
  pollers: 100,
  lpChannels: 10,
  lpRate: 20,
  churn: 1,
  size: 128,
  sampleS: 10,
  maxRssGrowth: 40,
  maxHeapGrowth: 20,
  maxFdGrowth: 60,
  maxLagGrowth: 30,
};

const HISTORY = { size: 1000, ttl: "5m" };
const MiB = 2 ** 20;

/** Least-squares slope of y over x (per unit of x); null under 3 points. */
export function slope(points) {
  const p = points.filter(([, y]) => Number.isFinite(y));
  if (p.length < 3) return null;
  const mx = p.reduce((a, [x]) => a + x, 0) / p.length;
  const my = p.reduce((a, [, y]) => a + y, 0) / p.length;
  let num = 0;
  let den = 0;
  for (const [x, y] of p) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den ? num / den : null;
}

function fdCount(pid) {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

/** The resources checked for growth: unit, how a sample gives it, threshold option. */
const RESOURCES = [
  { key: "rssMiB", title: "RSS", unit: "MiB", limit: "maxRssGrowth", perHour: "MiB/h" },
  { key: "heapMiB", title: "JS heap used", unit: "MiB", limit: "maxHeapGrowth", perHour: "MiB/h" },
  { key: "fds", title: "open file descriptors", unit: "", limit: "maxFdGrowth", perHour: "fds/h" },
  { key: "lagP99Ms", title: "event-loop lag p99", unit: "ms", limit: "maxLagGrowth", perHour: "ms/h" },
];

/** The chart of a soak result (also from a saved result.json: soakChart(r.params, r.systems.natsedge)). */
export function soakChart(p, r) {
  const late = r.samples.filter((s) => s.t >= r.fitFromS);
  const gateways = r.samples[0]?.gateways.map((_, i) => i) ?? [];
  return svgChart({
    title: `natsedge soak: ${p.minutes} min, 2 replicas on NATS`,
    subtitle: [
      `${p.chat.rooms * p.chat.members} chat members (${p.chat.rate} msg/s), ${p.broadcast.subscribers} broadcast subscribers (${p.broadcast.rate} msg/s), ${p.longpoll.pollers} long-pollers (${p.longpoll.rate} msg/s), churn ${p.churnPctPerMin} %/min; lag p99 per 10 s`,
      `dashed: least-squares trend over the second half (shaded: warm-up, not fitted); ${r.failed ? "FAILED" : "passed"}`,
    ],
    xLabel: "minutes",
    shade: { from: 0, to: r.fitFromS / 60, label: "warm-up (not fitted)" },
    panels: RESOURCES.map((res) => ({
      title: res.title,
      unit: res.unit,
      series: gateways.map((i) => ({ name: `gateway ${i}`, points: r.samples.map((s) => [s.t / 60, s.gateways[i][res.key]]) })),
      trends: gateways.flatMap((i) => {
        const k = r.trendsPerHour[i][res.key];
        const pts = late.map((s) => [s.t / 3600, s.gateways[i][res.key]]).filter(([, y]) => Number.isFinite(y));
        if (k === null || !pts.length) return [];
        const mx = pts.reduce((a, [x]) => a + x, 0) / pts.length;
        const my = pts.reduce((a, [, y]) => a + y, 0) / pts.length;
        const at = (x) => my + k * (x - mx);
        const x0 = pts[0][0];
        const x1 = pts.at(-1)[0];
        return [{ series: i, from: [x0 * 60, at(x0)], to: [x1 * 60, at(x1)] }];
      }),
    })),
  });
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const nChat = o.rooms * o.members;
  const nWs = nChat + o.broadcast;
  const results = {
    scenario: "soak",
    params: {
      minutes: o.minutes,
      chat: { rooms: o.rooms, members: o.members, rate: o.chatRate },
      broadcast: { subscribers: o.broadcast, rate: o.bcastRate },
      longpoll: { pollers: o.pollers, channels: o.lpChannels, rate: o.lpRate },
      churnPctPerMin: o.churn,
      size: o.size,
      sampleS: o.sampleS,
      history: HISTORY,
      thresholds: Object.fromEntries(RESOURCES.map((r) => [r.key, { max: o[r.limit], unit: r.perHour }])),
    },
    systems: {},
  };
  const gatewayConfig = {
    namespaces: {
      chat: { anonymous: true, clientPublish: true, history: HISTORY },
      bcast: { anonymous: true, history: HISTORY },
      lp: { anonymous: true, history: HISTORY },
    },
  };
  const kind = "natsedge";
  if (!systems.includes(kind)) return results;
  results.systems[kind] = await withSystem(
    ctx,
    kind,
    async (sys) => {
      // Channel index 0 is the broadcast channel, 1..R the rooms: one index space, so one
      // expectation array serves the tail check of both.
      const chat = connSpecs(sys, nChat, (i) => [1 + Math.floor(i / o.members)], "chat.");
      for (const s of chat) Object.assign(s, { publishes: true, history: true, thread: s.chanIdx[0] });
      const bcast = connSpecs(sys, o.broadcast, () => [0], "bcast.");
      for (const s of bcast) s.history = true;
      const lpThreads = Array.from({ length: ctx.genThreads }, () => new LpThread({ endpoints: sys.endpoints, pollers: o.pollers, prefix: "lp.", pollTimeoutS: 25 }));
      ctx.closers.push(async () => {
        await Promise.all(lpThreads.map((t) => t.call("stop")));
        await Promise.all(lpThreads.map((t) => t.w.terminate()));
      });
      try {
        const { gen, open } = await openClients(ctx, sys, [...chat, ...bcast]);
        await Promise.all(lpThreads.map((t) => t.syncClock()));
        const parts = lpThreads.map(() => []);
        for (let i = 0; i < o.pollers; i++) parts[i % lpThreads.length].push(i % o.lpChannels);
        await Promise.all(lpThreads.map((t, i) => t.call("setup", { chans: parts[i] })));
        ctx.log(`[${kind}] ${o.pollers} pollers connected`);
        const bcastPub = await startPublisher(ctx, sys, ["bcast.c0"]);
        const lpPub = await startPublisher(ctx, sys, channelNames(o.lpChannels, "lp."));

        const durationMs = o.minutes * 60_000;
        await Promise.all(lpThreads.map((t) => t.call("start", { durationMs: durationMs + 10_000 })));
        const runs = {
          chat: gen.run({ rate: o.chatRate, durationMs, size: o.size }),
          bcast: bcastPub.run({ rate: o.bcastRate, durationMs, size: o.size, pattern: { kind: "rr" } }),
          lp: lpPub.run({ rate: o.lpRate, durationMs, size: o.size, pattern: { kind: "rr" } }),
        };
        for (const r of Object.values(runs)) r.catch(() => {}); // awaited below
        ctx.log(`[${kind}] soak for ${o.minutes} min: ${nChat} chat members, ${o.broadcast} broadcast subscribers, ${o.pollers} pollers, churn ${o.churn} %/min`);

        const started = performance.now();
        const samples = [];
        let lagPrev = await sys.loopLag();
        let churnDue = 0;
        let churned = null;
        const deliveries = { ws: 0, lp: 0 };
        while (performance.now() - started < durationMs) {
          const next = started + (samples.length + 1) * o.sampleS * 1000;
          await sleep(Math.max(0, Math.min(next, started + durationMs) - performance.now()));
          churnDue += (nWs * o.churn) / 100 / (60 / o.sampleS);
          const count = Math.floor(churnDue);
          churnDue -= count;
          const cs = await Promise.all(gen.threads.map((t, i) => t.call("churn", { count: Math.floor(count / gen.threads.length) + (i < count % gen.threads.length ? 1 : 0), endpoints: sys.endpoints })));
          churned = cs.reduce((a, c) => ({ closed: a.closed + c.closed, back: a.back + c.back, failed: a.failed + c.failed, gaveUp: a.gaveUp + c.gaveUp }), { closed: 0, back: 0, failed: 0, gaveUp: 0 });
          const texts = await sys.metricsText();
          const lagNow = texts.map(parseLagBuckets);
          const lag = lagBetween(lagPrev, lagNow);
          lagPrev = lagNow;
          const ws = await gen.collect();
          await gen.reset("window");
          const lps = await Promise.all(lpThreads.map((t) => t.call("collect")));
          await Promise.all(lpThreads.map((t) => t.call("reset")));
          deliveries.ws += ws.received;
          const lpReceived = lps.reduce((a, l) => a + l.received, 0);
          deliveries.lp += lpReceived;
          const s = {
            t: Math.round((performance.now() - started) / 100) / 10,
            gateways: sys.gateways.map((g, i) => ({
              rssMiB: (rssBytes(g.entry.pid) ?? NaN) / MiB,
              heapMiB: (parseMetric(texts[i], "nodejs_heap_size_used_bytes") ?? NaN) / MiB,
              fds: fdCount(g.entry.pid),
              lagP99Ms: lag[i]?.p99Ms ?? null,
            })),
            wsReceived: ws.received,
            lpReceived,
            gaps: ws.gaps + lps.reduce((a, l) => a + l.gaps, 0),
            dups: ws.dups + lps.reduce((a, l) => a + l.dups, 0),
            reordered: ws.reordered,
            wsOpen: ws.open,
            churn: churned,
          };
          samples.push(s);
          ctx.log(
            `[${kind}] ${(s.t / 60).toFixed(1)} min: ` +
              s.gateways.map((g, i) => `gw${i} RSS ${g.rssMiB.toFixed(0)} MiB heap ${g.heapMiB.toFixed(1)} MiB fds ${g.fds} lag p99 ${g.lagP99Ms} ms`).join("; ") +
              `; delivered ${s.wsReceived} ws + ${s.lpReceived} lp, gaps ${s.gaps}, dups ${s.dups}, late ${s.reordered}, open ${s.wsOpen}, churn ${churned.closed} closed / ${churned.back} back`,
          );
        }

        const sent = { chat: await runs.chat, bcast: await runs.bcast, lp: await runs.lp };
        const expect = Array.from(sent.chat.last, (v) => v ?? 0);
        expect[0] = sent.bcast.last[0] ?? 0;
        const tail = await gen.tail(expect, 15_000);
        await sleep(3000); // the pollers' last answers
        const fin = await gen.collect();
        const lpFin = await Promise.all(lpThreads.map((t) => t.call("collect")));
        let lpMissing = 0;
        for (const f of lpFin) for (const [ch, last] of f.last) lpMissing += Math.max(0, (sent.lp.last[ch] ?? 0) - last);
        const lpErrors = {};
        for (const f of lpFin) for (const [k, v] of Object.entries(f.errorNotes)) lpErrors[k] = (lpErrors[k] ?? 0) + v;

        const fitFrom = samples.length ? samples.at(-1).t / 2 : 0;
        const late = samples.filter((s) => s.t >= fitFrom);
        const trends = sys.gateways.map((_, i) =>
          Object.fromEntries(
            RESOURCES.map((r) => {
              const pts = late.map((s) => [s.t / 3600, s.gateways[i][r.key]]);
              const k = slope(pts);
              return [r.key, k === null ? null : Math.round(k * 10) / 10];
            }),
          ),
        );
        const failures = [];
        if (late.length < 3) failures.push(`too short to judge: ${late.length} samples in the second half (a trend needs 3)`);
        trends.forEach((tr, i) => {
          for (const r of RESOURCES) {
            if (tr[r.key] !== null && tr[r.key] > o[r.limit]) failures.push(`gateway ${i}: ${r.title} grows ${tr[r.key]} ${r.perHour} after warm-up (threshold ${o[r.limit]} ${r.perHour})`);
          }
        });
        const gaps = fin.gaps + lpFin.reduce((a, l) => a + l.gaps, 0);
        const dups = fin.dups + lpFin.reduce((a, l) => a + l.dups, 0);
        if (gaps > 0) failures.push(`${gaps} publications lost (sequence gaps)`);
        if (tail.missing > 0) failures.push(`${tail.missing} publications never reached WebSocket clients`);
        if (lpMissing > 0) failures.push(`${lpMissing} publications never reached long-poll clients`);
        if (dups > 0) failures.push(`${dups} duplicates`);
        if (churned?.gaveUp) failures.push(`${churned.gaveUp} churned clients could not come back`);
        if (fin.disconnects > 0) failures.push(`${fin.disconnects} WebSocket clients disconnected by the server`);

        const r = {
          connect: open,
          samples,
          fitFromS: fitFrom,
          trendsPerHour: trends,
          published: { chat: sent.chat.sent, chatSkipped: sent.chat.skipped, broadcast: sent.bcast.sent, longpoll: sent.lp.sent },
          delivered: { websocket: deliveries.ws + fin.received, longpoll: deliveries.lp },
          gaps,
          duplicates: dups,
          reorderedLate: fin.reordered,
          subscribeRetries: fin.subscribeRetries,
          tailMissing: tail.missing,
          lpMissing,
          lpErrors,
          wsDisconnects: fin.disconnects,
          churn: churned,
          failures,
          failed: failures.length > 0,
        };
        const chart = soakChart(results.params, r);
        const chartFile = o.chart ? path.resolve(String(o.chart)) : path.join(ctx.logDir, "soak.svg");
        writeFileSync(chartFile, chart);
        r.chart = chartFile;
        ctx.log(`[${kind}] chart: ${chartFile}`);
        ctx.log(`[${kind}] trends after warm-up (per hour): ${trends.map((t, i) => `gw${i} ${RESOURCES.map((x) => `${x.key} ${t[x.key]}`).join(", ")}`).join("; ")}`);
        ctx.log(`[${kind}] soak ${r.failed ? "FAILED" : "passed"}${r.failed ? `: ${failures.join("; ")}` : ""}`);
        return r;
      } finally {
        await closeClients(ctx);
      }
    },
    { gatewayConfig },
  );
  results.failed = results.systems[kind].failed;
  results.failures = results.systems[kind].failures;
  return results;
}
