/**
 * Process lifecycle: probes, Prometheus metrics, graceful shutdown on SIGTERM/SIGINT, exit codes
 * for bad configuration, --help, and refusing the uWebSockets.js pure-JS fallback.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { api, TestClient, type Frame } from "./helpers/client.js";
import { runCli, startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { eventually, Signal } from "./helpers/signal.js";

const KEY = "lifecycle-key-0123-0123456789abc";
const LOOPBACK = ["--host", "127.0.0.1", "--port", "0", "--admin-port", "0"];

const CONFIG = `
apiKey: ${KEY}
namespaces:
  chat:
    presence: true
    clientPublish: true
    anonymous: true
    history: { size: 10, ttl: 5m }
`;

type Samples = Map<string, number>;

/** Prometheus text format to `name{labels}` -> value (labels exactly as printed). */
function parseMetrics(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`unparseable metrics line: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ""}`, Number(m[3]));
  }
  return samples;
}

async function scrape(gw: GatewayProcess): Promise<{ text: string; samples: Samples }> {
  const res = await fetch(`${gw.adminUrl}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
  const text = await res.text();
  return { text, samples: parseMetrics(text) };
}

const val = (s: Samples, series: string): number => s.get(series) ?? 0;

/** Polls /metrics until `check` holds (bounded); returns the samples that satisfied it. */
function metricsUntil(gw: GatewayProcess, check: (s: Samples) => boolean, what: string): Promise<Samples> {
  let last: Samples = new Map();
  return new Signal().until(
    async () => (check((last = (await scrape(gw)).samples)) ? last : undefined),
    `metrics: ${what}`,
    5_000,
    () => `natsedge series: ${JSON.stringify([...last].filter(([k]) => k.startsWith("natsedge_")))}`,
    25,
  );
}

const CONN = 'natsedge_connections{transport="websocket"}';
const SUBS = "natsedge_subscriptions";
const PUB_CLIENT = 'natsedge_publications_total{source="client"}';
const PUB_API = 'natsedge_publications_total{source="api"}';
const SENT = "natsedge_messages_sent_total";
const LATENCY_COUNT = "natsedge_delivery_latency_seconds_count";
const ERR_404 = 'natsedge_errors_total{code="404"}';
const DISC_4001 = 'natsedge_disconnects_total{code="4001"}';
const DISC_1000 = 'natsedge_disconnects_total{code="1000"}';

describe("probes and metrics", () => {
  let gw: GatewayProcess;
  beforeAll(async () => {
    gw = await startGateway({ config: { yaml: CONFIG } });
  });
  afterAll(async () => {
    await gw?.stop();
  });

  it("serves /healthz and /readyz on the admin port only", async () => {
    const health = await fetch(`${gw.adminUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    const ready = await fetch(`${gw.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });
    expect((await fetch(`${gw.adminUrl}/nope`)).status).toBe(404);
    // The client port does not expose operator endpoints.
    for (const p of ["/metrics", "/healthz", "/readyz"]) expect((await fetch(`${gw.url}${p}`)).status, p).toBe(404);
  });

  it("exports every series and they move with traffic", async () => {
    const { text, samples: m0 } = await scrape(gw);
    for (const [name, type] of [
      ["natsedge_connections", "gauge"],
      ["natsedge_subscriptions", "gauge"],
      ["natsedge_publications_total", "counter"],
      ["natsedge_messages_sent_total", "counter"],
      ["natsedge_delivery_latency_seconds", "histogram"],
      ["natsedge_errors_total", "counter"],
      ["natsedge_disconnects_total", "counter"],
    ]) {
      expect(text, name).toContain(`# TYPE ${name} ${type}`);
    }
    expect(m0.has(SUBS)).toBe(true);
    expect(m0.has("process_cpu_user_seconds_total")).toBe(true);

    // Connections up.
    const a = await TestClient.connect(gw.wsUrl);
    const b = await TestClient.connect(gw.wsUrl, undefined, { format: "msgpack" });
    await metricsUntil(gw, (s) => val(s, CONN) === val(m0, CONN) + 2, "connections +2");

    // Subscriptions.
    for (const c of [a, b]) expect((await c.request("subscribe", { ch: "chat.m" })).ok).toBeDefined();
    await metricsUntil(gw, (s) => val(s, SUBS) === val(m0, SUBS) + 2, "subscriptions +2");

    // One client publication and one API publication, each delivered to both subscribers.
    expect((await a.request("publish", { ch: "chat.m", data: "from client" })).ok).toEqual({ offset: 1, epoch: expect.any(String) });
    const res = await api(gw.url, "POST", "/api/publish", { key: KEY, body: { channel: "chat.m", data: "from api" } });
    expect(res.status).toBe(200);
    for (const c of [a, b]) {
      await c.waitFor(() => (c.pubs("chat.m").length === 2 ? true : undefined), `${c.format}: both publications`);
    }
    const m1 = await metricsUntil(
      gw,
      (s) => val(s, PUB_CLIENT) === val(m0, PUB_CLIENT) + 1 && val(s, PUB_API) === val(m0, PUB_API) + 1,
      "publications +1 per source",
    );
    expect(val(m1, SENT)).toBe(val(m0, SENT) + 4);
    expect(val(m1, LATENCY_COUNT)).toBe(val(m0, LATENCY_COUNT) + 2);
    expect(val(m1, "natsedge_delivery_latency_seconds_sum")).toBeGreaterThanOrEqual(0);
    expect(val(m1, 'natsedge_delivery_latency_seconds_bucket{le="+Inf"}')).toBe(val(m1, LATENCY_COUNT));

    // An error reply.
    expect((await a.request("subscribe", { ch: "nope.x" })).error).toMatchObject({ code: 404 });
    await metricsUntil(gw, (s) => val(s, ERR_404) === val(m0, ERR_404) + 1, "errors_total{code=404} +1");

    // Disconnects by close code: a refused token (4001) and a client's normal close (1000).
    const bad = new TestClient(gw.wsUrl);
    await bad.opened;
    expect((await bad.request("connect", { token: "a.b.c" })).error).toMatchObject({ code: 401 });
    expect((await bad.closed).code).toBe(4001);
    a.ws.close(1000, "bye");
    b.ws.close(1000, "bye");
    await Promise.all([a.closed, b.closed]);
    const m2 = await metricsUntil(
      gw,
      (s) => val(s, DISC_4001) === val(m0, DISC_4001) + 1 && val(s, DISC_1000) === val(m0, DISC_1000) + 2,
      "disconnects 4001 +1 and 1000 +2",
    );
    // Connections and subscriptions back down.
    expect(val(m2, CONN)).toBe(val(m0, CONN));
    expect(val(m2, SUBS)).toBe(val(m0, SUBS));
  });

  it("exports event-loop lag as a histogram whose count grows between scrapes", async () => {
    const LAG = "natsedge_event_loop_lag_seconds";
    const { text, samples: m0 } = await scrape(gw);
    expect(text).toContain(`# TYPE ${LAG} histogram`);
    // The loop is sampled every 100 ms whether or not anything happens, so the count keeps rising.
    const m1 = await metricsUntil(gw, (s) => val(s, `${LAG}_count`) > val(m0, `${LAG}_count`), "event-loop lag samples grow");
    const bounds = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    const counts = bounds.map((le) => {
      const series = `${LAG}_bucket{le="${le}"}`;
      expect(m1.has(series), series).toBe(true);
      return val(m1, series);
    });
    for (let i = 1; i < counts.length; i++) expect(counts[i], `le=${bounds[i]}`).toBeGreaterThanOrEqual(counts[i - 1]!);
    expect(counts.at(-1)).toBe(val(m1, `${LAG}_count`));
    // An idle gateway's loop is late by far less than a second on average, and never negatively.
    const mean = val(m1, `${LAG}_sum`) / val(m1, `${LAG}_count`);
    expect(mean).toBeGreaterThanOrEqual(0);
    expect(mean).toBeLessThan(1);
  });
});

describe("graceful shutdown", () => {
  let term: GatewayProcess;
  let int: GatewayProcess;
  beforeAll(async () => {
    [term, int] = await Promise.all([
      startGateway({ args: ["--drain-period", "1s"] }),
      startGateway({ args: ["--drain-period", "0"] }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([term?.stop("SIGKILL"), int?.stop("SIGKILL")]);
  });

  it("SIGTERM: not ready, no new connections, every client told 4000 reconnect:true, exit 0", async () => {
    const clients = [
      await TestClient.connect(term.wsUrl),
      await TestClient.connect(term.wsUrl, undefined, { format: "msgpack" }),
      await TestClient.connect(term.wsUrl),
    ];
    for (const c of clients) expect((await c.request("subscribe", { ch: "public.drain" })).ok).toBeDefined();
    expect((await fetch(`${term.adminUrl}/readyz`)).status).toBe(200);

    const started = Date.now();
    term.proc.kill("SIGTERM");

    // Readiness turns false while the drain runs (the admin port closes only at the end).
    let readiness = 200;
    await eventually(
      async () => {
        try {
          readiness = (await fetch(`${term.adminUrl}/readyz`)).status;
        } catch {
          return true; // admin port already closed: the drain finished before we saw it
        }
        return readiness === 503 ? true : undefined;
      },
      "/readyz 503 while draining",
      5_000,
      5,
    );
    expect(readiness).toBe(503);

    // The client listener is closed: upgrades and HTTP both fail.
    const late = new TestClient(term.wsUrl);
    await expect(late.opened).rejects.toThrow();
    await expect(fetch(`${term.url}/api/presence?channel=public.drain`)).rejects.toThrow();

    for (const c of clients) {
      const push = await c.nextPush((p) => p.push === "disconnect", `${c.format}: shutdown push`, 5_000);
      expect(push).toMatchObject({ push: "disconnect", code: 4000, reconnect: true });
      expect((await c.closed).code).toBe(4000);
    }
    expect(await term.exited).toBe(0);
    // Spread over the 1s drain period, not dragged past it.
    expect(Date.now() - started).toBeLessThan(4_000);
    expect(term.lines.some((l) => l.includes('"stopped"'))).toBe(true);
  });

  it("SIGINT drains the same way and exits 0", async () => {
    const c = await TestClient.connect(int.wsUrl);
    int.proc.kill("SIGINT");
    const push = await c.nextPush((p) => p.push === "disconnect", "shutdown push", 5_000);
    expect(push).toMatchObject({ code: 4000, reconnect: true });
    expect((await c.closed).code).toBe(4000);
    expect(await int.exited).toBe(0);
  });
});

describe("command line", () => {
  it("exits 2 with one stderr line naming the key for bad configuration", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "natsedge-lifecycle-"));
    const badYaml = path.join(dir, "broken.yaml");
    writeFileSync(badYaml, "port: [1,\n  host: {\n");
    const unknownKey = path.join(dir, "unknown.yaml");
    writeFileSync(unknownKey, "portt: 8000\n");
    const secret = "a-very-secret-hmac-value-1234";
    const cases: Array<{ args: string[]; env?: Record<string, string>; expect: RegExp[]; hide?: string }> = [
      { args: ["--host", "127.0.0.1", "--admin-port", "0", "--port", "70000"], expect: [/\bport\b/, /70000/] },
      { args: [...LOOPBACK, "--port", "abc"], expect: [/\bport\b/, /abc/] },
      { args: [...LOOPBACK, "--bogus-flag", "1"], expect: [/--bogus-flag/, /unknown flag/] },
      { args: [...LOOPBACK, "--config", badYaml], expect: [/config/, /broken\.yaml/, /YAML/] },
      { args: [...LOOPBACK, "--config", unknownKey], expect: [/portt/, /unknown key/] },
      {
        args: LOOPBACK,
        env: { NATSEDGE_DRAIN_PERIOD: "soon" },
        expect: [/drainPeriod/, /NATSEDGE_DRAIN_PERIOD/, /soon/],
      },
      { args: LOOPBACK, env: { NATSEDGE_NO_SUCH_THING: "1" }, expect: [/NATSEDGE_NO_SUCH_THING/] },
      {
        args: [...LOOPBACK, "--auth-hmac-secret", secret],
        env: { NATSEDGE_AUTH_JWKS_FILE: path.join(dir, "jwks.json") },
        expect: [/auth/, /hmacSecret/, /jwksFile/],
        hide: secret,
      },
      { args: [...LOOPBACK, "--api-key", "short"], expect: [/apiKey/], hide: "short" },
      { args: [...LOOPBACK, "--max-frame-size", "10"], expect: [/maxFrameSize/] },
      { args: [...LOOPBACK, "--auth-audience", "edge"], expect: [/auth\.audience/] },
    ];
    const results = await Promise.all(cases.map((c) => runCli(c.args, c.env)));
    results.forEach((r, i) => {
      const c = cases[i] as (typeof cases)[number];
      const label = JSON.stringify({ args: c.args, env: c.env, ...r });
      expect(r.code, label).toBe(2);
      const lines = r.err.split("\n").filter((l) => l !== "");
      expect(lines, label).toHaveLength(1);
      for (const re of c.expect) expect(lines[0], label).toMatch(re);
      if (c.hide !== undefined) expect(r.err, label).not.toContain(c.hide);
      expect(r.out, label).toBe("");
    });
  });

  it("--help exits 0 and documents flags and env vars", async () => {
    for (const args of [["--help"], ["-h"], ["--bogus", "--help"]]) {
      const r = await runCli(args);
      expect(r.code, args.join(" ")).toBe(0);
      for (const s of ["--port", "--api-key", "NATSEDGE_API_KEY", "--drain-period", "NATSEDGE_AUTH_HMAC_SECRET"]) {
        expect(r.out, s).toContain(s);
      }
      expect(r.err).toBe("");
    }
  });

  it("refuses to run on the uWebSockets.js pure-JS fallback", async () => {
    const r = await runCli(LOOPBACK, { UWS_USE_FALLBACK: "1" });
    expect(r.code).toBe(1);
    const fatal = `${r.out}\n${r.err}`
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Frame)
      .find((rec) => rec.level === 60);
    expect(fatal?.msg).toMatch(/fallback/);
    expect(fatal?.msg).toMatch(/refus/);
    expect(`${r.out}${r.err}`).not.toContain('"listening"');
  });
});
