/**
 * The admin console over HTTP (docs/admin.md): off without adminSecret, the login and its limits,
 * the cookie, CSRF and origin checks, and what the endpoints answer, in memory mode and gathered
 * from two replicas over NATS.
 */
import { randomBytes } from "node:crypto";
import { request } from "node:https";
import { connect } from "nats";
import { pack } from "../src/protocol/msgpack.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LOGIN_FAILURES_PER_MINUTE } from "../src/admin/auth.js";
import { adminLogin, adminSession, type AdminSession } from "./helpers/admin.js";
import { TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually } from "./helpers/signal.js";
import { TestPki } from "./helpers/tls.js";
import { signToken } from "./helpers/tokens.js";

const ADMIN_SECRET = "admin-test-console-secret-0123456789abcdef";
const HMAC = "admin-test-hmac-secret-0123456789abcdefgh";
const CONFIG = `
adminSecret: ${ADMIN_SECRET}
trustedProxies: [127.0.0.1]
auth:
  hmacSecret: "${HMAC}"
namespaces:
  room: { history: { size: 10, ttl: 5m }, presence: true, clientPublish: true, anonymous: true }
`;

/** Each test logs in from its own address (X-Forwarded-For from a trusted proxy), so limits do not meet. */
function from(): Record<string, string> {
  return { "x-forwarded-for": `10.${randomBytes(3).join(".")}` };
}

describe("admin console, memory mode", () => {
  let gw: GatewayProcess;
  let admin: AdminSession;
  beforeAll(async () => {
    gw = await startGateway({ config: { yaml: CONFIG } });
    admin = await adminSession(gw, ADMIN_SECRET);
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it("is absent without adminSecret: /admin and its API answer 404", async () => {
    const plain = await startGateway();
    try {
      for (const path of ["/admin", "/admin/api/stats", "/admin/app.js"]) expect((await fetch(plain.adminUrl + path)).status).toBe(404);
      expect((await adminLogin(plain, ADMIN_SECRET)).status).toBe(404);
    } finally {
      await plain.stop();
    }
  });

  it("serves the page with a strict content security policy", async () => {
    const res = await fetch(`${gw.adminUrl}/admin`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-security-policy")).toContain("default-src 'none'");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    expect(await res.text()).toContain('<script type="module" src="/admin/app.js">');
  });

  it("sets a signed, HttpOnly, SameSite=Strict cookie with an expiry on login", async () => {
    const res = await adminLogin(gw, ADMIN_SECRET, from());
    expect(res.status).toBe(204);
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(/^natsedge_admin=\d+\.[\w-]+\.[\w-]+; /);
    for (const flag of ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=28800"]) expect(cookie).toContain(flag);
    // Plain HTTP admin port: a Secure cookie would never be sent back.
    expect(cookie).not.toContain("Secure");
  });

  it("marks the cookie Secure when the admin port serves TLS (adminTls)", async () => {
    const pki = new TestPki();
    const files = pki.files(pki.issue());
    const tls = await startGateway({
      config: { yaml: CONFIG },
      args: ["--tls-cert-file", files.live.cert, "--tls-key-file", files.live.key, "--admin-tls", "true"],
    });
    try {
      const body = new URLSearchParams({ secret: ADMIN_SECRET }).toString();
      const { status, cookie } = await new Promise<{ status: number; cookie: string }>((resolve, reject) => {
        const req = request(`${tls.adminUrl}/admin/login`, { method: "POST", ca: pki.ca, headers: { "content-type": "application/x-www-form-urlencoded" } }, (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, cookie: res.headers["set-cookie"]?.[0] ?? "" });
        });
        req.on("error", reject);
        req.end(body);
      });
      expect(tls.adminUrl).toMatch(/^https:/);
      expect(status).toBe(204);
      expect(cookie).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
    } finally {
      await tls.stop();
      pki.remove();
    }
  });

  it("refuses a wrong secret with 401, and with 429 once the address used up its attempts", async () => {
    const addr = from();
    for (let i = 0; i < LOGIN_FAILURES_PER_MINUTE; i++) expect((await adminLogin(gw, "wrong-secret", addr)).status).toBe(401);
    const limited = await adminLogin(gw, "wrong-secret", addr);
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
    // Past the budget the secret is not even checked: the right one is refused too.
    expect((await adminLogin(gw, ADMIN_SECRET, addr)).status).toBe(429);
    // Another address is not affected.
    expect((await adminLogin(gw, ADMIN_SECRET, from())).status).toBe(204);
  });

  it("refuses a login posted from another origin", async () => {
    expect((await adminLogin(gw, ADMIN_SECRET, { ...from(), origin: "https://evil.example" })).status).toBe(403);
  });

  it("answers 401 without the cookie or with a tampered one", async () => {
    expect((await fetch(`${gw.adminUrl}/admin/api/stats`)).status).toBe(401);
    const [name, value] = admin.cookie.split("=") as [string, string];
    const tampered = `${name}=${value.replace(/^\d+/, (t) => String(Number(t) + 1000))}`;
    expect((await fetch(`${gw.adminUrl}/admin/api/stats`, { headers: { cookie: tampered } })).status).toBe(401);
    expect((await admin.get("/admin/api/stats")).status).toBe(200);
  });

  it("refuses a POST without the CSRF token, with another login's token, or from another origin", async () => {
    const body = { channel: "room.csrf", data: { n: 1 } };
    expect((await admin.post("/admin/api/publish", body, {})).status).toBe(403);
    const other = await adminSession(gw, ADMIN_SECRET);
    expect(other.csrf).not.toBe(admin.csrf);
    expect((await admin.post("/admin/api/publish", body, { "x-csrf-token": other.csrf })).status).toBe(403);
    const foreign = { "x-csrf-token": admin.csrf, origin: "https://evil.example" };
    expect((await admin.post("/admin/api/publish", body, foreign)).status).toBe(403);
    expect((await admin.post("/admin/api/publish", body)).status).toBe(200);
  });

  it("reports this node, its channels with subscribers, presence, history and a live tail", async () => {
    const c = await TestClient.connect(gw.wsUrl, await signToken({ sub: "carol" }, HMAC));
    try {
      expect((await c.request("subscribe", { ch: "room.stats" })).ok).toBeDefined();
      const stats = await admin.get("/admin/api/stats");
      expect(stats.body.nodes).toEqual([expect.objectContaining({ connections: 1, subscriptions: 1, natsRttMs: null, version: expect.any(String) })]);
      const channels = (await admin.get("/admin/api/channels")).body.channels as Array<Record<string, unknown>>;
      expect(channels).toContainEqual({ ch: "room.stats", subscribers: 1, delivered: 0, nodes: 1 });

      // The first read opens the tail; what is published afterwards shows up in the next read.
      const first = await admin.get("/admin/api/tail?ch=room.stats&after=0");
      expect(first.body).toEqual({ pubs: [], seq: 0 });
      expect((await admin.post("/admin/api/publish", { channel: "room.stats", data: { hello: "tail" } })).body).toEqual({ offset: 1, epoch: expect.any(String) });
      await c.nextPush((p) => p.push === "pub" && p.ch === "room.stats");
      const tail = await eventually(async () => {
        const r = await admin.get("/admin/api/tail?ch=room.stats&after=0");
        return (r.body.pubs as unknown[]).length > 0 ? r.body : undefined;
      }, "the tail to show the publication");
      expect(tail.pubs).toEqual([{ seq: 1, ts: expect.any(Number), offset: 1, data: '{"hello":"tail"}' }]);

      const channel = await admin.get("/admin/api/channel?ch=room.stats");
      expect(Object.values(channel.body.presence as object)).toEqual([{ user: "carol" }]);
      expect((channel.body.history as { pubs: unknown[] }).pubs).toEqual([expect.objectContaining({ offset: 1, data: '{"hello":"tail"}' })]);
      expect((await admin.get("/admin/api/channel?ch=nowhere.x")).status).toBe(404);
    } finally {
      c.terminate();
    }
  });

  it("shows a user's connections and disconnects them (4003)", async () => {
    const c = await TestClient.connect(gw.wsUrl, await signToken({ sub: "dave" }, HMAC));
    const user = await admin.get("/admin/api/user?user=dave");
    expect(user.body.nodes).toEqual([{ node: expect.any(String), sessions: [{ client: expect.any(String), since: expect.any(Number) }] }]);
    expect((await admin.post("/admin/api/disconnect", { user: "dave" })).status).toBe(200);
    expect((await c.closed).code).toBe(4003);
  });

  it("shows the configuration with secrets redacted", async () => {
    const config = (await admin.get("/admin/api/config")).body;
    expect(config.adminSecret).toBe("[redacted]");
    expect((config.auth as Record<string, unknown>).hmacSecret).toBe("[redacted]");
    expect(JSON.stringify(config)).not.toContain(ADMIN_SECRET);
  });

  it("logs out: the cookie is cleared", async () => {
    const session = await adminSession(gw, ADMIN_SECRET);
    const res = await fetch(`${gw.adminUrl}/admin/logout`, { method: "POST", headers: { cookie: session.cookie, "x-csrf-token": session.csrf } });
    expect(res.status).toBe(200);
    expect(res.headers.get("set-cookie")).toMatch(/^natsedge_admin=; .*Max-Age=0/);
  });
});

describe("admin console over NATS: two replicas", () => {
  const gws: GatewayProcess[] = [];
  const prefix = `admintest${randomBytes(4).toString("hex")}`;
  beforeAll(async () => {
    const args = ["--nats", "127.0.0.1:4222", "--nats-prefix", prefix, "--nats-storage", "memory"];
    for (let i = 0; i < 2; i++) gws.push(await startGateway({ config: { yaml: CONFIG }, args }));
  });
  afterAll(async () => {
    await Promise.all(gws.map((g) => g.stop()));
  });

  it("gathers every replica's stats, channels and user sessions, and disconnects on the other replica", async () => {
    const [a, b] = gws as [GatewayProcess, GatewayProcess];
    const admin = await adminSession(a, ADMIN_SECRET);
    const c = await TestClient.connect(b.wsUrl, await signToken({ sub: "erin" }, HMAC));
    expect((await c.request("subscribe", { ch: "room.nats" })).ok).toBeDefined();

    const nodes = (await admin.get("/admin/api/stats")).body.nodes as Array<Record<string, unknown>>;
    expect(nodes).toHaveLength(2);
    expect(nodes.map((n) => n.connections).sort()).toEqual([0, 1]);
    for (const n of nodes) expect(n.natsRttMs).toEqual(expect.any(Number));

    const channels = (await admin.get("/admin/api/channels")).body.channels as Array<Record<string, unknown>>;
    expect(channels).toContainEqual({ ch: "room.nats", subscribers: 1, delivered: 0, nodes: 1 });

    const user = (await admin.get("/admin/api/user?user=erin")).body.nodes as Array<{ sessions: unknown[] }>;
    expect(user.map((n) => n.sessions.length).sort()).toEqual([0, 1]);
    expect((await admin.post("/admin/api/disconnect", { user: "erin" })).status).toBe(200);
    expect((await c.closed).code).toBe(4003);
  });

  it("drops answers that are not a gateway's: garbage, wrong shapes, a node answering twice", async () => {
    const nc = await connect({ servers: "127.0.0.1:4222" });
    try {
      const [a, b] = gws as [GatewayProcess, GatewayProcess];
      const admin = await adminSession(a, ADMIN_SECRET);
      const real = ((await admin.get("/admin/api/stats")).body.nodes as Array<Record<string, unknown>>)[0]!;
      nc.subscribe(`${prefix}.cluster.admin.*`, {
        callback: (_err, msg) => {
          for (const reply of [Buffer.from("\xc1 not msgpack"), pack([1, 2]), pack({ node: "impostor", uptime: "x" }), pack({ ...real, connections: 999 })]) {
            msg.respond(reply);
          }
        },
      });
      await nc.flush();
      const nodes = (await admin.get("/admin/api/stats")).body.nodes as Array<Record<string, unknown>>;
      expect(nodes).toHaveLength(2);
      expect(nodes.map((n) => n.node)).not.toContain("impostor");
      const channels = await admin.get("/admin/api/channels");
      expect(channels.status).toBe(200);
      expect((await admin.get("/admin/api/user?user=erin")).body.nodes).toHaveLength(2);
      expect(b.proc.exitCode).toBeNull();
    } finally {
      await nc.close();
    }
  });
});
