import type { Claims } from "../auth/jwt.js";
import type { ClientInfo } from "../publication.js";

/**
 * Who a client is, whatever its transport: its client id, its user (`""` when anonymous) and the
 * token claims permissions need. Long-poll and SSE carry it between requests in a signed session.
 */
export interface Identity {
  client: string;
  user: string;
  claims?: Claims;
}

/** How the client is shown to others (presence, join/leave): the token's `info` claim included. */
export function clientInfo(identity: Identity): ClientInfo {
  const info: ClientInfo = { client: identity.client, user: identity.user };
  if (identity.claims?.info !== undefined) info.info = identity.claims.info;
  return info;
}
