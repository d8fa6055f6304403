#!/usr/bin/env node
/**
 * npm run bench -- <scenario> [options]
 * Scenarios: fanout, idle, latency, personal, chat, longpoll, storm, history, hooks, all, soak (not in `all`); `report` rewrites docs/benchmarks.md
 * from the latest saved results. See load-tests/README.md and docs/benchmarks.md.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { killAllSync, stopAll } from "./procs.js";
import { summarize } from "./profile-summary.js";
import { machineInfo, markdownFor, updateDocs } from "./report.js";
import { closeClients, pinSelf } from "./run.js";
import { checkGatewayBuild, LOAD_TESTS, removeTmpDirsSync } from "./topology.js";

const SCENARIOS = ["fanout", "idle", "latency", "personal", "chat", "longpoll", "storm", "history", "hooks"];
/** Long runs, started by name only (not part of `all`, not for CI). */
const LONG = ["soak"];
const WITH_BASELINES = { fanout: ["uws", "sio"], idle: ["uws", "sio"], latency: ["uws", "sio"], personal: ["uws", "sio"], chat: ["uws", "sio", "natsws"], longpoll: [], storm: [], history: [], hooks: [] };

const HELP = `usage: npm run bench -- <scenario> [options]

scenarios:
  fanout     1 channel, N subscribers over 2 replicas, publisher ramps the rate until p99 > limit or loss
  idle       N idle connections with 2 subscriptions each: RSS, JS heap and CPU per connection
  latency    connections over 100 channels at a fixed publish rate: p50/p99/p99.9/max
  personal   each connection on its own channel + a group channel of 10; NATS subscriptions per replica
  chat       R rooms x M members over the replicas; members publish over WebSocket, the other members receive
  longpoll   long-poll clients (POST /lp/rpc + /lp/poll) round-robin across replicas: polls/s, latency
  storm      SIGKILL + restart one replica under load; JWT clients reconnect with jitter and recover history: T99, loss
  history    GET /api/history latency and JetStream requests per read, limit 1/100/1,000 on channels of 10 and 10,000
  hooks      connect / subscribe / publish latency with backend hooks over NATS and HTTP vs none (one replica)
  all        every scenario above, one after another
  soak       chat + broadcast + long-poll + reconnect churn for --minutes (default 30; not in \`all\`): RSS, heap,
             fds and event-loop lag per gateway every 10 s, an SVG chart; exits 1 on a growth trend or loss
  report     rewrite docs/benchmarks.md from the latest saved results (load-tests/results/latest-*.json)

common options:
  --vs                    also run the baselines (raw uWS, Socket.IO + Redis; NATS WebSocket in chat) where the scenario has them
  --systems a,b           systems to run (natsedge, uws, sio, natsws: chat only); default natsedge (+ baselines with --vs)
  --duration S            measured seconds per step / run
  --warmup S              seconds before each measured window (default 1)
  --replicas N            natsedge gateway replicas (default 2); --sio-procs N Socket.IO processes (default 2)
  --uws-procs N           raw uWS processes, each on its own port (default 1; more only for idle: no broker between them)
  --per-process N         connections one process holds at most, generator or server (default 18000: the open-files
                          limit is per process); more connections spread the generator over child processes, and
                          idle raises --replicas / --uws-procs / --sio-procs to fit
  --gen-procs N           run the generator as at least N child processes even when one would do
  --per-source N          past N connections to one server port, bind source addresses 127.0.0.2-254, N per address
                          (default 20000, capped by the ephemeral port range)
  --sut-cpus 0            cores for the systems under test (default: first half)
  --gen-cpus 1            cores for the load generator and publisher (default: second half)
  --gen-threads N         generator worker threads (default: number of generator cores)
  --max-p99 MS            a step is clean while p99 <= MS (default 50) and nothing is lost
  --docs                  write the result into docs/benchmarks.md (marked section per scenario)
  --max-minutes M         abort (and clean up) after M minutes (default 30)
  --quiet-wait S          before each measured step wait (at most S s) until other processes use < --quiet-limit
                          (default 25) % of a core: the box may be shared with other jobs
  --node-args "…"         extra node flags for the gateways and raw uWS (e.g. "--perf-basic-prof" for perf)
  --nice N                run the SUT and the generator at nice N (e.g. -5; negative needs root) so other jobs
                          on a shared box disturb the measurement less; the same for every system
  --rounds R              fanout, latency: repeat the systems R times, interleaved (A/B/A/B), report the median round
  --profile               run the gateways (and raw uWS) with node --cpu-prof; summaries in the result

fanout:   --subscribers 1000 --sizes 64,1024 (or --size) --start-rate R --factor 2 --max-rate R --max-steps 12 --refine true
idle:     --connections 15000 --duration 30 --shape shared|personal (50000: 3 generator processes, 3 replicas,
          3 raw uWS and 3 Socket.IO processes with the default --per-process)
latency:  --connections 5000 --channels 100 --rate 1000 --size 256 --duration 20
personal: --connections 2000 --group 10 --rate 2000 --size 64 --personal-share 0.8 --duration 15
chat:     --rooms 500 --members 10 --rate 500 --size 128 --duration 20
longpoll: --pollers 200 --channels 10 --rate 50 --size 64 --duration 15
storm:    --connections 10000 --rate 200 --jitter MS (first-attempt window; default: the SDK's reconnectJitter) --timeout 60
soak:     --minutes 30 --rooms 200 --members 10 --chat-rate 100 --broadcast 2000 --bcast-rate 10 --pollers 100
          --lp-channels 10 --lp-rate 20 --churn 1 (% of WebSocket clients per minute) --chart FILE
          thresholds (growth per hour over the second half): --max-rss-growth 40 (MiB) --max-heap-growth 20 (MiB)
          --max-fd-growth 60 --max-lag-growth 30 (ms of p99)
history:  --reads 200 --max-seconds 15 --small 10 --big 10000 --interleave 1 --limits 1,100,1000 --size 64
hooks:    --ops 500 --max-seconds 20 (per command and hook transport)
`;

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) {
      out._.push(a);
      continue;
    }
    let [k, v] = a.slice(2).split(/=(.*)/su);
    if (v === undefined) {
      const next = argv[i + 1];
      // Node flags are values here, though they start with "--" too.
      if (next !== undefined && (!next.startsWith("--") || k === "node-args")) {
        v = next;
        i++;
      } else v = "true";
    }
    const key = k.replace(/-([a-z])/gu, (_, c) => c.toUpperCase());
    out[key] = v;
  }
  return out;
}

function coerce(v) {
  if (v === "true") return true;
  if (v === "false") return false;
  if (/^-?\d+(\.\d+)?$/u.test(v)) return Number(v);
  return v;
}

const LISTS = new Set(["sizes", "systems", "sutCpus", "genCpus", "rates"]);

function options(raw) {
  const o = {};
  for (const [k, v] of Object.entries(raw)) {
    if (k === "_") continue;
    o[k] = LISTS.has(k) ? String(v).split(",").filter(Boolean).map(coerce) : coerce(v);
  }
  if (o.size !== undefined) o.sizes = [o.size];
  if (o.startRate !== undefined && typeof o.startRate === "number") o.startRate = Number(o.startRate);
  return o;
}

/** --profile: the gateways (and raw uWS) ran with --cpu-prof; summarise what they wrote. */
function profileSummaries(logDir, log) {
  const out = {};
  for (const d of readdirSync(logDir).filter((x) => x.startsWith("prof-"))) {
    const dir = path.join(logDir, d);
    if (!existsSync(dir)) continue;
    out[d] = readdirSync(dir)
      .filter((x) => x.endsWith(".cpuprofile"))
      .map((x) => summarize(path.join(dir, x), 25));
    for (const s of out[d]) {
      log(`profile ${d}/${s.file}: ${s.busyMs} ms busy of ${s.totalMs} ms`);
      for (const r of s.top.slice(0, 15)) log(`  ${String(r.pctOfBusy).padStart(5)} %  ${r.fn}`);
    }
  }
  return out;
}

let aborting = false;

async function main() {
  const raw = parseArgs(process.argv.slice(2));
  const scenario = raw._[0];
  if (!scenario || raw.help || scenario === "help") {
    process.stdout.write(HELP);
    return;
  }
  const opts = options(raw);
  if (scenario === "report") {
    const file = updateDocs(null);
    process.stdout.write(`rewrote ${file}\n`);
    return;
  }
  const list = scenario === "all" ? SCENARIOS : [scenario];
  for (const s of list) if (!SCENARIOS.includes(s) && !LONG.includes(s)) throw new Error(`unknown scenario "${s}" (try --help)`);

  const n = os.cpus().length;
  const half = Math.max(1, Math.floor(n / 2));
  const sutCpus = opts.sutCpus ?? Array.from({ length: half }, (_, i) => i);
  const genCpus = opts.genCpus ?? (n > 1 ? Array.from({ length: n - half }, (_, i) => half + i) : [0]);
  const warnings = checkGatewayBuild();
  const pinned = pinSelf(genCpus);
  if (opts.nice) {
    // Before any worker thread exists: threads inherit the creating thread's nice value.
    try {
      execFileSync("renice", ["-n", String(opts.nice), "-p", String(process.pid)], { stdio: "ignore" });
    } catch {
      warnings.push(`renice ${opts.nice} failed: the generator runs at normal priority`);
    }
  }
  if (n < 2) warnings.push("one core: system under test and generator share it");
  if (!pinned) warnings.push("taskset failed: the generator is not pinned");

  const stamp = new Date().toISOString().replace(/[:.]/gu, "-");
  const resultsDir = path.join(LOAD_TESTS, "results");
  const ctx = {
    opts,
    sutCpus,
    genCpus,
    genThreads: opts.genThreads ?? genCpus.length,
    maxP99Ms: opts.maxP99 ?? 50,
    closers: [],
    onAbort: undefined,
    log: (m) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`),
  };
  for (const w of warnings) ctx.log(`warning: ${w}`);
  ctx.log(`SUT cores ${sutCpus.join(",")}, generator cores ${genCpus.join(",")} (${ctx.genThreads} generator threads)`);

  const abort = async (why, code) => {
    if (aborting) return;
    aborting = true;
    ctx.log(`aborting: ${why}`);
    // Calls still in flight (a publisher run, a step) fail as their threads close: expected now.
    process.on("unhandledRejection", () => {});
    await closeClients(ctx).catch(() => {});
    await ctx.onAbort?.().catch?.(() => {});
    await stopAll();
    process.exit(code);
  };
  process.on("SIGINT", () => abort("interrupted", 130));
  process.on("SIGTERM", () => abort("terminated", 143));
  process.on("exit", () => {
    killAllSync();
    removeTmpDirsSync();
  });
  // A soak sets its own length; the deadline then only guards against a hang.
  const maxMinutes = opts.maxMinutes ?? (scenario === "soak" ? (opts.minutes ?? 30) + 10 : 30);
  const deadline = setTimeout(() => abort(`--max-minutes ${maxMinutes} reached`, 124), maxMinutes * 60_000);
  deadline.unref();

  const all = [];
  const failed = [];
  for (const s of list) {
    const logDir = path.join(resultsDir, `${stamp}-${s}`);
    mkdirSync(logDir, { recursive: true });
    ctx.logDir = logDir;
    const mod = await import(`./scenarios/${s}.js`);
    const systems = opts.systems ?? ["natsedge", ...(opts.vs ? WITH_BASELINES[s] : [])];
    const started = Date.now();
    const result = await mod.run(ctx, systems);
    if (opts.profile) result.profiles = profileSummaries(logDir, ctx.log);
    result.machine = machineInfo();
    result.setup = { sutCpus, genCpus, genThreads: ctx.genThreads, maxP99Ms: ctx.maxP99Ms, nice: opts.nice ?? 0, warnings };
    result.command = `npm run bench -- ${process.argv.slice(2).join(" ")}`;
    result.finishedAt = new Date().toISOString();
    result.elapsedS = Math.round((Date.now() - started) / 1000);
    writeFileSync(path.join(logDir, "result.json"), JSON.stringify(result, null, 2));
    writeFileSync(path.join(resultsDir, `latest-${s}.json`), JSON.stringify(result, null, 2));
    all.push(result);
    process.stdout.write(`${JSON.stringify(result)}\n\n`);
    process.stdout.write(`${markdownFor(result)}\n`);
    if (opts.docs) ctx.log(`updated ${updateDocs(result)}`);
    if (result.failed) failed.push(`${s}: ${result.failures.join("; ")}`);
  }
  clearTimeout(deadline);
  await stopAll();
  if (failed.length) {
    process.stderr.write(`FAILED ${failed.join("\n")}\n`);
    process.exitCode = 1;
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  async (err) => {
    if (aborting) return; // the abort handler cleans up and exits
    process.stderr.write(`bench failed: ${err?.stack ?? err}\n`);
    await stopAll();
    process.exit(1);
  },
);

