import type { NatsConnection } from "nats";
import type { LocalNode, NodeInfo } from "../cluster/cluster.js";
import type { Hub, LocalChannel, UserSession } from "../hub/hub.js";
import type { Metrics } from "../metrics.js";

/** Channels one gateway reports, the most subscribed first: a reply stays far below max_payload. */
export const MAX_CHANNELS_PER_NODE = 500;
/** Sessions of one user one gateway reports. */
export const MAX_SESSIONS_PER_NODE = 200;

const RTT_TIMEOUT_MS = 200;

/**
 * One gateway's figures: the server API's `info` and more; counters are totals since start, so
 * the console derives rates.
 */
export interface NodeStats extends NodeInfo {
  /** Connections by transport (websocket, sse). */
  transports: Record<string, number>;
  /** Publications accepted here (from clients and the server API). */
  publications: number;
  /** Publication pushes handed to client connections here. */
  messagesSent: number;
  /** CPU time used since the previous report, as a percentage of one core. */
  cpuPercent: number;
  rssBytes: number;
  /** Mean event-loop lag since the previous report, ms. */
  eventLoopLagMs: number;
  /** Round trip to the NATS server, ms; null in memory mode or when it did not answer. */
  natsRttMs: number | null;
}

export interface ChannelReport {
  node: string;
  channels: LocalChannel[];
  /** More channels are held than were reported. */
  truncated: boolean;
}

export interface SessionReport {
  node: string;
  sessions: UserSession[];
}

/** What this gateway says about itself when a console asks: read on demand, nothing kept running. */
export class NodeReport {
  readonly node: string;
  private lastCpu = { usage: process.cpuUsage(), at: performance.now() };
  private lastLag = { count: 0, sum: 0 };

  constructor(
    private readonly local: LocalNode,
    private readonly hub: Hub,
    private readonly metrics: Metrics,
    private readonly nc?: NatsConnection,
  ) {
    this.node = local.node;
  }

  async stats(): Promise<NodeStats> {
    const m = this.metrics;
    const [connections, publications, sent, rtt] = await Promise.all([
      m.connections.get(),
      m.publications.get(),
      m.messagesSent.get(),
      this.natsRtt(),
    ]);
    const transports: Record<string, number> = {};
    for (const v of connections.values) transports[String(v.labels.transport)] = v.value;
    return {
      ...this.local.info(),
      transports,
      publications: publications.values.reduce((a, v) => a + v.value, 0),
      messagesSent: sent.values[0]?.value ?? 0,
      cpuPercent: this.cpuPercent(),
      rssBytes: process.memoryUsage.rss(),
      eventLoopLagMs: this.lagMs(),
      natsRttMs: rtt,
    };
  }

  channels(): ChannelReport {
    const channels = mostSubscribed(() => this.hub.channelCounts(), MAX_CHANNELS_PER_NODE);
    return { node: this.node, channels: channels.top, truncated: channels.total > channels.top.length };
  }

  sessions(user: string): SessionReport {
    return { node: this.node, sessions: this.hub.localSessionsOf(user).slice(0, MAX_SESSIONS_PER_NODE) };
  }

  private cpuPercent(): number {
    const now = { usage: process.cpuUsage(), at: performance.now() };
    const usedUs = now.usage.user + now.usage.system - this.lastCpu.usage.user - this.lastCpu.usage.system;
    const elapsedUs = (now.at - this.lastCpu.at) * 1000;
    this.lastCpu = now;
    return elapsedUs > 0 ? round1((100 * usedUs) / elapsedUs) : 0;
  }

  private lagMs(): number {
    const now = this.metrics.eventLoopLag.totals();
    const count = now.count - this.lastLag.count;
    const sum = now.sum - this.lastLag.sum;
    this.lastLag = now;
    return count > 0 ? round1((1000 * sum) / count) : 0;
  }

  /** A PING that is not answered soon (the connection is down or reconnecting) reports null. */
  private async natsRtt(): Promise<number | null> {
    if (!this.nc || this.nc.isClosed()) return null;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), RTT_TIMEOUT_MS)));
    try {
      const rtt = await Promise.race([this.nc.rtt(), late]);
      return rtt === null ? null : round1(rtt);
    } catch {
      return null;
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * The `k` channels with the most subscribers, in two passes and without sorting them: a gateway
 * may hold a hundred thousand channels, which took 70-280 ms to sort and take 14-22 ms this way
 * (measured on a 2-core machine).
 * The first pass counts channels per subscriber count and finds the smallest count that makes
 * the cut; the second takes the channels above it, then those at it until `k` are taken.
 */
export function mostSubscribed(channels: () => Iterable<LocalChannel>, k: number): { top: LocalChannel[]; total: number } {
  const perCount = new Map<number, number>();
  let total = 0;
  for (const c of channels()) {
    perCount.set(c.subscribers, (perCount.get(c.subscribers) ?? 0) + 1);
    total++;
  }
  let cut = -Infinity;
  let above = 0;
  if (total > k) {
    for (const count of [...perCount.keys()].sort((a, b) => b - a)) {
      const n = perCount.get(count) as number;
      cut = count;
      if (above + n >= k) break;
      above += n;
    }
  }
  const top: LocalChannel[] = [];
  let atCut = k - above;
  for (const c of channels()) {
    if (c.subscribers > cut) top.push(c);
    else if (c.subscribers === cut && atCut > 0) {
      top.push(c);
      atCut--;
    }
  }
  return { top, total };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}
