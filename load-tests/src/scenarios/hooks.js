/**
 * hooks: what backend hooks add to connect, subscribe and publish, over NATS request/reply and
 * over HTTP, against the same commands with no hook. One natsedge replica; one WebSocket command
 * at a time from the generator core (connect on a fresh connection each time, subscribe +
 * unsubscribe and publish on one connection). The backend answers at once (a NATS responder in
 * a queue group, a node:http server with keep-alive), so the difference to "none" is the
 * gateway's hook path plus the hook transport's round trip.
 */
import http from "node:http";
import { connect } from "nats";
import { Histogram } from "../histogram.js";
import { CpuWindow } from "../procs.js";
import { withSystem } from "../run.js";
import { WsConn } from "../ws.js";

export const defaults = { ops: 500, maxSeconds: 20 };

const NS = "hk";
const readBuffer = Buffer.allocUnsafe(64 * 1024);

/** The answer a hook of each kind gives: allow, and for connect a user. */
function answer(kind, n) {
  return JSON.stringify({ result: kind === "connect" ? { user: `u${n}` } : {} });
}

/** A WebSocket client whose commands resolve with their reply frame. */
function open(port) {
  return new Promise((resolve, reject) => {
    const pending = new Map();
    let id = 0;
    const conn = new WsConn({
      host: "127.0.0.1",
      port,
      path: "/ws",
      readBuffer,
      handler: {
        open: () =>
          resolve({
            request(frame) {
              const i = ++id;
              return new Promise((res) => {
                pending.set(i, { res, t0: process.hrtime.bigint() });
                conn.send(JSON.stringify({ id: i, ...frame }));
              });
            },
            close: () => conn.close(),
          }),
        message(_c, buf, start, end) {
          for (const line of buf.toString("utf8", start, end).split("\n")) {
            const f = JSON.parse(line);
            const p = pending.get(f.id);
            if (!p) continue;
            pending.delete(f.id);
            p.res({ frame: f, us: Number(process.hrtime.bigint() - p.t0) / 1000 });
          }
        },
        close: (_c, reason) => reject(new Error(`connection closed: ${reason}`)),
      },
    });
  });
}

/** Runs `op` up to `ops` times or for `maxSeconds`; a reply without `ok` fails the run. */
async function measure(o, op) {
  const hist = new Histogram();
  const deadline = performance.now() + o.maxSeconds * 1000;
  let n = 0;
  while (n < o.ops && performance.now() < deadline) {
    const { frame, us } = await op(n);
    if (!frame.ok) throw new Error(`no ok: ${JSON.stringify(frame)}`);
    hist.record(us);
    n++;
  }
  return { ops: n, latencyMs: hist.summaryMs() };
}

export async function run(ctx, systems) {
  const o = { ...defaults, ...ctx.opts };
  const results = { scenario: "hooks", params: { ops: o.ops, maxSeconds: o.maxSeconds }, systems: {} };
  if (!systems.includes("natsedge")) return results;
  const calls = { nats: 0, http: 0 };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      calls.http++;
      res.writeHead(200, { "content-type": "application/json" }).end(answer(req.url.slice(1), calls.http));
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  // One client sends thousands of commands a second here: the per-client command budget is off.
  const base = { commandRate: 0 };
  const variants = {
    none: { namespaces: { [NS]: { anonymous: true, clientPublish: true } } },
    nats: { hooks: { connect: "nats" }, namespaces: { [NS]: { clientPublish: true, subscribeHook: "nats", publishHook: "nats" } } },
    http: {
      hooks: { connect: `${url}/connect` },
      namespaces: { [NS]: { clientPublish: true, subscribeHook: `${url}/subscribe`, publishHook: `${url}/publish` } },
    },
  };
  try {
    for (const [variant, gatewayConfig] of Object.entries(variants)) {
      results.systems[`natsedge, hooks: ${variant}`] = await withSystem(
        ctx,
        "natsedge",
        async (sys) => {
          const nc = await connect({ servers: sys.nats.url });
          try {
            nc.subscribe("natsedge.hook.*", {
              queue: "bench-backend",
              callback: (_err, m) => {
                calls.nats++;
                m.respond(Buffer.from(answer(m.subject.slice("natsedge.hook.".length), calls.nats)));
              },
            });
            await nc.flush();
            const port = sys.endpoints[0].port;
            const cpu = new CpuWindow({ sut: sys.pids(), generator: [process.pid], ...sys.pidsByRole() });
            cpu.start();
            const before = { ...calls };
            const connectCase = await measure(o, async () => {
              const c = await open(port);
              try {
                return await c.request({ op: "connect" });
              } finally {
                c.close();
              }
            });
            const c = await open(port);
            let subscribeCase;
            let publishCase;
            try {
              await c.request({ op: "connect" });
              subscribeCase = await measure(o, async (n) => {
                const r = await c.request({ op: "subscribe", ch: `${NS}.s${n}` });
                await c.request({ op: "unsubscribe", ch: `${NS}.s${n}` });
                return r;
              });
              publishCase = await measure(o, (n) => c.request({ op: "publish", ch: `${NS}.p`, data: { n } }));
            } finally {
              c.close();
            }
            const load = cpu.stop();
            const out = {
              variant,
              connect: connectCase,
              subscribe: subscribeCase,
              publish: publishCase,
              hookCalls: variant === "none" ? 0 : calls[variant] - before[variant],
              cpu: { gatewayPctOfCore: load.groups.gateway?.pctOfCore, otherLoadPctOfCore: load.otherLoadPctOfCore },
            };
            const show = (k) => `${k} p50 ${out[k].latencyMs.p50} p99 ${out[k].latencyMs.p99} ms`;
            ctx.log(`[hooks: ${variant}] ${show("connect")}, ${show("subscribe")}, ${show("publish")}, ${out.hookCalls} hook calls`);
            return out;
          } finally {
            await nc.close();
          }
        },
        { gatewayConfig: { ...base, ...gatewayConfig }, replicas: 1 },
      );
    }
  } finally {
    server.close();
  }
  return results;
}
