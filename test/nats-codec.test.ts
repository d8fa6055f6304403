/**
 * How bodies published straight to NATS become publications (src/nats/codec.ts). Property-based
 * fuzzing of the same decoders is in test/fuzz-decoders.test.ts.
 */
import { describe, expect, it } from "vitest";
import { decodePayload, decodePublication } from "../src/nats/codec.js";
import { encodePubPush } from "../src/protocol/push.js";

describe("NATS payloads", () => {
  // Found by fuzzing (test/fuzz-decoders.test.ts, test/fuzz-nats.test.ts): pretty-printed JSON
  // from a raw NATS publisher was spliced into pushes and history replies with its line breaks,
  // and a client that reads JSON messages line by line (the SDK in src/client does) got pieces
  // of a frame it could not parse.
  it("forwards pretty-printed JSON on one line, otherwise byte for byte", () => {
    const text = '{\r\n  "a": [1, 2.50],\n  "b": "x\\ny"\n}\n';
    expect(decodePayload(Buffer.from(text), undefined)?.json().toString("utf8")).toBe('{    "a": [1, 2.50],   "b": "x\\ny" } ');
    const pub = decodePublication("chat.x", Buffer.from(text), undefined, { offset: 3 });
    const frame = encodePubPush("json", pub as NonNullable<typeof pub>).toString("utf8");
    expect(frame).not.toMatch(/[\r\n]/);
    expect(JSON.parse(frame)).toEqual({ push: "pub", ch: "chat.x", offset: 3, data: { a: [1, 2.5], b: "x\ny" } });
  });
});
