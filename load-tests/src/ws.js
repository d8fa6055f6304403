/**
 * A minimal WebSocket client over node:net, built for many connections per thread:
 * - the HTTP/1.1 upgrade is written by hand and the 101 answer is only checked for its status;
 * - reads go through `onread` into one buffer shared by every socket of the thread (no per-read
 *   allocation); only an incomplete frame at the end of a read is copied;
 * - server->client frames are unmasked; client->server frames are masked (RFC 6455);
 * - fragmented messages are reassembled (minimal: continuation frames are concatenated);
 * - ping is answered with pong, close with close.
 * Complete text/binary messages go to `handler.message(conn, buf, start, end, now)` where `now` is
 * the receive time of the read that completed the message (one clock read per read, not per frame).
 */
import net from "node:net";
import { randomBytes } from "node:crypto";

const CRLF2 = Buffer.from("\r\n\r\n");
const MAX_HEADER = 16 * 1024;
const MAX_MESSAGE = 16 * 1024 * 1024;

export const OP_TEXT = 1;
export const OP_BINARY = 2;
const OP_CLOSE = 8;
const OP_PING = 9;
const OP_PONG = 10;

/** Encodes one masked client frame. */
export function encodeFrame(payload, opcode = OP_TEXT) {
  if (typeof payload === "string") payload = Buffer.from(payload, "utf8");
  const len = payload.length;
  const hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(hl + 4 + len);
  out[0] = 0x80 | opcode;
  if (len < 126) out[1] = 0x80 | len;
  else if (len < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  const m = (Math.random() * 0x100000000) >>> 0;
  out.writeUInt32BE(m, hl);
  const m0 = m >>> 24;
  const m1 = (m >>> 16) & 0xff;
  const m2 = (m >>> 8) & 0xff;
  const m3 = m & 0xff;
  const base = hl + 4;
  let i = 0;
  for (; i + 3 < len; i += 4) {
    out[base + i] = payload[i] ^ m0;
    out[base + i + 1] = payload[i + 1] ^ m1;
    out[base + i + 2] = payload[i + 2] ^ m2;
    out[base + i + 3] = payload[i + 3] ^ m3;
  }
  for (; i < len; i++) out[base + i] = payload[i] ^ (i % 4 === 0 ? m0 : i % 4 === 1 ? m1 : i % 4 === 2 ? m2 : m3);
  return out;
}

/**
 * Clock shared by the threads of the benchmark: wall-clock ms (performance.timeOrigin +
 * performance.now()) corrected by an offset measured against the main thread.
 */
export const clock = {
  offset: 0,
  now() {
    return performance.timeOrigin + performance.now() - this.offset;
  },
};

export class WsConn {
  /**
   * @param {object} o
   * @param {string} o.host
   * @param {number} o.port
   * @param {string} o.path        request target, e.g. "/ws" or "/socket.io/?EIO=4&transport=websocket"
   * @param {string} [o.localAddress]
   * @param {Buffer} o.readBuffer  shared read buffer
   * @param {object} o.handler     { open(conn), message(conn, buf, start, end, now, opcode), close(conn, reason) }
   */
  constructor(o) {
    this.handler = o.handler;
    this.upgraded = false;
    this.closed = false;
    this.head = null; // bytes of the HTTP answer so far
    this.rem = null; // incomplete frame carried to the next read
    this.frag = null; // fragments of a message in progress
    this.fragOp = 0;
    this.state = null; // dialect state, set by the owner
    const opts = {
      host: o.host,
      port: o.port,
      noDelay: true,
      onread: { buffer: o.readBuffer, callback: (n, buf) => this.onRead(n, buf) },
    };
    if (o.localAddress) opts.localAddress = o.localAddress;
    const key = randomBytes(16).toString("base64");
    this.socket = net.connect(opts);
    this.socket.setNoDelay(true);
    this.socket.on("connect", () => {
      this.socket.write(
        `GET ${o.path} HTTP/1.1\r\nHost: ${o.host}:${o.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${o.extraHeaders ?? ""}\r\n`,
      );
    });
    this.socket.on("error", (err) => this.finish(`error: ${err.code ?? err.message}`));
    this.socket.on("close", () => this.finish("socket closed"));
    this.socket.on("end", () => this.finish("server ended"));
  }

  finish(reason) {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.handler.close(this, reason);
  }

  send(payload, opcode = OP_TEXT) {
    if (this.closed) return false;
    return this.socket.write(encodeFrame(payload, opcode));
  }

  /** Writes already-encoded frames (one syscall for several frames). */
  sendRaw(bytes) {
    if (this.closed) return false;
    return this.socket.write(bytes);
  }

  close() {
    if (this.closed) return;
    try {
      this.socket.write(encodeFrame(Buffer.from([0x03, 0xe8]), OP_CLOSE));
      this.socket.end();
    } catch {
      /* already gone */
    }
    this.closed = true;
    setTimeout(() => this.socket.destroy(), 200).unref();
    this.handler.close(this, "closed by client");
  }

  onRead(n, buf) {
    if (this.closed) return;
    const now = clock.now();
    let data = buf.subarray(0, n);
    if (!this.upgraded) {
      this.head = this.head ? Buffer.concat([this.head, data]) : Buffer.from(data);
      const end = this.head.indexOf(CRLF2);
      if (end < 0) {
        if (this.head.length > MAX_HEADER) this.finish("oversized HTTP answer");
        return;
      }
      const status = this.head.toString("latin1", 0, Math.min(end, 200)).split("\r\n")[0];
      if (!/^HTTP\/1\.1 101/u.test(status)) {
        this.finish(`upgrade refused: ${status}`);
        return;
      }
      this.upgraded = true;
      data = this.head.subarray(end + 4);
      this.head = null;
      this.handler.open(this);
      if (data.length === 0 || this.closed) return;
    }
    if (this.rem) {
      data = Buffer.concat([this.rem, data]);
      this.rem = null;
    }
    const len = data.length;
    let off = 0;
    while (off + 2 <= len) {
      const b0 = data[off];
      const b1 = data[off + 1];
      let plen = b1 & 0x7f;
      let hl = 2;
      if (plen === 126) {
        if (off + 4 > len) break;
        plen = (data[off + 2] << 8) | data[off + 3];
        hl = 4;
      } else if (plen === 127) {
        if (off + 10 > len) break;
        plen = data.readUInt32BE(off + 2) * 2 ** 32 + data.readUInt32BE(off + 6);
        hl = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (masked) hl += 4;
      if (plen > MAX_MESSAGE) {
        this.finish("oversized frame");
        return;
      }
      if (off + hl + plen > len) break;
      const start = off + hl;
      const end = start + plen;
      if (masked) {
        // Servers must not mask; unmask in place anyway rather than fail.
        for (let i = 0; i < plen; i++) data[start + i] ^= data[off + hl - 4 + (i & 3)];
      }
      off = end;
      const fin = (b0 & 0x80) !== 0;
      const op = b0 & 0x0f;
      if (op >= 8) {
        if (op === OP_PING) this.send(data.subarray(start, end), OP_PONG);
        else if (op === OP_CLOSE) {
          const code = plen >= 2 ? (data[start] << 8) | data[start + 1] : 1005;
          const reason = data.toString("utf8", start + 2, end);
          if (!this.closed) {
            try {
              this.socket.end(encodeFrame(Buffer.from([0x03, 0xe8]), OP_CLOSE));
            } catch {
              /* gone */
            }
          }
          this.finish(`close ${code} ${reason}`);
          return;
        }
        continue;
      }
      if (op === 0 || !fin) {
        // Fragmented message: collect copies until the final fragment.
        if (op !== 0) {
          this.frag = [];
          this.fragOp = op;
        }
        if (!this.frag) {
          this.finish("continuation without a start");
          return;
        }
        this.frag.push(Buffer.from(data.subarray(start, end)));
        if (fin) {
          const whole = Buffer.concat(this.frag);
          this.frag = null;
          this.handler.message(this, whole, 0, whole.length, now, this.fragOp);
          if (this.closed) return;
        }
        continue;
      }
      this.handler.message(this, data, start, end, now, op);
      if (this.closed) return;
    }
    if (off < len) this.rem = Buffer.from(data.subarray(off));
  }
}
