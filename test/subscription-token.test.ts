/**
 * Per-channel subscription tokens, end to end on a real gateway: a JWT naming one channel and
 * one user lets that user subscribe over WebSocket (`subscribe` with `token`), long-poll (`token`
 * in the channel's cursor) and SSE (`subtoken`) where the connection's own token does not; a
 * token for another channel, another user, without `exp` or expired is refused, and a
 * subscription token cannot connect.
 */
import { SignJWT } from "jose";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../src/client/index.js";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { openSseClients, SseClient } from "./helpers/sse-client.js";
import { Signal } from "./helpers/signal.js";
import { ok } from "./helpers/suite.js";

const SECRET = "subscription-token-test-secret-0123456789";
const API_KEY = "subscription-token-test-api-key-0123456789";
const key = new TextEncoder().encode(SECRET);
let gw: GatewayProcess;

/** `expiresIn` null: no `exp` claim. */
function sign(claims: Record<string, unknown>, expiresIn: string | null = "5m"): Promise<string> {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256" }).setIssuedAt();
  if (expiresIn !== null) jwt.setExpirationTime(expiresIn);
  return jwt.sign(key);
}

/** A connection token that allows only `open.*`. */
const connectionToken = (sub: string): Promise<string> => sign({ sub, channels: ["open.*"] });
const subToken = (sub: string, channel: string, expiresIn?: string): Promise<string> => sign({ sub, channel }, expiresIn);

beforeAll(async () => {
  gw = await startGateway({
    config: {
      yaml: [
        `apiKey: ${API_KEY}`,
        "sessionSecret: subscription-token-test-session-secret-0123",
        `auth: { hmacSecret: ${SECRET} }`,
        "namespaces:",
        "  open: { anonymous: true }",
        "  priv: { history: { size: 10, ttl: 5m } }",
      ].join("\n"),
    },
  });
});

afterAll(async () => {
  for (const c of openSseClients) c.close();
  await gw?.stop();
});

describe("WebSocket subscribe with a subscription token", () => {
  it("lets the user into a channel its connection token does not allow, and delivers to it", async () => {
    const c = await TestClient.connect(gw.wsUrl, await connectionToken("alice"));
    expect((await c.request("subscribe", { ch: "priv.a" })).error).toMatchObject({ code: 403 });
    const reply = await c.request("subscribe", { ch: "priv.a", token: await subToken("alice", "priv.a") });
    expect(ok(reply)).toMatchObject({ offset: expect.any(Number), epoch: expect.any(String) });
    const pub = await api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "priv.a", data: { n: 1 } } });
    expect(pub.status).toBe(200);
    await c.nextPush((p) => p.push === "pub" && p.ch === "priv.a", "publication on priv.a");
    c.close();
  });

  it("refuses a token for another channel or user (403), expired or without exp (401)", async () => {
    const c = await TestClient.connect(gw.wsUrl, await connectionToken("bob"));
    const tries: Array<[string, number]> = [
      [await subToken("bob", "priv.other"), 403],
      [await subToken("alice", "priv.b"), 403],
      [await subToken("bob", "priv.b", "-1s"), 401],
      [await sign({ sub: "bob", channel: "priv.b" }, null), 401],
      [await connectionToken("bob"), 401],
      ["not-a-jwt", 401],
    ];
    for (const [token, code] of tries) expect((await c.request("subscribe", { ch: "priv.b", token })).error, token).toMatchObject({ code });
    c.close();
  });

  it("a subscription token cannot connect", async () => {
    const c = new TestClient(gw.wsUrl);
    await c.opened;
    const reply = await c.request("connect", { token: await subToken("carol", "priv.c") });
    expect(reply.error).toMatchObject({ code: 401, message: expect.stringMatching(/subscription token/) });
    expect((await c.closed).code).toBe(4001);
  });

  it("with sub \"\", lets an anonymous client into a namespace that is not anonymous", async () => {
    const c = await TestClient.connect(gw.wsUrl);
    expect((await c.request("subscribe", { ch: "priv.anon" })).error).toMatchObject({ code: 401 });
    ok(await c.request("subscribe", { ch: "priv.anon", token: await subToken("", "priv.anon") }));
    c.close();
  });
});

describe("long-poll and SSE", () => {
  it("long-poll: the token rides in the channel's cursor", async () => {
    const post = async (path: string, body: Frame): Promise<Frame> => (await api(gw.url, "POST", path, { body })).body;
    const hello = ok(((await post("/lp/rpc", { cmds: [{ id: 1, op: "connect", token: await connectionToken("dave") }] })).replies as Frame[])[0] as Frame);
    const session = hello.session as string;
    const refused = await post("/lp/poll", { session, subs: { "priv.d": null }, timeout: 0 });
    expect((refused.errors as Frame)["priv.d"]).toMatchObject({ code: 403 });
    const allowed = await post("/lp/poll", { session, subs: { "priv.d": { token: await subToken("dave", "priv.d") } }, timeout: 0 });
    expect(allowed.errors).toBeUndefined();
    expect((allowed.subs as Frame)["priv.d"]).toMatchObject({ offset: expect.any(Number), epoch: expect.any(String) });
    const bad = await api(gw.url, "POST", "/lp/poll", { body: { session, subs: { "priv.d": { token: 7 } }, timeout: 0 } });
    expect(bad.status).toBe(400);
  });

  it("SSE: subtoken parameters, each for the channel its claim names", async () => {
    const token = await connectionToken("erin");
    const refused = await SseClient.open(gw.url, `ch=priv.e&token=${token}`);
    expect(refused.status).toBe(403);
    const s = await SseClient.open(gw.url, `ch=priv.e&ch=open.e&token=${token}&subtoken=${await subToken("erin", "priv.e")}`);
    expect(s.status).toBe(200);
    const subscribed = await s.waitFor(() => s.events.find((e) => e.event === "subscribed"), "the subscribed event");
    expect(JSON.parse(subscribed.data).subs).toHaveProperty("priv.e");
    s.close();
    const garbage = await SseClient.open(gw.url, `ch=priv.e&token=${token}&subtoken=garbage`);
    expect(garbage.status).toBe(401);
  });
});

describe("the SDK", () => {
  it.each(["websocket", "longpoll"] as const)("sends a subscription's token with its subscribes (%s)", async (transport) => {
    const ch = `priv.sdk-${transport}`;
    const token = await subToken("frank", ch);
    const client = new Client(gw.url, { WebSocket, transports: [transport], token: await connectionToken("frank") });
    try {
      const got: unknown[] = [];
      const arrived = new Signal();
      const subscribed = new Promise<void>((resolve, reject) => {
        client.subscribe(ch, {
          token,
          onSubscribed: () => resolve(),
          onError: (err) => reject(err),
          onPublication: (p) => {
            got.push(p.data);
            arrived.wake();
          },
        });
      });
      await subscribed;
      expect((await api(gw.url, "POST", "/api/publish", { key: API_KEY, body: { channel: ch, data: { n: 7 } } })).status).toBe(200);
      await arrived.until(() => (got.length > 0 ? got : undefined), "the publication through the SDK", 10_000, () => `got: ${JSON.stringify(got)}`);
      expect(got).toEqual([{ n: 7 }]);
    } finally {
      client.disconnect();
    }
  });
});
