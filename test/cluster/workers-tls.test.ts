/**
 * `--workers 2` with TLS: both workers serve the certificate on the shared port, and SIGHUP sent
 * to the supervisor reaches both, each putting the renewed certificate in service.
 */
import { readFileSync, writeFileSync } from "node:fs";
import type { TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, startNats, type NatsCluster } from "../helpers/nats.js";
import { TestPki, type CertFiles, type Leaf } from "../helpers/tls.js";

let nats: NatsCluster | undefined;
let sup: GatewayProcess | undefined;
let pki: TestPki;
let first: Leaf;
let files: CertFiles;
const open: TestClient[] = [];
const workerPids: number[] = [];

beforeAll(async () => {
  pki = new TestPki();
  first = pki.issue();
  files = pki.files(first);
  nats = await startNats(1);
  const port = await freePort();
  const tls = ["--tls-cert-file", files.live.cert, "--tls-key-file", files.live.key];
  sup = await startGateway({
    args: ["--nats", nats.servers, "--workers", "2", "--port", String(port), ...tls],
    readyTimeoutMs: 40_000,
  });
  // startGateway returns at the first worker's "listening" line.
  for (const worker of ["0", "1"]) {
    const listening = await sup.waitForLog("listening", { where: (rec) => rec.worker === worker, timeoutMs: 40_000 });
    // The node id is <hostname>-<pid>-<4 hex>.
    workerPids.push(Number(String(listening.node).split("-").at(-2)));
  }
}, 90_000);

afterAll(async () => {
  for (const c of open.splice(0)) c.terminate();
  await sup?.stop();
  // Never leave a worker behind, even if the supervisor died without stopping them.
  for (const pid of workerPids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  await nats?.stop();
  pki?.remove();
}, 60_000);

/**
 * The certificate serial each worker serves new connections, by node id: clients connect until
 * both workers have answered (the kernel spreads connections over them).
 */
async function servedByWorker(gw: GatewayProcess): Promise<Map<string, string>> {
  const served = new Map<string, string>();
  for (let i = 0; i < 64 && served.size < 2; i++) {
    const c = new TestClient(gw.wsUrl, { ca: pki.ca });
    open.push(c);
    const serial = new Promise<string>((resolve) => {
      c.ws.once("upgrade", (res) => resolve((res.socket as TLSSocket).getPeerCertificate().serialNumber));
    });
    await c.opened;
    const node = ((await c.request("connect")).ok as Frame).node as string;
    served.set(node, await serial);
    c.terminate();
  }
  expect(served.size, "connections reached both workers").toBe(2);
  return served;
}

describe("--workers 2 with TLS", () => {
  it("serves the certificate from both workers, and reloads both on SIGHUP to the supervisor", async () => {
    const gw = sup as GatewayProcess;
    expect(gw.wsUrl).toMatch(/^wss:/);
    expect([...(await servedByWorker(gw)).values()]).toEqual([first.serial, first.serial]);

    const next = pki.issue();
    writeFileSync(files.store.cert, readFileSync(next.cert));
    writeFileSync(files.store.key, readFileSync(next.key));
    const mark = gw.lines.length;
    gw.proc.kill("SIGHUP");
    for (const worker of ["0", "1"]) {
      const rec = await gw.waitForLog("tls certificate reloaded", { from: mark, where: (r) => r.worker === worker });
      expect(rec).toMatchObject({ reason: "SIGHUP", serial: next.serial });
    }
    expect([...(await servedByWorker(gw)).values()]).toEqual([next.serial, next.serial]);
    expect(gw.proc.exitCode).toBeNull();
    expect(await gw.stop("SIGTERM")).toBe(0);
  });
});
