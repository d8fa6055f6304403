import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "nats";
import { Signal } from "./signal.js";

export const NATS_SERVER = process.env.NATS_SERVER_BIN ?? "/usr/sbin/nats-server";

export interface NatsNode {
  name: string;
  port: number;
  clusterPort: number;
  url: string;
  proc: ChildProcess | undefined;
  storeDir: string;
  args: string[];
  /** kill -9 */
  kill(): Promise<void>;
  /** Starts the node again with the same ports and store (after kill). */
  restart(): Promise<void>;
}

export interface NatsCluster {
  nodes: NatsNode[];
  /** Comma-separated client URLs of every node. */
  servers: string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  for (const p of running) p.kill("SIGKILL");
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function launch(node: NatsNode): void {
  const proc = spawn(NATS_SERVER, node.args, { stdio: ["ignore", "ignore", "pipe"] });
  proc.stderr?.on("data", () => undefined);
  running.add(proc);
  proc.on("exit", () => running.delete(proc));
  node.proc = proc;
}

/**
 * Starts `size` nats-server processes with JetStream on free loopback ports (a cluster when
 * size > 1) and waits until JetStream answers on every node. `args` are added to every node's
 * command line (e.g. `--no_advertise`, so that clients reach the cluster only through the URLs
 * they were given, such as a fault proxy's).
 */
export async function startNats(size = 1, opts: { args?: string[] } = {}): Promise<NatsCluster> {
  const nodes: NatsNode[] = [];
  for (let i = 0; i < size; i++) {
    const port = await freePort();
    const clusterPort = await freePort();
    const storeDir = mkdtempSync(path.join(tmpdir(), `natsedge-js-${i}-`));
    nodes.push({
      name: `n${i}`,
      port,
      clusterPort,
      url: `nats://127.0.0.1:${port}`,
      proc: undefined,
      storeDir,
      args: [],
      kill: async () => undefined,
      restart: async () => undefined,
    });
  }
  const routes = nodes.map((n) => `nats-route://127.0.0.1:${n.clusterPort}`).join(",");
  for (const node of nodes) {
    node.args = ["-a", "127.0.0.1", "-p", String(node.port), "-js", "-sd", node.storeDir, "-n", node.name, ...(opts.args ?? [])];
    if (size > 1) {
      node.args.push("--cluster_name", "natsedge-test", "--cluster", `nats://127.0.0.1:${node.clusterPort}`, "--routes", routes);
    }
    node.kill = async () => {
      const p = node.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once("exit", r));
      p.kill("SIGKILL");
      await exited;
    };
    node.restart = async () => {
      launch(node);
      await waitForJetStream([node.url]);
    };
    launch(node);
  }
  await waitForJetStream(nodes.map((n) => n.url));
  return {
    nodes,
    servers: nodes.map((n) => n.url).join(","),
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      for (const n of nodes) rmSync(n.storeDir, { recursive: true, force: true });
    },
  };
}

/** Polls each server until JetStream answers (a cluster needs its meta leader first). */
export async function waitForJetStream(urls: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const url of urls) {
    let last: unknown;
    const answers = async (): Promise<true | undefined> => {
      try {
        const nc = await connect({ servers: url, timeout: 1000, reconnect: false });
        try {
          const jsm = await nc.jetstreamManager({ timeout: 1000 });
          await jsm.getAccountInfo();
          return true;
        } finally {
          await nc.close();
        }
      } catch (err) {
        last = err;
        return undefined;
      }
    };
    await new Signal().until(answers, `JetStream at ${url}`, deadline - Date.now(), () => `nats-server at ${url} not ready: ${String(last)}`, 200);
  }
}
