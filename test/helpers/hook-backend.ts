import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { connect, type NatsConnection, type Subscription } from "nats";
import { Signal } from "./signal.js";

/** One hook call as the backend received it. */
export interface HookCall {
  kind: string;
  via: "nats" | "http";
  body: Record<string, unknown>;
}

/** What the backend does with a call: an answer to send as JSON, raw bytes, or an answer after a delay. */
export type Behaviour = { answer: unknown; delayMs?: number } | { raw: string };

/**
 * A real backend for hook tests: answers `<prefix>.hook.<kind>` over NATS (queue group, like a
 * production backend) and POST /hook/<kind> over HTTP on 127.0.0.1, with the same decisions
 * (`decide`), and records every call.
 */
export class HookBackend {
  readonly calls: HookCall[] = [];
  private readonly signal = new Signal();
  private constructor(
    private readonly nc: NatsConnection,
    private readonly sub: Subscription,
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(natsUrl: string, prefix: string, decide: (kind: string, body: Record<string, unknown>) => Behaviour): Promise<HookBackend> {
    const nc = await connect({ servers: natsUrl });
    const server = createServer((req, res) => {
      const kind = (req.url ?? "").replace(/^\/hook\//, "");
      void readJson(req).then(async (body) => {
        const b = await backend.handle(kind, "http", body, decide);
        res.writeHead(200, { "content-type": "application/json" }).end(b);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    const sub = nc.subscribe(`${prefix}.hook.*`, {
      queue: "backends",
      callback: (err, msg) => {
        if (err) return;
        const kind = msg.subject.slice(prefix.length + ".hook.".length);
        const body = JSON.parse(Buffer.from(msg.data).toString("utf8")) as Record<string, unknown>;
        void backend.handle(kind, "nats", body, decide).then((b) => msg.respond(b));
      },
    });
    await nc.flush();
    const backend: HookBackend = new HookBackend(nc, sub, server, url);
    return backend;
  }

  private async handle(kind: string, via: "nats" | "http", body: Record<string, unknown>, decide: (kind: string, body: Record<string, unknown>) => Behaviour): Promise<Buffer> {
    this.calls.push({ kind, via, body });
    this.signal.wake();
    const b = decide(kind, body);
    if ("raw" in b) return Buffer.from(b.raw);
    if (b.delayMs) await new Promise((r) => setTimeout(r, b.delayMs));
    return Buffer.from(JSON.stringify(b.answer));
  }

  /** Waits for a call matching `pred`. */
  waitForCall(pred: (c: HookCall) => boolean, what: string, timeoutMs = 10_000): Promise<HookCall> {
    return this.signal.until(() => this.calls.find(pred), what, timeoutMs, () => `calls: ${JSON.stringify(this.calls).slice(0, 2000)}`);
  }

  async stop(): Promise<void> {
    this.sub.unsubscribe();
    await this.nc.close();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(parts).toString("utf8")) as Record<string, unknown>;
}
