import type { Codec } from "./codec.js";
import { errorFrom, NatsedgeError } from "./errors.js";
import type { Attach, Frame, PolledChannel, Transport, TransportHost } from "./transport.js";

/** The gateway's answer to a request with a revoked session (docs/protocol.md, Sessions). */
const REVOKED = /session ended by the server/;
/** The close code of a server-side disconnect. */
const DISCONNECTED = 4003;

/** How long the gateway may hold a poll (s). */
const POLL_S = 25;

/**
 * The long-poll transport: commands go to /lp/rpc under the signed session, and one poll at a
 * time asks /lp/poll for every followed channel from its subscription's position.
 */
export class LongPoll implements Transport {
  readonly name = "longpoll";
  private readonly host: TransportHost;
  private session: string | undefined;
  private closed = false;
  private polling = false;
  private sending = false;
  private readonly outbox: Frame[] = [];
  private abort: AbortController | undefined;
  private readonly channels = new Set<string>();

  constructor(
    private readonly url: string,
    private readonly codec: Codec,
    attach: Attach,
  ) {
    this.host = attach(this);
  }

  /**
   * Commands go out one request at a time, batched while one is in flight: parallel HTTP requests
   * can run in any order, and two quick publishes must not land swapped, as on WebSocket.
   */
  send(frames: Frame[]): void {
    this.outbox.push(...frames);
    if (!this.sending) void this.flush();
  }

  private async flush(): Promise<void> {
    this.sending = true;
    while (this.outbox.length > 0) await this.rpc(this.outbox.splice(0, 100));
    this.sending = false;
  }

  private async post(path: string, body: Frame, signal?: AbortSignal): Promise<Frame> {
    const res = await fetch(this.url + path, {
      method: "POST",
      headers: { "Content-Type": this.codec.contentType },
      body: this.codec.body(body),
      ...(signal ? { signal } : {}),
    });
    let out: Frame = {};
    try {
      out = this.codec.parse(await res.arrayBuffer());
    } catch {
      if (res.ok) throw new NatsedgeError(502, "unreadable long-poll answer");
    }
    if (!res.ok) {
      const e = out.error as { code?: number; message?: string; retryAfter?: unknown } | undefined;
      throw errorFrom({ code: e?.code ?? res.status, message: e?.message ?? `HTTP ${res.status}`, retryAfter: e?.retryAfter });
    }
    return out;
  }

  private async rpc(frames: Frame[]): Promise<void> {
    try {
      const body: Frame = { cmds: frames };
      if (this.session !== undefined) body.session = this.session;
      const replies = (await this.post("/lp/rpc", body)).replies as Frame[];
      // `connect` and `refresh` replies carry the (renewed) session.
      for (const r of replies) {
        const ok = r.ok as Frame | undefined;
        if (ok && typeof ok.session === "string") this.session = ok.session;
      }
      // A session has no socket to close: a `disconnect` push is the end of it, and the commands
      // behind it got no reply.
      const end = replies.findIndex((r) => r.push === "disconnect");
      this.host.receive(end < 0 ? replies : replies.slice(0, end + 1));
      const bye = replies[end];
      if (bye) this.fail(new NatsedgeError(bye.code as number, String(bye.reason)));
    } catch (err) {
      this.outbox.length = 0; // their commands fail with the transport
      this.fail(err);
    }
  }

  follow(channels: string[]): void {
    for (const ch of channels) this.channels.add(ch);
    this.repoll();
  }

  unfollow(ch: string): void {
    if (this.channels.delete(ch)) this.repoll();
  }

  /** Ends the held poll so the next one names the current channel set. */
  private repoll(): void {
    this.abort?.abort();
    if (!this.polling && !this.closed) void this.loop();
  }

  private async loop(): Promise<void> {
    this.polling = true;
    // Bounded by the transport's life: it ends when closed, failed or left without channels.
    while (!this.closed) {
      const polled = new Map<string, PolledChannel>();
      const subs: Record<string, unknown> = {};
      for (const p of this.host.polls(this.channels)) {
        polled.set(p.ch, p);
        subs[p.ch] = p.token === undefined ? p.since : { ...(p.since ?? {}), token: p.token };
      }
      if (polled.size === 0) break;
      const abort = (this.abort = new AbortController());
      // A poll the network silently lost would otherwise hang forever.
      const timer = setTimeout(() => abort.abort(), (POLL_S + 15) * 1000);
      let out: Frame;
      try {
        out = await this.post("/lp/poll", { session: this.session, subs, timeout: POLL_S }, abort.signal);
      } catch (err) {
        if (!this.closed && abort.signal.aborted) continue;
        this.fail(err);
        break;
      } finally {
        clearTimeout(timer);
      }
      // Closed meanwhile (switched to WebSocket): what this answer holds, the new transport
      // recovers from the positions, so delivering it here could only duplicate.
      if (this.closed) break;
      const pubs = new Map<string, Frame[]>();
      for (const p of (out.pubs as Frame[] | undefined) ?? []) {
        const ch = p.ch as string;
        pubs.set(ch, [...(pubs.get(ch) ?? []), p]);
      }
      for (const [ch, st] of Object.entries((out.subs ?? {}) as Record<string, Frame>)) {
        polled.get(ch)?.answer({ ...st, pubs: pubs.get(ch) });
      }
      for (const [ch, e] of Object.entries((out.errors ?? {}) as Record<string, { code: number; message: string }>)) {
        this.channels.delete(ch);
        polled.get(ch)?.refuse(errorFrom(e));
      }
      // Join and leave of the channels polled, as the pushes WebSocket would have carried.
      const presence = ((out.presence as Frame[] | undefined) ?? []).filter((e) => e.push === "join" || e.push === "leave");
      if (presence.length > 0) this.host.receive(presence);
    }
    this.polling = false;
  }

  /**
   * The session ended. An HTTP 401 here is the signed session (expired, or from a replica with
   * another sessionSecret), not the token: the host reconnects, and a new connect makes a new
   * session, for anonymous clients too. A session the server revoked (a server-side disconnect)
   * ends like a WebSocket closed with 4003: no reconnect.
   */
  private fail(err: unknown): void {
    if (this.closed) return;
    this.stop();
    const message = (err as Error).message;
    const code = err instanceof NatsedgeError ? err.code : 0;
    this.host.closed(code === 401 && REVOKED.test(message) ? DISCONNECTED : code, message);
  }

  /**
   * Leaves for good (switch to WebSocket, disconnect()): the gateway keeps a long-poll client in
   * presence for a while after its last poll, so say goodbye to every channel instead of
   * lingering there next to the new connection.
   */
  close(): void {
    if (!this.closed && this.session !== undefined && this.channels.size > 0) {
      this.send([...this.channels].map((ch) => ({ op: "unsubscribe", ch })));
    }
    this.stop();
  }

  private stop(): void {
    this.closed = true;
    this.abort?.abort();
  }
}
