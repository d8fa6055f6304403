/**
 * Tracing in-process: W3C traceparent parsing against hostile input, sampling at the root, and
 * the OTLP exporter's bounded queue, batching and failure counting with fake timers.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../src/config/load.js";
import { formatTraceparent, parseTraceparent } from "../src/tracing/context.js";
import { OtlpExporter, type Post } from "../src/tracing/otlp.js";
import { SpanKind, Tracer, type FinishedSpan } from "../src/tracing/tracer.js";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN = "00f067aa0ba902b7";
const silent = { warn: () => {} };

describe("traceparent", () => {
  it("reads a valid version-00 value and formats it back", () => {
    const v = `00-${TRACE}-${SPAN}-01`;
    expect(parseTraceparent(v)).toEqual({ traceId: TRACE, spanId: SPAN, sampled: true });
    expect(formatTraceparent(parseTraceparent(v)!)).toBe(v);
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-00`)?.sampled).toBe(false);
    // Flags other than "sampled" are kept out of the decision.
    expect(parseTraceparent(`00-${TRACE}-${SPAN}-03`)?.sampled).toBe(true);
  });

  it("accepts a later version's extra fields and refuses version ff", () => {
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-01-whatever`)?.traceId).toBe(TRACE);
    expect(parseTraceparent(`01-${TRACE}-${SPAN}-01x`)).toBeUndefined();
    expect(parseTraceparent(`ff-${TRACE}-${SPAN}-01`)).toBeUndefined();
  });

  it("ignores hostile and malformed values without throwing", () => {
    const bad: unknown[] = [
      undefined,
      null,
      42,
      {},
      ["00"],
      "",
      `00-${TRACE}-${SPAN}-01-extra`,
      `00-${TRACE.toUpperCase()}-${SPAN}-01`,
      `00-${"0".repeat(32)}-${SPAN}-01`,
      `00-${TRACE}-${"0".repeat(16)}-01`,
      `00-${TRACE.slice(1)}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-0g`,
      `00_${TRACE}_${SPAN}_01`,
      ` 00-${TRACE}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-01\n`,
      `01-${TRACE}-${SPAN}-01-${"x".repeat(100_000)}`,
      "00-".repeat(100_000),
    ];
    for (const v of bad) expect(parseTraceparent(v), String(v).slice(0, 80)).toBeUndefined();
  });
});

describe("tracer", () => {
  const spans: FinishedSpan[] = [];
  const sink = { add: (s: FinishedSpan) => spans.push(s) };

  it("decides sampling at the root and follows a parent's decision", () => {
    spans.length = 0;
    let r = 0.7;
    const tracer = new Tracer(sink, 0.5, () => r);
    const dropped = tracer.start("a", SpanKind.server, undefined);
    expect(dropped.context.sampled).toBe(false);
    const child = tracer.start("b", SpanKind.client, dropped.context);
    expect(child.context.sampled).toBe(false);
    expect(child.context.traceId).toBe(dropped.context.traceId);
    child.end();
    dropped.end();
    expect(spans).toHaveLength(0);
    // A sampled parent (a client's traceparent) is followed whatever the ratio says.
    const joined = tracer.start("c", SpanKind.server, parseTraceparent(`00-${TRACE}-${SPAN}-01`));
    joined.end();
    joined.end();
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ name: "c", parentSpanId: SPAN, context: { traceId: TRACE, sampled: true } });
    r = 0.2;
    expect(tracer.start("d", SpanKind.server, undefined).context.sampled).toBe(true);
  });

  it("makes distinct, valid ids", () => {
    const tracer = new Tracer(sink, 1);
    const ids = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const s = tracer.start("x", SpanKind.server, undefined);
      expect(s.context.spanId).toMatch(/^[0-9a-f]{16}$/);
      expect(s.context.traceId).toMatch(/^[0-9a-f]{32}$/);
      ids.add(s.context.spanId);
    }
    expect(ids.size).toBe(2000);
  });
});

function finished(i: number): FinishedSpan {
  return {
    name: `s${i}`,
    kind: SpanKind.server,
    context: { traceId: TRACE, spanId: i.toString(16).padStart(16, "1"), sampled: true },
    parentSpanId: undefined,
    start: 1_700_000_000_000_000_000n,
    end: 1_700_000_000_000_500_000n,
    attributes: { "natsedge.channel": "chat:a", "natsedge.sent": 3, ok: true },
  };
}

/** A collector that never answers, behind a post that honours its timeout as fetch with AbortSignal.timeout does. */
function unanswered(timeouts: number[]): (timeoutMs: number) => Promise<void> {
  return (timeoutMs) => {
    timeouts.push(timeoutMs);
    return new Promise<void>((_resolve, reject) => setTimeout(() => reject(new Error("timeout")), timeoutMs));
  };
}

describe("OTLP exporter", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function harness(opts: { maxQueue?: number; maxBatch?: number }, answer: (timeoutMs: number) => Promise<void> = () => Promise.resolve()) {
    const bodies: Array<Record<string, unknown>> = [];
    const drops: Record<string, number> = {};
    const post: Post = (_url, body, timeoutMs) => {
      bodies.push(JSON.parse(body) as Record<string, unknown>);
      return answer(timeoutMs);
    };
    const exporter = new OtlpExporter(
      { url: "http://127.0.0.1:1/v1/traces", serviceName: "svc", instance: "n1", intervalMs: 1_000, ...opts },
      (n, reason) => (drops[reason] = (drops[reason] ?? 0) + n),
      silent,
      post,
    );
    const spansIn = (i: number) => {
      const b = bodies[i] as { resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<Record<string, unknown>> }> }> };
      return b.resourceSpans[0]!.scopeSpans[0]!.spans;
    };
    return { exporter, bodies, drops, spansIn };
  }

  it("sends on the interval in OTLP JSON", async () => {
    vi.useFakeTimers();
    const { exporter, bodies, spansIn } = harness({});
    exporter.add(finished(1));
    expect(bodies).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(bodies).toHaveLength(1);
    const body = bodies[0] as { resourceSpans: Array<{ resource: { attributes: unknown[] } }> };
    expect(body.resourceSpans[0]!.resource.attributes).toContainEqual({ key: "service.name", value: { stringValue: "svc" } });
    expect(spansIn(0)[0]).toMatchObject({
      traceId: TRACE,
      name: "s1",
      kind: 2,
      startTimeUnixNano: "1700000000000000000",
      endTimeUnixNano: "1700000000000500000",
      status: { code: 0 },
    });
    expect(spansIn(0)[0]!.attributes).toContainEqual({ key: "natsedge.sent", value: { intValue: "3" } });
    expect(spansIn(0)[0]).not.toHaveProperty("parentSpanId");
    await exporter.close();
  });

  it("sends a full batch at once and one request at a time", async () => {
    vi.useFakeTimers();
    let release: () => void = () => {};
    const { exporter, bodies, spansIn } = harness({ maxBatch: 4, maxQueue: 100 }, () => new Promise<void>((r) => (release = r)));
    for (let i = 0; i < 10; i++) exporter.add(finished(i));
    // The first full batch went out; the rest waits for it to finish.
    expect(bodies).toHaveLength(1);
    expect(spansIn(0)).toHaveLength(4);
    expect(exporter.queued).toBe(6);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(bodies).toHaveLength(2);
    release();
    await vi.advanceTimersByTimeAsync(1_000);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(bodies.map((_, i) => spansIn(i).length)).toEqual([4, 4, 2]);
    expect(exporter.queued).toBe(0);
    await exporter.close();
  });

  it("drops and counts past its bound while the collector does not answer, and never waits on it", async () => {
    vi.useFakeTimers();
    const { exporter, bodies, drops } = harness({ maxBatch: 10, maxQueue: 20 }, () => new Promise<void>(() => {}));
    for (let i = 0; i < 100; i++) exporter.add(finished(i));
    // One batch of 10 in flight (never answered), 20 queued, the other 70 dropped.
    expect(bodies).toHaveLength(1);
    expect(exporter.queued).toBe(20);
    expect(drops).toEqual({ queue_full: 70 });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(bodies).toHaveLength(1);
  });

  // 35 spans in batches of 10: the first batch is on its way (10 s timeout) when the shutdown
  // comes, and when it fails the 25 behind it are dropped, not tried one timeout after another.
  // One span: the batch sent at shutdown gets the short timeout.
  for (const { spans, maxBatch, timeout } of [
    { spans: 35, maxBatch: 10, timeout: 10_000 },
    { spans: 1, maxBatch: 512, timeout: 2_000 },
  ]) {
    it(`holds a shutdown up for one timeout at most when the collector is away (${spans} spans)`, async () => {
      vi.useFakeTimers();
      const timeouts: number[] = [];
      const { exporter, drops } = harness({ maxBatch, maxQueue: 100 }, unanswered(timeouts));
      for (let i = 0; i < spans; i++) exporter.add(finished(i));
      let closed = false;
      void exporter.close().then(() => (closed = true));
      await vi.advanceTimersByTimeAsync(timeout - 1);
      expect(closed).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(closed).toBe(true);
      expect(timeouts).toEqual([timeout]);
      expect(drops).toEqual({ export_failed: spans });
    });
  }

  it("counts a batch the collector refused and goes on with the next", async () => {
    vi.useFakeTimers();
    let fail = true;
    const { exporter, bodies, drops } = harness({}, () => (fail ? Promise.reject(new Error("503")) : Promise.resolve()));
    exporter.add(finished(1));
    exporter.add(finished(2));
    await vi.advanceTimersByTimeAsync(1_000);
    expect(drops).toEqual({ export_failed: 2 });
    fail = false;
    exporter.add(finished(3));
    await exporter.close();
    expect(bodies).toHaveLength(2);
    expect(drops).toEqual({ export_failed: 2 });
  });
});

function tracingOf(argv: string[]): unknown {
  const out = loadConfig(argv, {});
  if (!("config" in out)) throw new Error("help instead of a config");
  return out.config.tracing;
}

describe("tracing settings", () => {
  it("are off unless otlpUrl is set, and check their values", () => {
    expect(tracingOf([])).toBeUndefined();
    const on = tracingOf(["--tracing-otlp-url", "http://127.0.0.1:4318/v1/traces", "--tracing-sample-ratio", "0.25"]);
    expect(on).toEqual({ otlpUrl: "http://127.0.0.1:4318/v1/traces", sampleRatio: 0.25, serviceName: "natsedge" });
    expect(() => tracingOf(["--tracing-sample-ratio", "0.5"])).toThrow(/needs tracing.otlpUrl/);
    expect(() => tracingOf(["--tracing-otlp-url", "http://x/v1/traces", "--tracing-sample-ratio", "1.5"])).toThrow(/a number from 0 to 1/);
    expect(() => tracingOf(["--tracing-otlp-url", "ftp://x/v1/traces"])).toThrow(/http/);
  });
});
