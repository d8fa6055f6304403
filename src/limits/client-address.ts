import { BlockList, isIP } from "node:net";
import { peerAddress } from "../http/request-head.js";
import type { HttpRequest, HttpResponse } from "../uws.js";

/**
 * The address a request came from, for per-IP limits. Behind a proxy every request comes from
 * the proxy, so `X-Forwarded-For` is read, but only when the peer is a configured trusted proxy
 * (anyone else could send the header to pose as someone else), and then from the right: each
 * trusted proxy appended the address it saw, and the first one that is not a trusted proxy is
 * the client.
 */
export class ClientAddress {
  private readonly trusted: BlockList | undefined;

  constructor(trustedProxies: readonly string[]) {
    if (trustedProxies.length === 0) return;
    this.trusted = new BlockList();
    for (const entry of trustedProxies) {
      const [address, bits] = entry.split("/") as [string, string | undefined];
      const family = isIP(address) === 6 ? "ipv6" : "ipv4";
      if (bits === undefined) this.trusted.addAddress(address, family);
      else this.trusted.addSubnet(address, Number(bits), family);
    }
  }

  /** The client address of a request; call inside the uWS request callback. */
  of(res: HttpResponse, req: HttpRequest): string {
    return this.resolve(peerAddress(res), req.getHeader("x-forwarded-for"));
  }

  /** `peer` as uWS reports it; `forwardedFor` is the X-Forwarded-For header ("" when absent). */
  resolve(peer: string, forwardedFor: string): string {
    const client = normalize(peer);
    if (!this.trusted || forwardedFor === "" || !this.isTrusted(client)) return client;
    const hops = forwardedFor.split(",");
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = normalize((hops[i] as string).trim());
      if (isIP(hop) === 0) return client; // a malformed chain proves nothing: use what we saw
      if (!this.isTrusted(hop)) return hop;
    }
    return client;
  }

  private isTrusted(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && (this.trusted as BlockList).check(address, family === 6 ? "ipv6" : "ipv4");
  }
}

/** IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the IPv4 address, so both forms share one limit. */
function normalize(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}
