import type { TokenVerifier } from "../auth/jwt.js";
import type { Config } from "../config/types.js";
import type { Hooks } from "../hooks/hooks.js";
import type { Hub } from "../hub/hub.js";
import type { Limits } from "../limits/limits.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";

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
}
