/**
 * The benchmark's publication data, the same bytes in every dialect:
 *   {"c":<channel index>,"s":<sequence in that channel>,"t":<scheduled send time, ms>,"p":"xxx…"}
 * padded with "p" to exactly `size` bytes of JSON. `t` is the publisher's wall clock (shared
 * benchmark clock) for the message's slot in the fixed schedule, so a late send shows up as latency.
 * Receivers find `{"c":` in the frame and read the three numbers without JSON.parse.
 */
export const MARK = Buffer.from('{"c":');

export function makeData(c, s, t, size) {
  const head = `{"c":${c},"s":${s},"t":${t.toFixed(3)},"p":"`;
  const pad = size - head.length - 2;
  return head + (pad > 0 ? "x".repeat(pad) : "") + '"}';
}

/** Smallest data the format allows with large numbers; sizes below it are raised to it. */
export const MIN_DATA = makeData(99999, 99999999, 1e12, 0).length;

/** Result slots of parseData (no allocation per message). */
export const parsed = { c: 0, s: 0, t: 0 };

/**
 * Parses the numbers after MARK at `i` (index of the `{`). Returns false when the bytes do not
 * look like benchmark data.
 */
export function parseData(buf, i, end) {
  i += 5;
  let c = 0;
  let ch;
  while (i < end && (ch = buf[i]) >= 48 && ch <= 57) {
    c = c * 10 + ch - 48;
    i++;
  }
  if (buf[i] !== 44 || buf[i + 2] !== 115) return false; // ,"s":
  i += 5;
  let s = 0;
  while (i < end && (ch = buf[i]) >= 48 && ch <= 57) {
    s = s * 10 + ch - 48;
    i++;
  }
  if (buf[i] !== 44 || buf[i + 2] !== 116) return false; // ,"t":
  i += 5;
  let t = 0;
  while (i < end && (ch = buf[i]) >= 48 && ch <= 57) {
    t = t * 10 + ch - 48;
    i++;
  }
  if (buf[i] === 46) {
    i++;
    let f = 0;
    let d = 1;
    while (i < end && (ch = buf[i]) >= 48 && ch <= 57) {
      f = f * 10 + ch - 48;
      d *= 10;
      i++;
    }
    t += f / d;
  }
  parsed.c = c;
  parsed.s = s;
  parsed.t = t;
  return true;
}
