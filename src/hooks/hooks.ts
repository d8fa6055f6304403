import type { NatsConnection } from "nats";
import type { ResolvedChannel } from "../channels.js";
import type { HookSpec, HooksConfig } from "../config/types.js";
import type { Identity } from "../delivery/identity.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Subjects } from "../nats/subjects.js";
import { formatTraceparent, type SpanContext } from "../tracing/context.js";
import { SpanKind, type Tracer } from "../tracing/tracer.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { dataProblem } from "../protocol/payload.js";
import {
  connectGrant,
  dataOf,
  parseAnswer,
  refreshGrant,
  subscribeGrant,
  type ConnectGrant,
  type RefreshGrant,
  type SubscribeGrant,
} from "./answers.js";
import { HookFailure, type HookCaller } from "./caller.js";
import { HttpHookCaller } from "./http.js";
import { NatsHookCaller } from "./nats.js";
import type { ClientRequest } from "./request.js";

export type HookKind = "connect" | "refresh" | "subscribe" | "publish" | "rpc";

/** Seconds a refused client is told to wait when a hook could not be asked or did not answer. */
const RETRY_AFTER_S = 1;
/**
 * A long-poll client asks for its channels again with every poll: an allowed subscription is
 * remembered this long per client and channel (per replica), so the backend is asked about once
 * a minute instead of once per poll.
 */
const LONG_POLL_GRANT_MS = 60_000;
const MAX_LONG_POLL_GRANTS = 10_000;
const MAX_METHOD = 128;
/**
 * While a backend is down every client's call fails: one log line per hook kind and reason per
 * interval, saying how many were not logged, instead of one per call.
 */
const LOG_INTERVAL_MS = 1_000;

const FAILURE_TEXT = {
  timeout: "did not answer in time",
  unavailable: "is unavailable",
  invalid: "answered with something other than a valid answer",
  busy: "has too many calls in flight",
} as const;

/**
 * Lets a backend decide: connect, refresh, subscribe, publish and rpc are asked over NATS or
 * HTTP (docs/backend.md). Every call is bounded in time, in size and in number: past
 * `hooks.maxInFlight` calls on this process, or when the backend does not answer validly, the
 * client gets 503 with retryAfter, unless the hook is `failOpen` (then it is as if there were
 * no hook). Refusals the backend makes reach the client with the backend's code and message.
 */
export class Hooks {
  private inFlight = 0;
  private readonly callers = new Map<string, HookCaller>();
  private readonly grants = new Map<string, { until: number; grant: SubscribeGrant }>();
  private readonly logged = new Map<string, { at: number; unlogged: number }>();

  constructor(
    private readonly config: HooksConfig,
    private readonly nats: { nc: NatsConnection; subjects: Subjects } | undefined,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly tracer?: Tracer,
  ) {}

  /** Whether clients without a JWT are authenticated by the backend. */
  get authenticates(): boolean {
    return this.config.connect !== undefined;
  }

  get refreshes(): boolean {
    return this.config.refresh !== undefined;
  }

  /** The backend's grant, or undefined when there is no connect hook or it failed open. */
  async connect(client: string, request: ClientRequest, data: unknown, trace?: SpanContext): Promise<ConnectGrant | undefined> {
    const spec = this.config.connect;
    if (!spec) return undefined;
    checkData(data);
    return this.ask("connect", spec, request, { client, ...forwarded(request), data }, connectGrant, trace);
  }

  async refresh(identity: Identity, request: ClientRequest): Promise<RefreshGrant> {
    const spec = this.config.refresh;
    if (!spec) throw new ProtocolError(ErrorCode.BadRequest, "token is required (no refresh hook is configured)");
    const grant = await this.ask("refresh", spec, request, { ...who(identity), ...forwarded(request) }, refreshGrant);
    // A refresh hook cannot fail open (the config refuses it), so a grant is always there.
    if (!grant) throw new ProtocolError(ErrorCode.Unavailable, "refresh hook failed; retry", RETRY_AFTER_S);
    return grant;
  }

  /** Throws the backend's refusal; resolves with channel info, or undefined without a hook (or failing open). */
  async subscribe(identity: Identity, r: ResolvedChannel, request: ClientRequest, data?: unknown, trace?: SpanContext): Promise<SubscribeGrant | undefined> {
    const spec = r.options.subscribeHook;
    if (!spec) return undefined;
    const key = request.transport === "longpoll" ? `${identity.client}\u0000${r.ch}` : undefined;
    const known = key === undefined ? undefined : this.grants.get(key);
    if (known && known.until > Date.now()) return known.grant;
    checkData(data);
    const grant = await this.ask("subscribe", spec, request, { ...who(identity), ch: r.ch, ...forwarded(request), data }, subscribeGrant, trace);
    if (key !== undefined && grant) this.remember(key, grant);
    return grant;
  }

  /** The data to publish: the client's, or what the backend replaced it with. */
  async publish(identity: Identity, r: ResolvedChannel, request: ClientRequest, data: unknown, trace?: SpanContext): Promise<unknown> {
    const spec = r.options.publishHook;
    if (!spec) return data;
    checkData(data);
    const answer = await this.ask("publish", spec, request, { ...who(identity), ch: r.ch, ...forwarded(request), data }, dataOf, trace);
    return answer && "data" in answer ? answer.data : data;
  }

  async rpc(identity: Identity, request: ClientRequest, method: unknown, data: unknown, trace?: SpanContext): Promise<unknown> {
    const spec = this.config.rpc;
    if (!spec) throw new ProtocolError(ErrorCode.NotFound, "rpc is not available (no rpc hook is configured)");
    if (typeof method !== "string" || method.length === 0 || method.length > MAX_METHOD) {
      throw new ProtocolError(ErrorCode.BadRequest, `method must be a non-empty string of at most ${MAX_METHOD} characters`);
    }
    checkData(data);
    const answer = await this.ask("rpc", spec, request, { ...who(identity), method, ...forwarded(request), data }, dataOf, trace);
    return answer?.data ?? null;
  }

  private async ask<T>(
    kind: HookKind,
    spec: HookSpec,
    request: ClientRequest,
    body: Record<string, unknown>,
    read: (result: Record<string, unknown>) => T,
    trace?: SpanContext,
  ): Promise<T | undefined> {
    const span = this.tracer?.start(`hook.${kind}`, SpanKind.client, trace, { "natsedge.hook.via": spec.target === "nats" ? "nats" : "http" });
    const started = performance.now();
    let result = "ok";
    try {
      if (this.inFlight >= this.config.maxInFlight) throw new HookFailure("busy", `${this.inFlight} calls in flight`);
      this.inFlight++;
      try {
        const timeout = spec.timeout ?? this.config.timeout;
        const bytes = await this.callerFor(spec).call(
          kind,
          Buffer.from(JSON.stringify(body), "utf8"),
          timeout,
          this.config.maxResponseSize,
          span && formatTraceparent(span.context),
        );
        return read(parseAnswer(bytes));
      } finally {
        this.inFlight--;
      }
    } catch (err) {
      if (err instanceof ProtocolError) {
        result = "denied";
        throw err;
      }
      const failure = err instanceof HookFailure ? err : new HookFailure("unavailable", (err as Error).message);
      result = failure.reason;
      this.logFailure(kind, spec, failure);
      if (spec.failOpen) return undefined;
      throw new ProtocolError(ErrorCode.Unavailable, `${kind} hook ${FAILURE_TEXT[failure.reason]}; retry`, RETRY_AFTER_S);
    } finally {
      if (span) {
        span.set("natsedge.hook.result", result);
        if (result !== "ok") span.fail(new Error(`hook ${result}`));
        span.end();
      }
      this.metrics.hookCalls.inc({ kind, result });
      this.metrics.hookDuration.observe({ kind, transport: request.transport }, (performance.now() - started) / 1000);
    }
  }

  private logFailure(kind: HookKind, spec: HookSpec, failure: HookFailure): void {
    const key = `${kind} ${failure.reason}`;
    const now = Date.now();
    const last = this.logged.get(key);
    if (last && now - last.at < LOG_INTERVAL_MS) {
      last.unlogged++;
      return;
    }
    const unlogged = last?.unlogged ?? 0;
    this.logged.set(key, { at: now, unlogged: 0 });
    const fields = { hook: kind, target: spec.target, reason: failure.reason, err: failure.message, failOpen: spec.failOpen, unlogged };
    this.log.warn(fields, "hook call failed");
  }

  private callerFor(spec: HookSpec): HookCaller {
    let caller = this.callers.get(spec.target);
    if (!caller) {
      if (spec.target === "nats") {
        if (!this.nats) throw new Error("natsedge bug: a NATS hook without a NATS connection (the config checks this)");
        caller = new NatsHookCaller(this.nats.nc, this.nats.subjects);
      } else {
        caller = new HttpHookCaller(spec.target, this.config.httpSecret);
      }
      this.callers.set(spec.target, caller);
    }
    return caller;
  }

  private remember(key: string, grant: SubscribeGrant): void {
    this.grants.delete(key);
    if (this.grants.size >= MAX_LONG_POLL_GRANTS) {
      const oldest = this.grants.keys().next().value;
      if (oldest !== undefined) this.grants.delete(oldest);
    }
    this.grants.set(key, { until: Date.now() + LONG_POLL_GRANT_MS, grant });
  }
}

/** The client as a hook sees it. */
function who(identity: Identity): Record<string, unknown> {
  const out: Record<string, unknown> = { client: identity.client, user: identity.user };
  if (identity.claims?.info !== undefined) out.info = identity.claims.info;
  return out;
}

function forwarded(request: ClientRequest): Record<string, unknown> {
  const out: Record<string, unknown> = { transport: request.transport };
  if (request.headers) out.headers = request.headers;
  if (request.cookies) out.cookies = request.cookies;
  return out;
}

/** Client data goes to the backend as JSON: refused up front when JSON cannot carry it. */
function checkData(data: unknown): void {
  const problem = data === undefined ? undefined : dataProblem(data);
  if (problem) throw new ProtocolError(ErrorCode.BadRequest, problem);
}
