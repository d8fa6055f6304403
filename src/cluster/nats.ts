import { RequestStrategy, type Msg, type NatsConnection, type Subscription } from "nats";
import type { Logger } from "../log.js";
import type { Subjects } from "../nats/subjects.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { pack, unpack } from "../protocol/msgpack.js";
import { MAX_CHANNELS_LIMIT, MAX_PATTERN_LENGTH, type ChannelQuery, type Cluster, type LocalNode, type NodeChannels, type NodeInfo } from "./cluster.js";

/**
 * Every gateway answers; the asker takes answers until none has come for this long (or
 * GATHER_MAX_MS have passed). A gateway slower than that is missing from the answer.
 */
const GATHER_QUIET_MS = 300;
const GATHER_MAX_MS = 2_000;
/** More answers than this are not read: a bound on memory, not an expected cluster size. */
const MAX_NODES = 1_000;

/**
 * NATS mode: a request to `<prefix>.cluster.<what>` reaches every gateway (no queue group), each
 * answers about itself in MessagePack, and the asker collects the answers. Nothing is stored:
 * the state asked for lives in the gateways' memory and changes every moment.
 */
export class NatsCluster implements Cluster {
  private readonly subs: Subscription[] = [];

  constructor(
    private readonly nc: NatsConnection,
    private readonly subjects: Subjects,
    private readonly local: LocalNode,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.answer("info", () => this.local.info());
    this.answer("channels", (body) => {
      const q = channelQuery(body);
      return q ? this.local.channels(q) : undefined;
    });
  }

  private answer(what: string, reply: (body: unknown) => unknown): void {
    const sub = this.nc.subscribe(this.subjects.cluster(what), {
      callback: (err, msg) => {
        if (err || !msg.reply) return;
        // A callback that throws ends nats.js's read loop: nothing a request holds may escape.
        try {
          const answer = reply(msg.data.byteLength === 0 ? {} : unpack(msg.data));
          if (answer !== undefined) msg.respond(pack(answer));
        } catch (e) {
          this.log.warn({ err: e, subject: msg.subject }, "cluster request not answered");
        }
      },
    });
    this.subs.push(sub);
  }

  async info(): Promise<NodeInfo[]> {
    return this.gather("info", {}, nodeInfo);
  }

  async channels(query: ChannelQuery): Promise<NodeChannels[]> {
    return this.gather("channels", query, nodeChannels);
  }

  private async gather<T>(what: string, body: unknown, decode: (v: unknown) => T | undefined): Promise<T[]> {
    let replies: AsyncIterable<Msg>;
    try {
      replies = await this.nc.requestMany(this.subjects.cluster(what), pack(body), {
        strategy: RequestStrategy.JitterTimer,
        jitter: GATHER_QUIET_MS,
        maxWait: GATHER_MAX_MS,
      });
    } catch (err) {
      this.log.warn({ err }, "cluster request failed");
      throw new ProtocolError(ErrorCode.Unavailable, "broker unavailable");
    }
    const out: T[] = [];
    const seen = new Set<string>();
    for await (const msg of replies) {
      let value: T | undefined;
      try {
        value = decode(unpack(msg.data));
      } catch {
        value = undefined;
      }
      const node = (value as { node?: string } | undefined)?.node;
      if (value === undefined || node === undefined || seen.has(node)) continue;
      seen.add(node);
      out.push(value);
      if (out.length >= MAX_NODES) break;
    }
    return out;
  }

  stop(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
  }
}

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isName = (v: unknown): v is string => typeof v === "string" && v.length > 0 && v.length <= 256;

/** Another gateway's answer is checked like any NATS payload. */
function nodeInfo(v: unknown): NodeInfo | undefined {
  const o = v as Partial<NodeInfo> | null;
  if (typeof o !== "object" || o === null) return undefined;
  const { node, version, uptime, connections, subscriptions, channels } = o;
  if (!isName(node) || !isName(version) || !isCount(uptime) || !isCount(connections) || !isCount(subscriptions) || !isCount(channels)) {
    return undefined;
  }
  return { node, version, uptime, connections, subscriptions, channels };
}

function nodeChannels(v: unknown): NodeChannels | undefined {
  const o = v as Partial<NodeChannels> | null;
  if (typeof o !== "object" || o === null || !isName(o.node) || !Array.isArray(o.channels) || o.channels.length > MAX_CHANNELS_LIMIT) {
    return undefined;
  }
  const channels: Array<[string, number]> = [];
  for (const e of o.channels as unknown[]) {
    if (!Array.isArray(e) || e.length !== 2 || !isName(e[0]) || !isCount(e[1])) return undefined;
    channels.push([e[0], e[1]]);
  }
  return { node: o.node, channels, truncated: o.truncated === true };
}

function channelQuery(v: unknown): ChannelQuery | undefined {
  const o = v as Partial<ChannelQuery> | null;
  if (typeof o !== "object" || o === null) return undefined;
  const { pattern, limit } = o;
  if (pattern !== undefined && (typeof pattern !== "string" || pattern.length > MAX_PATTERN_LENGTH)) return undefined;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CHANNELS_LIMIT) return undefined;
  return pattern === undefined ? { limit } : { pattern, limit };
}
