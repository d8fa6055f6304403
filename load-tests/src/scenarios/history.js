/**
 * history: latency of history reads through the server API (`GET /api/history`, one keep-alive
 * connection, one request at a time from the generator core) with limit 1 / 100 / 1,000, on a
 * channel holding 10 publications and one holding 10,000 (namespace `hist`, history size
 * 10,000). The big channel is written interleaved with another channel (`--interleave` messages
 * of it per message of the big one), so that its stream sequences skip as they do in a namespace
 * with many channels.
 *
 * JetStream requests per read are counted on the NATS side: the benchmark subscribes to
 * `$JS.API.>` and counts every request any gateway sends about the namespace's stream (message
 * gets, consumer create / pull / delete, stream info) while a case runs. A stream-info check of
 * the namespace's epoch every 30 s per gateway lands in the same count (≤ 1 per case).
 */
import http from "node:http";
import { connect } from "nats";
import { Histogram } from "../histogram.js";
import { CpuWindow, sleep, waitQuiet } from "../procs.js";
import { API_KEY, SUBJECT_PREFIX } from "../topology.js";
import { withSystem } from "../run.js";

export const defaults = { reads: 200, maxSeconds: 15, warmupReads: 5, small: 10, big: 10_000, interleave: 1, limits: "1,100,1000", size: 64 };

const NAMESPACE = "hist";
const STREAM = `natsedge_ns_${NAMESPACE}`;

/** One GET over a keep-alive agent: status, body and the time it took in microseconds. */
function get(agent, port, path) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.get({ host: "127.0.0.1", port, path, agent, headers: { authorization: `apikey ${API_KEY}` } }, (res) => {
      const chunks = [];
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8"), us: Number(process.hrtime.bigint() - t0) / 1000 }));
    });
    req.setTimeout(60_000, () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

/** Publishes `count` messages {i, p} to a channel through JetStream, `others` of another channel after each. */
async function fill(js, ch, count, size, other, others) {
  const pad = "x".repeat(Math.max(0, size - 30));
  const batch = [];
  const flush = async () => {
    await Promise.all(batch.splice(0));
  };
  for (let i = 1; i <= count; i++) {
    batch.push(js.publish(SUBJECT_PREFIX + ch, JSON.stringify({ i, p: pad })));
    for (let k = 0; k < others; k++) batch.push(js.publish(SUBJECT_PREFIX + other, JSON.stringify({ i, k })));
    if (batch.length >= 500) await flush();
  }
  await flush();
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const limits = String(o.limits).split(",").map(Number);
  const channels = [
    { name: `${NAMESPACE}.small`, held: o.small },
    { name: `${NAMESPACE}.big`, held: o.big },
  ];
  const results = {
    scenario: "history",
    params: { small: o.small, big: o.big, interleave: o.interleave, limits, reads: o.reads, maxSeconds: o.maxSeconds, size: o.size, historySize: Math.max(o.big, 10_000) },
    systems: {},
  };
  const gatewayConfig = {
    namespaces: {
      bench: { anonymous: true },
      [NAMESPACE]: { anonymous: true, history: { size: Math.max(o.big, 10_000), ttl: "1h" } },
    },
  };
  for (const kind of systems.filter((s) => s === "natsedge")) {
    results.systems[kind] = await withSystem(
      ctx,
      kind,
      async (sys) => {
        const nc = await connect({ servers: sys.nats.url });
        const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
        try {
          const js = nc.jetstream();
          await fill(js, channels[0].name, o.small, o.size, `${NAMESPACE}.other`, 0);
          await fill(js, channels[1].name, o.big, o.size, `${NAMESPACE}.other`, o.interleave);
          ctx.log(`[${kind}] filled ${channels.map((c) => `${c.name}: ${c.held}`).join(", ")} (${o.interleave} of ${NAMESPACE}.other after each of the big one)`);
          let jsRequests = 0;
          const bySubject = {};
          nc.subscribe("$JS.API.>", {
            callback: (_err, m) => {
              if (!m.subject.includes(STREAM)) return;
              jsRequests++;
              // $JS.API.<what>.<stream>[.<consumer>] -> <what>
              const what = m.subject.slice("$JS.API.".length, m.subject.indexOf(`.${STREAM}`));
              bySubject[what] = (bySubject[what] ?? 0) + 1;
            },
          });
          await nc.flush();
          const port = sys.endpoints[0].port;
          const cases = [];
          for (const ch of channels) {
            for (const limit of limits) {
              const path = `/api/history?channel=${ch.name}&limit=${limit}`;
              const expect = Math.min(limit, ch.held);
              const check = (res) => {
                if (res.status !== 200) throw new Error(`${path}: ${res.status} ${res.body.slice(0, 200)}`);
                const pubs = JSON.parse(res.body).pubs;
                if (pubs.length !== expect || pubs.at(-1)?.data?.i !== ch.held) throw new Error(`${path}: ${pubs.length} pubs, newest ${JSON.stringify(pubs.at(-1)?.data?.i)}`);
              };
              for (let i = 0; i < o.warmupReads; i++) check(await get(agent, port, path));
              await sleep(200); // the warm-up reads' consumer deletions, which follow their answers
              if (o.quietWait) await waitQuiet(sys.pids(), o.quietWait, o.quietLimit ?? 25, ctx.log);
              const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid], ...sys.pidsByRole() });
              cpu.start();
              const hist = new Histogram();
              const before = jsRequests;
              for (const k of Object.keys(bySubject)) delete bySubject[k];
              const deadline = performance.now() + o.maxSeconds * 1000;
              let reads = 0;
              while (reads < o.reads && performance.now() < deadline) {
                const res = await get(agent, port, path);
                check(res);
                hist.record(res.us);
                reads++;
              }
              await sleep(200);
              await nc.flush();
              const load = cpu.stop();
              const c = {
                channel: ch.name,
                held: ch.held,
                limit,
                returned: expect,
                reads,
                latencyMs: hist.summaryMs(),
                jsRequestsPerRead: Math.round(((jsRequests - before) / reads) * 10) / 10,
                jsRequestsBySubject: Object.fromEntries(Object.entries(bySubject).map(([k, v]) => [k, Math.round((v / reads) * 10) / 10])),
                cpu: { gatewayPctOfCore: load.groups.gateway?.pctOfCore, natsPctOfCore: load.groups.nats?.pctOfCore, otherLoadPctOfCore: load.otherLoadPctOfCore },
              };
              ctx.log(`[${kind}] ${ch.name} (${ch.held}) limit ${limit}: ${reads} reads, p50 ${c.latencyMs.p50} p99 ${c.latencyMs.p99} ms, ${c.jsRequestsPerRead} JetStream requests per read`);
              cases.push(c);
            }
          }
          return { cases };
        } finally {
          agent.destroy();
          await nc.close();
        }
      },
      { gatewayConfig },
    );
  }
  return results;
}
