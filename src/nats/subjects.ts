/**
 * Every subject and stream name natsedge uses, in one place (documented in docs/architecture.md).
 * Channel names are already valid subject tokens; user and client ids are not, so they are
 * base64url-encoded into a single token where they appear.
 */
export class Subjects {
  constructor(readonly prefix: string) {}

  /** Where backends (and gateways) publish channel data. */
  channel(ch: string): string {
    return `${this.prefix}.ch.${ch}`;
  }

  /** Where a history namespace's stream republishes stored publications, with sequence headers. */
  republished(ch: string): string {
    return `${this.prefix}.rp.${ch}`;
  }

  namespaceSubjects(ns: string): { stored: string; republished: string } {
    return { stored: `${this.prefix}.ch.${ns}.>`, republished: `${this.prefix}.rp.${ns}.>` };
  }

  /** Gateway-to-gateway control messages (disconnect a user). */
  control(): string {
    return `${this.prefix}.ctl`;
  }

  /** Requests every gateway answers about itself (server API `info`, `channels`). */
  cluster(what: string): string {
    return `${this.prefix}.cluster.${what}`;
  }

  probe(node: string): string {
    return `${this.prefix}.probe.${node}`;
  }

  api(op: string): string {
    return `${this.prefix}.api.${op}`;
  }

  /** Where backends answer a hook (request/reply; they subscribe with a queue group). */
  hook(kind: string): string {
    return `${this.prefix}.hook.${kind}`;
  }

  /**
   * Where a publish with an idempotency key to a channel without history goes: a stream that
   * dedupes by message id and republishes what it stores to the channel subject, so recording
   * the key and delivering the message are one server-side step.
   */
  idempotent(ch: string): string {
    return `${this.prefix}.idem.${ch}`;
  }

  idempotentSubjects(): { stored: string; republished: string } {
    return { stored: `${this.prefix}.idem.>`, republished: `${this.prefix}.ch.>` };
  }

  presence(ch: string, identity: string, node: string, client: string): string {
    return `${this.prefix}.presence.${encodeToken(ch)}.${encodeToken(identity)}.${node}.${encodeToken(client)}`;
  }

  presenceOfChannel(ch: string): string {
    return `${this.prefix}.presence.${encodeToken(ch)}.>`;
  }

  presenceOfIdentity(ch: string, identity: string): string {
    return `${this.prefix}.presence.${encodeToken(ch)}.${encodeToken(identity)}.*.*`;
  }

  allPresence(): string {
    return `${this.prefix}.presence.>`;
  }

  /** Splits a presence subject back into its parts; undefined for anything else. */
  parsePresence(subject: string): { ch: string; identity: string; node: string; client: string } | undefined {
    const head = `${this.prefix}.presence.`;
    if (!subject.startsWith(head)) return undefined;
    const parts = subject.slice(head.length).split(".");
    if (parts.length !== 4) return undefined;
    const [ch, identity, node, client] = parts as [string, string, string, string];
    return { ch: decodeToken(ch), identity: decodeToken(identity), node, client: decodeToken(client) };
  }

  node(node: string): string {
    return `${this.prefix}.node.${node}`;
  }

  allNodes(): string {
    return `${this.prefix}.node.*`;
  }

  // Stream names may not contain dots.
  private streamBase(): string {
    return this.prefix.replace(/\./g, "_");
  }

  namespaceStream(ns: string): string {
    return `${this.streamBase()}_ns_${ns}`;
  }

  presenceStream(): string {
    return `${this.streamBase()}_presence`;
  }

  nodesStream(): string {
    return `${this.streamBase()}_nodes`;
  }

  /** A user's session revocation (the moment, ms); `revoked("")` is the prefix of them all. */
  revoked(user: string): string {
    return user === "" ? `${this.prefix}.revoked.` : `${this.prefix}.revoked.${encodeToken(user)}`;
  }

  allRevoked(): string {
    return `${this.prefix}.revoked.>`;
  }

  revokedStream(): string {
    return `${this.streamBase()}_revoked`;
  }

  /** One gateway's count of a user's connections (maxConnectionsPerUser), as text. */
  userCount(user: string, node: string): string {
    return `${this.prefix}.ucount.${encodeToken(user)}.${node}`;
  }

  /**
   * Splits a user count subject into its user's token (encodeToken's, left encoded: a starting
   * gateway reads thousands of counts and decodes none) and its node; undefined for anything else.
   */
  parseUserCount(subject: string): { userToken: string; node: string } | undefined {
    const head = `${this.prefix}.ucount.`;
    if (!subject.startsWith(head)) return undefined;
    const parts = subject.slice(head.length).split(".");
    if (parts.length !== 2) return undefined;
    const [userToken, node] = parts as [string, string];
    return { userToken, node };
  }

  allUserCounts(): string {
    return `${this.prefix}.ucount.>`;
  }

  userCountsStream(): string {
    return `${this.streamBase()}_ucount`;
  }

  idempotentStream(): string {
    return `${this.streamBase()}_idem`;
  }

  /** Where a lifecycle event of this type is published (`user.online` -> `<prefix>.event.user.online`). */
  event(type: string): string {
    return `${this.prefix}.event.${type}`;
  }

  /** A lifecycle key's on/off bit (a user online, a channel occupied), set by compare-and-set. */
  transition(key: string): string {
    return `${this.prefix}.transition.${encodeToken(key)}`;
  }

  allTransitions(): string {
    return `${this.prefix}.transition.>`;
  }

  transitionsStream(): string {
    return `${this.streamBase()}_transitions`;
  }
}

export function encodeToken(s: string): string {
  return Buffer.from(s, "utf8").toString("base64url") || "_";
}

export function decodeToken(t: string): string {
  return t === "_" ? "" : Buffer.from(t, "base64url").toString("utf8");
}

/** A node id usable as one subject token. */
export function nodeToken(node: string): string {
  return node.replace(/[^A-Za-z0-9_-]/g, "-");
}
