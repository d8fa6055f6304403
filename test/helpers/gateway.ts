import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Signal } from "./signal.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = path.join(ROOT, "bin", "natsedge.js");

export interface GatewayProcess {
  proc: ChildProcess;
  port: number;
  adminPort: number;
  url: string;
  wsUrl: string;
  adminUrl: string;
  /** Every line the process printed so far (stdout and stderr). */
  lines: string[];
  /**
   * The first log record among lines[from...] whose msg is `msg` (and that `where` accepts),
   * waiting for it if need be.
   */
  waitForLog(msg: string, opts?: { from?: number; where?: (rec: Record<string, unknown>) => boolean; timeoutMs?: number }): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  exited: Promise<number | string>;
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export interface StartOptions {
  args?: string[];
  env?: Record<string, string>;
  /** Written to a temp file and passed with --config (YAML or JSON by extension). */
  config?: { yaml?: string; json?: unknown };
  readyTimeoutMs?: number;
  /** Sees every line as it is printed, also before the gateway is listening (start-up progress). */
  onLine?: (line: string) => void;
}

/** Starts a real gateway process on free loopback ports and waits for its "listening" line. */
export async function startGateway(opts: StartOptions = {}): Promise<GatewayProcess> {
  const args = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0", "--log-level", "info", ...(opts.args ?? [])];
  let dir: string | undefined;
  if (opts.config) {
    dir = mkdtempSync(path.join(tmpdir(), "natsedge-test-"));
    const file = path.join(dir, opts.config.yaml !== undefined ? "config.yaml" : "config.json");
    writeFileSync(file, opts.config.yaml ?? JSON.stringify(opts.config.json));
    args.push("--config", file);
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("NATSEDGE_")) env[k] = v;
  Object.assign(env, opts.env);
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(proc);
  const lines: string[] = [];
  const printed = new Signal();
  const exited = new Promise<number | string>((resolve) => {
    proc.on("exit", (code, signal) => {
      running.delete(proc);
      if (dir) rmSync(dir, { recursive: true, force: true });
      resolve(code ?? signal ?? -1);
    });
  });
  // With TLS the listening record says so, and the URLs below become https:// and wss://.
  const ports = await new Promise<{ port: number; adminPort: number; tls: boolean; adminTls: boolean }>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`gateway not ready in time:\n${lines.join("\n")}`));
    }, opts.readyTimeoutMs ?? 20_000);
    const onLine = (line: string): void => {
      lines.push(line);
      printed.wake();
      opts.onLine?.(line);
      if (!line.startsWith("{")) return;
      try {
        const rec = JSON.parse(line) as { msg?: string; port?: number; adminPort?: number; tls?: boolean; adminTls?: boolean };
        if (rec.msg === "listening" && rec.port && rec.adminPort) {
          clearTimeout(timer);
          resolve({ port: rec.port, adminPort: rec.adminPort, tls: rec.tls === true, adminTls: rec.adminTls === true });
        }
      } catch {
        /* not a log record */
      }
    };
    splitLines(proc.stdout!, onLine);
    splitLines(proc.stderr!, onLine);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`gateway exited (${code}) before listening:\n${lines.join("\n")}`));
    });
  });
  const url = `${ports.tls ? "https" : "http"}://127.0.0.1:${ports.port}`;
  return {
    proc,
    port: ports.port,
    adminPort: ports.adminPort,
    url,
    wsUrl: `${ports.tls ? "wss" : "ws"}://127.0.0.1:${ports.port}/ws`,
    adminUrl: `${ports.adminTls ? "https" : "http"}://127.0.0.1:${ports.adminPort}`,
    lines,
    waitForLog(msg, { from = 0, where = () => true, timeoutMs = 10_000 } = {}) {
      const find = (): Record<string, unknown> | undefined => {
        for (const line of lines.slice(from)) {
          if (!line.startsWith("{")) continue;
          try {
            const rec = JSON.parse(line) as Record<string, unknown>;
            if (rec.msg === msg && where(rec)) return rec;
          } catch {
            /* not a log record */
          }
        }
        return undefined;
      };
      return printed.until(find, `log "${msg}"`, timeoutMs, () => `output:\n${lines.slice(from).join("\n")}`);
    },
    exited,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** A process's resident set size in KiB, from /proc (to see a gateway's memory grow or not). */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1]);
}

/** Runs the CLI to completion (for config errors, --help): exit code and output. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | string; out: string; err: string }> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("NATSEDGE_")) base[k] = v;
  const proc = spawn(process.execPath, [BIN, ...args], { env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  running.add(proc);
  let out = "";
  let err = "";
  proc.stdout.on("data", (d: Buffer) => (out += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
    proc.on("exit", (code, signal) => {
      clearTimeout(timer);
      running.delete(proc);
      resolve({ code: code ?? signal ?? -1, out, err });
    });
  });
}

function splitLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = "";
  stream.on("data", (d: Buffer) => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
}

/** The value of one series (`name` or `name{label="value"}`) in a gateway's /metrics, 0 if absent. */
export async function metricValue(gw: GatewayProcess, series: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return Number(new RegExp(`^${escaped} (\\d+(?:\\.\\d+)?)`, "m").exec(text)?.[1] ?? 0);
}
