import type { Frame } from "./client.js";
import { Signal } from "./signal.js";

export interface SseEvent {
  event: string;
  data: string;
  /** The stream's last event id when this event was dispatched (what a browser would resend). */
  lastId: string;
  /** Whether the event carried its own `id:` field. */
  hasId: boolean;
  /** How many `data:` lines made up `data`. */
  dataLines: number;
}

/** Every SSE client opened so far, for tests to close in afterAll. */
export const openSseClients: SseClient[] = [];

/** Reads `text/event-stream` as the HTML spec does: fields per line, a blank line dispatches. */
export class SseClient {
  readonly events: SseEvent[] = [];
  comments = 0;
  lastId = "";
  status = 0;
  headers: Headers | undefined;
  /** The JSON body of a refused (non-200) request. */
  refusal: Frame | undefined;
  ended = false;
  private readonly abort = new AbortController();
  private readonly signal = new Signal();
  private taken = 0;

  static async open(base: string, query: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const c = new SseClient();
    openSseClients.push(c);
    const res = await fetch(`${base}/sse?${query}`, {
      headers: { accept: "text/event-stream", ...headers },
      signal: c.abort.signal,
    });
    c.status = res.status;
    c.headers = res.headers;
    if (res.status !== 200) {
      const text = await res.text();
      try {
        c.refusal = JSON.parse(text) as Frame;
      } catch {
        c.refusal = { raw: text };
      }
      c.ended = true;
      return c;
    }
    void c.read(res.body as ReadableStream<Uint8Array>);
    return c;
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let event = "";
    let data: string[] = [];
    let hasId = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (data.length > 0) {
              this.events.push({ event: event || "message", data: data.join("\n"), lastId: this.lastId, hasId, dataLines: data.length });
            }
            event = "";
            data = [];
            hasId = false;
            this.wake();
            continue;
          }
          if (line.startsWith(":")) {
            this.comments++;
            continue;
          }
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
          else if (field === "id") {
            this.lastId = value;
            hasId = true;
          }
        }
      }
    } catch {
      /* aborted */
    } finally {
      this.ended = true;
      this.wake();
    }
  }

  private wake(): void {
    this.signal.wake();
  }

  waitFor<T>(check: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
    const events = (): string => `events: ${JSON.stringify(this.events.map((e) => [e.event, e.data])).slice(0, 2000)}`;
    return this.signal.until(check, what, timeoutMs, events, 200);
  }

  /**
   * The next event not yet taken (in arrival order). Presence events (`join`/`leave`, e.g. the
   * client's own join) are passed over unless `presence` is set.
   */
  next(what = "an event", timeoutMs = 10_000, presence = false): Promise<SseEvent> {
    return this.waitFor(
      () => {
        while (this.taken < this.events.length) {
          const e = this.events[this.taken++] as SseEvent;
          if (presence || (e.event !== "join" && e.event !== "leave")) return e;
        }
        return undefined;
      },
      what,
      timeoutMs,
    );
  }

  /** The next `count` events not yet taken. */
  async take(count: number, what: string, timeoutMs = 10_000): Promise<SseEvent[]> {
    const out: SseEvent[] = [];
    for (let i = 0; i < count; i++) out.push(await this.next(`${what} (${i + 1} of ${count})`, timeoutMs));
    return out;
  }

  waitEnded(timeoutMs = 10_000): Promise<true> {
    return this.waitFor(() => (this.ended ? true : undefined), "the stream to end", timeoutMs);
  }

  close(): void {
    this.abort.abort();
  }
}
