import type { NatsCluster } from "../cluster/nats.js";
import type { ChannelReport, NodeReport, NodeStats, SessionReport } from "./node-report.js";

export const MAX_USER_LENGTH = 256;

/** What the admin console asks of the whole cluster: every gateway's own answer. */
export interface ClusterStats {
  stats(): Promise<NodeStats[]>;
  channels(): Promise<ChannelReport[]>;
  sessions(user: string): Promise<SessionReport[]>;
}

/** Memory mode: this process is the whole cluster. */
export class LocalClusterStats implements ClusterStats {
  constructor(private readonly report: NodeReport) {}

  async stats(): Promise<NodeStats[]> {
    return [await this.report.stats()];
  }

  async channels(): Promise<ChannelReport[]> {
    return [this.report.channels()];
  }

  async sessions(user: string): Promise<SessionReport[]> {
    return [this.report.sessions(user)];
  }
}

/**
 * NATS mode: the console's questions go out like the server API's `info` (src/cluster/nats.ts),
 * on `<prefix>.cluster.admin.<question>`; every gateway answers about itself and the asker keeps
 * the answers of the live gateways. Idle, answering costs three core NATS subscriptions: the
 * figures are read only when a question arrives, which happens only while a console is open.
 * Answers are NATS payloads like any other: one that is not of the expected shape is dropped.
 */
export class NatsClusterStats implements ClusterStats {
  constructor(
    private readonly cluster: NatsCluster,
    report: NodeReport,
  ) {
    cluster.answer("admin.stats", () => report.stats());
    cluster.answer("admin.channels", () => report.channels());
    cluster.answer("admin.sessions", (body) => {
      const user = isObject(body) ? body.user : undefined;
      return typeof user === "string" && user.length <= MAX_USER_LENGTH ? report.sessions(user) : undefined;
    });
  }

  stats(): Promise<NodeStats[]> {
    return this.cluster.gather("admin.stats", {}, (v) => shaped<NodeStats>(v, (o) => typeof o.uptime === "number" && typeof o.connections === "number"));
  }

  channels(): Promise<ChannelReport[]> {
    return this.cluster.gather("admin.channels", {}, (v) => shaped<ChannelReport>(v, (o) => Array.isArray(o.channels) && o.channels.every(isChannel)));
  }

  sessions(user: string): Promise<SessionReport[]> {
    return this.cluster.gather("admin.sessions", { user }, (v) => shaped<SessionReport>(v, (o) => Array.isArray(o.sessions) && o.sessions.every(isSession)));
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function shaped<T extends { node: string }>(v: unknown, valid: (o: Record<string, unknown>) => boolean): T | undefined {
  return isObject(v) && typeof v.node === "string" && valid(v) ? (v as unknown as T) : undefined;
}

function isChannel(c: unknown): boolean {
  return isObject(c) && typeof c.ch === "string" && typeof c.subscribers === "number" && typeof c.delivered === "number";
}

function isSession(s: unknown): boolean {
  return isObject(s) && typeof s.client === "string" && typeof s.since === "number";
}
