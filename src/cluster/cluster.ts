import type { Hub } from "../hub/hub.js";
import { matchesPattern } from "../auth/patterns.js";

/** The most channels a `channels` answer lists (each gateway's answer, and the merged one). */
export const MAX_CHANNELS_LIMIT = 1_000;

/** One gateway's state, as the server API `info` reports it. */
export interface NodeInfo {
  node: string;
  version: string;
  /** Seconds since the gateway started. */
  uptime: number;
  /** Open WebSocket connections and SSE streams. */
  connections: number;
  /** Local subscriptions summed over channels (WebSocket, SSE, held long-polls). */
  subscriptions: number;
  /** Channels this gateway holds. */
  channels: number;
}

export interface ChannelQuery {
  /** A channel pattern as in tokens' `channels` claims; absent matches every channel. */
  pattern?: string;
  /** At most this many channels per node. */
  limit: number;
}

/** One gateway's channels matching a query, with their local subscription counts. */
export interface NodeChannels {
  node: string;
  channels: Array<[string, number]>;
  /** More channels matched than `limit`. */
  truncated: boolean;
}

/** What every gateway answers about itself; the memory and NATS clusters ask one or all of them. */
export interface Cluster {
  info(): Promise<NodeInfo[]>;
  channels(query: ChannelQuery): Promise<NodeChannels[]>;
  start(): void;
  stop(): void;
}

/** This gateway's answers. */
export class LocalNode {
  private readonly startedAt = Date.now();

  constructor(
    readonly node: string,
    private readonly version: string,
    private readonly hub: Hub,
    private readonly connections: () => number,
  ) {}

  info(): NodeInfo {
    let channels = 0;
    let subscriptions = 0;
    for (const { subscribers } of this.hub.channelCounts()) {
      channels++;
      subscriptions += subscribers;
    }
    const uptime = Math.floor((Date.now() - this.startedAt) / 1000);
    return { node: this.node, version: this.version, uptime, connections: this.connections(), subscriptions, channels };
  }

  channels(query: ChannelQuery): NodeChannels {
    const channels: Array<[string, number]> = [];
    for (const { ch, subscribers: refs } of this.hub.channelCounts()) {
      if (query.pattern !== undefined && !matchesPattern(query.pattern, ch)) continue;
      if (channels.length === query.limit) return { node: this.node, channels, truncated: true };
      channels.push([ch, refs]);
    }
    return { node: this.node, channels, truncated: false };
  }
}

/** Memory mode: one process, so the cluster is this gateway. */
export class SingleNode implements Cluster {
  constructor(private readonly local: LocalNode) {}

  async info(): Promise<NodeInfo[]> {
    return [this.local.info()];
  }

  async channels(query: ChannelQuery): Promise<NodeChannels[]> {
    return [this.local.channels(query)];
  }

  start(): void {}

  stop(): void {}
}
