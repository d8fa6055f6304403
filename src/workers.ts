import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { Config } from "./config/types.js";
import type { Logger } from "./log.js";

/** Set in a worker's environment (outside the NATSEDGE_ namespace, which is for settings). */
export const WORKER_ENV = "__NATSEDGE_WORKER";

const RESTART_DELAY_MS = 1_000;
const MAX_RESTARTS_PER_MINUTE = 5;

/**
 * `--workers N`: N gateway processes share the client port (SO_REUSEPORT, the kernel spreads
 * connections), each a full replica joined through NATS, each with its own admin port
 * (adminPort + i) for Prometheus. The supervisor only starts, restarts and stops them.
 */
export function superviseWorkers(argv: string[], config: Config, log: Logger): void {
  const bin = fileURLToPath(new URL("../bin/natsedge.js", import.meta.url));
  const children = new Map<number, ChildProcess>();
  const restarts: number[] = [];
  let stopping = false;

  const start = (i: number): void => {
    const adminPort = config.adminPort === 0 ? 0 : config.adminPort + i;
    const child = spawn(process.execPath, [bin, ...argv, "--workers", "1", "--admin-port", String(adminPort)], {
      env: { ...process.env, [WORKER_ENV]: String(i) },
      stdio: "inherit",
    });
    children.set(i, child);
    child.on("exit", (code, signal) => {
      children.delete(i);
      if (stopping) {
        if (children.size === 0) process.exit(process.exitCode ?? 0);
        return;
      }
      const now = Date.now();
      while (restarts.length > 0 && (restarts[0] as number) < now - 60_000) restarts.shift();
      if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        log.fatal({ worker: i, code, signal }, "workers keep dying; giving up");
        process.exitCode = 1;
        stopAll("SIGTERM");
        return;
      }
      restarts.push(now);
      log.error({ worker: i, code, signal }, "worker exited; restarting");
      setTimeout(() => start(i), RESTART_DELAY_MS);
    });
  };

  const stopAll = (signal: NodeJS.Signals): void => {
    stopping = true;
    for (const c of children.values()) c.kill(signal);
    if (children.size === 0) process.exit(process.exitCode ?? 0);
  };

  for (let i = 0; i < config.workers; i++) start(i);
  log.info({ workers: config.workers, port: config.port }, "supervising workers");
  process.on("SIGTERM", () => stopAll("SIGTERM"));
  process.on("SIGINT", () => stopAll("SIGINT"));
  // Each worker serves its own copy of the certificate.
  if (config.tls) {
    process.on("SIGHUP", () => {
      for (const c of children.values()) c.kill("SIGHUP");
    });
  }
}
