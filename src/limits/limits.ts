import type { Config } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Presence } from "../presence/presence.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { BucketMap, TokenBucket } from "./bucket.js";
import { ClientAddress } from "./client-address.js";
import { ConnectionLimiter } from "./connections.js";
import type { UserCounts } from "./user-counts.js";
import { UserConnections, type UserWatch } from "./user-connections.js";

/** Long-poll clients whose command budget one process remembers (least recently seen evicted). */
const SESSION_BUDGETS = 100_000;
/** Wrong API keys one address may try per minute before it is refused without checking. */
export const API_KEY_FAILURES_PER_MINUTE = 10;
const API_KEY_ADDRESSES = 10_000;

/** Backend reads (or presence members) one budget token pays for. */
const ITEMS_PER_TOKEN = 100;

/** Charges a command for what it read: one more token per ITEMS_PER_TOKEN. */
export function chargeItems(budget: TokenBucket | undefined, items: number): void {
  budget?.charge(Math.floor(items / ITEMS_PER_TOKEN));
}

/**
 * Every limit a client can run into, built once per gateway from the config: who is connecting
 * (client address), how many connections, how fast, and the command budgets that follow a client
 * across requests of the stateless transports.
 */
export class Limits {
  readonly addresses: ClientAddress;
  readonly connections: ConnectionLimiter;
  readonly users: UserConnections;
  private readonly sessionBudgets: BucketMap | undefined;
  private readonly apiKeyFailures = new BucketMap(API_KEY_FAILURES_PER_MINUTE / 60, API_KEY_FAILURES_PER_MINUTE, API_KEY_ADDRESSES);

  constructor(
    private readonly config: Config,
    presence: Presence,
    readonly metrics: Metrics,
    log: Logger,
    /** Present when lifecycle events follow users' connections. */
    userWatch?: UserWatch,
    userCounts?: UserCounts,
  ) {
    this.addresses = new ClientAddress(config.trustedProxies);
    this.connections = new ConnectionLimiter(config, metrics);
    this.users = new UserConnections(presence, config.maxConnectionsPerUser, log, userWatch, userCounts);
    const rate = config.commandRate;
    if (rate > 0) this.sessionBudgets = new BucketMap(rate, 2 * rate, SESSION_BUDGETS);
  }

  /**
   * The command budget of a client: its own for a connection, and for a long-poll or SSE session
   * the one this process keeps under the session's client id, so that splitting commands over
   * many requests buys nothing. Undefined when commandRate is 0 (no limit).
   */
  commandBudget(sessionClient?: string): TokenBucket | undefined {
    const rate = this.config.commandRate;
    if (rate === 0) return undefined;
    if (sessionClient !== undefined) return this.sessionBudgets?.get(sessionClient);
    return new TokenBucket(rate, 2 * rate);
  }

  /**
   * Spends one command of a long-poll or SSE session (a poll, a stream opened with the session);
   * throws ProtocolError 429 with a retry hint when the budget is used up.
   */
  spendSessionCommand(sessionClient: string): void {
    const budget = this.commandBudget(sessionClient);
    if (!budget || budget.take()) return;
    this.metrics.rateLimited.inc({ kind: "command" });
    throw new ProtocolError(ErrorCode.RateLimited, "too many requests", budget.retryAfter());
  }

  /** Seconds to wait while `ip` has used up its wrong API keys, else undefined. */
  apiKeyRefused(ip: string): number | undefined {
    const bucket = this.apiKeyFailures.get(ip);
    if (bucket.available()) return undefined;
    this.metrics.rateLimited.inc({ kind: "apikey" });
    return bucket.retryAfter();
  }

  apiKeyFailed(ip: string): void {
    this.apiKeyFailures.get(ip).take();
  }
}
