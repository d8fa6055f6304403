import { RequestStrategy, type Msg, type NatsConnection, type Subscription } from "nats";
import type { Logger } from "../log.js";
import type { Subjects } from "../nats/subjects.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { NodeChannels, NodeReport, NodeSessions, NodeStats } from "./node-report.js";

/** How long a console waits for gateways to answer; a gateway slower than this is left out. */
export const GATHER_WAIT_MS = 300;
/** Replies one question collects at most, however many gateways (or impostors) answer. */
export const MAX_REPLIES = 64;

const MAX_USER_LENGTH = 256;

/** What the admin console asks of the whole cluster: every gateway's own answer. */
export interface ClusterStats {
  stats(): Promise<NodeStats[]>;
  channels(): Promise<NodeChannels[]>;
  sessions(user: string): Promise<NodeSessions[]>;
}

/** Memory mode: this process is the whole cluster. */
export class LocalClusterStats implements ClusterStats {
  constructor(private readonly report: NodeReport) {}

  async stats(): Promise<NodeStats[]> {
    return [await this.report.stats()];
  }

  async channels(): Promise<NodeChannels[]> {
    return [this.report.channels()];
  }

  async sessions(user: string): Promise<NodeSessions[]> {
    return [this.report.sessions(user)];
  }
}

/**
 * NATS mode: one request on `<prefix>.admin.<question>`, which every gateway subscribes to (no
 * queue group), and the replies that arrive within GATHER_WAIT_MS, up to MAX_REPLIES. Replies are
 * NATS payloads like any other: each is checked for its shape and dropped if it is not one.
 */
export class NatsClusterStats implements ClusterStats {
  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
    private readonly log: Logger,
  ) {}

  stats(): Promise<NodeStats[]> {
    return this.gather("stats", {}, (v) => typeof v.uptime === "number" && typeof v.connections === "number");
  }

  channels(): Promise<NodeChannels[]> {
    return this.gather("channels", {}, (v) => Array.isArray(v.channels) && v.channels.every(isChannel));
  }

  sessions(user: string): Promise<NodeSessions[]> {
    return this.gather("sessions", { user }, (v) => Array.isArray(v.sessions) && v.sessions.every(isSession));
  }

  private async gather<T>(question: string, body: object, valid: (v: Record<string, unknown>) => boolean): Promise<T[]> {
    const replies = new Map<string, T>();
    const subject = this.subjects.admin(question);
    try {
      const msgs = await this.nc.requestMany(subject, JSON.stringify(body), {
        strategy: RequestStrategy.Timer,
        maxWait: GATHER_WAIT_MS,
        maxMessages: MAX_REPLIES,
      });
      for await (const msg of msgs) {
        const v = parseObject(msg.data);
        if (!v || typeof v.node !== "string" || replies.has(v.node) || !valid(v)) {
          this.log.debug({ subject }, "admin reply dropped: not a gateway's answer");
          continue;
        }
        replies.set(v.node, v as T);
      }
    } catch (err) {
      this.log.warn({ err, subject }, "admin request failed");
      throw new ProtocolError(ErrorCode.Unavailable, "NATS unavailable; try again");
    }
    return [...replies].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v);
  }
}

/**
 * Answers the console questions for this gateway in NATS mode. Idle, it is one subscription and
 * nothing else: figures are read when a question arrives, which happens only while a console is
 * open somewhere.
 */
export class AdminResponder {
  private sub: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
    private readonly report: NodeReport,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(this.subjects.admin("*"), {
      callback: (err, msg) => {
        if (!err) this.answer(msg).catch((e: unknown) => this.log.warn({ err: e }, "admin reply failed"));
      },
    });
  }

  private async answer(msg: Msg): Promise<void> {
    if (!msg.reply) return;
    const question = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
    let reply: unknown;
    if (question === "stats") reply = await this.report.stats();
    else if (question === "channels") reply = this.report.channels();
    else if (question === "sessions") {
      const user = parseObject(msg.data)?.user;
      if (typeof user !== "string" || user.length > MAX_USER_LENGTH) return;
      reply = this.report.sessions(user);
    } else return;
    msg.respond(JSON.stringify(reply));
  }

  stop(): void {
    this.sub?.unsubscribe();
  }
}

function parseObject(data: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(data).toString("utf8"));
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function isChannel(c: unknown): boolean {
  const v = c as Record<string, unknown> | null;
  return typeof v === "object" && v !== null && typeof v.ch === "string" && typeof v.subscribers === "number" && typeof v.delivered === "number";
}

function isSession(s: unknown): boolean {
  const v = s as Record<string, unknown> | null;
  return typeof v === "object" && v !== null && typeof v.client === "string" && typeof v.since === "number";
}
