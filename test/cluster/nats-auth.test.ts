/**
 * The NATS connection options against real nats-servers that require them: user/password,
 * token, and TLS with a CA file (a self-signed CA made with openssl for the test). A gateway
 * with the right credentials becomes ready and carries publications; with wrong ones it never
 * listens (it keeps retrying NATS) and says why.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TestClient } from "../helpers/client.js";
import { startGateway, type GatewayProcess } from "../helpers/gateway.js";
import { freePort, NATS_SERVER } from "../helpers/nats.js";

const CONFIG = `
namespaces:
  chat: { history: { size: 10, ttl: 5m }, clientPublish: true, anonymous: true }
`;

const dirs: string[] = [];
const servers: ChildProcess[] = [];
const gateways: GatewayProcess[] = [];

afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop("SIGKILL")));
  for (const s of servers) s.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), "natsedge-auth-"));
  dirs.push(d);
  return d;
}

/** Starts a nats-server with extra args and resolves once it logs that it is ready. */
async function natsServer(extra: string[]): Promise<string> {
  const port = await freePort();
  const proc = spawn(NATS_SERVER, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", tempDir(), ...extra], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  servers.push(proc);
  let log = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`nats-server not ready:\n${log}`)), 20_000);
    proc.stderr?.on("data", (d: Buffer) => {
      log += d.toString();
      if (log.includes("Server is ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
    proc.once("exit", () => reject(new Error(`nats-server exited:\n${log}`)));
  });
  return String(port);
}

async function roundTrip(gw: GatewayProcess): Promise<void> {
  const c = await TestClient.connect(gw.wsUrl);
  expect((await c.request("subscribe", { ch: "chat.auth" })).ok).toBeDefined();
  expect((await c.request("publish", { ch: "chat.auth", data: "over secured NATS" })).ok).toMatchObject({ offset: 1 });
  expect(await c.nextPush((p) => p.push === "pub")).toMatchObject({ data: "over secured NATS" });
  c.close();
}

/** A gateway that cannot authenticate keeps retrying and never listens: wait for the reason. */
async function expectRefused(args: string[], reason: RegExp): Promise<void> {
  const started = startGateway({ config: { yaml: CONFIG }, args, readyTimeoutMs: 8_000 });
  const err = await started.then(
    (g) => {
      gateways.push(g);
      return undefined;
    },
    (e: unknown) => e as Error,
  );
  expect(err, "the gateway must not become ready").toBeInstanceOf(Error);
  expect(String(err?.message)).toMatch(reason);
}

describe("NATS connection options", () => {
  it("user and password", async () => {
    const port = await natsServer(["--user", "edge", "--pass", "s3cret-pass"]);
    const gw = await startGateway({
      config: { yaml: CONFIG },
      args: ["--nats", `127.0.0.1:${port}`, "--nats-user", "edge", "--nats-password", "s3cret-pass"],
    });
    gateways.push(gw);
    await roundTrip(gw);
    await expectRefused(
      ["--nats", `127.0.0.1:${port}`, "--nats-user", "edge", "--nats-password", "wrong-pass"],
      /authorization|auth/i,
    );
  });

  it("token", async () => {
    const port = await natsServer(["--auth", "edge-token-123"]);
    const gw = await startGateway({
      config: { yaml: CONFIG },
      args: ["--nats", `127.0.0.1:${port}`, "--nats-token", "edge-token-123"],
    });
    gateways.push(gw);
    await roundTrip(gw);
    await expectRefused(["--nats", `127.0.0.1:${port}`, "--nats-token", "not-the-token"], /authorization|auth/i);
  });

  it("TLS with a private CA", async () => {
    const d = tempDir();
    const ssl = (...args: string[]): void => {
      execFileSync("openssl", args, { cwd: d, stdio: "ignore" });
    };
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=natsedge test CA", "-keyout", "ca.key", "-out", "ca.pem");
    writeFileSync(path.join(d, "san.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr");
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", "server.pem");
    const port = await natsServer(["--tls", "--tlscert", path.join(d, "server.pem"), "--tlskey", path.join(d, "server.key")]);
    const gw = await startGateway({
      config: { yaml: CONFIG },
      args: ["--nats", `tls://127.0.0.1:${port}`, "--nats-tls-ca-file", path.join(d, "ca.pem")],
    });
    gateways.push(gw);
    await roundTrip(gw);
    // Without the CA the server's certificate is not trusted.
    await expectRefused(["--nats", `tls://127.0.0.1:${port}`], /certificate|self.signed|unable to verify/i);
  });
});
