/**
 * The client SDK across the death of its replica: two gateways over one nats-server, clients
 * given both URLs, kill -9 of the replica they are on while a backend publishes a numbered
 * stream into a history channel through JetStream. Each client (WebSocket JSON, WebSocket
 * MessagePack, long-poll) moves to the other replica, resumes from its last offset and ends with
 * every number exactly once, in order, with the stored offsets.
 */
import { randomUUID } from "node:crypto";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client, type ClientOptions, type Publication } from "../../src/client/index.js";
import type { GatewayProcess } from "../helpers/gateway.js";
import { startNats, type NatsCluster } from "../helpers/nats.js";
import { gatewayYaml, metric, sequenceProblem, SequencePublisher, startReplicas, waitUntil, within } from "./util.js";

const COUNT = 1500;
const RATE = 300;
const KILL_AT = 450;

interface Watched {
  name: string;
  client: Client;
  pubs: Publication<{ n: number }>[];
  subscribed: number;
  unrecovered: unknown[];
  disconnects: Array<{ code: number }>;
  transports: string[];
}

describe("kill -9 of the replica a client is on, mid-stream", () => {
  let nats: NatsCluster | undefined;
  const gws: GatewayProcess[] = [];
  const clients: Client[] = [];
  let publisher: SequencePublisher | undefined;

  beforeAll(async () => {
    nats = await startNats(1);
    const yaml = gatewayYaml({ extra: 'sessionSecret: "client-failover-session-secret-0123456789abcdef"' });
    await startReplicas(2, nats.servers, yaml, gws);
  });
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    await publisher?.close();
    await Promise.all(gws.map((g) => g.stop("SIGKILL")));
    await nats?.stop();
  });

  it("every client moves to the other replica and ends with 1..N once, in order", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const ch = `chat.failover-${process.pid}`;
    const watch = (name: string, opts: ClientOptions): Watched => {
      const w: Watched = { name, client: new Client([a.url, b.url], { WebSocket, minReconnectDelay: 50, maxReconnectDelay: 200, ...opts }), pubs: [], subscribed: 0, unrecovered: [], disconnects: [], transports: [] };
      clients.push(w.client);
      w.client.on("disconnected", (e) => w.disconnects.push(e));
      w.client.on("connected", (e) => w.transports.push(e.transport));
      w.client.subscribe<{ n: number }>(ch, {
        onPublication: (p) => w.pubs.push(p),
        onSubscribed: () => w.subscribed++,
        onUnrecovered: (pos) => w.unrecovered.push(pos),
      });
      return w;
    };
    const watched = [
      watch("websocket json", {}),
      watch("websocket msgpack", { format: "msgpack" }),
      watch("long-poll", { transports: ["longpoll"] }),
    ];
    await waitUntil(() => watched.every((w) => w.subscribed === 1) || undefined, "all subscribed");
    // All on replica A (the first URL).
    expect(await metric(a, "natsedge_connections", 'transport="websocket"')).toBe(2);
    // (The series appears with the first connection.)
    expect(await metric(b, "natsedge_connections", 'transport="websocket"').catch(() => 0)).toBe(0);

    publisher = new SequencePublisher(nats!.nodes[0]!.url, `natsedge.ch.${ch}`, randomUUID());
    await publisher.open();
    const run = publisher.run(COUNT, RATE);
    await waitUntil(() => (watched.every((w) => w.pubs.length >= KILL_AT) ? true : undefined), `${KILL_AT} delivered`);
    const killedAt = performance.now();
    await a.stop("SIGKILL");
    await waitUntil(() => watched.every((w) => w.subscribed === 2) || undefined, "all resubscribed on B");
    const failoverMs = Math.round(performance.now() - killedAt);
    const stats = await within(run, 30_000, "the publisher");
    await waitUntil(() => watched.every((w) => w.pubs.length >= COUNT) || undefined, "every publication", 20_000);

    for (const w of watched) {
      const ns = w.pubs.map((p) => p.data.n);
      expect(sequenceProblem(ns, COUNT), w.name).toBeUndefined();
      expect(w.pubs.map((p) => p.offset), `${w.name}: the stored offsets`).toEqual(stats.offsets);
      expect(w.unrecovered, w.name).toEqual([]);
      expect(w.disconnects, w.name).toHaveLength(1);
      expect(w.client.state).toBe("connected");
    }
    expect(watched[0]?.disconnects[0]?.code).toBe(1006);
    expect(watched[2]?.transports).toEqual(["longpoll", "longpoll"]);
    expect(await metric(b, "natsedge_connections", 'transport="websocket"')).toBe(2);
    console.log(`client failover: ${COUNT} publications at ${RATE}/s, killed at ~${KILL_AT}, all resubscribed on B ${failoverMs} ms after the kill`);
  });
});
