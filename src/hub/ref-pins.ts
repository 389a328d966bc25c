/**
 * RefPins: which commit a branch, tag or other named revision stands for, shared by every answer
 * the mirror gives (file resolves, repo info, tree, paths-info) through the index's `refs` table.
 *
 * A pin is trusted for `ttlMs` after upstream named it; within that window every answer is
 * computed for the pinned commit, so a snapshot never mixes two commits even when upstream moves
 * the branch meanwhile. Past it, the last pin is still the offline answer.
 *
 * Freshness is measured on the monotonic clock: the stored `checked_at` is
 * wall-clock time, for the record and for the next process; a pin this process set or has judged
 * once is then aged monotonically, so a wall clock stepped back a day does not keep it alive for a
 * day and one stepped forward does not drop it early. A stored time in the future is not trusted.
 *
 * A pin carries the scope of the identity that learnt it (hub/access-policy.ts): a caller only
 * uses pins it `sees` (its own, or public ones), so a branch of a repo only the service token can
 * read is never named to anyone else. Default: public pins only.
 */
import { LRUCache } from 'lru-cache';
import { systemClock, type Clock } from '../clock.js';
import { orMiss, type CacheIndex } from '../storage/cache-index-contract.js';
import { PUBLIC_SCOPE, type Scope } from './access-policy.js';
import { repoKey, type RepoRef } from './repo-ref.js';

/** Which recorded scopes a caller may use (Identity.sees). */
export type Sees = (scope: string) => boolean;

const publicOnly: Sees = (scope) => scope === PUBLIC_SCOPE;

/** A pin as this process knows it: the row it stands for, and its monotonic birth time. */
interface SeenPin {
  commit: string;
  checkedAt: number;
  at: number;
}

export class RefPins {
  readonly #index: CacheIndex;
  readonly #ttlMs: number;
  readonly #clock: Clock;
  readonly #seen = new LRUCache<string, SeenPin>({ max: 10_000 });

  constructor(index: CacheIndex, ttlMs: number, clock: Clock = systemClock) {
    this.#index = index;
    this.#ttlMs = ttlMs;
    this.#clock = clock;
  }

  /** How long a pin stays fresh. */
  get ttlMs(): number {
    return this.#ttlMs;
  }

  /** The pinned commit of `revision` if upstream named it less than the TTL ago, in a scope the caller sees. */
  async fresh(repo: RepoRef, revision: string, sees: Sees = publicOnly): Promise<string | undefined> {
    return (await this.freshPin(repo, revision, sees))?.commit;
  }

  /** Like `fresh`, with the monotonic time (the clock's) at which the pin stops being fresh. */
  async freshPin(repo: RepoRef, revision: string, sees: Sees = publicOnly): Promise<{ commit: string; until: number } | undefined> {
    const ref = await orMiss(() => this.#index.getRef(repo, revision));
    if (!ref || !sees(ref.scope)) return undefined;
    const key = `${repoKey(repo)}|${revision}`;
    let seen = this.#seen.get(key);
    if (!seen || seen.commit !== ref.commit || seen.checkedAt !== ref.checkedAt) {
      // A row this process has not judged yet (written by an earlier run): its wall-clock age,
      // once. In the future means the clock was ahead when it was written: stale.
      const age = this.#clock.now() - ref.checkedAt;
      if (age < 0 || age >= this.#ttlMs) return undefined;
      seen = { commit: ref.commit, checkedAt: ref.checkedAt, at: this.#clock.monotonic() - age };
      this.#seen.set(key, seen);
    }
    const until = seen.at + this.#ttlMs;
    return this.#clock.monotonic() < until ? { commit: ref.commit, until } : undefined;
  }

  /** The last commit upstream named for `revision`, however old (the offline answer), in a scope the caller sees. */
  async last(repo: RepoRef, revision: string, sees: Sees = publicOnly): Promise<string | undefined> {
    const ref = await orMiss(() => this.#index.getRef(repo, revision));
    return ref && sees(ref.scope) ? ref.commit : undefined;
  }

  /**
   * Records upstream's answer `revision → commit` under `scope` (who may use it) and returns the
   * commit to use: a pin the caller sees that is still fresh wins (it was handed out already),
   * else the new one is recorded. Never for a client's own token (it has no scope).
   */
  async pin(repo: RepoRef, revision: string, commit: string, scope: Scope = PUBLIC_SCOPE, sees: Sees = publicOnly): Promise<string> {
    const current = await this.fresh(repo, revision, sees);
    if (current) return current;
    const checkedAt = this.#clock.now();
    // Remembered before the write lands: a pin asked meanwhile in this process sees it (the
    // index's overlay does the same for deferred writes).
    this.#seen.set(`${repoKey(repo)}|${revision}`, { commit, checkedAt, at: this.#clock.monotonic() });
    await this.#index.putRef(repo, revision, commit, checkedAt, scope);
    return commit;
  }
}
