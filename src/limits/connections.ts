import type { Metrics } from "../metrics.js";
import { BucketMap } from "./bucket.js";

export interface ConnectionLimits {
  /** Connections (WebSocket and SSE) this process holds; 0 = no limit. */
  maxConnections: number;
  /** Connections from one client address; 0 = no limit. */
  maxConnectionsPerIp: number;
  /** New connections per second from one client address (bursts of twice that); 0 = no limit. */
  connectRate: number;
}

export type RefusalReason = "max_connections" | "per_ip" | "connect_rate";

/** Why a connection is not accepted, as an HTTP answer at upgrade time. */
export interface Refusal {
  status: 429 | 503;
  reason: RefusalReason;
  message: string;
  /** Seconds, for the Retry-After header. */
  retryAfter: number;
}

/** Addresses whose connect rate is tracked at once; more evicts the least recently seen. */
const RATE_KEYS = 100_000;
/** A full process sheds load to other replicas; asking back soon spreads a storm's retries. */
const FULL_RETRY_S = 5;
const PER_IP_RETRY_S = 30;

/**
 * Admission of long-lived connections (WebSocket upgrades, SSE streams) per process and per
 * client address, decided before the connection is accepted so a refusal costs no more than an
 * HTTP answer. Counts are this process's own: each replica enforces the limits for what it holds.
 */
export class ConnectionLimiter {
  private total = 0;
  private readonly perIp = new Map<string, number>();
  private readonly rates: BucketMap | undefined;

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly metrics: Metrics,
  ) {
    if (limits.connectRate > 0) this.rates = new BucketMap(limits.connectRate, 2 * limits.connectRate, RATE_KEYS);
  }

  /** Undefined when a connection from `ip` may open now; it then counts from opened(). */
  admit(ip: string): Refusal | undefined {
    return this.counted(this.check(ip) ?? this.checkRate(ip));
  }

  /**
   * For a new long-poll session (a request without one): only the connect rate applies, as it
   * holds no connection.
   */
  admitSession(ip: string): Refusal | undefined {
    return this.counted(this.checkRate(ip));
  }

  private counted(refusal: Refusal | undefined): Refusal | undefined {
    if (refusal) this.metrics.connectionsRefused.inc({ reason: refusal.reason });
    return refusal;
  }

  private check(ip: string): Refusal | undefined {
    const { maxConnections, maxConnectionsPerIp } = this.limits;
    if (maxConnections > 0 && this.total >= maxConnections) {
      return { status: 503, reason: "max_connections", message: "this gateway is full; try again", retryAfter: FULL_RETRY_S };
    }
    if (maxConnectionsPerIp > 0 && (this.perIp.get(ip) ?? 0) >= maxConnectionsPerIp) {
      return {
        status: 429,
        reason: "per_ip",
        message: `too many connections from this address (limit ${maxConnectionsPerIp})`,
        retryAfter: PER_IP_RETRY_S,
      };
    }
    return undefined;
  }

  private checkRate(ip: string): Refusal | undefined {
    const bucket = this.rates?.get(ip);
    if (!bucket || bucket.take()) return undefined;
    return { status: 429, reason: "connect_rate", message: "connecting too often; slow down", retryAfter: bucket.retryAfter() };
  }

  opened(ip: string): void {
    this.total++;
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1);
  }

  closed(ip: string): void {
    this.total--;
    const n = (this.perIp.get(ip) ?? 1) - 1;
    if (n > 0) this.perIp.set(ip, n);
    else this.perIp.delete(ip);
  }

  get size(): number {
    return this.total;
  }
}
