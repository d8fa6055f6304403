import type { TokenVerifier } from "../auth/jwt.js";
import type { Config } from "../config/types.js";
import type { LifecycleEvents } from "../events/lifecycle.js";
import type { Hooks } from "../hooks/hooks.js";
import type { Hub } from "../hub/hub.js";
import type { Limits } from "../limits/limits.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { Tracer } from "../tracing/tracer.js";
import type { ExpirySchedule } from "./expiry-schedule.js";
import type { Session } from "./session.js";

/** What the delivery core and the transports share on one gateway. */
export interface DeliveryContext {
  config: Config;
  hub: Hub;
  hooks: Hooks;
  limits: Limits;
  verifier: TokenVerifier | undefined;
  metrics: Metrics;
  log: Logger;
  node: string;
  /** Tells connected sessions that their token expired: one timer for all of them. */
  tokenExpiry: ExpirySchedule<Session>;
  /** Where client connects and disconnects are reported (src/events/). */
  events: LifecycleEvents;
  /** Only with tracing on (tracing.otlpUrl): undefined, nothing is traced and nothing costs. */
  tracer: Tracer | undefined;
}
