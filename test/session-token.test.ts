/**
 * Long-poll and SSE sessions (src/http/session-token.ts) beyond what the transports' tests reach.
 * Property-based fuzzing of verify() is in test/fuzz-decoders.test.ts.
 */
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SessionError, SessionSigner } from "../src/http/session-token.js";

const SECRET = "session-token-test-secret-0123456789abcdef";

/** A session whose body is `body`, signed with the right secret (not written by issue()). */
function signed(body: string): string {
  const b = Buffer.from(body).toString("base64url");
  return `${b}.${createHmac("sha256", SECRET).update(b).digest("base64url")}`;
}

describe("SessionSigner.verify", () => {
  // Found by fuzzing (test/fuzz-decoders.test.ts): a correctly signed body of `null` threw a
  // TypeError instead of SessionError. Only a holder of the secret can sign one, but verify()
  // must not depend on every signed body having been written by this version's issue().
  it("refuses a signed body that is not a session object with SessionError", () => {
    const signer = new SessionSigner(SECRET);
    const x = 9_999_999_999;
    for (const body of ["null", "[]", '"s"', "1", `{"c":"c","u":"u","x":${x},"ch":"chat.*"}`, `{"c":"c","u":"u","x":${x},"ch":[1]}`, `{"c":"c","u":"u","x":${x},"e":"soon"}`]) {
      expect(() => signer.verify(signed(body)), body).toThrow(SessionError);
    }
    expect(signer.verify(signed(`{"c":"c","u":"u","x":${x},"ch":["chat.*"],"e":${x}}`)).claims).toEqual({ sub: "u", exp: x, channels: ["chat.*"] });
  });
});
