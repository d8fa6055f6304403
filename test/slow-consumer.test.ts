import type { Socket } from "node:net";
import { describe, expect, it } from "vitest";
import type { Format, Frame, TestClient } from "./helpers/client.js";
import { ok, useGateway } from "./helpers/suite.js";

/**
 * A client that stops reading is disconnected with 4008 once the gateway holds more than
 * --backpressure-limit bytes for it, before uWS's hard cap (2 x limit + maxFrameSize) would drop
 * it without a close frame, while everyone else on the channel keeps receiving everything.
 */

const CONFIG = `
namespaces:
  feed: {history: {size: 1000, ttl: 5m}, clientPublish: true, anonymous: true}
`;
// The smallest limit the configuration allows is 16KiB; 64KiB keeps the test quick.
const LIMIT = "64KiB";
const FORMATS: Format[] = ["json", "msgpack"];
/** ~24 KB per publication: a handful past the limit, well under the 64KiB inbound frame limit. */
const PAD = "p".repeat(24_000);
const MAX_PUBLICATIONS = 2000;

const shared = useGateway({ config: { yaml: CONFIG }, args: ["--backpressure-limit", LIMIT, "--command-rate", "0"] });
const { connect } = shared;

/** The underlying TCP socket of a `ws` client: pausing it stops reading, so the server's buffer grows. */
function socketOf(c: TestClient): Socket {
  return (c.ws as unknown as { _socket: Socket })._socket;
}

/** natsedge_disconnects_total by close code, from the admin port. */
async function disconnects(): Promise<Map<string, number>> {
  const text = await (await fetch(`${shared.gw.adminUrl}/metrics`)).text();
  const counts = new Map<string, number>();
  for (const m of text.matchAll(/^natsedge_disconnects_total\{code="(\d+)"\} (\d+)/gm)) {
    counts.set(m[1] as string, Number(m[2]));
  }
  return counts;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe.each(FORMATS)("slow consumer over %s", (format) => {
  it.each(["one publish at a time", "8 publishes in flight"])(
    "a client that stops reading is closed with 4008, the others get everything (%s)",
    async (mode) => {
      const window = mode === "one publish at a time" ? 1 : 8;
      const ch = `feed.${format}-${window}`;
      const slow = await connect(format);
      const normals = [await connect("json"), await connect("msgpack")];
      const publisher = await connect(format);
      const { epoch } = ok(await slow.request("subscribe", { ch }));
      for (const n of normals) ok(await n.request("subscribe", { ch }));
      const before = await disconnects();

      socketOf(slow).pause();
      // Publish until the gateway reports the 4008 (the paused client cannot tell us), bounded
      // in count and time; the metric is polled every 10 publications.
      let published = 0;
      let inFlight: Array<Promise<Frame>> = [];
      let closedWith4008 = false;
      const deadline = Date.now() + 20_000;
      while (published < MAX_PUBLICATIONS && Date.now() < deadline && !closedWith4008) {
        published++;
        inFlight.push(publisher.request("publish", { ch, data: { n: published, pad: PAD } }));
        if (inFlight.length >= window) {
          for (const reply of await Promise.all(inFlight)) ok(reply);
          inFlight = [];
        }
        if (published % 10 === 0) {
          closedWith4008 = ((await disconnects()).get("4008") ?? 0) > (before.get("4008") ?? 0);
        }
      }
      for (const reply of await Promise.all(inFlight)) ok(reply);
      expect(closedWith4008, `no 4008 after ${published} publications`).toBe(true);
      // A few hundred KB past the kernel buffers, not thousands of publications.
      expect(published).toBeLessThan(MAX_PUBLICATIONS);

      socketOf(slow).resume();
      const closed = await slow.closed;
      expect(closed).toEqual({ code: 4008, reason: "slow consumer" });
      expect(slow.pushes.filter((p) => p.push === "disconnect")).toEqual([
        { push: "disconnect", code: 4008, reason: "slow consumer", reconnect: true },
      ]);
      // What the slow client did get is an unbroken prefix of the channel.
      const got = slow.pubs(ch).map((p) => p.offset as number);
      expect(got.length).toBeGreaterThan(0);
      expect(got.length).toBeLessThanOrEqual(published);
      expect(got).toEqual(range(1, got.length));

      // The hard cap never fired: 4008 exactly once, no close without a close frame (1006).
      const after = await disconnects();
      expect((after.get("4008") ?? 0) - (before.get("4008") ?? 0)).toBe(1);
      expect(after.get("1006") ?? 0).toBe(before.get("1006") ?? 0);

      // Everyone else received everything, in order, and is still connected.
      for (const n of normals) {
        await n.waitFor(() => (n.pubs(ch).length >= published ? true : undefined), `all ${published} pubs`, 15_000);
        const pubs = n.pubs(ch);
        expect(pubs.map((p) => p.offset)).toEqual(range(1, published));
        expect(pubs.map((p) => (p.data as Frame).n)).toEqual(range(1, published));
        expect(n.pushes.some((p) => p.push === "disconnect")).toBe(false);
        ok(await n.request("ping"));
      }

      // reconnect:true was meant: the slow client picks up where it stopped.
      const again = await connect(format);
      const last = got[got.length - 1] as number;
      const recovered = ok(await again.request("subscribe", { ch, since: { offset: last, epoch } }));
      expect(recovered).toMatchObject({ recovered: true, offset: published, epoch });
      expect((recovered.pubs as Frame[]).map((p) => p.offset)).toEqual(range(last + 1, published));
    },
  );
});
