/**
 * The continuity contract (docs/protocol.md, Recovery contract): when a gateway cannot prove that
 * a history channel's next publication follows the last one it delivered, every subscriber is
 * told — WebSocket clients get `unsub` with `resubscribe`, SSE streams end so the browser resumes
 * from its last event id, held long polls are answered at the last position they can vouch for —
 * and recovering from there gives `recovered:false`, never a silent hole. Each condition is made
 * on purpose: the channel trimmed past a gateway's position while it was cut off from NATS (a
 * gap it cannot fill), and the channel's stream deleted and recreated (a new epoch).
 */
import { connect as natsConnect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "./helpers/client.js";
import { startFaultProxy, type FaultProxy } from "./helpers/fault-proxy.js";
import { metricValue, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { startNats, type NatsCluster } from "./helpers/nats.js";
import { eventually } from "./helpers/signal.js";
import { openSseClients, SseClient } from "./helpers/sse-client.js";

const CONFIG = `
presenceGrace: 0s
commandRate: 0
namespaces:
  tiny: { history: { size: 3, ttl: 5m }, clientPublish: true, anonymous: true }
  chat: { history: { size: 100, ttl: 5m }, clientPublish: true, anonymous: true }
`;

interface Position {
  offset: number;
  epoch: string;
}

async function rpc(gw: GatewayProcess, path: string, body: unknown): Promise<Frame> {
  const res = await fetch(gw.url + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return (await res.json()) as Frame;
}

describe("continuity: a gateway that cannot vouch for a channel says so", () => {
  let nats: NatsCluster;
  let proxy: FaultProxy;
  let gw: GatewayProcess;
  let nc: NatsConnection;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    nats = await startNats(1);
    proxy = await startFaultProxy({ port: Number(new URL(nats.servers.split(",")[0] as string).port) });
    gw = await startGateway({ config: { yaml: CONFIG }, args: ["--nats", proxy.url] });
    nc = await natsConnect({ servers: nats.servers });
  });

  afterAll(async () => {
    for (const c of clients) c.terminate();
    for (const s of openSseClients) s.close();
    await nc?.close();
    await gw?.stop();
    await proxy?.close();
    await nats?.stop();
  });

  it("a channel trimmed past the gateway's position while it was cut off: every transport is told", async () => {
    const ch = "tiny.trimmed";
    const ws = await TestClient.connect(gw.wsUrl);
    clients.push(ws);
    const sub = await ws.request("subscribe", { ch });
    const start = sub.ok as Position;
    expect((await ws.request("publish", { ch, data: 1 })).ok).toBeDefined();
    const first = await ws.nextPush((p) => p.push === "pub" && p.ch === ch, "first publication");
    const seen: Position = { offset: first.offset as number, epoch: start.epoch };

    // An SSE stream and a held long poll on the same channel, both at the same position.
    const sse = await SseClient.open(gw.url, `ch=${ch}`);
    await sse.waitFor(() => sse.events.find((e) => e.event === "subscribed"), "subscribed");
    const connect = await rpc(gw, "/lp/rpc", { cmds: [{ id: 1, op: "connect" }] });
    const session = ((connect.replies as Frame[])[0]?.ok as { session: string }).session;
    const poll = rpc(gw, "/lp/poll", { session, subs: { [ch]: seen }, timeout: 30 });
    await eventually(async () => ((await metricValue(gw, "natsedge_longpoll_held")) >= 1 ? true : undefined), "the poll to be held");

    // Cut the gateway off from NATS; meanwhile 10 publications go straight into the stream,
    // which keeps 3: the gateway's last position is trimmed away.
    proxy.refuse = true;
    proxy.drop();
    await eventually(async () => ((await metricValue(gw, "natsedge_nats_connected")) === 0 ? true : undefined), "the gateway to notice");
    const js = nc.jetstream();
    for (let i = 2; i <= 11; i++) await js.publish(`natsedge.ch.${ch}`, Buffer.from(JSON.stringify(i)));
    proxy.refuse = false;

    // WebSocket: an unsub push asking to resubscribe, and no publication from past the break.
    const unsub = await ws.nextPush((p) => p.push === "unsub" && p.ch === ch, "unsub with resubscribe", 20_000);
    expect(unsub).toMatchObject({ code: 410, resubscribe: true, reason: expect.stringMatching(/gap/) });
    expect(ws.pubs(ch).map((p) => p.data)).toEqual([]);
    // Resubscribing from the last position seen: the hole is admitted, not papered over.
    const again = await ws.request("subscribe", { ch, since: seen });
    expect(again.ok).toMatchObject({ recovered: false, epoch: start.epoch });
    expect((again.ok as Frame).pubs ?? []).toEqual([]);
    // Live delivery goes on after the resubscribe.
    expect((await ws.request("publish", { ch, data: "after" })).ok).toBeDefined();
    expect((await ws.nextPush((p) => p.push === "pub" && p.ch === ch, "live after")).data).toBe("after");
    expect(ws.pubs(ch)).toEqual([]);

    // SSE: the stream ends with 4010 (reconnect), and resuming from its last id gets `reset`.
    const bye = await sse.waitFor(() => sse.events.find((e) => e.event === "disconnect"), "SSE disconnect");
    expect(JSON.parse(bye.data)).toMatchObject({ code: 4010, reconnect: true });
    expect(sse.events.filter((e) => e.event === "pub")).toEqual([]);
    const resumed = await SseClient.open(gw.url, `ch=${ch}`, { "last-event-id": bye.lastId });
    const reset = await resumed.waitFor(() => resumed.events.find((e) => e.event === "reset"), "reset on resume");
    expect(JSON.parse(reset.data)).toMatchObject({ ch, recovered: false });
    resumed.close();

    // Long-poll: the held poll is answered at the position it can vouch for, without the
    // publications past the break; the next poll from there learns recovered:false.
    const answer = await poll;
    expect((answer.subs as Record<string, Frame>)[ch]).toEqual({ offset: seen.offset, epoch: seen.epoch });
    expect((answer.pubs as Frame[] | undefined) ?? []).toEqual([]);
    const next = await rpc(gw, "/lp/poll", { session, subs: { [ch]: seen }, timeout: 0 });
    expect((next.subs as Record<string, Frame>)[ch]).toMatchObject({ recovered: false });

    expect(await metricValue(gw, "natsedge_continuity_lost_total")).toBeGreaterThanOrEqual(1);
  });

  it("a recreated stream (new epoch) is signalled to live subscribers instead of dropped as duplicates", async () => {
    const ch = "chat.recreated";
    const ws = await TestClient.connect(gw.wsUrl);
    clients.push(ws);
    const start = (await ws.request("subscribe", { ch })).ok as Position;
    for (let i = 1; i <= 3; i++) expect((await ws.request("publish", { ch, data: i })).ok).toBeDefined();
    const pubs = [];
    for (let i = 1; i <= 3; i++) pubs.push(await ws.nextPush((p) => p.push === "pub" && p.ch === ch, `pub ${i}`));
    const seen: Position = { offset: pubs[2]?.offset as number, epoch: start.epoch };

    // The stream is deleted and created again with the same configuration behind the gateway.
    const jsm = await nc.jetstreamManager();
    const stream = "natsedge_ns_chat";
    const { config } = await jsm.streams.info(stream);
    await jsm.streams.delete(stream);
    await jsm.streams.add(config);
    // A publication in the new stream starts its sequence again at 1.
    await nc.jetstream().publish(`natsedge.ch.${ch}`, Buffer.from('"new epoch"'));

    const unsub = await ws.nextPush((p) => p.push === "unsub" && p.ch === ch, "unsub after the stream was recreated", 20_000);
    expect(unsub).toMatchObject({ code: 410, resubscribe: true, reason: expect.stringMatching(/recreated/) });
    const again = await ws.request("subscribe", { ch, since: seen });
    expect(again.ok).toMatchObject({ recovered: false });
    expect((again.ok as Position).epoch).not.toBe(start.epoch);
    // Nothing from the new stream was passed off as a continuation of the old one.
    expect(ws.pubs(ch).map((p) => p.data)).toEqual([]);
  });
});
