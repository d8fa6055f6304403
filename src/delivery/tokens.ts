import { AuthError, type Claims, type TokenVerifier } from "../auth/jwt.js";
import { anonymousAllowed } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/** Verifies a client's token for any transport: a bad or unverifiable token is a 401. */
export async function verifyToken(verifier: TokenVerifier | undefined, token: string): Promise<Claims> {
  if (!verifier) throw new ProtocolError(ErrorCode.Unauthenticated, "this gateway has no token keys configured");
  try {
    return await verifier.verify(token);
  } catch (err) {
    if (err instanceof AuthError) throw new ProtocolError(ErrorCode.Unauthenticated, err.message);
    throw err;
  }
}

/** A client without a token is refused up front when no namespace would let it do anything. */
export function requireAnonymousAllowed(namespaces: Record<string, NamespaceOptions>): void {
  if (!anonymousAllowed(namespaces)) {
    throw new ProtocolError(ErrorCode.Unauthenticated, "a token is required: no namespace allows anonymous clients");
  }
}
