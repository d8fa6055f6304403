/**
 * JWT authentication end to end: real gateway processes configured with each key source, real
 * WebSocket clients, tokens signed with jose.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type ClientOptions, type Frame } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { signToken, type SigningKey } from "./helpers/tokens.js";

const SECRET = "jwt-e2e-secret-at-least-32-bytes-long!!";
const API_KEY = "jwt-test-api-key-0123456789abcde";
const AUD = "natsedge";
const ISS = "https://idp.test";

const NAMESPACES = `
namespaces:
  chat:
    presence: true
    joinLeave: true
    clientPublish: true
    history: { size: 10, ttl: 5m }
  news:
    clientPublish: true
  user:
    personal: true
    clientPublish: true
`;

const now = (): number => Math.floor(Date.now() / 1000);

/** Signs with the gateway's HMAC secret unless given another key. */
const sign = (payload: JWTPayload, key: SigningKey = SECRET, alg?: string, kid?: string): Promise<string> =>
  signToken(payload, key, alg, kid);

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** An unsigned token: `alg: none` with an empty signature. */
function unsigned(payload: JWTPayload): string {
  return `${b64url({ alg: "none", typ: "JWT" })}.${b64url(payload)}.`;
}

/** Connects with `token`, expects error 401, then push disconnect 4001, then close 4001. */
async function expectRejected(url: string, token: string | undefined, opts: ClientOptions = {}): Promise<Frame> {
  const c = new TestClient(url, opts);
  await c.opened;
  const reply = await c.request("connect", token === undefined ? {} : { token });
  expect(reply.ok).toBeUndefined();
  expect(reply.error).toMatchObject({ code: 401 });
  const push = await c.nextPush((p) => p.push === "disconnect", "disconnect push");
  expect(push).toMatchObject({ code: 4001, reconnect: false });
  expect((await c.closed).code).toBe(4001);
  return reply.error as Frame;
}

let rsa: { publicKey: CryptoKey; privateKey: CryptoKey };
let rsaOther: { publicKey: CryptoKey; privateKey: CryptoKey };
let ec: { publicKey: CryptoKey; privateKey: CryptoKey };

let hs: GatewayProcess; // HS256 + cookie + namespaces + API key
let rs: GatewayProcess; // RS256 from auth.publicKeyFile
let es: GatewayProcess; // ES256 from NATSEDGE_AUTH_PUBLIC_KEY (\n-escaped PEM)
let jwks: GatewayProcess; // JWKS file + audience + issuer
let noAuth: GatewayProcess; // embedded default, no key source

const open: TestClient[] = [];
async function connect(url: string, token?: string, opts?: ClientOptions): Promise<TestClient> {
  const c = await TestClient.connect(url, token, opts);
  open.push(c);
  return c;
}

beforeAll(async () => {
  [rsa, rsaOther, ec] = await Promise.all([
    generateKeyPair("RS256"),
    generateKeyPair("RS256"),
    generateKeyPair("ES256"),
  ]);
  const dir = mkdtempSync(path.join(tmpdir(), "natsedge-jwt-"));
  const rsPem = path.join(dir, "rs.pem");
  writeFileSync(rsPem, await exportSPKI(rsa.publicKey));
  const jwksFile = path.join(dir, "jwks.json");
  writeFileSync(
    jwksFile,
    JSON.stringify({
      keys: [
        { ...(await exportJWK(rsa.publicKey)), kid: "r1", alg: "RS256", use: "sig" },
        { ...(await exportJWK(ec.publicKey)), kid: "e1", alg: "ES256", use: "sig" },
      ],
    }),
  );
  const ecPemEscaped = (await exportSPKI(ec.publicKey)).trim().replace(/\n/g, "\\n");

  [hs, rs, es, jwks, noAuth] = await Promise.all([
    startGateway({
      config: {
        yaml: `apiKey: ${API_KEY}\nauth:\n  hmacSecret: "${SECRET}"\n  cookie: natsedge_token\n${NAMESPACES}`,
      },
    }),
    startGateway({ config: { yaml: `auth:\n  publicKeyFile: ${JSON.stringify(rsPem)}\n${NAMESPACES}` } }),
    startGateway({ config: { yaml: NAMESPACES }, env: { NATSEDGE_AUTH_PUBLIC_KEY: ecPemEscaped } }),
    startGateway({
      config: {
        yaml: `auth:\n  jwksFile: ${JSON.stringify(jwksFile)}\n  audience: ${AUD}\n  issuer: "${ISS}"\n${NAMESPACES}`,
      },
    }),
    startGateway(),
  ]);
});

afterAll(async () => {
  for (const c of open) c.terminate();
  await Promise.all([hs, rs, es, jwks, noAuth].map((g) => g?.stop()));
});

describe("key sources", () => {
  it("HS256 (hmacSecret): a valid token connects as its sub", async () => {
    const c = await connect(hs.wsUrl, await sign({ sub: "alice", exp: now() + 60 }));
    const reply = await c.request("ping");
    expect(reply.ok).toEqual({});
    const c2 = new TestClient(hs.wsUrl);
    open.push(c2);
    await c2.opened;
    const ok = (await c2.request("connect", { token: await sign({ sub: "bob" }) })).ok as Frame;
    expect(ok).toMatchObject({ user: "bob" });
    expect(typeof ok.client).toBe("string");
    expect(typeof ok.node).toBe("string");
    expect(typeof ok.ping).toBe("number");
  });

  it("RS256 (publicKeyFile): valid connects, wrong key and alg confusion are refused", async () => {
    const c = new TestClient(rs.wsUrl);
    open.push(c);
    await c.opened;
    const ok = (await c.request("connect", { token: await sign({ sub: "rita" }, rsa.privateKey, "RS256") })).ok;
    expect(ok).toMatchObject({ user: "rita" });

    await expectRejected(rs.wsUrl, await sign({ sub: "rita" }, rsaOther.privateKey, "RS256"));
    // HS256 signed with the public key's PEM text must not pass as RS256.
    const pemSecret = new TextEncoder().encode(await exportSPKI(rsa.publicKey));
    await expectRejected(rs.wsUrl, await sign({ sub: "rita" }, pemSecret, "HS256"));
    await expectRejected(rs.wsUrl, unsigned({ sub: "rita" }));
  });

  it("ES256 (publicKey from env): valid connects, wrong key is refused", async () => {
    const c = new TestClient(es.wsUrl, { format: "msgpack" });
    open.push(c);
    await c.opened;
    const ok = (await c.request("connect", { token: await sign({ sub: "eve" }, ec.privateKey, "ES256") })).ok;
    expect(ok).toMatchObject({ user: "eve" });

    await expectRejected(es.wsUrl, await sign({ sub: "eve" }, rsa.privateKey, "RS256"));
    await expectRejected(es.wsUrl, await sign({ sub: "eve" }), { format: "msgpack" });
    await expectRejected(es.wsUrl, unsigned({ sub: "eve" }));
  });

  it("JWKS with audience and issuer: checks kid, aud, iss, exp and nbf", async () => {
    const good = { aud: AUD, iss: ISS, exp: now() + 60 };
    for (const [sub, key, alg, kid] of [
      ["jr", rsa.privateKey, "RS256", "r1"],
      ["je", ec.privateKey, "ES256", "e1"],
    ] as const) {
      const c = new TestClient(jwks.wsUrl);
      open.push(c);
      await c.opened;
      const reply = await c.request("connect", { token: await sign({ sub, ...good }, key, alg, kid) });
      expect(reply.ok).toMatchObject({ user: sub });
    }

    const wrongKey = await expectRejected(jwks.wsUrl, await sign({ sub: "x", ...good }, rsaOther.privateKey, "RS256", "r1"));
    expect(wrongKey.message).toMatch(/signature/);
    const unknownKid = await expectRejected(jwks.wsUrl, await sign({ sub: "x", ...good }, rsa.privateKey, "RS256", "zz"));
    expect(unknownKid.message).toMatch(/no key/);
    const wrongAud = await expectRejected(
      jwks.wsUrl,
      await sign({ sub: "x", ...good, aud: "someone-else" }, rsa.privateKey, "RS256", "r1"),
    );
    expect(wrongAud.message).toMatch(/audience/);
    const wrongIss = await expectRejected(
      jwks.wsUrl,
      await sign({ sub: "x", ...good, iss: "https://evil.test" }, rsa.privateKey, "RS256", "r1"),
    );
    expect(wrongIss.message).toMatch(/issuer/);
    const noAud = await expectRejected(jwks.wsUrl, await sign({ sub: "x", iss: ISS }, rsa.privateKey, "RS256", "r1"));
    expect(noAud.message).toMatch(/aud/);
    const expired = await expectRejected(
      jwks.wsUrl,
      await sign({ sub: "x", ...good, exp: now() - 30 }, rsa.privateKey, "RS256", "r1"),
    );
    expect(expired.message).toMatch(/expired/);
    const early = await expectRejected(
      jwks.wsUrl,
      await sign({ sub: "x", ...good, nbf: now() + 120 }, rsa.privateKey, "RS256", "r1"),
    );
    expect(early.message).toMatch(/nbf/);
    const none = await expectRejected(jwks.wsUrl, unsigned({ sub: "x", ...good }));
    expect(none.message).toMatch(/algorithm/);
  });
});

describe("rejections (HS256 gateway)", () => {
  it("refuses alg none, wrong secret, expired, nbf in the future and garbage", async () => {
    expect((await expectRejected(hs.wsUrl, unsigned({ sub: "alice" }))).message).toMatch(/algorithm/);
    const other = new TextEncoder().encode("another-secret-of-sufficient-length!!!!");
    expect((await expectRejected(hs.wsUrl, await sign({ sub: "alice" }, other))).message).toMatch(/signature/);
    expect((await expectRejected(hs.wsUrl, await sign({ sub: "alice", exp: now() - 10 }))).message).toMatch(
      /expired/,
    );
    expect((await expectRejected(hs.wsUrl, await sign({ sub: "alice", nbf: now() + 120 }))).message).toMatch(/nbf/);
    await expectRejected(hs.wsUrl, "not.a.jwt");
    await expectRejected(hs.wsUrl, await sign({ exp: now() + 60 })); // no sub
  });

  it("a gateway with no key source answers any token with 401 and closes 4001", async () => {
    const err = await expectRejected(noAuth.wsUrl, await sign({ sub: "alice" }));
    expect(err.message).toMatch(/no token keys/);
    // Anonymous connect still works there.
    const c = await connect(noAuth.wsUrl);
    expect((await c.request("ping")).ok).toEqual({});
  });

  it("an unauthenticated connection cannot do anything but connect", async () => {
    const c = new TestClient(hs.wsUrl);
    open.push(c);
    await c.opened;
    const reply = await c.request("subscribe", { ch: "chat.x" });
    expect(reply.error).toMatchObject({ code: 401 });
  });
});

describe("token lifetime", () => {
  it("closes 4002 when exp passes without refresh, and refresh keeps a connection past it", async () => {
    const exp = now() + 3;
    const lapsing = await connect(hs.wsUrl, await sign({ sub: "alice", exp }));
    const refreshed = await connect(hs.wsUrl, await sign({ sub: "alice", exp }));
    const refreshReply = await refreshed.request("refresh", { token: await sign({ sub: "alice", exp: now() + 120 }) });
    expect(refreshReply.ok).toEqual({});

    const push = await lapsing.nextPush((p) => p.push === "disconnect", "4002 disconnect", 6_000);
    expect(push).toMatchObject({ push: "disconnect", code: 4002 });
    expect((await lapsing.closed).code).toBe(4002);
    expect(Date.now()).toBeGreaterThanOrEqual(exp * 1000 - 50);

    // Same original exp, but refreshed: still alive after the first one was dropped.
    expect((await refreshed.request("ping")).ok).toEqual({});
    expect(refreshed.pushes.filter((p) => p.push === "disconnect")).toEqual([]);
    expect(refreshed.ws.readyState).toBe(refreshed.ws.OPEN);
  });

  it("refuses a refresh token for another sub with 403 and keeps the connection", async () => {
    const c = await connect(hs.wsUrl, await sign({ sub: "alice", exp: now() + 60 }));
    const reply = await c.request("refresh", { token: await sign({ sub: "mallory", exp: now() + 600 }) });
    expect(reply.error).toMatchObject({ code: 403 });
    const bad = await c.request("refresh", { token: await sign({ sub: "alice" }, new TextEncoder().encode("x".repeat(40))) });
    expect(bad.error).toMatchObject({ code: 401 });
    expect((await c.request("ping")).ok).toEqual({});
    expect(c.ws.readyState).toBe(c.ws.OPEN);
  });
});

describe("claims", () => {
  it("enforces the channels claim and drops subscriptions a narrower refresh no longer allows", async () => {
    const c = await connect(hs.wsUrl, await sign({ sub: "carol", channels: ["chat.a", "news.>"] }));
    expect((await c.request("subscribe", { ch: "chat.a" })).ok).toBeDefined();
    expect((await c.request("subscribe", { ch: "news.x.y" })).ok).toBeDefined();
    for (const [op, args] of [
      ["subscribe", { ch: "chat.b" }],
      ["publish", { ch: "chat.b", data: 1 }],
      ["presence", { ch: "chat.b" }],
      ["history", { ch: "chat.b" }],
      ["subscribe", { ch: "chat.a.b" }],
    ] as const) {
      const reply = await c.request(op, args);
      expect(reply.error, `${op} ${args.ch}`).toMatchObject({ code: 403 });
    }
    expect((await c.request("publish", { ch: "chat.a", data: { n: 1 } })).ok).toMatchObject({ offset: 1 });
    await c.nextPush((p) => p.push === "pub" && p.ch === "chat.a", "own publication");

    const refresh = await c.request("refresh", { token: await sign({ sub: "carol", channels: ["news.>"] }) });
    expect(refresh.ok).toEqual({});
    const unsub = await c.nextPush((p) => p.push === "unsub", "unsub push");
    expect(unsub).toMatchObject({ push: "unsub", ch: "chat.a", code: 403 });

    // chat.a no longer delivers; news.x.y still does.
    const pubA = await api(hs.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "chat.a", data: "after" } });
    expect(pubA.status).toBe(200);
    const pubN = await api(hs.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "news.x.y", data: "n" } });
    expect(pubN.status).toBe(200);
    // Same publisher, same gateway: had "after" been delivered it would have arrived first.
    await c.nextPush((p) => p.push === "pub" && p.ch === "news.x.y", "news publication");
    expect(c.pushes.filter((p) => p.push === "pub" && p.ch === "chat.a")).toEqual([]);
    expect((await c.request("subscribe", { ch: "chat.a" })).error).toMatchObject({ code: 403 });
  });

  it("shows the info claim in presence and in join pushes", async () => {
    const watcher = await connect(hs.wsUrl, await sign({ sub: "watcher" }));
    expect((await watcher.request("subscribe", { ch: "chat.room" })).ok).toBeDefined();
    const info = { name: "Alice", role: "admin" };
    const alice = await connect(hs.wsUrl, await sign({ sub: "alice", info }));
    const ok = (await alice.request("subscribe", { ch: "chat.room" })).ok;
    expect(ok).toBeDefined();

    const join = await watcher.nextPush(
      (p) => p.push === "join" && p.ch === "chat.room" && (p.info as Frame).user === "alice",
      "alice's join push",
    );
    expect(join.info).toMatchObject({ user: "alice", info });

    const presence = (await watcher.request("presence", { ch: "chat.room" })).ok as { clients: Record<string, Frame> };
    const members = Object.values(presence.clients);
    expect(members).toContainEqual({ user: "alice", info });
    expect(members).toContainEqual({ user: "watcher" });
    const viaApi = await api(hs.url, "GET", "/api/presence?channel=chat.room", { key: API_KEY });
    expect(Object.values(viaApi.body.clients as Record<string, Frame>)).toContainEqual({ user: "alice", info });
  });

  it("authenticates connect from the configured cookie", async () => {
    const token = await sign({ sub: "cookie-user", exp: now() + 60 });
    const c = new TestClient(hs.wsUrl, { headers: { Cookie: `other=1; natsedge_token=${token}` } });
    open.push(c);
    await c.opened;
    expect((await c.request("connect")).ok).toMatchObject({ user: "cookie-user" });

    // An explicit token wins over the cookie.
    const c2 = new TestClient(hs.wsUrl, { headers: { Cookie: `natsedge_token=${token}` } });
    open.push(c2);
    await c2.opened;
    expect((await c2.request("connect", { token: await sign({ sub: "explicit" }) })).ok).toMatchObject({
      user: "explicit",
    });

    // A bad cookie is a bad token.
    await expectRejected(hs.wsUrl, undefined, { headers: { Cookie: `natsedge_token=${unsigned({ sub: "x" })}` } });
    // Without a cookie and without a token the connection is refused: no namespace is anonymous.
    const refused = await expectRejected(hs.wsUrl, undefined);
    expect(refused.message).toMatch(/token is required/);
    // A gateway without auth.cookie ignores the cookie: no token at all, rather than a bad one.
    const ignored = await expectRejected(rs.wsUrl, undefined, { headers: { Cookie: `natsedge_token=${token}` } });
    expect(ignored.message).toMatch(/token is required/);
  });

  it("keeps personal channels to their owner", async () => {
    const alice = await connect(hs.wsUrl, await sign({ sub: "alice" }));
    const bob = await connect(hs.wsUrl, await sign({ sub: "bob" }));
    expect((await alice.request("subscribe", { ch: "user.alice" })).ok).toBeDefined();
    expect((await bob.request("subscribe", { ch: "user.alice" })).error).toMatchObject({ code: 403 });
    expect((await bob.request("publish", { ch: "user.alice", data: "psst" })).error).toMatchObject({ code: 403 });
    // The owner is everything after the namespace, not its last token.
    expect((await bob.request("subscribe", { ch: "user.x.alice" })).error).toMatchObject({ code: 403 });
    expect((await alice.request("subscribe", { ch: "user.x.alice" })).error).toMatchObject({ code: 403 });
    const xAlice = await connect(hs.wsUrl, await sign({ sub: "x.alice" }));
    expect((await xAlice.request("subscribe", { ch: "user.x.alice" })).ok).toBeDefined();
    const com = await connect(hs.wsUrl, await sign({ sub: "com" }));
    expect((await com.request("subscribe", { ch: "user.alice@example.com" })).error).toMatchObject({ code: 403 });
    const email = await connect(hs.wsUrl, await sign({ sub: "alice@example.com" }));
    expect((await email.request("subscribe", { ch: "user.alice@example.com" })).ok).toBeDefined();
    expect((await bob.request("subscribe", { ch: "user.bob" })).ok).toBeDefined();

    const res = await api(hs.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "user.alice", data: { dm: 1 } } });
    expect(res.status).toBe(200);
    const push = await alice.nextPush((p) => p.push === "pub" && p.ch === "user.alice", "personal publication");
    expect(push.data).toEqual({ dm: 1 });
    // A marker in bob's own channel, published after: had alice's reached bob, it would have come first.
    expect((await api(hs.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "user.bob", data: "marker" } })).status).toBe(200);
    await bob.nextPush((p) => p.push === "pub" && p.ch === "user.bob", "the marker in bob's channel");
    expect(bob.pushes.filter((p) => p.push === "pub" && p.ch === "user.alice")).toEqual([]);
  });
});
