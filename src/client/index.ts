/**
 * natsedge client SDK for browsers and Node 20. ES modules without runtime dependencies in the
 * JSON build; MessagePack (msgpackr) is imported only when asked for.
 *
 *   const client = new Client("https://chat.example.com", { getToken });
 *   const room = client.subscribe("chat.lobby", { onPublication: (p) => show(p.data) });
 *   await room.publish({ text: "hi" });
 *
 * Transports: WebSocket first; when it cannot connect, HTTP long-poll with the same API and the
 * same recovery, trying WebSocket again periodically. After any reconnect every subscription is
 * resumed from its last offset, delivering missed publications in order, without duplicates,
 * before new ones; `recovered:false` is surfaced so the app can reload its state.
 * Reference: docs/client.md.
 *
 * This file is the public entry: what users may import is exactly what it exports.
 */
export { backoff, reconnectDelay, type ReconnectTiming } from "./backoff.js";
export { Client, DEFAULT_RECONNECT_JITTER, type ClientOptions, type State } from "./client.js";
export { NatsedgeError } from "./errors.js";
export {
  Subscription,
  type ClientInfo,
  type Position,
  type Publication,
  type SubscribeOptions,
  type SubscriptionHandlers,
} from "./subscription.js";
export type { TransportName } from "./transport.js";
export type { WebSocketCtor, WebSocketLike } from "./websocket.js";
