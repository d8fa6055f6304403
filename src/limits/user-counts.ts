/**
 * How many connections a user holds across the cluster, for `maxConnectionsPerUser`. Each
 * gateway knows its own count exactly; the question is the others'. In memory mode there are no
 * others.
 */
export interface UserCounts {
  /**
   * This gateway's count of the user's connections is now `count`; resolves once others can see
   * it, or once its failure was logged (it is then corrected by a later write).
   */
  set(user: string, count: number): Promise<void>;
  /** Where this gateway's counts are kept, for writing them all again (counts that age out). */
  rewriteFrom(counts: () => ReadonlyMap<string, number>): void;
  /** The user's connections on every live gateway, `local` being this gateway's own count. */
  total(user: string, local: number): Promise<number>;
  close(): Promise<void>;
}

export class LocalUserCounts implements UserCounts {
  async set(): Promise<void> {}

  rewriteFrom(): void {}

  async total(_user: string, local: number): Promise<number> {
    return local;
  }

  async close(): Promise<void> {}
}
