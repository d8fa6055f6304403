/**
 * The client side of each system's protocol, for the subscribing connections (the fast path for
 * data frames is shared: find the payload MARK and read its numbers). Each dialect answers:
 *   path            upgrade request target
 *   open(conn)      called after the 101; sends whatever starts the session and subscribes
 *   control(conn, text)  every message that is not benchmark data
 *   publish(conn, ch, data)  a client publication (chat), `data` being benchmark data (JSON text)
 * and calls conn.state.ready() once every subscription is confirmed, conn.state.fail(reason) on a
 * refusal.
 *
 * natsedge: protocol v1 JSON (docs/protocol.md): connect (with the spec's JWT, if any), then one
 *   subscribe per channel, all in one write (commands run in order); ready when the last subscribe
 *   is answered ok. On history channels (spec.history) a channel with a known epoch is subscribed
 *   with `since: {offset, epoch}`, and every subscribe `ok` goes to conn.state.position(j, ok).
 * uws (baselines/uws-raw.js): "S<ch>,<ch>" subscribes, answered "A"; pushes are
 *   {"ch":"<ch>","data":<data>}.
 * sio: Socket.IO v4 over engine.io v4 websocket: server "0{…}" (open), client "40", server
 *   "40{…}", client "420[\"sub\",[…]]" (event with ack id 0), server "430[true]"; engine ping "2"
 *   answered "3"; events arrive as 42["m","<ch>",<data>].
 * natsws: the NATS text protocol over nats-server's WebSocket listener: server INFO, client
 *   CONNECT + one SUB per channel + PING, ready on the PONG; publishes are PUB, data arrives in MSG.
 *   A WebSocket message is a piece of a byte stream (several MSGs, or part of one), so this
 *   dialect has split(): it cuts the stream into protocol lines and hands each MSG payload to
 *   the shared data path.
 */
import { encodeFrame } from "./ws.js";

const CRLF = Buffer.from("\r\n");

/** natsedge: subscribe to the spec's channel i, with `since` once its position is known. */
function subscribeFrame(st, i) {
  const ep = st.track ? st.spec.epoch[i] : null;
  const since = ep === null || ep === undefined ? "" : `,"since":{"offset":${st.spec.off[i]},"epoch":${JSON.stringify(ep)}}`;
  return `{"id":${i + 1},"op":"subscribe","ch":${JSON.stringify(st.channels[i])}${since}}`;
}

export const dialects = {
  natsedge: {
    path: "/ws",
    open(conn) {
      const st = conn.state;
      const chs = st.channels;
      const frames = [encodeFrame(st.token ? `{"id":0,"op":"connect","token":${JSON.stringify(st.token)}}` : '{"id":0,"op":"connect"}')];
      chs.forEach((_, i) => frames.push(encodeFrame(subscribeFrame(st, i))));
      conn.state.pending = chs.length;
      conn.sendRaw(Buffer.concat(frames));
    },
    publish(conn, ch, data) {
      // Ids above the subscribes' so that a reply is never taken for a subscribe's.
      const st = conn.state;
      st.pubId = (st.pubId ?? st.channels.length) + 1;
      conn.send(`{"id":${st.pubId},"op":"publish","ch":${JSON.stringify(ch)},"data":${data}}`);
    },
    control(conn, text) {
      let f;
      try {
        f = JSON.parse(text);
      } catch {
        return conn.state.fail(`bad frame ${text.slice(0, 80)}`);
      }
      const st = conn.state;
      // A subscribe refused for now (503 busy, 429): retried on the same connection after the
      // SDK's delay (no sooner than retryAfter), as the SDK does; other errors fail the connection.
      const j = typeof f.id === "number" ? f.id - 1 : -1;
      if (f.error && st.retrySubscribe && !st.isReady && (f.error.code === 503 || f.error.code === 429) && j >= 0 && j < st.channels.length) {
        return st.retrySubscribe(f.error.retryAfter, () => !conn.closed && conn.send(subscribeFrame(st, j)));
      }
      if (f.error) return conn.state.fail(`error reply to id ${f.id}${st.isReady ? " (ready)" : ""}: ${JSON.stringify(f.error)}`);
      if (f.push === "disconnect") return conn.state.note(`disconnect push ${f.code ?? ""} ${f.reason ?? ""}`);
      if (typeof f.id === "number" && f.id > 0 && f.ok !== undefined) {
        if (conn.state.isReady) return; // a publish acknowledged
        if (conn.state.track && f.ok && typeof f.ok === "object") conn.state.position(f.id - 1, f.ok);
        if (--conn.state.pending === 0) conn.state.ready();
      }
    },
  },

  uws: {
    path: "/ws",
    open(conn) {
      conn.send(`S${conn.state.channels.join(",")}`);
    },
    control(conn, text) {
      if (text === "A") return conn.state.ready();
      conn.state.fail(`unexpected ${text.slice(0, 80)}`);
    },
    publish(conn, ch, data) {
      conn.send(`P${ch} ${data}`);
    },
  },

  sio: {
    path: "/socket.io/?EIO=4&transport=websocket",
    open() {
      /* the server speaks first: engine.io open packet */
    },
    control(conn, text) {
      const t = text[0];
      if (t === "2") return void conn.send("3"); // engine.io ping -> pong
      if (t === "0") return void conn.send("40"); // engine.io open -> socket.io connect (namespace /)
      if (text.startsWith("40")) return void conn.send(`420["sub",${JSON.stringify(conn.state.channels)}]`);
      if (text.startsWith("430")) return conn.state.ready();
      if (text.startsWith("41")) return conn.state.note("socket.io disconnect");
      if (text.startsWith("44")) return conn.state.fail(`connect error ${text.slice(0, 120)}`);
      if (t === "1") return conn.state.note("engine.io close");
      if (t === "3" || t === "6") return;
      conn.state.note(`unexpected ${text.slice(0, 80)}`);
    },
    publish(conn, ch, data) {
      conn.send(`42["pub",${JSON.stringify(ch)},${data}]`);
    },
  },

  natsws: {
    path: "/",
    open() {
      /* the server speaks first: INFO */
    },
    split(conn, buf, start, end, payload) {
      const st = conn.state;
      let b = buf;
      let i = start;
      let e = end;
      if (st.rest) {
        b = Buffer.concat([st.rest, buf.subarray(start, end)]);
        i = 0;
        e = b.length;
        st.rest = null;
      }
      while (i < e) {
        const nl = b.indexOf(CRLF, i);
        if (nl < 0 || nl >= e) break;
        if (b[i] === 0x4d) {
          // MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
          const line = b.toString("latin1", i, nl);
          const n = Number(line.slice(line.lastIndexOf(" ") + 1));
          const ps = nl + 2;
          if (ps + n + 2 > e) break;
          payload(conn, b, ps, ps + n);
          i = ps + n + 2;
          continue;
        }
        const line = b.toString("latin1", i, nl);
        i = nl + 2;
        if (line === "PING") conn.send("PONG\r\n");
        else if (line === "PONG") {
          if (!st.isReady) st.ready();
        } else if (line.startsWith("INFO")) {
          if (st.natsConnected) continue;
          st.natsConnected = true;
          const subs = st.channels.map((ch, k) => `SUB ${ch} ${k + 1}\r\n`).join("");
          conn.send(`CONNECT {"verbose":false,"pedantic":false,"echo":true,"protocol":1}\r\n${subs}PING\r\n`);
        } else if (line.startsWith("-ERR")) st.fail(line);
      }
      if (i < e) st.rest = Buffer.from(b.subarray(i, e));
    },
    control(conn, text) {
      conn.state.note(`unexpected ${text.slice(0, 80)}`);
    },
    publish(conn, ch, data) {
      conn.send(`PUB ${ch} ${Buffer.byteLength(data)}\r\n${data}\r\n`);
    },
  },
};
