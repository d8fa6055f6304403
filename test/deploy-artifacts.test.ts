/**
 * The deployment artifacts under deploy/, checked with the real tools where there are any:
 *  - Prometheus: promtool check config / check rules / test rules, and a real Prometheus that
 *    scrapes a running gateway (its targets report up, the alert rules evaluate, every dashboard
 *    query is valid PromQL);
 *  - HAProxy: haproxy -c for the compose config and the config deploy/local renders;
 *  - NATS: nats-server -t for the compose and local configs;
 *  - Grafana: the dashboard parses and every metric it queries is on a real /metrics scrape of a
 *    gateway started with --nats and given some traffic; the provisioning files fit compose;
 *  - Kubernetes: every manifest parses, the Deployment has probes, resources, a non-root
 *    securityContext and a grace period covering preStop + drainPeriod; the kustomization's
 *    files exist; the shipped gateway configs load with natsedge's own config loader;
 *  - the Dockerfile: multi-stage, pinned base image, non-root USER, HEALTHCHECK, init, ports.
 * Needs the Debian packages prometheus (promtool, prometheus), haproxy and nats-server.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { connect as natsConnect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { loadConfig } from "../src/config/load.js";
import type { Config } from "../src/config/types.js";
import { api, TestClient } from "./helpers/client.js";
import { startGateway, type GatewayProcess } from "./helpers/gateway.js";
import { freePort, startNats, type NatsCluster } from "./helpers/nats.js";
import { Signal } from "./helpers/signal.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DEPLOY = path.join(ROOT, "deploy");
const tmp = mkdtempSync(path.join(tmpdir(), "natsedge-deploy-artifacts-"));

type Obj = Record<string, unknown>;

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The path of a program (PATH or /usr/sbin), failing the test with what to install. */
function tool(name: string, debianPackage: string): string {
  const found = spawnSync("bash", ["-c", `command -v ${name} || { test -x /usr/sbin/${name} && echo /usr/sbin/${name}; }`], {
    encoding: "utf8",
  }).stdout.trim();
  expect(found, `${name} is not installed: apt-get install ${debianPackage} (the deploy tests need it)`).not.toBe("");
  return found;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): { code: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, out: `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}` };
}

function read(rel: string): string {
  return readFileSync(path.join(DEPLOY, rel), "utf8");
}

function yamlDocs(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, "utf8"));
  for (const d of docs) expect(d.errors, `${file}: ${d.errors.map((e) => e.message).join("; ")}`).toEqual([]);
  return docs.map((d) => d.toJS() as Obj).filter((d) => d !== null);
}

/** Loads a gateway config file with natsedge's own loader (throws ConfigError when invalid). */
function gatewayConfig(file: string, env: Record<string, string>): Config {
  const loaded = loadConfig(["--config", file], env);
  if ("help" in loaded) throw new Error("unexpected help");
  return loaded.config;
}

function seconds(ms: number): number {
  return Math.ceil(ms / 1000);
}

// --- PromQL -------------------------------------------------------------------------------

const PROMQL_WORDS = new Set([
  "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
  "inf", "nan",
]);

/** The metric names a PromQL expression (or a Grafana label_values query) selects. */
function metricNames(expr: string): string[] {
  const lv = /^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$/s.exec(expr);
  let e = lv ? (lv[1] as string) : expr;
  e = e
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\$\{?[A-Za-z_][A-Za-z0-9_]*\}?/g, " ");
  const names: string[] = [];
  for (const m of e.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const word = m[0];
    const before = e.slice(0, m.index);
    if (/[0-9.]$/.test(before)) continue; // part of a number such as 1e3
    if (e.slice(m.index + word.length).trimStart().startsWith("(")) continue; // function or aggregation
    if (PROMQL_WORDS.has(word)) continue;
    names.push(word);
  }
  return names;
}

interface DashboardQuery {
  panel: string;
  expr: string;
}

function dashboardQueries(dash: Obj): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  const walk = (panels: Obj[]): void => {
    for (const p of panels) {
      for (const t of (p.targets as Obj[] | undefined) ?? []) {
        expect(typeof t.expr, `panel "${String(p.title)}": target without expr`).toBe("string");
        out.push({ panel: String(p.title), expr: t.expr as string });
      }
      if (Array.isArray(p.panels)) walk(p.panels as Obj[]);
    }
  };
  walk(dash.panels as Obj[]);
  for (const v of ((dash.templating as Obj).list as Obj[]) ?? []) {
    if (v.type !== "query") continue;
    const q = v.query as string | { query: string };
    out.push({ panel: `variable $${String(v.name)}`, expr: typeof q === "string" ? q : q.query });
  }
  return out;
}

/** Grafana's variables replaced so that Prometheus can run the query. */
function forPrometheus(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range/g, "1m")
    .replace(/\$\{?instance\}?/g, ".*")
    .replace(/\$\{?job\}?/g, "natsedge");
}

const dashboard = JSON.parse(read("grafana/natsedge.json")) as Obj;

/**
 * The series names a scrape exports: those with samples, and those its `# TYPE` lines declare
 * (a labelled counter has no sample until the first event, a refused connection say), with a
 * histogram's _bucket, _sum and _count.
 */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const declared = /^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)/.exec(line);
    if (declared) {
      const [, name, type] = declared as unknown as [string, string, string];
      names.add(name);
      if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(name + suffix);
    } else if (line !== "" && !line.startsWith("#")) {
      names.add(/^[A-Za-z_:][A-Za-z0-9_:]*/.exec(line)?.[0] ?? "");
    }
  }
  return names;
}

// --- a real gateway on NATS, with traffic, for /metrics and Prometheus -----------------------

const API_KEY = "deploy-artifacts-api-key-0123456";
let nats: NatsCluster | undefined;
let gw: GatewayProcess | undefined;
let scrapeNames = new Set<string>();

beforeAll(async () => {
  nats = await startNats(1);
  gw = await startGateway({
    args: ["--nats", nats.servers],
    readyTimeoutMs: 40_000,
    config: {
      yaml: [
        `apiKey: ${API_KEY}`,
        "sessionSecret: deploy-artifacts-session-secret-0123456789",
        "namespaces:",
        "  chat: { history: { size: 100, ttl: 5m }, presence: true, joinLeave: true, clientPublish: true, anonymous: true }",
      ].join("\n"),
    },
  });
  const g = gw;
  // Traffic that makes every labelled series appear: connections of each transport, client, API
  // and broker publications, a recovery, an error reply, a disconnect, long-poll requests.
  const a = await TestClient.connect(g.wsUrl);
  const sub = await a.request("subscribe", { ch: "chat.m" });
  const pos = sub.ok as { offset: number; epoch: string };
  await a.request("publish", { ch: "chat.m", data: { n: 1 } });
  expect((await api(g.url, "POST", "/api/publish", { key: API_KEY, body: { channel: "chat.m", data: { n: 2 } } })).status).toBe(200);
  const nc = await natsConnect({ servers: nats.servers });
  nc.publish("natsedge.ch.chat.m", Buffer.from(JSON.stringify({ n: 3 })));
  await nc.flush();
  await nc.close();
  await a.waitFor(() => (a.pubs("chat.m").length >= 3 ? true : undefined), "3 publications");
  const b = await TestClient.connect(g.wsUrl);
  expect((await b.request("subscribe", { ch: "chat.m", since: pos })).error).toBeUndefined();
  expect((await b.request("subscribe", { ch: "nope.x" })).error).toBeDefined();
  b.close();
  await b.closed;
  const rpc = await api(g.url, "POST", "/lp/rpc", { body: { cmds: [{ id: 1, op: "connect" }] } });
  const session = ((rpc.body.replies as Obj[])[0]?.ok as { session: string }).session;
  await api(g.url, "POST", "/lp/poll", { body: { session, subs: { "chat.m": null }, timeout: 0 } });
  const sse = new AbortController();
  const res = await fetch(`${g.url}/sse?ch=chat.m`, { signal: sse.signal });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  await reader.read();
  // A broker round trip has been measured (the probe runs at start and every 500 ms).
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  sse.abort();
  a.terminate();
  scrapeNames = exportedNames(text);
}, 90_000);

afterAll(async () => {
  await gw?.stop();
  await nats?.stop();
}, 30_000);

// --- tests --------------------------------------------------------------------------------

describe("Prometheus config and alert rules", () => {
  it("promtool accepts prometheus.yml and every *.rules.yml, and the rule unit tests pass", () => {
    const promtool = tool("promtool", "prometheus");
    const cfg = run(promtool, ["check", "config", path.join(DEPLOY, "prometheus", "prometheus.yml")]);
    expect(cfg.code, cfg.out).toBe(0);
    const rules = readdirSync(path.join(DEPLOY, "prometheus")).filter((f) => f.endsWith(".rules.yml"));
    expect(rules.length).toBeGreaterThan(0);
    const r = run(promtool, ["check", "rules", ...rules.map((f) => path.join(DEPLOY, "prometheus", f))]);
    expect(r.code, r.out).toBe(0);
    const t = run(promtool, ["test", "rules", path.join(DEPLOY, "prometheus", "tests", "natsedge.rules.test.yml")]);
    expect(t.code, t.out).toBe(0);
  });

  it("has alerts for replicas, NATS, latency, slow consumers, limits, event-loop lag, continuity, keys, hooks and webhooks", () => {
    const rules = (parse(read("prometheus/natsedge.rules.yml")) as { groups: Array<{ rules: Obj[] }> }).groups.flatMap((g) => g.rules);
    const expr = (alert: string): string => String(rules.find((r) => r.alert === alert)?.expr ?? "");
    expect(expr("NatsedgeReplicaDown")).toMatch(/up\{job="natsedge"\} == 0/);
    expect(expr("NatsedgeNatsDisconnected")).toMatch(/natsedge_nats_connected == 0/);
    expect(expr("NatsedgeBrokerRoundtripSlow")).toMatch(/histogram_quantile\(0\.99,[\s\S]*natsedge_broker_roundtrip_seconds_bucket/);
    expect(expr("NatsedgeSlowConsumerDisconnectsSpiking")).toMatch(/natsedge_disconnects_total\{code="4008"\}/);
    expect(expr("NatsedgeDeliveryLatencyHigh")).toMatch(/histogram_quantile\(0\.99,[\s\S]*natsedge_delivery_latency_seconds_bucket/);
    // Limits, event-loop health, continuity, the JetStream gate and the identity provider's keys.
    expect(expr("NatsedgeConnectionsRefused")).toMatch(/natsedge_connections_refused_total/);
    expect(expr("NatsedgeRateLimited")).toMatch(/natsedge_rate_limited_total/);
    expect(expr("NatsedgeEventLoopLagHigh")).toMatch(/histogram_quantile\(0\.99,[\s\S]*natsedge_event_loop_lag_seconds_bucket/);
    expect(expr("NatsedgeContinuityLost")).toMatch(/natsedge_continuity_lost_total/);
    expect(expr("NatsedgeJetStreamSaturated")).toMatch(/natsedge_jetstream_refused_total/);
    expect(expr("NatsedgeJwksStale")).toMatch(/natsedge_jwks_last_success_timestamp_seconds/);
    expect(expr("NatsedgeWebhookEventsDropped")).toMatch(/natsedge_webhook_events_dropped_total/);
    // Backend hooks and the lifecycle event webhook.
    expect(expr("NatsedgeHookFailures")).toMatch(/natsedge_hook_calls_total\{result=~"timeout\|unavailable\|invalid\|busy"\}/);
    expect(expr("NatsedgeHookLatencyHigh")).toMatch(/histogram_quantile\(0\.99,[\s\S]*by \(instance, kind, le\)[\s\S]*natsedge_hook_duration_seconds_bucket/);
    expect(expr("NatsedgeWebhookFailing")).toMatch(/natsedge_webhook_deliveries_total/);
    for (const r of rules) {
      expect((r.labels as Obj | undefined)?.severity, `${String(r.alert)} severity`).toMatch(/^(warning|critical)$/);
      expect((r.annotations as Obj | undefined)?.summary, `${String(r.alert)} summary`).toBeTruthy();
      for (const name of metricNames(String(r.expr))) {
        if (name !== "up") expect(scrapeNames.has(name), `${String(r.alert)}: ${name} is not on /metrics`).toBe(true);
      }
    }
  });

  it("a real Prometheus scrapes a running gateway: target up, rules healthy, every dashboard query valid", async () => {
    const prometheus = tool("prometheus", "prometheus");
    const g = gw as GatewayProcess;
    // The shipped scrape config with its gateway job pointed at this gateway, scraping every second.
    const base = parse(read("prometheus/prometheus.yml")) as Obj;
    const jobs = base.scrape_configs as Obj[];
    const job = jobs.find((j) => j.job_name === "natsedge") as Obj;
    expect(job, "prometheus.yml has a natsedge job").toBeDefined();
    delete job.dns_sd_configs;
    job.static_configs = [{ targets: [`127.0.0.1:${g.adminPort}`] }];
    const config = {
      ...base,
      global: { scrape_interval: "1s", evaluation_interval: "1s" },
      rule_files: (base.rule_files as string[]).map((f) => path.join(DEPLOY, "prometheus", f)),
      scrape_configs: [job],
    };
    const dir = mkdtempSync(path.join(tmp, "prometheus-"));
    writeFileSync(path.join(dir, "prometheus.yml"), JSON.stringify(config));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawn(
      prometheus,
      [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    proc.stderr.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    const kill = setTimeout(() => proc.kill("SIGKILL"), 60_000);
    try {
      const get = async (p: string): Promise<Obj> => (await (await fetch(url + p, { signal: AbortSignal.timeout(3_000) })).json()) as Obj;
      const until = <T>(what: string, check: () => Promise<T | undefined>): Promise<T> => {
        let last: unknown;
        const attempt = async (): Promise<T | undefined> => {
          try {
            const v = await check();
            if (v !== undefined) return v;
          } catch (err) {
            last = err;
          }
          if (proc.exitCode !== null) throw new Error(`prometheus exited: ${log}`);
          return undefined;
        };
        return new Signal().until(attempt, what, 30_000, () => `last error: ${String(last)}; prometheus log: ${log}`, 250);
      };
      const target = await until("the gateway target to be up", async () => {
        const targets = ((await get("/api/v1/targets")).data as Obj).activeTargets as Obj[];
        return targets.find((t) => (t.labels as Obj).job === "natsedge" && t.health === "up");
      });
      expect(target.scrapeUrl).toBe(`http://127.0.0.1:${g.adminPort}/metrics`);
      // The data arrived, and the alert rules evaluate without errors against it.
      await until("natsedge_nats_connected == 1", async () => {
        const r = ((await get(`/api/v1/query?query=${encodeURIComponent("natsedge_nats_connected")}`)).data as Obj).result as Obj[];
        return r.length === 1 && (r[0]?.value as [number, string])[1] === "1" ? true : undefined;
      });
      const rules = await until("every rule evaluated", async () => {
        const groups = ((await get("/api/v1/rules")).data as Obj).groups as Obj[];
        const all = groups.flatMap((grp) => grp.rules as Obj[]);
        return all.length > 0 && all.every((r) => r.health !== "unknown") ? all : undefined;
      });
      for (const r of rules) expect(r.health, `${String(r.name)}: ${String(r.lastError)}`).toBe("ok");
      expect(rules.map((r) => r.name)).toContain("NatsedgeNatsDisconnected");
      // A healthy gateway fires nothing.
      expect(rules.filter((r) => r.state === "firing").map((r) => r.name)).toEqual([]);
      for (const q of dashboardQueries(dashboard)) {
        if (q.panel.startsWith("variable")) continue; // label_values() is Grafana's, not PromQL
        const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(forPrometheus(q.expr))}`);
        const body = (await res.json()) as Obj;
        expect(body.status, `panel "${q.panel}": ${q.expr}: ${String(body.error)}`).toBe("success");
      }
    } finally {
      clearTimeout(kill);
      proc.kill("SIGTERM");
      await exited;
    }
  }, 60_000);
});

describe("Grafana dashboard", () => {
  const queries = dashboardQueries(dashboard);
  const names = new Set(queries.flatMap((q) => metricNames(q.expr)));

  it("parses, has unique panel ids, a datasource variable and a query on every panel", () => {
    expect(dashboard.uid).toBe("natsedge");
    expect(dashboard.title).toBe("natsedge");
    const panels = dashboard.panels as Obj[];
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.gridPos, `panel "${String(p.title)}" gridPos`).toBeDefined();
      if (p.type === "row") continue;
      expect((p.targets as Obj[]).length, `panel "${String(p.title)}" has queries`).toBeGreaterThan(0);
      expect((p.datasource as Obj).uid).toBe("${datasource}");
    }
    const vars = ((dashboard.templating as Obj).list as Obj[]).map((v) => v.name);
    expect(vars).toEqual(expect.arrayContaining(["datasource", "instance"]));
  });

  it("shows what issue #7 asks for", () => {
    for (const n of [
      "natsedge_connections",
      "natsedge_subscriptions",
      "natsedge_publications_total",
      "natsedge_messages_sent_total",
      "natsedge_delivery_latency_seconds_bucket",
      "natsedge_errors_total",
      "natsedge_disconnects_total",
      "natsedge_nats_connected",
      "natsedge_broker_roundtrip_seconds_bucket",
      "natsedge_longpoll_held",
      "natsedge_longpoll_requests_total",
      "natsedge_gap_publications_filled_total",
    ]) {
      expect(names.has(n), `the dashboard does not query ${n}`).toBe(true);
    }
    const all = queries.map((q) => q.expr).join("\n");
    expect(all).toMatch(/sum by \(source\) \(rate\(natsedge_publications_total/);
    expect(all).toMatch(/histogram_quantile\(0\.5, sum by \(le\) \(rate\(natsedge_delivery_latency_seconds_bucket/);
    expect(all).toMatch(/histogram_quantile\(0\.99, sum by \(le\) \(rate\(natsedge_delivery_latency_seconds_bucket/);
    expect(all).toMatch(/sum by \(code\) \(rate\(natsedge_errors_total/);
    expect(all).toMatch(/sum by \(code\) \(rate\(natsedge_disconnects_total/);
  });

  it("has a Backends row: hook calls, hook latency, lifecycle events and webhook deliveries", () => {
    const panels = dashboard.panels as Obj[];
    expect(panels.some((p) => p.type === "row" && p.title === "Backends")).toBe(true);
    const all = queries.map((q) => q.expr).join("\n");
    expect(all).toMatch(/sum by \(kind, result\) \(rate\(natsedge_hook_calls_total/);
    expect(all).toMatch(/histogram_quantile\(0\.5, sum by \(kind, le\) \(rate\(natsedge_hook_duration_seconds_bucket/);
    expect(all).toMatch(/histogram_quantile\(0\.99, sum by \(kind, le\) \(rate\(natsedge_hook_duration_seconds_bucket/);
    expect(all).toMatch(/sum by \(type\) \(rate\(natsedge_events_published_total/);
    expect(all).toMatch(/sum by \(result\) \(rate\(natsedge_webhook_deliveries_total/);
  });

  it("every metric it queries is on a real /metrics scrape of a gateway running on NATS", () => {
    expect(scrapeNames.size).toBeGreaterThan(20);
    // The extraction works: names from selectors, rate() arguments and histogram_quantile().
    expect([...names]).toEqual(
      expect.arrayContaining(["up", "natsedge_connections", "process_cpu_seconds_total", "natsedge_longpoll_duration_seconds_bucket"]),
    );
    expect([...names].filter((n) => !/^(natsedge_|process_|nodejs_|up$)/.test(n))).toEqual([]);
    const missing = [...names].filter((n) => n !== "up" && !scrapeNames.has(n));
    expect(missing, `queried by the dashboard but not exported: ${missing.join(", ")}`).toEqual([]);
  });

  it("is provisioned in compose with the Prometheus datasource", () => {
    const ds = parse(read("compose/grafana/provisioning/datasources/prometheus.yml")) as { datasources: Obj[] };
    expect(ds.datasources[0]).toMatchObject({ type: "prometheus", uid: "prometheus", url: "http://prometheus:9090" });
    const dv = ((dashboard.templating as Obj).list as Obj[]).find((v) => v.name === "datasource") as Obj;
    expect((dv.current as Obj).value).toBe("prometheus");
    const prov = parse(read("compose/grafana/provisioning/dashboards/natsedge.yml")) as { providers: Obj[] };
    const dir = (prov.providers[0]?.options as Obj).path as string;
    const compose = parse(read("compose/docker-compose.yml"), { merge: true }) as { services: Record<string, Obj> };
    const mounts = (compose.services.grafana?.volumes as string[]) ?? [];
    expect(mounts).toContain(`../grafana:${dir}:ro`);
    expect(mounts).toContain("./grafana/provisioning:/etc/grafana/provisioning:ro");
  });
});

describe("HAProxy and NATS configs", () => {
  it("haproxy -c accepts the compose config (DNS service discovery, no address needed at start)", () => {
    const haproxy = tool("haproxy", "haproxy");
    const r = run(haproxy, ["-c", "-f", path.join(DEPLOY, "compose", "haproxy.cfg")]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).not.toMatch(/\[(WARNING|ALERT)\]/);
    const cfg = read("compose/haproxy.cfg");
    expect(cfg).toMatch(/balance roundrobin/);
    expect(cfg).not.toMatch(/^\s*(cookie|stick)\b/m); // no sticky sessions
    expect(cfg).toMatch(/timeout tunnel\s+1h/);
    expect(cfg).toMatch(/http-check send meth GET uri \/readyz ver HTTP\/1\.1/);
  });

  it("deploy/local renders configs that haproxy -c and nats-server -t accept", () => {
    const haproxy = tool("haproxy", "haproxy");
    const natsServer = tool("nats-server", "nats-server");
    const state = path.join(tmp, "local-state");
    const r = run("bash", [path.join(DEPLOY, "local", "cluster.sh"), "config"], {
      STATE_DIR: state,
      PROMETHEUS: "off",
      API_KEY: "local-config-api-key-0123456789abcdef",
      SESSION_SECRET: "local-config-session-secret-0123456789",
    });
    expect(r.code, r.out).toBe(0);
    const h = run(haproxy, ["-c", "-f", path.join(state, "haproxy", "haproxy.cfg")]);
    expect(h.code, h.out).toBe(0);
    expect(h.out).not.toMatch(/\[(WARNING|ALERT)\]/);
    const servers = readFileSync(path.join(state, "haproxy", "haproxy.cfg"), "utf8").match(/^\s*server gw\d /gm) ?? [];
    expect(servers.length).toBe(3);
    for (const n of [1, 2, 3]) {
      const t = run(natsServer, ["-t", "-c", path.join(state, "nats", `n${n}`, "nats.conf")]);
      expect(t.code, t.out).toBe(0);
    }
    const config = gatewayConfig(path.join(state, "gateway", "natsedge.yaml"), {});
    expect(config.nats?.servers.length).toBe(3);
    expect(config.nats?.streamReplicas).toBe(3);
    expect(config.host).toBe("127.0.0.1");
    expect(config.adminHost).toBe("127.0.0.1");
  });

  it("nats-server -t accepts the compose nats.conf", () => {
    const natsServer = tool("nats-server", "nats-server");
    for (const name of ["nats-1", "nats-2", "nats-3"]) {
      const r = run(natsServer, ["-t", "-c", path.join(DEPLOY, "compose", "nats.conf")], { SERVER_NAME: name });
      expect(r.code, r.out).toBe(0);
    }
  });
});

describe("docker compose", () => {
  // Compose files may use YAML merge keys (<<: *anchor).
  const compose = parse(read("compose/docker-compose.yml"), { merge: true }) as { services: Record<string, Obj> };
  const s = compose.services;

  it("has 3 JetStream NATS servers, 3 gateway replicas with shared secrets, HAProxy, Prometheus and Grafana", () => {
    for (const n of ["nats-1", "nats-2", "nats-3"]) {
      expect(s[n], n).toBeDefined();
      expect((s[n]?.environment as Obj).SERVER_NAME).toBe(n);
      expect(s[n]?.volumes).toContain("./nats.conf:/etc/nats/nats.conf:ro");
    }
    const natsConf = read("compose/nats.conf");
    expect(natsConf).toMatch(/jetstream\s*\{/);
    for (const n of ["nats-1", "nats-2", "nats-3"]) expect(natsConf).toContain(`nats-route://${n}:6222`);
    const gwSvc = s.natsedge as Obj;
    expect((gwSvc.deploy as Obj).replicas).toBe(3);
    const env = gwSvc.environment as Record<string, string>;
    expect(env.NATSEDGE_API_KEY).toMatch(/^\$\{NATSEDGE_API_KEY:\?/);
    expect(env.NATSEDGE_SESSION_SECRET).toMatch(/^\$\{NATSEDGE_SESSION_SECRET:\?/);
    expect(gwSvc.ports, "gateways are reached through HAProxy only").toBeUndefined();
    for (const n of ["haproxy", "prometheus", "grafana", "nats-exporter-1", "nats-exporter-2", "nats-exporter-3"]) {
      expect(s[n], n).toBeDefined();
    }
  });

  it("every image is pinned to a version and every mounted file exists", () => {
    for (const [name, svc] of Object.entries(s)) {
      if (svc.build) continue;
      const image = String(svc.image);
      expect(image, `${name}: ${image}`).toMatch(/^[^:\s]+:[^:\s]+$/);
      expect(image, `${name}: ${image}`).not.toMatch(/:latest$/);
      expect(image, `${name}: ${image}`).toMatch(/:v?\d+\.\d+\.\d+/);
      for (const v of (svc.volumes as string[] | undefined) ?? []) {
        const host = v.split(":")[0] as string;
        if (!host.startsWith(".")) continue; // a named volume
        expect(existsSync(path.join(DEPLOY, "compose", host)), `${name}: ${host}`).toBe(true);
      }
    }
  });

  it("the gateway config loads with the compose environment, and the stop grace period covers the drain", () => {
    const env: Record<string, string> = { NATSEDGE_API_KEY: "compose-api-key-0123456789abcdefgh", NATSEDGE_SESSION_SECRET: "compose-session-secret-0123456789abcdef" };
    const file = path.join(DEPLOY, "compose", "natsedge.yaml");
    const gwEnv = s.natsedge?.environment as Record<string, string>;
    expect(gwEnv.NATSEDGE_CONFIG).toBe("/etc/natsedge/natsedge.yaml");
    expect(s.natsedge?.volumes).toContain("./natsedge.yaml:/etc/natsedge/natsedge.yaml:ro");
    const config = gatewayConfig(file, env);
    expect(config.nats?.streamReplicas).toBe(3);
    expect(config.nats?.servers).toEqual(["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]);
    expect(config.port).toBe(8000);
    expect(config.adminPort).toBe(9100);
    const grace = Number(/^(\d+)s$/.exec(String(s.natsedge?.stop_grace_period))?.[1]);
    expect(grace).toBeGreaterThanOrEqual(seconds(config.drainPeriod) + 2);
    // Prometheus scrapes what compose runs.
    const prom = parse(read("prometheus/prometheus.yml")) as { scrape_configs: Obj[] };
    const targets = prom.scrape_configs.flatMap((j) => ((j.static_configs as Obj[] | undefined) ?? []).flatMap((sc) => sc.targets as string[]));
    for (const t of targets) {
      const host = t.split(":")[0] as string;
      if (host !== "localhost") expect(s[host], `scrape target ${t}`).toBeDefined();
    }
    const dns = prom.scrape_configs.find((j) => j.job_name === "natsedge")?.dns_sd_configs as Obj[];
    expect(dns[0]).toMatchObject({ names: ["natsedge"], port: 9100 });
  });
});

describe("Kubernetes manifests", () => {
  const dir = path.join(DEPLOY, "k8s");
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml") || f.endsWith(".yml"));
  const byKind = new Map<string, Obj[]>();
  for (const f of files) {
    for (const d of yamlDocs(path.join(dir, f))) {
      if (typeof d.kind === "string") byKind.set(d.kind, [...(byKind.get(d.kind) ?? []), d]);
    }
  }
  const kustomization = (byKind.get("Kustomization") ?? [])[0] as Obj;

  it("every file parses; the kustomization's resources and generated files exist", () => {
    expect(kustomization).toBeDefined();
    for (const r of kustomization.resources as string[]) expect(existsSync(path.join(dir, r)), r).toBe(true);
    for (const g of kustomization.configMapGenerator as Obj[]) {
      for (const f of g.files as string[]) expect(existsSync(path.join(dir, f)), f).toBe(true);
    }
    for (const kind of ["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor", "Secret"]) {
      expect(byKind.get(kind)?.length, kind).toBeGreaterThan(0);
    }
    // The Secret is an example, never applied by the kustomization.
    expect(kustomization.resources as string[]).not.toContain("secret.example.yaml");
  });

  it("every Deployment has readiness and liveness probes, resources, non-root, preStop and a grace period covering the drain", () => {
    const deployments = byKind.get("Deployment") ?? [];
    expect(deployments.length).toBeGreaterThan(0);
    const config = gatewayConfig(path.join(dir, "natsedge.yaml"), {
      NATSEDGE_API_KEY: "k8s-api-key-0123456789abcdefghijkl",
      NATSEDGE_SESSION_SECRET: "k8s-session-secret-0123456789abcdefgh",
      NATSEDGE_AUTH_HMAC_SECRET: "k8s-hmac-secret-0123456789abcdefghij",
    });
    for (const d of deployments) {
      const name = String((d.metadata as Obj).name);
      const pod = ((d.spec as Obj).template as Obj).spec as Obj;
      expect((pod.securityContext as Obj | undefined)?.runAsNonRoot, `${name}: runAsNonRoot`).toBe(true);
      for (const c of pod.containers as Obj[]) {
        const what = `${name}/${String(c.name)}`;
        const ports = Object.fromEntries((c.ports as Obj[]).map((p) => [p.name, p.containerPort]));
        const readiness = c.readinessProbe as Obj | undefined;
        const liveness = c.livenessProbe as Obj | undefined;
        expect(readiness?.httpGet, `${what}: readinessProbe`).toMatchObject({ path: "/readyz", port: "admin" });
        expect(liveness?.httpGet, `${what}: livenessProbe`).toMatchObject({ path: "/healthz", port: "admin" });
        expect(ports.admin).toBe(config.adminPort);
        expect(ports.client).toBe(config.port);
        const res = c.resources as { requests?: Obj; limits?: Obj } | undefined;
        expect(res?.requests?.cpu, `${what}: cpu request`).toBeDefined();
        expect(res?.requests?.memory, `${what}: memory request`).toBeDefined();
        expect(res?.limits?.memory, `${what}: memory limit`).toBeDefined();
        expect((c.securityContext as Obj | undefined)?.allowPrivilegeEscalation).toBe(false);
        const preStop = ((c.lifecycle as Obj).preStop as Obj).exec as { command: string[] };
        expect(preStop.command[0]).toBe("sleep");
        const sleepS = Number(preStop.command[1]);
        expect(pod.terminationGracePeriodSeconds as number, `${what}: grace period`).toBeGreaterThanOrEqual(
          sleepS + seconds(config.drainPeriod) + 2,
        );
        const envNames = (c.env as Obj[]).map((e) => e.name);
        expect(envNames).toEqual(expect.arrayContaining(["NATSEDGE_CONFIG", "NATSEDGE_API_KEY", "NATSEDGE_SESSION_SECRET"]));
      }
    }
    expect(config.nats?.streamReplicas).toBe(3);
  });

  it("the Service, PDB, HPA and ServiceMonitor all point at the gateway pods", () => {
    const d = (byKind.get("Deployment") ?? [])[0] as Obj;
    const podLabels = (((d.spec as Obj).template as Obj).metadata as Obj).labels as Record<string, string>;
    const matches = (sel: Record<string, string>): boolean => Object.entries(sel).every(([k, v]) => podLabels[k] === v);
    const svc = (byKind.get("Service") ?? [])[0] as Obj;
    expect(matches((svc.spec as Obj).selector as Record<string, string>)).toBe(true);
    expect((svc.spec as Obj).sessionAffinity ?? "None").toBe("None");
    const pdb = (byKind.get("PodDisruptionBudget") ?? [])[0] as Obj;
    expect(matches(((pdb.spec as Obj).selector as Obj).matchLabels as Record<string, string>)).toBe(true);
    const hpa = (byKind.get("HorizontalPodAutoscaler") ?? [])[0] as Obj;
    expect(((hpa.spec as Obj).scaleTargetRef as Obj).name).toBe((d.metadata as Obj).name);
    expect((hpa.spec as Obj).minReplicas as number).toBeGreaterThanOrEqual(3);
    const sm = (byKind.get("ServiceMonitor") ?? [])[0] as Obj;
    const svcLabels = (svc.metadata as Obj).labels as Record<string, string>;
    const smSel = ((sm.spec as Obj).selector as Obj).matchLabels as Record<string, string>;
    expect(Object.entries(smSel).every(([k, v]) => svcLabels[k] === v)).toBe(true);
    const smPort = ((sm.spec as Obj).endpoints as Obj[])[0]?.port;
    expect(((svc.spec as Obj).ports as Obj[]).map((p) => p.name)).toContain(smPort);
    // The alert rules' `up{job="natsedge"}` matches the job the ServiceMonitor produces (the Service name).
    expect((svc.metadata as Obj).name).toBe("natsedge");
  });

  it("the PrometheusRule carries exactly the groups of deploy/prometheus/natsedge.rules.yml", () => {
    const pr = (byKind.get("PrometheusRule") ?? [])[0] as Obj;
    const rules = parse(read("prometheus/natsedge.rules.yml")) as Obj;
    expect((pr.spec as Obj).groups).toEqual(rules.groups);
  });

  it("the NATS Helm values ask for a 3-node JetStream cluster", () => {
    const v = parse(read("k8s/nats-values.yaml")) as { config: { cluster: Obj; jetstream: Obj } };
    expect(v.config.cluster).toMatchObject({ enabled: true, replicas: 3 });
    expect(v.config.jetstream.enabled).toBe(true);
  });
});

describe("Dockerfile", () => {
  // Instructions with their continuation lines joined; comments and parser directives dropped.
  const instructions = read("Dockerfile")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const [keyword, ...rest] = l.split(/\s+/);
      return { keyword: (keyword as string).toUpperCase(), args: rest.join(" ") };
    });
  const stages: Array<{ from: string; name?: string; body: typeof instructions }> = [];
  for (const i of instructions) {
    if (i.keyword === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args) as RegExpExecArray;
      stages.push({ from: m[1] as string, name: m[2], body: [] });
    } else {
      stages.at(-1)?.body.push(i);
    }
  }
  const final = stages.at(-1) as (typeof stages)[number];
  const args = (stage: (typeof stages)[number], keyword: string): string[] =>
    stage.body.filter((i) => i.keyword === keyword).map((i) => i.args);

  it("is multi-stage on a Debian slim Node 20 image pinned to a version", () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) {
      expect(s.from, "pinned base image").toMatch(/^node:20\.\d+(\.\d+)?-bookworm-slim(@sha256:[0-9a-f]{64})?$/);
      expect(s.from).not.toMatch(/:latest/);
    }
  });

  it("builds in one stage and runs production dependencies, dist/ and bin/ in the last", () => {
    const build = stages.find((s) => s.name === "build") as (typeof stages)[number];
    expect(build).toBeDefined();
    expect(args(build, "RUN").join("\n")).toMatch(/npm ci/);
    expect(args(build, "RUN").join("\n")).toMatch(/npm run build/);
    const run = args(final, "RUN").join("\n");
    expect(run).toMatch(/npm ci [^\n]*--omit=dev/);
    expect(run).toMatch(/npm ci [^\n]*--ignore-scripts/);
    expect(run).not.toMatch(/npm run build/);
    const copies = args(final, "COPY").join("\n");
    expect(copies).toMatch(/--from=build \S*dist \.\/dist/);
    expect(copies).toMatch(/^bin \.\/bin$/m);
  });

  it("runs as a non-root user under an init, with a health check on the admin port and both ports exposed", () => {
    const user = args(final, "USER");
    expect(user.length).toBe(1);
    expect(user[0]).not.toMatch(/^(root|0)(:|$)/);
    const hc = args(final, "HEALTHCHECK").join("\n");
    expect(hc).toMatch(/CMD/);
    expect(hc).toMatch(/http:\/\/127\.0\.0\.1:.*9100/);
    expect(hc).toMatch(/\/healthz/);
    expect(hc).not.toMatch(/curl|wget/);
    expect(args(final, "EXPOSE").join(" ").split(/\s+/)).toEqual(expect.arrayContaining(["8000", "9100"]));
    expect(args(final, "ENTRYPOINT").join("\n")).toMatch(/tini/);
    expect(args(final, "RUN").join("\n")).toMatch(/apt-get install[^\n]*\btini\b/);
  });

  it("its HEALTHCHECK command exits 0 against a running gateway's admin port and 1 without one", async () => {
    const hc = args(final, "HEALTHCHECK").join(" ");
    const cmd = JSON.parse(hc.slice(hc.indexOf("CMD") + 3).trim()) as string[];
    expect(cmd.slice(0, 2)).toEqual(["node", "-e"]);
    const entry = JSON.parse(args(final, "ENTRYPOINT")[0] as string) as string[];
    expect(entry).toEqual(["/usr/bin/tini", "--", "node", "/app/bin/natsedge.js"]);
    const g = gw as GatewayProcess;
    const probe = (port: number): number | null =>
      spawnSync(process.execPath, cmd.slice(1), { env: { ...process.env, NATSEDGE_ADMIN_PORT: String(port) }, timeout: 10_000 }).status;
    expect(probe(g.adminPort)).toBe(0);
    expect(probe(await freePort())).toBe(1);
  });

  it("has a build-context filter that lets in what the build copies", () => {
    const ignore = read("Dockerfile.dockerignore");
    for (const p of ["!package.json", "!package-lock.json", "!tsconfig.json", "!tsconfig.build.json", "!src/**", "!bin/**"]) {
      expect(ignore).toContain(p);
    }
  });
});
