/**
 * Native TLS against real gateway processes and a private CA: WebSocket, long-poll and SSE over
 * wss/https, a client that does not trust the CA refused, /metrics over https with adminTls;
 * certificate reloads (SIGHUP, files replaced, a broken replacement) seen by new connections with
 * and without SNI while connections opened before keep working; configuration errors (exit 2).
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:https";
import path from "node:path";
import type { TLSSocket } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { TestClient, type Frame } from "./helpers/client.js";
import { runCli, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { ok } from "./helpers/suite.js";
import { servedCertificate, TestPki, type CertFiles, type Leaf } from "./helpers/tls.js";

let pki: TestPki;
let first: Leaf;
const gateways: GatewayProcess[] = [];
const clients: TestClient[] = [];
const agents: Agent[] = [];

beforeAll(() => {
  pki = new TestPki();
  first = pki.issue();
});

afterEach(() => {
  for (const c of clients.splice(0)) c.terminate();
  for (const a of agents.splice(0)) a.destroy();
});

afterAll(async () => {
  await Promise.all(gateways.splice(0).map((g) => g.stop()));
  pki?.remove();
});

function tlsArgs(files: CertFiles, adminTls = false): string[] {
  return ["--tls-cert-file", files.live.cert, "--tls-key-file", files.live.key, "--admin-tls", String(adminTls)];
}

async function gateway(files: CertFiles, adminTls = false): Promise<GatewayProcess> {
  // No config file: the embedded default, whose `public` namespace is open to anonymous clients.
  const gw = await startGateway({ args: tlsArgs(files, adminTls) });
  gateways.push(gw);
  return gw;
}

/** A WebSocket client over wss that trusts the test CA, with the serial of the certificate it was served. */
async function wsClient(gw: GatewayProcess): Promise<{ client: TestClient; serial: string }> {
  const client = new TestClient(gw.wsUrl, { ca: pki.ca });
  clients.push(client);
  const served = new Promise<string>((resolve) => {
    client.ws.once("upgrade", (res) => resolve((res.socket as TLSSocket).getPeerCertificate().serialNumber));
  });
  await client.opened;
  ok(await client.request("connect"));
  return { client, serial: await served };
}

interface HttpsReply {
  status: number;
  text: string;
  socket: TLSSocket;
  /** Serial of the certificate the connection was served. */
  serial: string;
}

/** One HTTPS request trusting the test CA (through `agent` when given, to reuse its connection). */
function https(url: string, opts: { method?: string; body?: unknown; agent?: Agent } = {}): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = request(url, {
      method: opts.method ?? "GET",
      ca: pki.ca,
      agent: opts.agent,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      timeout: 10_000,
    });
    req.once("timeout", () => req.destroy(new Error(`${url}: no answer in 10 s`)));
    req.once("error", reject);
    req.once("response", (res) => {
      // Taken now: a kept-alive socket goes back to its agent at the end of the response.
      const socket = res.socket as TLSSocket;
      const serial = socket.getPeerCertificate().serialNumber;
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (text += chunk));
      res.once("end", () => resolve({ status: res.statusCode ?? 0, text, socket, serial }));
    });
    req.end(body);
  });
}

/** Reads a streaming HTTPS response until `pattern` shows up in it, then closes it. */
function readUntil(url: string, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: pki.ca, timeout: 10_000 });
    req.once("timeout", () => req.destroy(new Error(`${url}: ${pattern} not seen in 10 s`)));
    req.once("error", reject);
    req.once("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
        if (!pattern.test(text)) return;
        resolve(text);
        req.destroy();
      });
      res.once("end", () => reject(new Error(`${url}: stream ended before ${pattern}: ${text}`)));
    });
    req.end();
  });
}

async function publishAndReceive(publisher: TestClient, subscriber: TestClient, ch: string, data: Frame): Promise<void> {
  ok(await publisher.request("publish", { ch, data }));
  await subscriber.nextPush((p) => p.push === "pub" && p.ch === ch && JSON.stringify(p.data) === JSON.stringify(data));
}

/** Replaces a file the way renewals do: written beside it, then renamed over it. */
function replace(file: string, source: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.new`);
  writeFileSync(tmp, readFileSync(source));
  renameSync(tmp, file);
}

/** A Prometheus sample from a metrics text, 0 when absent. */
function sample(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

const RELOADS_OK = 'natsedge_tls_reloads_total{result="ok"}';
const RELOADS_ERROR = 'natsedge_tls_reloads_total{result="error"}';

describe("serving TLS", () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await gateway(pki.files(first), true);
  });

  it("announces wss:// and https:// URLs and serves the configured certificate, with SNI and without", async () => {
    expect(gw.wsUrl).toMatch(/^wss:\/\/127\.0\.0\.1:\d+\/ws$/);
    expect(gw.url).toMatch(/^https:/);
    expect(gw.adminUrl).toMatch(/^https:/);
    expect((await servedCertificate(gw.port, pki.ca)).serialNumber).toBe(first.serial);
    expect((await servedCertificate(gw.port, pki.ca, "localhost")).serialNumber).toBe(first.serial);
    const serving = await gw.waitForLog("serving tls certificate");
    expect(serving.serial).toBe(first.serial);
  });

  it("speaks the protocol over wss: connect, subscribe, publish, receive", async () => {
    const { client, serial } = await wsClient(gw);
    expect(serial).toBe(first.serial);
    const ch = "public.wss";
    expect(ok(await client.request("subscribe", { ch }))).toMatchObject({ offset: 0 });
    await publishAndReceive(client, client, ch, { text: "over tls" });
  });

  it("serves long-poll over https: rpc connect, poll, publish, poll again", async () => {
    const ch = "public.lp";
    const rpc = async (body: Frame): Promise<Frame> => {
      const res = await https(`${gw.url}/lp/rpc`, { method: "POST", body });
      expect(res.status, res.text).toBe(200);
      return (JSON.parse(res.text) as { replies: Frame[] }).replies[0] as Frame;
    };
    const poll = async (subs: Record<string, unknown>, session: string): Promise<Frame> => {
      const res = await https(`${gw.url}/lp/poll`, { method: "POST", body: { session, subs } });
      expect(res.status, res.text).toBe(200);
      return JSON.parse(res.text) as Frame;
    };
    const session = ok(await rpc({ cmds: [{ id: 1, op: "connect" }] })).session as string;
    const start = (await poll({ [ch]: null }, session)).subs as Record<string, { offset: number; epoch: string }>;
    ok(await rpc({ session, cmds: [{ id: 2, op: "publish", ch, data: { via: "long-poll" } }] }));
    const answer = await poll({ [ch]: start[ch] }, session);
    expect(answer.pubs).toEqual([{ ch, offset: (start[ch]?.offset ?? 0) + 1, data: { via: "long-poll" }, info: expect.any(Object) }]);
  });

  it("serves SSE over https", async () => {
    const text = await readUntil(`${gw.url}/sse?ch=public.sse`, /event: subscribed\n/);
    expect(text).toMatch(/event: subscribed\ndata: \{"subs":\{"public\.sse":/);
  });

  it("refuses clients that do not trust the certificate's CA", async () => {
    await expect(
      new Promise((resolve, reject) => {
        const req = request(`${gw.url}/sse?ch=public.x`, { timeout: 10_000 }, resolve);
        req.once("error", reject);
        req.end();
      }),
    ).rejects.toThrow(/certificate/);
    const untrusting = new TestClient(gw.wsUrl);
    clients.push(untrusting);
    await expect(untrusting.opened).rejects.toThrow(/certificate/);
  });

  it("holds its port against a second gateway, with TLS or without, although it shares it with its next app", async () => {
    for (const tls of [tlsArgs(pki.files(first)), []]) {
      const r = await runCli(["--host", "127.0.0.1", "--port", String(gw.port), "--admin-port", "0", ...tls]);
      expect(r.code, r.out + r.err).toBe(1);
      expect(r.out + r.err).toContain(`cannot listen on 127.0.0.1:${gw.port}`);
    }
  });

  it("serves /metrics on the admin port over https with adminTls", async () => {
    const res = await https(`${gw.adminUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.serial).toBe(first.serial);
    expect(sample(res.text, RELOADS_OK)).toBe(0);
    expect(sample(res.text, RELOADS_ERROR)).toBe(0);
    expect(res.text).toContain(`${RELOADS_ERROR} 0`);
  });
});

describe("certificate reload", () => {
  /** Connections opened before a reload: a WebSocket client subscribed to `ch` and a kept-alive HTTPS connection. */
  async function openBefore(gw: GatewayProcess, ch: string): Promise<{ ws: TestClient; agent: Agent; socket: TLSSocket }> {
    const { client: ws, serial } = await wsClient(gw);
    expect(serial).toBe(first.serial);
    ok(await ws.request("subscribe", { ch }));
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(agent);
    const res = await https(`${gw.url}/lp/rpc`, { method: "POST", body: { cmds: [{ id: 1, op: "ping" }] }, agent });
    expect(res.status).toBe(200);
    return { ws, agent, socket: res.socket };
  }

  /** After a reload: new connections get `leaf`; the ones from openBefore keep the old one and keep working. */
  async function checkAfter(gw: GatewayProcess, leaf: Leaf, before: Awaited<ReturnType<typeof openBefore>>, ch: string): Promise<void> {
    // Every new connection: the old listen socket is closed, not merely outnumbered.
    for (let i = 0; i < 4; i++) {
      expect((await servedCertificate(gw.port, pki.ca)).serialNumber, "without SNI").toBe(leaf.serial);
      expect((await servedCertificate(gw.port, pki.ca, "localhost")).serialNumber, "with SNI").toBe(leaf.serial);
    }
    const { client: fresh, serial } = await wsClient(gw);
    expect(serial).toBe(leaf.serial);
    ok(await fresh.request("subscribe", { ch }));
    // Publications cross between the connections made before and after the reload, both ways.
    await publishAndReceive(fresh, before.ws, ch, { from: "after" });
    await publishAndReceive(before.ws, fresh, ch, { from: "before" });
    const again = await https(`${gw.url}/lp/rpc`, { method: "POST", body: { cmds: [{ id: 2, op: "ping" }] }, agent: before.agent });
    expect(again.status).toBe(200);
    expect(again.socket, "the kept-alive connection is reused").toBe(before.socket);
    expect(again.serial).toBe(first.serial);
  }

  it("on SIGHUP", async () => {
    const files = pki.files(first);
    const gw = await gateway(files);
    const before = await openBefore(gw, "public.hup");
    // Rewriting the symlinks' targets is invisible to the directory watch: only the signal reloads.
    const next = pki.issue();
    writeFileSync(files.store.cert, readFileSync(next.cert));
    writeFileSync(files.store.key, readFileSync(next.key));
    const mark = gw.lines.length;
    gw.proc.kill("SIGHUP");
    const reloaded = await gw.waitForLog("tls certificate reloaded", { from: mark });
    expect(reloaded).toMatchObject({ reason: "SIGHUP", serial: next.serial });
    await checkAfter(gw, next, before, "public.hup");
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(sample(metrics, RELOADS_OK)).toBe(1);
    expect(sample(metrics, RELOADS_ERROR)).toBe(0);
    // The same files again: nothing to do, and the process is still there.
    gw.proc.kill("SIGHUP");
    expect(await gw.waitForLog("tls certificate unchanged", { from: mark })).toMatchObject({ reason: "SIGHUP" });
  });

  it("when the files are replaced", async () => {
    const files = pki.files(first);
    const gw = await gateway(files);
    const before = await openBefore(gw, "public.watch");
    const next = pki.issue();
    const mark = gw.lines.length;
    replace(files.live.key, next.key);
    replace(files.live.cert, next.cert);
    const reloaded = await gw.waitForLog("tls certificate reloaded", { from: mark });
    expect(reloaded).toMatchObject({ reason: "file change", serial: next.serial });
    await checkAfter(gw, next, before, "public.watch");
  });

  it("keeps the certificate it has when the replacement is broken", async () => {
    const files = pki.files(first);
    const gw = await gateway(files);
    const mark = gw.lines.length;
    const garbage = path.join(pki.dir, "garbage-cert.pem");
    writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    replace(files.live.cert, garbage);
    const failure = "tls certificate reload failed; all listeners keep the previous certificate";
    const failed = await gw.waitForLog(failure, { from: mark });
    expect(failed).toMatchObject({ level: 50, reason: "file change" });
    expect(String(failed.error)).toMatch(/^tls\.certFile \(.*cert\.pem\): is not a valid PEM certificate/);
    gw.proc.kill("SIGHUP");
    await gw.waitForLog(failure, { from: mark, where: (rec) => rec.reason === "SIGHUP" });
    expect((await servedCertificate(gw.port, pki.ca)).serialNumber).toBe(first.serial);
    const { client, serial } = await wsClient(gw);
    expect(serial).toBe(first.serial);
    ok(await client.request("subscribe", { ch: "public.broken" }));
    await publishAndReceive(client, client, "public.broken", { still: "serving" });
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    expect(sample(metrics, RELOADS_ERROR)).toBeGreaterThanOrEqual(2);
    expect(sample(metrics, RELOADS_OK)).toBe(0);
    expect(gw.proc.exitCode).toBeNull();
  });
});

describe("configuration errors", () => {
  const LOOPBACK = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"];

  async function refused(args: string[], pattern: RegExp, env: Record<string, string> = {}): Promise<void> {
    const r = await runCli([...LOOPBACK, ...args], env);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toMatch(pattern);
    expect(r.err.trimEnd().split("\n"), "one line").toHaveLength(1);
    expect(r.out).toBe("");
  }

  it("a certificate without its key, or a key without its certificate", async () => {
    await refused(["--tls-cert-file", first.cert], /^natsedge: tls\.certFile \(from --tls-cert-file\): needs tls\.keyFile too/);
    await refused([], /^natsedge: tls\.keyFile \(from NATSEDGE_TLS_KEY_FILE\): needs tls\.certFile too/, {
      NATSEDGE_TLS_KEY_FILE: first.key,
    });
  });

  it("a file that cannot be read", async () => {
    const missing = path.join(pki.dir, "missing.key");
    await refused(["--tls-cert-file", first.cert, "--tls-key-file", missing], /^natsedge: tls\.keyFile \(from --tls-key-file\): ".*missing\.key" cannot be read/);
  });

  it("files that are not a certificate and its key", async () => {
    const other = pki.issue();
    const garbage = path.join(pki.dir, "garbage.pem");
    writeFileSync(garbage, "garbage\n");
    await refused(["--tls-cert-file", first.cert, "--tls-key-file", other.key], /^natsedge: tls\.keyFile \(.*\): is not the key of the certificate in tls\.certFile/);
    await refused(["--tls-cert-file", garbage, "--tls-key-file", first.key], /^natsedge: tls\.certFile \(.*garbage\.pem\): holds no PEM certificate/);
    await refused(["--tls-cert-file", first.cert, "--tls-key-file", garbage], /^natsedge: tls\.keyFile \(.*garbage\.pem\): is not an unencrypted PEM private key/);
    // Checked before workers are forked (and before NATS is dialled).
    await refused(["--workers", "2", "--nats", "127.0.0.1:1", "--tls-cert-file", first.cert, "--tls-key-file", other.key], /^natsedge: tls\.keyFile/);
  });

  it("adminTls without a certificate", async () => {
    await refused(["--admin-tls", "true"], /^natsedge: adminTls \(from --admin-tls\): true is not allowed: without tls\.certFile and tls\.keyFile/);
  });

  it("refuses the pure-JS uWebSockets.js fallback, which has no TLS", async () => {
    const r = await runCli([...LOOPBACK, "--tls-cert-file", first.cert, "--tls-key-file", first.key], { UWS_USE_FALLBACK: "1" });
    expect(r.code).toBe(1);
    expect(r.out + r.err).toMatch(/refusing to run on it/);
  });
});
