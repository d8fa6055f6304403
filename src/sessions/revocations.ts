/**
 * Long-poll and SSE sessions are signed tokens that any replica accepts until they expire, so a
 * server-side disconnect cannot close them: it revokes them instead. A revocation names a user and
 * the moment; every session of that user issued up to then is refused from then on, on every
 * replica. It has to outlive the sessions it ends, and no longer: SESSION_TTL_MS.
 */
export interface Revocations {
  start(): Promise<void>;
  /** Ends every session of `user` issued up to now, on every replica. */
  revoke(user: string): Promise<void>;
  /** When the user's sessions were last revoked (ms since the epoch), within SESSION_TTL_MS. */
  revokedAt(user: string, now?: number): number | undefined;
  close(): Promise<void>;
}

/** The longest a long-poll or SSE session lives (also without a token `exp`). */
export const SESSION_TTL_MS = 24 * 3600 * 1000;
/** Revoked users remembered at once; beyond it the oldest are forgotten (their sessions stay refused until then). */
const MAX_REVOKED = 100_000;

/** The revocations a replica knows of, expiring with the sessions they end. */
export class RevocationSet {
  private readonly at = new Map<string, number>();

  add(user: string, at: number): void {
    const known = this.at.get(user);
    if (known !== undefined && known >= at) return;
    this.at.delete(user);
    if (this.at.size >= MAX_REVOKED) {
      const oldest = this.at.keys().next();
      if (!oldest.done) this.at.delete(oldest.value);
    }
    this.at.set(user, at);
  }

  get(user: string, now = Date.now()): number | undefined {
    const at = this.at.get(user);
    if (at === undefined) return undefined;
    if (now - at > SESSION_TTL_MS) {
      this.at.delete(user);
      return undefined;
    }
    return at;
  }
}

/** One process: the set is the whole truth. */
export class MemoryRevocations implements Revocations {
  private readonly set = new RevocationSet();

  async start(): Promise<void> {}

  async revoke(user: string): Promise<void> {
    this.set.add(user, Date.now());
  }

  revokedAt(user: string, now = Date.now()): number | undefined {
    return this.set.get(user, now);
  }

  async close(): Promise<void> {}
}
