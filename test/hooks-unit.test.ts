/**
 * The hooks core in-process: what a backend may answer (answers.ts), and the Hooks call policy
 * (in-flight cap, fail closed or open, size cap, redirects, the long-poll grant memory) against
 * a real node:http backend on 127.0.0.1. Time is faked only where expiry is the subject.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { ResolvedChannel } from "../src/channels.js";
import type { HooksConfig, HookSpec, NamespaceOptions } from "../src/config/types.js";
import { loadConfig } from "../src/config/load.js";
import { connectGrant, parseAnswer } from "../src/hooks/answers.js";
import { HookFailure } from "../src/hooks/caller.js";
import { Hooks } from "../src/hooks/hooks.js";
import { Metrics } from "../src/metrics.js";
import { ProtocolError } from "../src/protocol/codes.js";

const log = pino({ level: "silent" });
const answer = (v: unknown): Buffer => Buffer.from(typeof v === "string" ? v : JSON.stringify(v));

function failure(f: () => unknown): HookFailure {
  try {
    f();
  } catch (err) {
    if (err instanceof HookFailure) return err;
    throw err;
  }
  throw new Error("did not fail");
}

describe("answers", () => {
  it("refuses anything but exactly one of result and error", () => {
    for (const bad of ["", "null", "[]", "42", "<html>", "{}", '{"result":1}', '{"result":{},"error":{"code":403,"message":"x"}}', '{"ok":{}}']) {
      expect(failure(() => parseAnswer(answer(bad))).reason, bad).toBe("invalid");
    }
    const deep = "[".repeat(200) + "]".repeat(200);
    expect(failure(() => parseAnswer(answer(`{"result":{"d":${deep}}}`))).reason).toBe("invalid");
  });

  it("passes a refusal with a listed code through, and nothing else", () => {
    const err = (() => {
      try {
        parseAnswer(answer({ error: { code: 429, message: "slow down", retryAfter: 7 } }));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).toJSON()).toEqual({ code: 429, message: "slow down", retryAfter: 7 });
    for (const e of [{ code: 500, message: "x" }, { code: 200, message: "x" }, { code: 403 }, { code: 403, message: "x".repeat(257) }, { code: 403, message: "x", retryAfter: 0 }]) {
      expect(failure(() => parseAnswer(answer({ error: e }))).reason, JSON.stringify(e)).toBe("invalid");
    }
  });

  it("checks connect grants field by field", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      vi.setSystemTime(1_700_000_000_000);
      expect(connectGrant({ user: "a", exp: 1_700_000_060, info: { x: 1 }, channels: ["a.b"] })).toEqual({ user: "a", exp: 1_700_000_060, info: { x: 1 }, channels: ["a.b"] });
      for (const bad of [{}, { user: "" }, { user: 5 }, { user: "x".repeat(257) }, { user: "a", exp: 1_699_999_999 }, { user: "a", exp: 1.5 }, { user: "a", channels: "a.b" }, { user: "a", channels: [1] }]) {
        expect(failure(() => connectGrant(bad)).reason, JSON.stringify(bad)).toBe("invalid");
      }
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("hook settings", () => {
  const load = (yaml: Record<string, string>): unknown => {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(yaml)) env[`NATSEDGE_${k}`] = v;
    const out = loadConfig([], env);
    return "config" in out ? out.config.hooks : out;
  };

  it("takes a target alone or a mapping, and refuses what cannot work", () => {
    expect(load({ HOOKS_RPC: "https://api.internal/rpc", HOOKS_HEADERS: "X-Tenant, User-Agent" })).toMatchObject({
      rpc: { target: "https://api.internal/rpc", failOpen: false },
      headers: ["x-tenant", "user-agent"],
    });
    expect(load({ HOOKS_CONNECT: '{"target":"http://127.0.0.1:9/c","timeout":"250ms","failOpen":true}' })).toMatchObject({
      connect: { target: "http://127.0.0.1:9/c", timeout: 250, failOpen: true },
    });
    expect(() => load({ HOOKS_CONNECT: "nats" })).toThrow(/needs nats.servers/);
    expect(() => load({ HOOKS_RPC: '{"target":"nats","failOpen":true}', NATS_SERVERS: "127.0.0.1:4222" })).toThrow(/no open answer/);
    expect(() => load({ HOOKS_RPC: "https://user:pw@api.internal/rpc" })).toThrow(/credentials/);
    expect(() => load({ HOOKS_RPC: "ftp://api.internal/rpc" })).toThrow(/http/);
    expect(() => load({ NAMESPACES: '{"chat":{"subscribeHook":"nats"}}' })).toThrow(/namespaces.chat.subscribeHook/);
  });
});

describe("Hooks against an HTTP backend", () => {
  let server: Server;
  let base: string;
  const held: ServerResponse[] = [];
  let calls = 0;
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => void> = {
    "/allow": (_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ result: { info: { n: ++calls } } })),
    "/hold": (_req, res) => void held.push(res),
    "/huge": (_req, res) => res.writeHead(200).end(JSON.stringify({ result: { info: "x".repeat(4096) } })),
    "/redirect": (_req, res) => res.writeHead(302, { location: "/allow" }).end(),
    "/500": (_req, res) => res.writeHead(500).end("{}"),
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on("end", () => (routes[req.url ?? ""] ?? routes["/500"])?.(req, res));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(() => {
    for (const res of held.splice(0)) res.destroy();
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const config = (over: Partial<HooksConfig> = {}): HooksConfig => ({ timeout: 2_000, maxInFlight: 100, maxResponseSize: 1024, headers: [], cookies: [], ...over });
  const channel = (path: string, spec: Partial<HookSpec> = {}): ResolvedChannel => {
    const options: NamespaceOptions = { presence: false, joinLeave: false, clientPublish: true, anonymous: true, personal: false };
    options.subscribeHook = { target: base + path, failOpen: false, ...spec };
    return { ch: "ns.room", namespace: "ns", options };
  };
  const who = { client: "c1", user: "u1" };
  const ws = { transport: "websocket" } as const;

  async function refusal(p: Promise<unknown>): Promise<Record<string, unknown>> {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ProtocolError);
    return (err as ProtocolError).toJSON();
  }

  it("refuses past maxInFlight without calling, and counts it as busy", async () => {
    const metrics = new Metrics();
    const hooks = new Hooks(config({ maxInFlight: 2 }), undefined, metrics, log);
    const pending = [hooks.subscribe(who, channel("/hold"), ws), hooks.subscribe(who, channel("/hold"), ws)];
    await vi.waitFor(() => expect(held.length).toBe(2));
    expect(await refusal(hooks.subscribe(who, channel("/hold"), ws))).toEqual({ code: 503, message: "subscribe hook has too many calls in flight; retry", retryAfter: 1 });
    const callsBefore = calls;
    expect(await hooks.subscribe(who, channel("/allow", { failOpen: true }), ws)).toBeUndefined();
    expect(calls).toBe(callsBefore);
    expect(held.length).toBe(2);
    for (const res of held.splice(0)) res.writeHead(200).end('{"result":{}}');
    await Promise.all(pending);
    const text = await metrics.registry.getSingleMetricAsString("natsedge_hook_calls_total");
    expect(text).toContain('natsedge_hook_calls_total{kind="subscribe",result="busy"} 2');
    expect(text).toContain('natsedge_hook_calls_total{kind="subscribe",result="ok"} 2');
  });

  it("fails closed on a timeout, a large answer, a redirect and a 500; open where so configured", async () => {
    const hooks = new Hooks(config(), undefined, new Metrics(), log);
    expect((await refusal(hooks.subscribe(who, channel("/hold", { timeout: 50 }), ws))).message).toBe("subscribe hook did not answer in time; retry");
    expect((await refusal(hooks.subscribe(who, channel("/huge"), ws))).message).toBe("subscribe hook answered with something other than a valid answer; retry");
    expect((await refusal(hooks.subscribe(who, channel("/redirect"), ws))).message).toBe("subscribe hook is unavailable; retry");
    expect((await refusal(hooks.subscribe(who, channel("/500"), ws))).message).toBe("subscribe hook is unavailable; retry");
    expect(await hooks.subscribe(who, channel("/huge", { failOpen: true }), ws)).toBeUndefined();
  });

  it("logs a failing hook once per second per reason, counting the calls not logged", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const recording = pino({ level: "warn" }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const hooks = new Hooks(config(), undefined, new Metrics(), recording);
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      for (let i = 0; i < 5; i++) await hooks.subscribe(who, channel("/500"), ws).catch(() => undefined);
      expect(lines.map((l) => [l.msg, l.reason, l.unlogged])).toEqual([["hook call failed", "unavailable", 0]]);
      vi.setSystemTime(Date.now() + 1_001);
      await hooks.subscribe(who, channel("/500"), ws).catch(() => undefined);
      expect(lines.map((l) => l.unlogged)).toEqual([0, 4]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("remembers a long-poll client's allowed channel for a minute, and nothing for WebSocket", async () => {
    const hooks = new Hooks(config(), undefined, new Metrics(), log);
    const before = calls;
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const lp = { transport: "longpoll" } as const;
      const first = await hooks.subscribe(who, channel("/allow"), lp);
      expect(await hooks.subscribe(who, channel("/allow"), lp)).toEqual(first);
      expect(calls).toBe(before + 1);
      await hooks.subscribe(who, channel("/allow"), ws);
      expect(calls).toBe(before + 2);
      vi.setSystemTime(Date.now() + 61_000);
      await hooks.subscribe(who, channel("/allow"), lp);
      expect(calls).toBe(before + 3);
    } finally {
      vi.useRealTimers();
    }
  });
});
