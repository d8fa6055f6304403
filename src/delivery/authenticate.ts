import type { Claims } from "../auth/jwt.js";
import type { ClientRequest } from "../hooks/request.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import type { SpanContext } from "../tracing/context.js";
import type { Span } from "../tracing/tracer.js";
import type { DeliveryContext } from "./context.js";
import type { Identity } from "./identity.js";
import { requireAnonymousAllowed, verifyToken } from "./tokens.js";

/** Who a connecting client turned out to be, and where the backend subscribes it. */
export interface Authenticated {
  /** Absent for an anonymous client. */
  claims?: Claims;
  /** Set by the connect hook: the claims came from the backend, which also refreshes them. */
  byHook?: true;
  /** Channels the connect hook subscribes the client to. */
  channels?: string[];
}

/**
 * Authenticates a connecting client the same way on every transport: a JWT when it brings one,
 * else the connect hook when one is configured (it sees the forwarded headers and cookies and
 * the connect command's `data`), else the anonymous rules. A connect hook failing open falls
 * back to the anonymous rules.
 */
export async function authenticate(
  ctx: DeliveryContext,
  client: string,
  token: string | undefined,
  request: ClientRequest,
  data: unknown,
  trace?: SpanContext,
): Promise<Authenticated> {
  if (token !== undefined) return { claims: await verifyToken(ctx.verifier, token) };
  const grant = await ctx.hooks.connect(client, request, data, trace);
  if (grant) {
    const claims: Claims = { sub: grant.user };
    if (grant.exp !== undefined) claims.exp = grant.exp;
    if (grant.info !== undefined) claims.info = grant.info;
    const out: Authenticated = { claims, byHook: true };
    if (grant.channels !== undefined) out.channels = grant.channels;
    return out;
  }
  requireAnonymousAllowed(ctx.config.namespaces);
  return {};
}

/** What a `connect` span says about who connected, once authenticated. */
export function describeConnect(span: Span | undefined, transport: string, client: string, user: string): void {
  if (!span) return;
  span.set("natsedge.transport", transport);
  span.set("natsedge.client", client);
  span.set("enduser.id", user);
}

/**
 * New claims for a connected client: from a JWT for the same user when one is given, else from
 * the refresh hook (which may extend `exp` and replace `info`; the user stays who it was).
 */
export async function refreshClaims(
  ctx: DeliveryContext,
  identity: Identity,
  token: string | undefined,
  request: ClientRequest,
): Promise<Claims> {
  if (identity.user === "") {
    throw new ProtocolError(ErrorCode.BadRequest, "an anonymous connection cannot refresh; reconnect with a token");
  }
  if (token !== undefined) {
    const claims = await verifyToken(ctx.verifier, token);
    if (claims.sub !== identity.user) throw new ProtocolError(ErrorCode.Forbidden, "refresh token is for another user");
    return claims;
  }
  const grant = await ctx.hooks.refresh(identity, request);
  const claims: Claims = { sub: identity.user };
  if (grant.exp !== undefined) claims.exp = grant.exp;
  const info = grant.info ?? identity.claims?.info;
  if (info !== undefined) claims.info = info;
  if (identity.claims?.channels !== undefined) claims.channels = identity.claims.channels;
  return claims;
}
