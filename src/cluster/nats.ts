import { createInbox, type NatsConnection, type Subscription } from "nats";
import type { Logger } from "../log.js";
import type { NatsLink } from "../nats/connection.js";
import type { Subjects } from "../nats/subjects.js";
import { pack, unpack } from "../protocol/msgpack.js";
import { isValidPattern } from "../auth/patterns.js";
import { MAX_CHANNELS_LIMIT, type ChannelQuery, type Cluster, type LocalNode, type NodeChannels, type NodeInfo } from "./cluster.js";

/**
 * The asker waits for every gateway whose heartbeat is live; failing that (a gateway that died
 * keeps its heartbeat for 15 s), until no answer has come for GATHER_QUIET_MS after the last, or
 * GATHER_MAX_MS in all. A gateway slower than that is missing from the answer.
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
  private readonly nc: NatsConnection;

  constructor(
    private readonly nats: { link: NatsLink; subjects: Subjects; liveNodes: () => Promise<Set<string>> },
    private readonly local: LocalNode,
    private readonly log: Logger,
  ) {
    this.nc = nats.link.nc;
  }

  start(): void {
    this.answer("info", () => this.local.info());
    this.answer("channels", (body) => {
      const q = channelQuery(body);
      return q ? this.local.channels(q) : undefined;
    });
  }

  /**
   * Answers `<prefix>.cluster.<what>` with what `reply` returns for the (MessagePack) request
   * body, or not at all when it returns undefined. Other parts (the admin console) ask their own
   * questions through this and gather().
   */
  answer(what: string, reply: (body: unknown) => unknown): void {
    const sub = this.nc.subscribe(this.nats.subjects.cluster(what), {
      callback: (err, msg) => {
        if (err || !msg.reply) return;
        const failed = (e: unknown): void => this.log.warn({ err: e, subject: msg.subject }, "cluster request not answered");
        // A callback that throws ends nats.js's read loop: nothing a request holds may escape.
        try {
          const answer = reply(msg.data.byteLength === 0 ? {} : unpack(msg.data));
          if (answer instanceof Promise) {
            answer.then((a: unknown) => a !== undefined && msg.respond(pack(a))).catch(failed);
          } else if (answer !== undefined) msg.respond(pack(answer));
        } catch (e) {
          failed(e);
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

  /** Every live gateway's answer to `what` that `decode` accepts (see GATHER_QUIET_MS). */
  async gather<T extends { node: string }>(what: string, body: unknown, decode: (v: unknown) => T | undefined): Promise<T[]> {
    this.nats.link.require();
    const live = await this.nats.liveNodes().catch(() => new Set<string>());
    return new Promise((resolve) => {
      const out: T[] = [];
      const seen = new Set<string>();
      const missing = new Set(live);
      let quiet: NodeJS.Timeout | undefined;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(quiet);
        clearTimeout(deadline);
        sub.unsubscribe();
        resolve(out);
      };
      const deadline = setTimeout(finish, GATHER_MAX_MS);
      const inbox = createInbox();
      const sub = this.nc.subscribe(inbox, {
        max: MAX_NODES,
        callback: (err, msg) => {
          if (err || done) return finish();
          let value: T | undefined;
          try {
            value = decode(unpack(msg.data));
          } catch {
            value = undefined;
          }
          if (value && !seen.has(value.node)) {
            seen.add(value.node);
            out.push(value);
            missing.delete(value.node);
          }
          if ((live.size > 0 && missing.size === 0) || out.length >= MAX_NODES) return finish();
          clearTimeout(quiet);
          quiet = setTimeout(finish, GATHER_QUIET_MS);
        },
      });
      this.nc.publish(this.nats.subjects.cluster(what), pack(body), { reply: inbox });
    });
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
  if (pattern !== undefined && (typeof pattern !== "string" || !isValidPattern(pattern))) return undefined;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CHANNELS_LIMIT) return undefined;
  return pattern === undefined ? { limit } : { pattern, limit };
}
