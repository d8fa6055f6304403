/**
 * Processes the benchmark starts (nats-server, gateways, baselines, redis): every one is pinned
 * with taskset, logged to the run's directory and registered here, so it is stopped on success,
 * on error, on Ctrl-C and on exit. Also free ports, /proc sampling and small HTTP helpers.
 */
import { spawn, execFileSync } from "node:child_process";
import { createWriteStream, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

const children = new Set();

export function sutCpuList(cpus) {
  return cpus.join(",");
}

/**
 * Starts `cmd args` pinned to `cpus` (taskset execs the command, so the pid is the command's).
 * Output goes to `${logDir}/${name}.log`.
 */
export function startProcess(name, cmd, args, { cpus, logDir, env, cwd, nice } = {}) {
  let argv = cpus ? ["-c", cpus.join(","), cmd, ...args] : args;
  let bin = cpus ? "taskset" : cmd;
  if (nice) {
    // nice and taskset both exec the command, so the pid stays the command's
    argv = ["-n", String(nice), bin, ...argv];
    bin = "nice";
  }
  const child = spawn(bin, argv, { env: { ...process.env, ...env }, cwd, stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(`${logDir}/${name}.log`);
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const entry = { name, child, pid: child.pid, exited: false, code: null };
  child.on("exit", (code, signal) => {
    entry.exited = true;
    entry.code = code ?? signal;
  });
  children.add(entry);
  return entry;
}

/** SIGTERM, then SIGKILL after graceMs; resolves when it is gone. */
export async function stopProcess(entry, graceMs = 5_000) {
  if (!entry || entry.exited) {
    children.delete(entry);
    return;
  }
  const gone = new Promise((r) => entry.child.once("exit", r));
  try {
    entry.child.kill("SIGTERM");
  } catch {
    /* gone */
  }
  const timer = setTimeout(() => {
    try {
      entry.child.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }, graceMs);
  await gone;
  clearTimeout(timer);
  children.delete(entry);
}

export async function stopAll() {
  await Promise.all([...children].map((c) => stopProcess(c)));
}

/** Synchronous last resort (process 'exit' handler): SIGKILL whatever is still running. */
export function killAllSync() {
  for (const c of children) {
    if (!c.exited) {
      try {
        process.kill(c.pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
  }
  children.clear();
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function freePorts(n) {
  const ports = new Set();
  for (let tries = 0; ports.size < n && tries < n * 10; tries++) ports.add(await freePort());
  return [...ports];
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** GET http://127.0.0.1:port/path -> {status, body}; rejects on connection errors. */
export function httpGet(port, path, timeoutMs = 3_000) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path, timeout: timeoutMs, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

/** Polls until check() resolves truthy, or throws after timeoutMs (naming what it waited for). */
export async function waitFor(what, check, { timeoutMs = 30_000, intervalMs = 100, entry } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  while (Date.now() < deadline) {
    if (entry?.exited) throw new Error(`${what}: ${entry.name} exited (${entry.code}); see its log`);
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${lastErr ? ` (${lastErr.message})` : ""}`);
}

export function waitForPort(port, opts) {
  return waitFor(
    `port ${port}`,
    () =>
      new Promise((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port }, () => {
          s.destroy();
          resolve(true);
        });
        s.on("error", () => resolve(false));
      }),
    opts,
  );
}

// --- /proc sampling ---------------------------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/** [utime, stime] of a process (all its threads), in microseconds; null when it is gone. */
export function cpuSplit(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime is field 14, stime field 15
    return [(Number(fields[11]) * 1e6) / CLK_TCK, (Number(fields[12]) * 1e6) / CLK_TCK];
  } catch {
    return null;
  }
}

/** utime + stime of a process (all its threads), in microseconds; null when it is gone. */
export function cpuMicros(pid) {
  const s = cpuSplit(pid);
  return s ? s[0] + s[1] : null;
}

/** Resident set size in bytes (VmRSS), null when gone. */
export function rssBytes(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/u.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Per-CPU busy/total jiffies from /proc/stat. */
export function cpuTimes() {
  const out = {};
  for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
    const m = /^cpu(\d+)\s+(.*)$/u.exec(line);
    if (!m) continue;
    const v = m[2].split(/\s+/u).map(Number);
    const idle = v[3] + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    out[m[1]] = { busy: total - idle, total, softirq: v[6] ?? 0 };
  }
  return out;
}

/**
 * A CPU window over named process groups: start() then stop() gives, per group, CPU seconds,
 * % of one core, plus per-core utilisation of the whole box from /proc/stat.
 */
export class CpuWindow {
  constructor(groups) {
    this.groups = groups; // { name: [pid, ...] }
  }

  start() {
    this.t0 = performance.now();
    this.c0 = this.read();
    this.s0 = cpuTimes();
  }

  read() {
    const out = {};
    for (const [name, pids] of Object.entries(this.groups)) {
      let user = 0;
      let sys = 0;
      for (const pid of pids) {
        const s = cpuSplit(pid);
        if (s) {
          user += s[0];
          sys += s[1];
        }
      }
      out[name] = { user, sys };
    }
    return out;
  }

  stop() {
    const wallS = (performance.now() - this.t0) / 1000;
    const c1 = this.read();
    const s1 = cpuTimes();
    const groups = {};
    for (const name of Object.keys(this.groups)) {
      const user = c1[name].user - this.c0[name].user;
      const sys = c1[name].sys - this.c0[name].sys;
      const us = user + sys;
      groups[name] = {
        cpuMicros: us,
        pctOfCore: Math.round((us / 1e6 / wallS) * 1000) / 10,
        kernelShare: us > 0 ? Math.round((sys / us) * 100) / 100 : null,
      };
    }
    const cores = {};
    for (const [cpu, v] of Object.entries(s1)) {
      const a = this.s0[cpu];
      if (!a) continue;
      const dt = v.total - a.total;
      cores[cpu] = {
        busyPct: dt > 0 ? Math.round(((v.busy - a.busy) / dt) * 1000) / 10 : 0,
        softirqPct: dt > 0 ? Math.round(((v.softirq - a.softirq) / dt) * 1000) / 10 : 0,
      };
    }
    // Whatever else ran on the box meanwhile (other users' processes), in % of one core: total
    // busy time of every core minus ours (approximate: softirq work is not always charged to a process).
    const boxBusy = Object.values(cores).reduce((a, c) => a + c.busyPct, 0);
    const ours = Object.entries(groups)
      .filter(([k]) => k === "sut" || k === "generator")
      .reduce((a, [, g]) => a + g.pctOfCore, 0);
    return { wallS, groups, cores, otherLoadPctOfCore: Math.max(0, Math.round((boxBusy - ours) * 10) / 10) };
  }
}

/** Busy % of the box (all cores, in % of one core) over `ms`, minus the given processes. */
export async function otherLoad(pids, ms = 1000) {
  const w = new CpuWindow({ sut: pids, generator: [process.pid] });
  w.start();
  await sleep(ms);
  return w.stop().otherLoadPctOfCore;
}

/**
 * Waits (at most maxS seconds) until the rest of the box uses less than `limitPct` of a core, so
 * measurements are not taken while other jobs run. Returns the last reading.
 */
export async function waitQuiet(pids, maxS, limitPct, log) {
  const deadline = Date.now() + maxS * 1000;
  let load = await otherLoad(pids);
  while (load > limitPct && Date.now() < deadline) {
    log?.(`box busy with other work (${load} % of a core), waiting`);
    load = await otherLoad(pids, 2000);
  }
  return load;
}
