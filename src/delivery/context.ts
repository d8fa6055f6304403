import type { TokenVerifier } from "../auth/jwt.js";
import type { Config } from "../config/types.js";
import type { Hub, HubSession } from "../hub/hub.js";
import type { Limits } from "../limits/limits.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import type { ExpirySchedule } from "./expiry-schedule.js";

/** What the delivery core and the transports share on one gateway. */
export interface DeliveryContext {
  config: Config;
  hub: Hub;
  limits: Limits;
  verifier: TokenVerifier | undefined;
  metrics: Metrics;
  log: Logger;
  node: string;
  /** Ends connected sessions when their token expires: one timer for all of them. */
  tokenExpiry: ExpirySchedule<HubSession>;
}
