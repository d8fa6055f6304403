import type { Codec } from "./codec.js";
import type { Attach, Transport } from "./transport.js";

/** Minimal WebSocket surface, satisfied by browsers' WebSocket and by the `ws` package. */
export interface WebSocketLike {
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: never) => void) | null;
  onclose: ((ev: never) => void) | null;
  onerror: ((ev: never) => void) | null;
  onmessage: ((ev: never) => void) | null;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface WebSocketOptions {
  WebSocket?: WebSocketCtor | undefined;
  format: "json" | "msgpack";
  /** How long the upgrade may take (ms). */
  timeout: number;
}

/** Opens `<url>/ws` (http -> ws); resolves once it is open, rejects if it does not open. */
export function openWebSocket(url: string, o: WebSocketOptions, codec: Codec, attach: Attach): Promise<Transport> {
  const Ctor = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (!Ctor) return Promise.reject(new Error("no WebSocket implementation"));
  const protocol = o.format === "msgpack" ? "natsedge.v1.msgpack" : "natsedge.v1.json";
  return new Promise((resolve, reject) => {
    const ws = new Ctor(url.replace(/^http/, "ws") + "/ws", protocol);
    ws.binaryType = "arraybuffer";
    let opened = false;
    const conn: Transport = {
      name: "websocket",
      send: (frames) => ws.send(codec.encode(frames)),
      close: () => ws.close(1000),
    };
    const host = attach(conn);
    // An upgrade that never completes (a proxy holding it) must not stall the fallback.
    const timer = setTimeout(() => {
      reject(new Error("websocket open timed out"));
      ws.close();
    }, o.timeout);
    ws.onopen = () => {
      opened = true;
      clearTimeout(timer);
      resolve(conn);
    };
    ws.onerror = () => reject(new Error("websocket failed to open"));
    // Read from the start, not only once the socket is the client's current one: the connect
    // reply of a WebSocket tried while on long-poll arrives while long-poll is still current.
    ws.onmessage = (ev: { data: unknown }) => host.receive(codec.decode(ev.data));
    ws.onclose = (ev: { code: number; reason: string }) => {
      clearTimeout(timer);
      if (!opened) reject(new Error(`websocket closed before open (${ev.code})`));
      else host.closed(ev.code, ev.reason);
    };
  });
}
