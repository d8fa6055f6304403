import type { ResolvedChannel } from "../channels.js";
import type { ClientRequest } from "../hooks/request.js";
import { ErrorCode, ProtocolError } from "../protocol/codes.js";
import { checkAccess } from "./access.js";
import type { DeliveryContext } from "./context.js";
import type { Identity } from "./identity.js";
import { verifySubscriptionToken } from "./tokens.js";
import type { SpanContext } from "../tracing/context.js";

/** Why a client may subscribe, and how it appears in the channel's presence. */
export interface SubscribePermit {
  /** The client's info in this channel's presence, when the backend set one. */
  info?: unknown;
  /**
   * A subscription token granted it: the backend decided for this channel, so a narrower
   * connection token on refresh does not end the subscription.
   */
  signed: boolean;
}

/**
 * Whether a client may subscribe to a channel, the same for every transport. A subscription
 * token decides alone: it must name this channel and this user (`""` for an anonymous client)
 * and not be expired, and then neither the connection's permissions nor the subscribe hook are
 * asked. Without one, the connection's permissions are checked and the namespace's subscribe
 * hook asked. ProtocolError 401 (token invalid or expired), 403, or the hook's refusal.
 */
export async function permitSubscribe(
  ctx: DeliveryContext,
  identity: Identity,
  r: ResolvedChannel,
  request: ClientRequest,
  data: unknown,
  token: string | undefined,
  trace?: SpanContext,
): Promise<SubscribePermit> {
  if (token !== undefined) {
    const claims = await verifySubscriptionToken(ctx.verifier, token);
    if (claims.channel !== r.ch) throw new ProtocolError(ErrorCode.Forbidden, `subscription token is for another channel`);
    if (claims.sub !== identity.user) throw new ProtocolError(ErrorCode.Forbidden, `subscription token is for another user`);
    return claims.info === undefined ? { signed: true } : { signed: true, info: claims.info };
  }
  checkAccess(identity, r);
  const grant = await ctx.hooks.subscribe(identity, r, request, data, trace);
  return grant?.info === undefined ? { signed: false } : { signed: false, info: grant.info };
}
