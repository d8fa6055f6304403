/**
 * auth.jwksUrl end to end: a JWKS server started here on 127.0.0.1, real gateway processes
 * fetching from it, real WebSocket clients. The server counts its requests, so the tests see how
 * often the gateway asks, not only what it decides.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, type CryptoKey, type JWK } from "jose";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "./helpers/client.js";
import { metricValue, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually, Signal } from "./helpers/signal.js";
import { signToken } from "./helpers/tokens.js";

type Answer = (req: IncomingMessage, res: ServerResponse) => void;

/** A JWKS endpoint whose answer the test changes; it records when each request came. */
class JwksServer {
  readonly hits: number[] = [];
  readonly signal = new Signal();
  answer: Answer = (_req, res) => res.writeHead(503).end();
  private server: Server | undefined;
  port = 0;

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      this.hits.push(Date.now());
      this.signal.wake();
      this.answer(req, res);
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      // The same port again after stop(): the gateway keeps the URL it was given.
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
  }

  /** Down for real: the port refuses connections, as with a crashed provider. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/jwks`;
  }

  serve(keys: JWK[]): void {
    this.answer = (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys }));
  }

  /** Waits for `n` requests in all. */
  requests(n: number, timeoutMs = 10_000): Promise<number> {
    return this.signal.until(
      () => (this.hits.length >= n ? this.hits.length : undefined),
      `${n} JWKS requests`,
      timeoutMs,
      () => `${this.hits.length} so far`,
    );
  }
}

interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(kid: string): Promise<Key> {
  const { publicKey, privateKey } = await generateKeyPair("ES256");
  return { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" } };
}

const token = (key: Key, sub = "alice", kid = key.kid): Promise<string> => signToken({ sub }, key.privateKey, "ES256", kid);

/** The reply to `connect` with `tok`: `ok` or `error`. The socket is closed either way. */
async function connectReply(url: string, tok: string): Promise<Frame> {
  const c = new TestClient(url);
  try {
    await c.opened;
    return await c.request("connect", { token: tok });
  } finally {
    c.terminate();
  }
}

const accepted = async (gw: GatewayProcess, tok: string): Promise<boolean> => (await connectReply(gw.wsUrl, tok)).ok !== undefined;

const gateways: GatewayProcess[] = [];
const servers: JwksServer[] = [];

async function jwksServer(keys?: JWK[]): Promise<JwksServer> {
  const server = new JwksServer();
  if (keys) server.serve(keys);
  await server.start();
  servers.push(server);
  return server;
}

async function gateway(server: JwksServer, tuning: { cooldown?: string; maxAge?: string } = {}, onLine?: (line: string) => void): Promise<GatewayProcess> {
  const lines = [`  jwksUrl: ${server.url}`];
  if (tuning.cooldown) lines.push(`  jwksCooldown: ${tuning.cooldown}`);
  if (tuning.maxAge) lines.push(`  jwksMaxAge: ${tuning.maxAge}`);
  const gw = await startGateway({
    config: { yaml: `auth:\n${lines.join("\n")}\nnamespaces:\n  chat: {}\n` },
    ...(onLine && { onLine }),
  });
  gateways.push(gw);
  return gw;
}

let a: Key;
let b: Key;
let stranger: Key;

beforeAll(async () => {
  [a, b, stranger] = await Promise.all([newKey("key-a"), newKey("key-b"), newKey("key-a")]);
});

afterEach(async () => {
  await Promise.all(gateways.splice(0).map((gw) => gw.stop()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

describe("auth.jwksUrl", () => {
  it("accepts tokens signed with the provider's key, and a rotated-in kid without a restart", async () => {
    const server = await jwksServer([a.jwk]);
    const gw = await gateway(server, { cooldown: "1s" });
    expect(server.hits).toHaveLength(1);
    expect(await connectReply(gw.wsUrl, await token(a))).toMatchObject({ ok: { user: "alice" } });
    // The same kid with another key's signature: the key is looked up, the signature still fails.
    expect((await connectReply(gw.wsUrl, await token(stranger))).error).toMatchObject({ code: 401, message: "token signature invalid" });

    server.serve([b.jwk]);
    const tokB = await token(b, "bob");
    // The first kid-B token may land within the cooldown of the start-up fetch and be refused.
    await eventually(async () => ((await accepted(gw, tokB)) ? true : undefined), "a key-b token accepted", 10_000, 200);
    expect(server.hits.length).toBeGreaterThanOrEqual(2);
    // Key A is gone from the provider's set, so it is gone from the gateway's.
    expect((await connectReply(gw.wsUrl, await token(a))).error).toMatchObject({ code: 401, message: "no key matches the token" });
  });

  it("accepts every asymmetric algorithm from the provider's keys, and refuses ones that do not fit", async () => {
    const algs = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];
    const keys = await Promise.all(
      algs.map(async (alg) => {
        const { publicKey, privateKey } = await generateKeyPair(alg);
        return { alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid: `k-${alg}`, alg } };
      }),
    );
    const secret = new TextEncoder().encode("an-oct-key-the-provider-should-not-publish");
    const oct: JWK = { kty: "oct", k: Buffer.from(secret).toString("base64url"), kid: "k-oct" };
    const server = await jwksServer([...keys.map((k) => k.jwk), oct]);
    const gw = await gateway(server);
    for (const { alg, privateKey } of keys) {
      const reply = await connectReply(gw.wsUrl, await signToken({ sub: alg }, privateKey, alg, `k-${alg}`));
      expect(reply, alg).toMatchObject({ ok: { user: alg } });
    }
    const refused = async (tok: string): Promise<unknown> => ((await connectReply(gw.wsUrl, tok)).error as Frame).message;
    const [es256, rs256] = [keys[6]!, keys[0]!];
    expect(await refused(await signToken({ sub: "x" }, secret, "HS256", "k-oct"))).toBe("token algorithm not allowed");
    // The right key, named by a kid whose key is of another curve or declares another algorithm.
    expect(await refused(await signToken({ sub: "x" }, es256.privateKey, "ES256", "k-ES384"))).toBe("no key matches the token");
    expect(await refused(await signToken({ sub: "x" }, rs256.privateKey, "RS256", "k-PS256"))).toBe("no key matches the token");
    const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from('{"sub":"x"}').toString("base64url")}.`;
    expect(await refused(none)).toBe("token algorithm not allowed");
  });

  it("fetches at most once per cooldown however many unknown kids arrive", async () => {
    const server = await jwksServer([a.jwk]);
    const gw = await gateway(server, { cooldown: "2s" });
    const startedAt = server.hits[0] ?? 0;
    // The cooldown counts from the start-up fetch; wait it out so that the burst may cause one.
    await eventually(() => (Date.now() > startedAt + 2_100 ? true : undefined), "the start-up cooldown to pass", 5_000, 50);

    const burstAt = Date.now();
    const forged = await Promise.all(Array.from({ length: 30 }, (_, i) => token(a, "mallory", `random-${i}-${Math.random()}`)));
    const replies = await Promise.all(forged.map((tok) => connectReply(gw.wsUrl, tok)));
    for (const reply of replies) expect(reply.error).toMatchObject({ code: 401, message: "no key matches the token" });
    // Again, one by one, for as long as one cooldown.
    for (let i = 0; i < 100 && Date.now() < burstAt + 2_000; i++) {
      expect((await connectReply(gw.wsUrl, await token(a, "mallory", `again-${i}`))).error).toMatchObject({ code: 401 });
    }
    const duringTest = server.hits.filter((t) => t >= burstAt);
    const elapsed = Date.now() - burstAt;
    expect(duringTest.length).toBeGreaterThanOrEqual(1);
    expect(duringTest.length).toBeLessThanOrEqual(1 + Math.floor(elapsed / 2_000));
    expect(await metricValue(gw, 'natsedge_jwks_fetches_total{reason="unknown_kid",result="ok"}')).toBe(duringTest.length);
    expect(await metricValue(gw, 'natsedge_jwks_fetches_total{reason="startup",result="ok"}')).toBe(1);
    for (let i = 1; i < server.hits.length; i++) {
      expect(server.hits[i]! - server.hits[i - 1]!, `gap before request ${i}`).toBeGreaterThanOrEqual(1_950);
    }
    // Known keys keep working throughout.
    expect(await accepted(gw, await token(a))).toBe(true);
  });

  it("keeps the cached keys while the provider is down, and takes new ones when it is back", async () => {
    const server = await jwksServer([a.jwk]);
    const gw = await gateway(server, { cooldown: "1s", maxAge: "1s" });
    expect(await accepted(gw, await token(a))).toBe(true);

    await server.stop();
    const from = gw.lines.length;
    const failed = await gw.waitForLog("JWKS fetch failed; keeping the keys held", { from });
    expect(failed).toMatchObject({ level: 40, reason: "max_age" });
    expect(await metricValue(gw, 'natsedge_jwks_fetches_total{reason="max_age",result="failed"}')).toBeGreaterThanOrEqual(1);
    expect(await accepted(gw, await token(a))).toBe(true);
    // An unknown kid while the provider is down: refused, and nothing else changes.
    expect((await connectReply(gw.wsUrl, await token(b))).error).toMatchObject({ code: 401 });
    expect(await accepted(gw, await token(a))).toBe(true);

    server.serve([a.jwk, b.jwk]);
    await server.start();
    // Periodic refresh (every maxAge, every cooldown while failing) picks up the new set.
    await gw.waitForLog("JWKS loaded", { from, where: (rec) => (rec.kids as string[]).includes("key-b") });
    expect(await accepted(gw, await token(b, "bob"))).toBe(true);
    expect(await accepted(gw, await token(a))).toBe(true);
  });

  it("survives oversized, malformed and non-200 answers, keeping the last good keys", async () => {
    const server = await jwksServer([a.jwk]);
    const gw = await gateway(server, { cooldown: "1s", maxAge: "1s" });
    const padding = "x".repeat(300 * 1024);
    const bad: Array<[string, Answer]> = [
      ["oversized, declared", (_req, res) => res.writeHead(200).end(JSON.stringify({ keys: [a.jwk], padding }))],
      [
        "oversized, chunked",
        (_req, res) => {
          res.writeHead(200);
          // No Content-Length: the size is only known by reading; the gateway stops at the limit.
          for (let i = 0; i < 64; i++) res.write("x".repeat(16 * 1024));
          res.end();
        },
      ],
      ["not JSON", (_req, res) => res.writeHead(200).end("{not json")],
      ["empty set", (_req, res) => res.writeHead(200).end('{"keys":[]}')],
      ["not a set", (_req, res) => res.writeHead(200).end('[{"kty":"EC"}]')],
      ["server error", (_req, res) => res.writeHead(500).end("oops")],
      ["redirect", (_req, res) => res.writeHead(302, { location: "http://127.0.0.1:1/evil" }).end()],
    ];
    const expected = [/larger than 262144 bytes/, /larger than 262144 bytes/, /not JSON/, /not a JWKS/, /not a JWKS/, /HTTP 500/, /HTTP 302/];
    for (const [i, [what, answer]] of bad.entries()) {
      server.answer = answer;
      const from = gw.lines.length;
      const rec = await gw.waitForLog("JWKS fetch failed; keeping the keys held", { from });
      expect(rec.err, what).toMatch(expected[i]!);
      expect(await accepted(gw, await token(a)), what).toBe(true);
    }
    expect(gw.proc.exitCode).toBeNull();
  });

  it("does not open the client port before it holds keys", async () => {
    const server = await jwksServer();
    let adminPort = 0;
    let readyWhileWaiting: Promise<number> | undefined;
    // Runs on the start-up lines: the provider answers 503 until the gateway has said it waits.
    const onLine = (line: string): void => {
      if (line.includes('"admin listening')) adminPort = (JSON.parse(line) as { adminPort: number }).adminPort;
      if (line.includes("JWKS fetch failed; no keys yet") && readyWhileWaiting === undefined) {
        readyWhileWaiting = fetch(`http://127.0.0.1:${adminPort}/readyz`).then((res) => {
          server.serve([a.jwk]);
          return res.status;
        });
      }
    };
    const gw = await gateway(server, { cooldown: "1s" }, onLine);
    expect(await readyWhileWaiting).toBe(503);
    expect(server.hits.length).toBeGreaterThanOrEqual(2);
    expect(await accepted(gw, await token(a))).toBe(true);
    expect((await fetch(`${gw.adminUrl}/readyz`)).status).toBe(200);
  });
});
