import { randomUUID } from "node:crypto";

/** Every lifecycle event natsedge emits (docs/events.md has a JSON schema for each). */
export const EVENT_TYPES = [
  "user.online",
  "user.offline",
  "channel.occupied",
  "channel.vacated",
  "presence.join",
  "presence.leave",
  "client.connect",
  "client.disconnect",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Bumped when a field changes meaning or goes away; new optional fields keep the version. */
export const EVENT_VERSION = 1;

/** Which transport a client connection came through. */
export type EventTransport = "websocket" | "sse";

/** What each event type says beyond the common fields. */
export interface EventFields {
  "user.online": { user: string };
  "user.offline": { user: string };
  "channel.occupied": { ch: string };
  "channel.vacated": { ch: string };
  "presence.join": { ch: string; client: string; user: string; info?: unknown };
  "presence.leave": { ch: string; client: string; user: string; info?: unknown };
  "client.connect": { client: string; user: string; transport: EventTransport };
  "client.disconnect": { client: string; user: string; transport: EventTransport; code: number; reason: string };
}

/** One event as published: the JSON body on `<prefix>.event.<type>` and an item of a webhook batch. */
export type LifecycleEvent = {
  [T in EventType]: { v: typeof EVENT_VERSION; id: string; type: T; node: string; ts: number } & EventFields[T];
}[EventType];

export function makeEvent<T extends EventType>(type: T, node: string, fields: EventFields[T], now = Date.now()): LifecycleEvent {
  return { v: EVENT_VERSION, id: randomUUID(), type, node, ts: now, ...fields } as LifecycleEvent;
}

/** The longest disconnect reason carried: a WebSocket close reason is at most 123 bytes anyway. */
export const MAX_REASON = 123;
