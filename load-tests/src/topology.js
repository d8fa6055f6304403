/**
 * Starting and stopping the systems under test, every process pinned to the SUT cores:
 *   natsedge  nats-server (JetStream, memory storage for natsedge's streams) + R gateway replicas
 *             (../bin/natsedge.js), clients spread round-robin over the replicas
 *   uws       baselines/uws-raw.js, no broker: one process, or K (--uws-procs; idle) each on its
 *             own port with its share of the clients (nothing reaches across them)
 *   sio       redis-server + P Socket.IO processes (baselines/socketio-server.js) with the Redis adapter
 *   natsws    one nats-server with its WebSocket listener, clients speaking the NATS protocol (chat)
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePorts, httpGet, sleep, startProcess, stopProcess, waitFor, waitForPort } from "./procs.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const LOAD_TESTS = path.resolve(here, "..");
export const REPO = path.resolve(LOAD_TESTS, "..");
const NATSEDGE_BIN = path.join(REPO, "bin", "natsedge.js");
const NATS_SERVER = ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"].find(existsSync) ?? "nats-server";
const REDIS_SERVER = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].find(existsSync) ?? "redis-server";

export const SUBJECT_PREFIX = "natsedge.ch.";
export const API_KEY = "bench-api-key-0123456789-0123456";
const SESSION_SECRET = "bench-session-secret-0123456789abcdef";

/** Newest mtime under a directory (for the "dist is older than src" warning). */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

export function checkGatewayBuild() {
  const cli = path.join(REPO, "dist", "cli.js");
  if (!existsSync(cli)) throw new Error(`the gateway is not built (${cli} missing): run \`npm run build\` in ${REPO}`);
  const warnings = [];
  if (newest(path.join(REPO, "src")) > newest(path.join(REPO, "dist"))) {
    warnings.push("src/ is newer than dist/: the gateway under test may be stale (run `npm run build` at the repo root)");
  }
  return warnings;
}

export function parseMetric(text, name) {
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, "mu");
  const m = re.exec(text);
  return m ? Number(m[1]) : null;
}

/** natsedge_event_loop_lag_seconds as [{le, count}] (cumulative, as exported), "+Inf" last. */
export function parseLagBuckets(text) {
  const out = [];
  for (const m of text.matchAll(/^natsedge_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\d+)$/gmu)) {
    out.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), count: Number(m[2]) });
  }
  return out;
}

/** Temporary directories of running systems, removed on stop and (synchronously) on exit. */
const tmpDirs = new Set();
export function removeTmpDirsSync() {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  tmpDirs.clear();
}

export async function startSystem(kind, opts) {
  const logDir = opts.logDir;
  const cpus = opts.sutCpus;
  const tmp = mkdtempSync(path.join(os.tmpdir(), `natsedge-bench-${kind}-`));
  tmpDirs.add(tmp);
  const procs = [];
  const sys = {
    kind,
    dialect: kind,
    endpoints: [],
    procs, // [{entry, role}]
    pids: () => procs.filter((p) => !p.entry.exited).map((p) => p.entry.pid),
    pidsByRole: () => {
      const out = {};
      for (const p of procs) (out[p.role] ??= []).push(p.entry.pid);
      return out;
    },
    async stop() {
      // Clients first would be nicer, but the generator closes its sockets before this is called.
      for (const p of [...procs].reverse()) await stopProcess(p.entry);
      rmSync(tmp, { recursive: true, force: true });
      tmpDirs.delete(tmp);
    },
  };
  const add = (role, entry) => {
    procs.push({ role, entry });
    return entry;
  };
  try {
    if (kind === "natsedge") await startNatsedge(sys, add, { ...opts, tmp, cpus, logDir });
    else if (kind === "uws") await startUws(sys, add, { ...opts, cpus, logDir });
    else if (kind === "sio") await startSio(sys, add, { ...opts, tmp, cpus, logDir });
    else if (kind === "natsws") await startNatsWs(sys, add, { ...opts, tmp, cpus, logDir });
    else throw new Error(`unknown system ${kind}`);
  } catch (err) {
    await sys.stop();
    throw err;
  }
  return sys;
}

async function startNatsedge(sys, add, o) {
  const replicas = o.replicas ?? 2;
  const [natsPort, monitorPort, ...ports] = await freePorts(2 + 2 * replicas);
  const nats = add(
    "nats",
    startProcess(
      "nats-server",
      NATS_SERVER,
      ["-a", "127.0.0.1", "-p", String(natsPort), "-m", String(monitorPort), "-js", "-sd", path.join(o.tmp, "js"), "-n", "bench"],
      { cpus: o.cpus, nice: o.nice, logDir: o.logDir },
    ),
  );
  await waitForPort(natsPort, { entry: nats, timeoutMs: 20_000 });
  const config = {
    host: "127.0.0.1",
    logLevel: "warn",
    apiKey: API_KEY,
    sessionSecret: SESSION_SECRET,
    drainPeriod: "0",
    // Every generated client comes from 127.0.0.1: per-address limits would measure themselves.
    maxConnectionsPerIp: 0,
    connectRate: 0,
    namespaces: {
      bench: { anonymous: true },
      lp: { anonymous: true, history: { size: 1000, ttl: "5m" } },
      chat: { anonymous: true, clientPublish: true },
    },
    nats: { servers: [`nats://127.0.0.1:${natsPort}`], storage: "memory" },
    ...(o.gatewayConfig ?? {}),
  };
  const cfgFile = path.join(o.tmp, "natsedge.json");
  writeFileSync(cfgFile, JSON.stringify(config, null, 2));
  const gateways = [];
  const launch = (i, port, adminPort, generation = 0) =>
    startProcess(
      `natsedge-${i}${generation ? `-restart${generation}` : ""}`,
      process.execPath,
      [...(o.nodeArgs ?? []), NATSEDGE_BIN, "--config", cfgFile, "--port", String(port), "--admin-port", String(adminPort)],
      { cpus: o.cpus, nice: o.nice, logDir: o.logDir, cwd: o.cwd ?? o.tmp },
    );
  const ready = (g, timeoutMs = 60_000) =>
    waitFor(`natsedge replica on ${g.port} ready`, async () => (await httpGet(g.adminPort, "/readyz")).status === 200, {
      timeoutMs,
      intervalMs: 50,
      entry: g.entry,
    });
  for (let i = 0; i < replicas; i++) {
    const port = ports[2 * i];
    const adminPort = ports[2 * i + 1];
    gateways.push({ entry: add("gateway", launch(i, port, adminPort)), port, adminPort, generation: 0 });
  }
  for (const g of gateways) {
    await ready(g);
    sys.endpoints.push({ host: "127.0.0.1", port: g.port });
  }
  /** SIGKILL replica i and start it again on the same ports; resolves with timings once it is ready. */
  sys.killAndRestart = async (i) => {
    const g = gateways[i];
    const old = sys.procs.find((p) => p.entry === g.entry);
    const killedAt = performance.now();
    const gone = new Promise((r) => (g.entry.exited ? r() : g.entry.child.once("exit", r)));
    g.entry.child.kill("SIGKILL");
    await gone;
    g.generation++;
    g.entry = launch(i, g.port, g.adminPort, g.generation);
    if (old) old.entry = g.entry;
    await ready(g, 30_000);
    return { killedAt, readyAfterMs: Math.round(performance.now() - killedAt), pid: g.entry.pid };
  };
  sys.nats = { port: natsPort, monitorPort, url: `nats://127.0.0.1:${natsPort}` };
  sys.gateways = gateways;
  sys.publisherCfg = (channels) => ({ transport: "nats", natsUrl: sys.nats.url, subjectPrefix: SUBJECT_PREFIX, channels });
  sys.metricsText = () => Promise.all(gateways.map(async (g) => (await httpGet(g.adminPort, "/metrics")).body));
  sys.heapBytes = async () => {
    const texts = await sys.metricsText();
    return texts.map((t) => parseMetric(t, "nodejs_heap_size_used_bytes"));
  };
  sys.gauge = async (name) => (await sys.metricsText()).map((t) => parseMetric(t, name));
  sys.loopLag = async () => (await sys.metricsText()).map(parseLagBuckets);
  sys.natsMonitor = async (p) => JSON.parse((await httpGet(monitorPort, p)).body);
}

async function startUws(sys, add, o) {
  const count = o.uwsProcs ?? 1;
  const ports = await freePorts(count);
  const servers = ports.map((port, i) => ({
    port,
    entry: add(
      "server",
      startProcess(count > 1 ? `uws-raw-${i}` : "uws-raw", process.execPath, [...(o.nodeArgs ?? []), path.join(LOAD_TESTS, "baselines", "uws-raw.js"), "--port", String(port)], {
        cpus: o.cpus,
        nice: o.nice,
        logDir: o.logDir,
        cwd: LOAD_TESTS,
      }),
    ),
  }));
  for (const s of servers) {
    await waitForPort(s.port, { entry: s.entry, timeoutMs: 20_000 });
    sys.endpoints.push({ host: "127.0.0.1", port: s.port });
  }
  // Without a broker a publication reaches only the clients of the process it is sent to.
  sys.partitioned = count > 1;
  sys.publisherCfg = (channels) => ({ transport: "uws", endpoint: sys.endpoints[0], channels });
  sys.heapBytes = () => Promise.all(servers.map(async (s) => JSON.parse((await httpGet(s.port, "/stats")).body).heapUsed));
}

/**
 * NATS's own WebSocket listener: browsers speak the NATS protocol to nats-server directly, which
 * is both the server and the broker. One process, as raw uWS; for the chat comparison of item 2
 * of issue #12 (gateways and NATS together against NATS WebSocket's own total).
 */
async function startNatsWs(sys, add, o) {
  const [natsPort, monitorPort, wsPort] = await freePorts(3);
  const cfgFile = path.join(o.tmp, "nats-ws.conf");
  writeFileSync(
    cfgFile,
    [
      `listen: "127.0.0.1:${natsPort}"`,
      `http: "127.0.0.1:${monitorPort}"`,
      `websocket { listen: "127.0.0.1:${wsPort}", no_tls: true, compression: false }`,
      "",
    ].join("\n"),
  );
  const entry = add("server", startProcess("nats-server-ws", NATS_SERVER, ["-c", cfgFile], { cpus: o.cpus, nice: o.nice, logDir: o.logDir }));
  await waitForPort(wsPort, { entry, timeoutMs: 20_000 });
  sys.endpoints.push({ host: "127.0.0.1", port: wsPort });
  sys.publisherCfg = () => {
    throw new Error("natsws has no separate publisher: it runs in chat only, where the members publish");
  };
}

async function startSio(sys, add, o) {
  const procsN = o.sioProcs ?? 2;
  const [redisPort, ...ports] = await freePorts(1 + procsN);
  const redis = add(
    "redis",
    startProcess(
      "redis-server",
      REDIS_SERVER,
      ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", o.tmp, "--protected-mode", "no"],
      { cpus: o.cpus, nice: o.nice, logDir: o.logDir },
    ),
  );
  await waitForPort(redisPort, { entry: redis, timeoutMs: 20_000 });
  const servers = [];
  for (let i = 0; i < procsN; i++) {
    const entry = add(
      "server",
      startProcess(
        `socketio-${i}`,
        process.execPath,
        [path.join(LOAD_TESTS, "baselines", "socketio-server.js"), "--port", String(ports[i]), "--redis", `redis://127.0.0.1:${redisPort}`],
        { cpus: o.cpus, nice: o.nice, logDir: o.logDir, cwd: LOAD_TESTS },
      ),
    );
    servers.push({ entry, port: ports[i] });
  }
  for (const s of servers) {
    await waitFor(`socket.io on ${s.port}`, async () => (await httpGet(s.port, "/stats")).status === 200, {
      timeoutMs: 30_000,
      entry: s.entry,
    });
    sys.endpoints.push({ host: "127.0.0.1", port: s.port });
  }
  // Let the adapters' Redis subscriptions settle before anyone publishes.
  await sleep(300);
  sys.publisherCfg = (channels) => ({ transport: "sio", endpoint: sys.endpoints[0], channels });
  sys.heapBytes = () => Promise.all(servers.map(async (s) => JSON.parse((await httpGet(s.port, "/stats")).body).heapUsed));
}
