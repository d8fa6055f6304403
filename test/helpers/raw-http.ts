import net from "node:net";

export interface RawResponse {
  /** The status code, or undefined when the server closed the connection without answering. */
  status: number | undefined;
  /** The head (status line and headers) as received. */
  head: string;
  body: string;
  /** The server closed the connection (rather than the time running out). */
  closed: boolean;
}

/**
 * Sends bytes over a fresh TCP connection to 127.0.0.1:`port` exactly as given (for requests no
 * HTTP client would send), and resolves once the server has answered a whole response or closed
 * the connection, or after `timeoutMs`. `pieces` after the first are written `gapMs` apart.
 */
export function rawRequest(port: number, pieces: Array<string | Buffer>, timeoutMs = 5_000, gapMs = 0): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    let data = Buffer.alloc(0);
    let settled = false;
    const finish = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const text = data.toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      const head = split < 0 ? text : text.slice(0, split);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(head)?.[1];
      resolve({ status: status === undefined ? undefined : Number(status), head, body: split < 0 ? "" : text.slice(split + 4), closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on("data", (d: Buffer) => {
      data = Buffer.concat([data, d]);
      const text = data.toString("latin1");
      const split = text.indexOf("\r\n\r\n");
      if (split < 0) return;
      const head = text.slice(0, split);
      // A 101 switches protocols: its head is the whole answer.
      if (head.startsWith("HTTP/1.1 101")) return finish(false);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
      if (length !== undefined && data.length - split - 4 >= Number(length)) finish(false);
    });
    socket.on("close", () => finish(true));
    socket.on("error", () => finish(true));
    socket.on("connect", () => {
      let i = 0;
      const next = (): void => {
        if (settled || i >= pieces.length) return;
        socket.write(pieces[i++] as string | Buffer);
        if (i < pieces.length) setTimeout(next, gapMs);
      };
      next();
    });
  });
}

/** A header value of a raw response head, or undefined. */
export function headerOf(head: string, name: string): string | undefined {
  const m = new RegExp(`\\r\\n${name}: *([^\\r]*)`, "i").exec(head);
  return m?.[1];
}
