import type { Backend } from "../backend.js";
import type { Config } from "../config/types.js";
import type { Logger } from "../log.js";
import type { Metrics } from "../metrics.js";
import { LifecycleEvents } from "./lifecycle.js";
import { EventPublisher } from "./publisher.js";
import { Transitions } from "./transitions.js";
import { httpPost, WebhookSender } from "./webhook.js";

/** Builds the lifecycle events from the config: with no events.types, a publisher that emits nothing. */
export function lifecycleEvents(config: Config, backend: Backend, node: string, metrics: Metrics, log: Logger): LifecycleEvents {
  const settings = config.events;
  const hook = settings?.webhook;
  const webhook = hook ? new WebhookSender(hook.secret, httpPost(hook.url), metrics, log) : undefined;
  const publisher = new EventPublisher(new Set(settings?.types ?? []), node, webhook, metrics, log);
  if (backend.eventOutlet) publisher.to(backend.eventOutlet);
  const events = new LifecycleEvents(publisher, new Transitions(backend.transitions, log), backend.presence, node, config.presenceGrace, log);
  backend.onReaped?.((key, info, announced) => (announced ? events.presenceLeft(key, info) : events.reaped(key)));
  return events;
}
