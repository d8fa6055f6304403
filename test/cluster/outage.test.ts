/**
 * A NATS outage under one gateway (single nats-server, kill -9): readiness drops, publishing is
 * refused with 503 while clients stay connected, and after the server comes back (same store)
 * readiness returns and subscribers receive, in order and without gaps, both what was stored
 * while the gateway was cut off (the reconnect catch-up) and what is published afterwards.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, NATS_SERVER, startNats, waitForJetStream, type NatsCluster, type NatsNode } from "../helpers/nats.js";
import {
  gatewayYaml,
  metric,
  nOf,
  pubsIn,
  readyz,
  sequenceProblem,
  SequencePublisher,
  sleep,
  strictlyIncreasing,
  waitForPub,
  waitUntil,
  within,
} from "./util.js";

const CH = "chat.outage";
const measured: Record<string, unknown> = {};

let nats: NatsCluster | undefined;
let gw: GatewayProcess | undefined;
let side: ChildProcess | undefined;
const open: TestClient[] = [];
const publishers: SequencePublisher[] = [];
/** Stream offsets of n = 1, 2, ... as acked to the backend. */
const stored: number[] = [];
let subs: TestClient[] = [];
let pubc: TestClient | undefined;

function node(): NatsNode {
  return (nats as NatsCluster).nodes[0] as NatsNode;
}

async function backendPublish(server: string, first: number, count: number): Promise<void> {
  const p = new SequencePublisher(server, `natsedge.ch.${CH}`, randomUUID());
  publishers.push(p);
  await p.open();
  const stats = await within(p.run(count, 500, 15_000, first), 30_000, "backend publish");
  stored.push(...stats.offsets);
  await p.close();
}

function expectSequence(c: TestClient, last: number, what: string): void {
  const got = pubsIn(c, CH);
  expect(sequenceProblem(got.map((p) => nOf(p) as number), last), what).toBeUndefined();
  const offsets = got.map((p) => p.offset as number);
  expect(strictlyIncreasing(offsets), `${what}: offsets increasing`).toBe(true);
  expect(offsets, `${what}: offsets`).toEqual(stored.slice(0, last));
}

/** The same nats-server (same name and store) on another port, which the gateway does not know. */
async function startSide(port: number): Promise<ChildProcess> {
  const args = [...node().args];
  args[args.indexOf("-p") + 1] = String(port);
  const p = spawn(NATS_SERVER, args, { stdio: ["ignore", "ignore", "pipe"] });
  p.stderr?.on("data", () => undefined);
  side = p;
  await waitForJetStream([`nats://127.0.0.1:${port}`]);
  return p;
}

async function stopSide(): Promise<void> {
  const p = side;
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill("SIGTERM");
  const t = setTimeout(() => p.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(t);
}

beforeAll(async () => {
  nats = await startNats(1);
  gw = await startGateway({ config: { yaml: gatewayYaml() }, args: ["--nats", nats.servers] });
}, 60_000);

afterAll(async () => {
  for (const c of open.splice(0)) c.terminate();
  await Promise.allSettled(publishers.map((p) => p.close()));
  side?.kill("SIGKILL");
  await gw?.stop();
  await nats?.stop();
  console.log(`outage measurements: ${JSON.stringify(measured)}`);
}, 60_000);

describe("nats-server outage under a gateway", () => {
  it("delivers normally before the outage", async () => {
    const g = gw as GatewayProcess;
    subs = [await TestClient.connect(g.wsUrl), await TestClient.connect(g.wsUrl, undefined, { format: "msgpack" })];
    pubc = await TestClient.connect(g.wsUrl);
    open.push(...subs, pubc);
    for (const s of subs) expect((await s.request("subscribe", { ch: CH })).ok).toMatchObject({ offset: 0 });
    expect(await readyz(g)).toBe(200);
    await backendPublish(node().url, 1, 5);
    for (const s of subs) await waitForPub(s, CH, (p) => nOf(p) === 5, "n=5");
    for (const [i, s] of subs.entries()) expectSequence(s, 5, `subscriber ${i}`);
  });

  it("goes unready and refuses publishes with 503 while NATS is down; clients stay connected", async () => {
    const g = gw as GatewayProcess;
    const killedAt = Date.now();
    await node().kill();
    await waitUntil(async () => ((await readyz(g)) === 503 ? true : undefined), "/readyz 503", 15_000, 50);
    measured.readyz503AfterMs = Date.now() - killedAt;
    expect((await fetch(`${g.adminUrl}/healthz`)).status).toBe(200);
    expect(await metric(g, "natsedge_nats_connected")).toBe(0);

    const r = await (pubc as TestClient).request("publish", { ch: CH, data: { n: -1 } });
    expect(r.error).toMatchObject({ code: 503 });
    const rl = await (pubc as TestClient).request("publish", { ch: "live.outage", data: { n: -1 } });
    expect(rl.error).toMatchObject({ code: 503 });
    // New subscriptions cannot be made either (history or not): 503, not a hang or a silent ok.
    for (const ch of ["chat.outage-new", "live.outage-new"]) {
      const rs = await (pubc as TestClient).request("subscribe", { ch }, 15_000);
      expect(rs.error, `subscribe ${ch}`).toMatchObject({ code: 503 });
    }
    for (const c of [...subs, pubc as TestClient]) {
      expect(c.ws.readyState).toBe(c.ws.OPEN);
      expect((await c.request("ping")).ok).toEqual({});
    }
    expect(await readyz(g)).toBe(503);
  });

  it("catches up on what was stored while it was cut off, with no new publication to reveal the gap", async () => {
    const g = gw as GatewayProcess;
    // The same server (same store) comes up on a port the gateway does not know, a backend
    // stores n = 6..55 there, and it stops again: the gateway never saw these live.
    const port = await freePort();
    await startSide(port);
    await backendPublish(`nats://127.0.0.1:${port}`, 6, 50);
    await stopSide();
    expect(pubsIn(subs[0] as TestClient, CH)).toHaveLength(5);
    const before = {
      detected: await metric(g, "natsedge_gaps_detected_total"),
      filled: await metric(g, "natsedge_gap_publications_filled_total"),
    };

    // Back on its own port: the gateway reconnects and reads up the stream by itself.
    const restartAt = Date.now();
    await node().restart();
    await waitUntil(async () => ((await readyz(g)) === 200 ? true : undefined), "/readyz 200", 20_000, 50);
    measured.readyz200AfterRestartMs = Date.now() - restartAt;
    for (const s of subs) await waitForPub(s, CH, (p) => nOf(p) === 55, "n=55 from the catch-up", 15_000);
    measured.caughtUpAfterRestartMs = Date.now() - restartAt;
    for (const [i, s] of subs.entries()) expectSequence(s, 55, `subscriber ${i} after catch-up`);
    const after = {
      detected: await metric(g, "natsedge_gaps_detected_total"),
      filled: await metric(g, "natsedge_gap_publications_filled_total"),
    };
    expect(after.detected - before.detected).toBeGreaterThanOrEqual(1);
    expect(after.filled - before.filled).toBe(50);
    measured.catchUp = { gapsDetected: after.detected - before.detected, filled: after.filled - before.filled };
    expect(await metric(g, "natsedge_nats_connected")).toBe(1);
  });

  it("delivers what is published after NATS returned, with no gaps", async () => {
    await backendPublish(node().url, 56, 50);
    const r = await (pubc as TestClient).request("publish", { ch: CH, data: { n: 106 } });
    expect(r.ok).toMatchObject({ offset: expect.any(Number) });
    stored.push((r.ok as { offset: number }).offset);
    for (const s of subs) await waitForPub(s, CH, (p) => nOf(p) === 106, "n=106", 15_000);
    await sleep(200);
    for (const [i, s] of subs.entries()) expectSequence(s, 106, `subscriber ${i} at the end`);
    // A late joiner recovering from the start gets the same sequence from history.
    const late = await TestClient.connect((gw as GatewayProcess).wsUrl);
    open.push(late);
    const first = (subs[0] as TestClient).replies.get(2) as Frame;
    const rec = await late.request("subscribe", { ch: CH, since: { offset: 0, epoch: (first.ok as { epoch: string }).epoch } });
    expect(rec.ok).toMatchObject({ recovered: true });
    const pubs = (rec.ok as { pubs: Frame[] }).pubs;
    expect(sequenceProblem(pubs.map((p) => nOf(p) as number), 106)).toBeUndefined();
  });
});
