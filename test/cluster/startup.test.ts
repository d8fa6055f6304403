/**
 * Start-up while JetStream is not there yet: a gateway started when one node of a three-node
 * NATS cluster runs (no meta-leader quorum) waits instead of exiting. Meanwhile it logs each
 * attempt, its admin port answers /healthz 200 and /readyz 503, and its client port is closed;
 * once a second node brings quorum back it becomes ready by itself and serves clients.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, startNats, type NatsCluster, type NatsNode } from "../helpers/nats.js";
import { eventually, Signal } from "../helpers/signal.js";
import { gatewayYaml, logRecords, sleep } from "./util.js";

const WAITING = "JetStream not ready yet";
/** How long the cluster stays without quorum: long enough for several attempts to be logged. */
const NO_QUORUM_MS = 8_000;

describe("start-up waits for JetStream", () => {
  let nats: NatsCluster | undefined;
  let gw: GatewayProcess | undefined;
  let starting: Promise<GatewayProcess> | undefined;
  const measured: Record<string, unknown> = {};

  beforeAll(async () => {
    nats = await startNats(3);
    // All three down, then one back: it remembers its peers but cannot elect a meta leader alone.
    await Promise.all(nats.nodes.map((n) => n.kill()));
  }, 60_000);

  afterAll(async () => {
    gw = gw ?? (await starting?.catch(() => undefined));
    await gw?.stop("SIGKILL");
    await nats?.stop();
    console.log(`start-up measurements: ${JSON.stringify(measured)}`);
  }, 60_000);

  it("is alive but not ready while JetStream has no quorum, then ready without a restart", async () => {
    const cluster = nats as NatsCluster;
    const [n0, n1, n2] = cluster.nodes as [NatsNode, NatsNode, NatsNode];
    // Resolves once JetStream answers on n0, which needs a second node.
    const n0Ready = n0.restart();
    n0Ready.catch(() => undefined);

    const port = await freePort();
    const adminPort = await freePort();
    const lines: string[] = [];
    const printed = new Signal();
    const spawnedAt = Date.now();
    starting = startGateway({
      config: { yaml: gatewayYaml() },
      args: ["--nats", cluster.servers, "--port", String(port), "--admin-port", String(adminPort)],
      readyTimeoutMs: 90_000,
      onLine: (line) => {
        lines.push(line);
        printed.wake();
      },
    });
    starting.catch(() => undefined);
    const attempts = (): number => lines.filter((l) => l.includes(`"msg":"${WAITING}"`)).length;
    const context = (): string => `output:\n${lines.join("\n")}`;

    await printed.until(() => (lines.some((l) => l.includes('"msg":"admin listening')) ? true : undefined), "the admin port", 20_000, context);
    const admin = `http://127.0.0.1:${adminPort}`;
    expect((await fetch(`${admin}/healthz`)).status).toBe(200);
    expect((await fetch(`${admin}/readyz`)).status).toBe(503);
    await printed.until(() => (attempts() >= 2 ? true : undefined), `two "${WAITING}" lines`, 30_000, context);
    await expect(fetch(`http://127.0.0.1:${port}/`), "the client port is closed until ready").rejects.toThrow();
    expect((await fetch(`${admin}/readyz`)).status).toBe(503);
    expect(lines.join("\n")).not.toContain("start-up failed");

    // Let the outage last, then bring quorum back.
    await sleep(Math.max(0, NO_QUORUM_MS - (Date.now() - spawnedAt)));
    const quorumAt = Date.now();
    await Promise.all([n1.restart(), n2.restart(), n0Ready]);
    measured.jetStreamBackMs = Date.now() - quorumAt;

    gw = await starting;
    measured.listeningAfterQuorumMs = Date.now() - quorumAt;
    measured.waitedMs = Date.now() - spawnedAt;
    await eventually(async () => ((await fetch(`${admin}/readyz`)).status === 200 ? true : undefined), "/readyz 200", 20_000);
    measured.readyAfterQuorumMs = Date.now() - quorumAt;
    const waits = logRecords(gw, WAITING);
    measured.attemptsLogged = waits.length;
    measured.lastAttempt = waits.at(-1);
    expect(waits.length).toBeGreaterThanOrEqual(2);
    expect(gw.proc.exitCode).toBeNull();

    // It serves clients: a subscriber gets a publication in a history channel.
    const sub = await TestClient.connect(gw.wsUrl);
    const pub = await TestClient.connect(gw.wsUrl);
    try {
      expect((await sub.request("subscribe", { ch: "chat.startup" }, 20_000)).ok).toMatchObject({ offset: 0 });
      expect((await pub.request("publish", { ch: "chat.startup", data: { n: 1 } }, 20_000)).ok).toMatchObject({ offset: expect.any(Number) });
      expect((await sub.nextPush((p) => p.push === "pub", "the publication")).data).toEqual({ n: 1 });
    } finally {
      sub.terminate();
      pub.terminate();
    }
  });
});
