import type { ServerOperations } from "../api/operations.js";
import { resolveChannel } from "../channels.js";
import { redacted } from "../config/redact.js";
import type { Config } from "../config/types.js";
import { OriginPolicy } from "../http/origin.js";
import { headTooLarge, refuseHead } from "../http/request-head.js";
import { BodyTimeout, BodyTooLarge, readBody, Reply } from "../http/respond.js";
import type { Hub } from "../hub/hub.js";
import { ClientAddress } from "../limits/client-address.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { HttpRequest, HttpResponse, TemplatedApp } from "../uws.js";
import { ConsoleAssets } from "./assets.js";
import { AdminAuth, type AdminLogin } from "./auth.js";
import { MAX_USER_LENGTH, type ClusterStats } from "./cluster-stats.js";
import { ChannelTails, shown } from "./tail.js";

/** Publications of a channel's history the console shows, newest first. */
export const HISTORY_SHOWN = 50;
/** A login form is small; anything larger is not one. */
const LOGIN_BODY_LIMIT = 1024;

/** What the console reads once the gateway has started (the admin port opens before). */
export interface ConsoleParts {
  hub: Hub;
  ops: ServerOperations;
  cluster: ClusterStats;
}

interface ApiRequest {
  parts: ConsoleParts;
  tails: ChannelTails;
  query: URLSearchParams;
  body: Record<string, unknown>;
  login: AdminLogin;
  ip: string;
  /** A Set-Cookie header to send with the answer. */
  setCookie?: string;
}

type Handler = (r: ApiRequest) => Promise<unknown>;

/**
 * The admin web console at /admin on the admin listener, present only with `adminSecret`: the
 * page and its JSON endpoints. Every endpoint needs the login cookie; every POST also needs the
 * login's CSRF token in X-CSRF-Token and, from a browser, this origin. See docs/admin.md.
 */
export class AdminConsole {
  private readonly auth: AdminAuth;
  private readonly assets = new ConsoleAssets();
  private readonly addresses: ClientAddress;
  private readonly sameOrigin = new OriginPolicy(undefined, false);
  private parts: { parts: ConsoleParts; tails: ChannelTails } | undefined;

  constructor(
    private readonly config: Config,
    secret: string,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {
    this.auth = new AdminAuth(secret, config.adminTls);
    this.addresses = new ClientAddress(config.trustedProxies);
  }

  /** Called once the hub runs; until then the endpoints answer 503. */
  ready(parts: ConsoleParts): void {
    this.parts = { parts, tails: new ChannelTails(parts.hub) };
  }

  close(): void {
    this.parts?.tails.closeAll();
  }

  attach(app: TemplatedApp): void {
    for (const path of ["/admin", "/admin/"]) app.get(path, (res) => this.assets.serve(new Reply(res), "index.html"));
    app.get("/admin/app.js", (res) => this.assets.serve(new Reply(res), "app.js"));
    app.get("/admin/style.css", (res) => this.assets.serve(new Reply(res), "style.css"));
    app.post("/admin/login", (res, req) => this.login(res, req));
    app.post("/admin/logout", this.api(true, async (r) => {
      r.setCookie = this.auth.logout();
      return {};
    }));
    app.get("/admin/api/session", this.api(false, async (r) => ({ csrf: r.login.csrf })));
    app.get("/admin/api/stats", this.api(false, async (r) => ({ at: Date.now(), nodes: await r.parts.cluster.stats() })));
    app.get("/admin/api/channels", this.api(false, (r) => this.channels(r)));
    app.get("/admin/api/channel", this.api(false, (r) => this.channel(r)));
    app.get("/admin/api/tail", this.api(false, (r) => this.tail(r)));
    app.get("/admin/api/user", this.api(false, async (r) => ({ nodes: await r.parts.cluster.sessions(userParam(r.query.get("user"))) })));
    app.get("/admin/api/config", this.api(false, async () => redacted(this.config)));
    app.post("/admin/api/publish", this.api(true, (r) => this.publish(r)));
    app.post("/admin/api/disconnect", this.api(true, (r) => this.disconnect(r)));
    app.any("/admin/*", (res) => new Reply(res).error(404, "not found"));
  }

  private login(res: HttpResponse, req: HttpRequest): void {
    const reply = new Reply(res);
    if (headTooLarge(req)) return refuseHead(reply, this.metrics);
    const ip = this.addresses.of(res, req);
    if (!this.sameOrigin.allows(req.getHeader("origin"), req.getHeader("host"))) return reply.error(403, "origin not allowed");
    // Wrong secrets are counted per address and, past the budget, not even checked.
    if (this.auth.refused(ip) !== undefined) return this.loginRefused(reply, ip);
    readBody(reply, LOGIN_BODY_LIMIT, this.config.bodyTimeout, this.metrics).then(
      (body) => {
        const secret = new URLSearchParams(body.toString("utf8")).get("secret") ?? "";
        const result = this.auth.check(secret, ip);
        if (result === "refused") return this.loginRefused(reply, ip);
        if (result === "wrong") {
          this.log.warn({ ip }, "admin console login refused");
          return reply.error(401, "wrong admin secret");
        }
        this.log.info({ ip }, "admin console login");
        reply.send(204, "", "text/plain", { "Set-Cookie": this.auth.login() });
      },
      (err: unknown) => this.fail(reply, err),
    );
  }

  private loginRefused(reply: Reply, ip: string): void {
    this.metrics.rateLimited.inc({ kind: "admin_login" });
    const wait = this.auth.refused(ip) ?? 1;
    reply.error(429, "too many wrong admin secrets; retry later", { "Retry-After": String(wait) });
  }

  private api(post: boolean, handler: Handler) {
    return (res: HttpResponse, req: HttpRequest): void => {
      const reply = new Reply(res);
      if (headTooLarge(req)) return refuseHead(reply, this.metrics);
      const login = this.auth.verify(req.getHeader("cookie"));
      if (!login) return reply.error(401, "log in first");
      if (post) {
        if (!this.sameOrigin.allows(req.getHeader("origin"), req.getHeader("host"))) return reply.error(403, "origin not allowed");
        if (!this.auth.csrfMatches(login, req.getHeader("x-csrf-token"))) return reply.error(403, "missing or wrong X-CSRF-Token");
      }
      if (!this.parts) return reply.error(503, "the gateway is still starting");
      const r = { ...this.parts, login, query: new URLSearchParams(req.getQuery() ?? ""), body: {}, ip: this.addresses.of(res, req) };
      void this.run(reply, post, r, handler);
    };
  }

  private async run(reply: Reply, post: boolean, r: ApiRequest, handler: Handler): Promise<void> {
    try {
      if (post) r.body = jsonObject(await readBody(reply, this.config.maxFrameSize, this.config.bodyTimeout, this.metrics));
      const result = await handler(r);
      reply.send(200, JSON.stringify(result), "application/json", r.setCookie ? { "Set-Cookie": r.setCookie } : {});
    } catch (err) {
      this.fail(reply, err);
    }
  }

  private fail(reply: Reply, err: unknown): void {
    if (err instanceof BodyTooLarge) return reply.error(413, err.message);
    if (err instanceof BodyTimeout) return reply.error(408, err.message);
    if (err instanceof ProtocolError) return reply.error(err.code, err.message);
    this.log.error({ err }, "admin console request failed");
    reply.error(500, "internal error");
  }

  /** Every gateway's channels merged: subscribers summed, deliveries the highest any node saw. */
  private async channels(r: ApiRequest): Promise<unknown> {
    const merged = new Map<string, { ch: string; subscribers: number; delivered: number; nodes: number }>();
    let truncated = false;
    for (const node of await r.parts.cluster.channels()) {
      truncated ||= node.truncated;
      for (const c of node.channels) {
        const m = merged.get(c.ch);
        if (!m) merged.set(c.ch, { ch: c.ch, subscribers: c.subscribers, delivered: c.delivered, nodes: 1 });
        else {
          m.subscribers += c.subscribers;
          m.delivered = Math.max(m.delivered, c.delivered);
          m.nodes++;
        }
      }
    }
    return { at: Date.now(), channels: [...merged.values()], truncated };
  }

  private async channel(r: ApiRequest): Promise<unknown> {
    const { ch, namespace, options } = resolveChannel(this.config.namespaces, r.query.get("ch") ?? undefined);
    const hub = r.parts.hub;
    const [presence, history] = await Promise.all([
      options.presence ? hub.presenceOf(ch) : undefined,
      options.history ? hub.readHistory(ch, options.history, { limit: HISTORY_SHOWN, reverse: true }) : undefined,
    ]);
    return {
      ch,
      namespace,
      presence: presence ?? null,
      history: history ? { position: history.position, pubs: history.pubs.map((p, i) => shown(p, i)) } : null,
    };
  }

  private async tail(r: ApiRequest): Promise<unknown> {
    const channel = resolveChannel(this.config.namespaces, r.query.get("ch") ?? undefined);
    const after = Number(r.query.get("after") ?? 0);
    return r.tails.read(channel, Number.isSafeInteger(after) ? after : 0);
  }

  private async publish(r: ApiRequest): Promise<unknown> {
    const result = await r.parts.ops.run("publish", { channel: r.body.channel, data: r.body.data });
    this.log.info({ ip: r.ip, ch: r.body.channel }, "admin console published");
    return result;
  }

  private async disconnect(r: ApiRequest): Promise<unknown> {
    const user = userParam(r.body.user);
    await r.parts.ops.run("disconnect", { user });
    this.log.info({ ip: r.ip, user }, "admin console disconnected a user");
    return {};
  }
}

function userParam(value: unknown): string {
  if (typeof value !== "string" || value.length > MAX_USER_LENGTH) {
    throw new ProtocolError(ErrorCode.BadRequest, `user must be a string of at most ${MAX_USER_LENGTH} characters`);
  }
  return value;
}

function jsonObject(bytes: Buffer): Record<string, unknown> {
  if (bytes.byteLength === 0) return {};
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch {
    value = undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(ErrorCode.BadRequest, "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}
