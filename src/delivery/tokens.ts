import { AuthError, type Claims, type SubscriptionClaims, type TokenVerifier } from "../auth/jwt.js";
import { anonymousAllowed } from "../channels.js";
import type { NamespaceOptions } from "../config/types.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";

/** Verifies a client's connection token for any transport: a bad or unverifiable token is a 401. */
export function verifyToken(verifier: TokenVerifier | undefined, token: string): Promise<Claims> {
  return asProtocolError(verifier, (v) => v.verify(token));
}

/** Verifies a subscription token the same way (docs/protocol.md, "Subscription tokens"). */
export function verifySubscriptionToken(verifier: TokenVerifier | undefined, token: string): Promise<SubscriptionClaims> {
  return asProtocolError(verifier, (v) => v.verifySubscription(token));
}

async function asProtocolError<T>(verifier: TokenVerifier | undefined, verify: (v: TokenVerifier) => Promise<T>): Promise<T> {
  if (!verifier) throw new ProtocolError(ErrorCode.Unauthenticated, "this gateway has no token keys configured");
  try {
    return await verify(verifier);
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
