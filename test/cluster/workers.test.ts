/**
 * `--workers 2` over NATS: two gateway processes share the client port (SO_REUSEPORT), each with
 * its own admin port (adminPort + i); clients land on both and talk to each other through NATS;
 * SIGTERM on the supervisor stops everything with exit 0. Without NATS, `--workers 2` is a
 * configuration error (exit 2).
 */
import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "../helpers/client.js";
import { runCli, startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, startNats, type NatsCluster } from "../helpers/nats.js";
import { gatewayYaml, logRecords, readyz, waitForPub, waitUntil } from "./util.js";

let nats: NatsCluster | undefined;
let sup: GatewayProcess | undefined;
let port = 0;
let adminPort = 0;
const open: TestClient[] = [];
const workerPids = new Set<number>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The worker's pid, from its node id `<hostname>-<pid>-<4 hex>`. */
function pidOf(node: string): number {
  return Number(node.split("-").at(-2));
}

function listening(): Array<{ port: number; adminPort: number; node: string; worker?: string }> {
  return logRecords(sup as GatewayProcess, "listening") as unknown as Array<{ port: number; adminPort: number; node: string; worker?: string }>;
}

function bindable(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once("error", () => resolve(false));
    srv.listen(p, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

/**
 * A free loopback port whose successor is free too, for adminPort and adminPort + 1. Picked below
 * the ephemeral range (Linux: from 32768): while many client sockets are open there, such as
 * during a load test, two consecutive free ephemeral ports are rare.
 */
async function twoFreePorts(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const p = 20_000 + Math.floor(Math.random() * 12_000);
    if ((await bindable(p)) && (await bindable(p + 1))) return p;
  }
  throw new Error("no two consecutive free ports");
}

beforeAll(async () => {
  nats = await startNats(1);
  port = await freePort();
  adminPort = await twoFreePorts();
  sup = await startGateway({
    config: { yaml: gatewayYaml() },
    args: ["--nats", nats.servers, "--workers", "2", "--port", String(port), "--admin-port", String(adminPort)],
    readyTimeoutMs: 40_000,
  });
  // startGateway returns at the first worker's "listening" line; wait for the other's.
  const first = listening()[0]?.node;
  await sup.waitForLog("listening", { where: (rec) => rec.node !== first, timeoutMs: 40_000 });
  for (const l of listening()) workerPids.add(pidOf(l.node));
}, 90_000);

afterAll(async () => {
  for (const c of open.splice(0)) c.terminate();
  await sup?.stop();
  // Never leave a worker behind, even if the supervisor did not stop them.
  for (const pid of workerPids) if (alive(pid)) process.kill(pid, "SIGKILL");
  await nats?.stop();
}, 60_000);

describe("--workers 2 with NATS", () => {
  it("starts both workers on the shared port, each with its own admin port", async () => {
    const ls = listening();
    expect(ls).toHaveLength(2);
    expect(ls.map((l) => l.port)).toEqual([port, port]);
    expect(ls.map((l) => l.adminPort).sort((a, b) => a - b)).toEqual([adminPort, adminPort + 1]);
    expect(new Set(ls.map((l) => l.worker))).toEqual(new Set(["0", "1"]));
    expect(new Set(ls.map((l) => l.node)).size).toBe(2);
    for (const l of ls) expect(ls.find((x) => x.worker === String(l.adminPort - adminPort))).toBe(l);
    expect(logRecords(sup as GatewayProcess, "supervising workers")).toHaveLength(1);
    expect(workerPids.size).toBe(2);
    for (const pid of workerPids) {
      expect(pid).not.toBe(sup?.proc.pid);
      expect(alive(pid)).toBe(true);
    }
    for (const a of [adminPort, adminPort + 1]) {
      await waitUntil(async () => ((await fetch(`http://127.0.0.1:${a}/readyz`)).status === 200 ? true : undefined), `readyz on ${a}`);
    }
  });

  it("spreads clients over both workers, and clients on different workers talk to each other", async () => {
    const url = `ws://127.0.0.1:${port}/ws`;
    const byNode = new Map<string, TestClient>();
    for (let i = 0; i < 64 && byNode.size < 2; i++) {
      const c = await TestClient.connect(url);
      open.push(c);
      const node = ((c.replies.get(1) as Frame).ok as { node: string }).node;
      if (!byNode.has(node)) byNode.set(node, c);
    }
    expect(byNode.size).toBe(2);
    const [a, b] = [...byNode.values()] as [TestClient, TestClient];
    for (const ch of ["chat.workers", "live.workers"]) {
      for (const c of [a, b]) expect((await c.request("subscribe", { ch })).error).toBeUndefined();
      expect((await a.request("publish", { ch, data: { from: "a" } })).error).toBeUndefined();
      expect((await b.request("publish", { ch, data: { from: "b" } })).error).toBeUndefined();
      for (const c of [a, b]) {
        await waitForPub(c, ch, (p) => (p.data as { from?: string }).from === "a", `${ch}: a's message`);
        await waitForPub(c, ch, (p) => (p.data as { from?: string }).from === "b", `${ch}: b's message`);
      }
    }
    // Subscribe on one worker, and publish from the other the moment the reply is in: the reply
    // means the subscription is live, so nothing may be missed (alternating directions).
    const missed: string[] = [];
    for (let i = 0; i < 100; i++) {
      const [sub, pub] = i % 2 === 0 ? [a, b] : [b, a];
      const ch = `live.round${i}`;
      expect((await sub.request("subscribe", { ch })).error).toBeUndefined();
      expect((await pub.request("publish", { ch, data: { i } })).error).toBeUndefined();
      await waitForPub(sub, ch, () => true, `round ${i}`, 5_000).catch(() => missed.push(ch));
      await sub.request("unsubscribe", { ch });
    }
    expect(missed).toEqual([]);
    // The join of the client on the other worker crosses over too.
    const bId = ((b.replies.get(1) as Frame).ok as { client: string }).client;
    await a.waitFor(
      () => a.pushes.find((p) => p.push === "join" && p.ch === "chat.workers" && (p.info as { client?: string }).client === bId),
      "join from the other worker",
    );
  });

  it("stops both workers and exits 0 on SIGTERM to the supervisor", async () => {
    const g = sup as GatewayProcess;
    const code = await g.stop("SIGTERM");
    expect(code).toBe(0);
    await waitUntil(() => ([...workerPids].every((pid) => !alive(pid)) ? true : undefined), "workers gone", 10_000);
    for (const a of [adminPort, adminPort + 1]) expect(await readyz({ adminUrl: `http://127.0.0.1:${a}` } as GatewayProcess)).toBe(-1);
    expect(g.lines.filter((l) => l.includes('"msg":"stopped"'))).toHaveLength(2);
  });
});

describe("--workers 2 without NATS", () => {
  it("is a configuration error: exit 2", async () => {
    const r = await runCli(["--workers", "2", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^natsedge: workers \(from --workers\): .*NATS/);
    expect(r.out).toBe("");
  });
});
