/**
 * RefPins: which commit a branch, tag or other named revision stands for, shared by every answer
 * the mirror gives (file resolves, repo info, tree, paths-info) through the index's `refs` table.
 *
 * A pin is trusted for `ttlMs` after upstream named it; within that window every answer is
 * computed for the pinned commit, so a snapshot never mixes two commits even when upstream moves
 * the branch meanwhile (test-plan T15). Past it, the last pin is still the offline answer.
 */
import type { CacheIndex } from '../storage/cache-index.js';
import type { RepoRef } from './repo-ref.js';

export class RefPins {
  readonly #index: CacheIndex;
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(index: CacheIndex, ttlMs: number, now: () => number = Date.now) {
    this.#index = index;
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  /** The pinned commit of `revision` if upstream named it less than the TTL ago. */
  fresh(repo: RepoRef, revision: string): string | undefined {
    const ref = this.#index.getRef(repo, revision);
    return ref && this.#now() - ref.checkedAt < this.#ttlMs ? ref.commit : undefined;
  }

  /** The last commit upstream named for `revision`, however old (the offline answer). */
  last(repo: RepoRef, revision: string): string | undefined {
    return this.#index.getRef(repo, revision)?.commit;
  }

  /**
   * Records upstream's answer `revision → commit` and returns the commit to use: a pin that is
   * still fresh wins (it was handed out already), else the new one is recorded. Only for answers
   * obtained anonymously: refs learnt with a token may describe a private repo.
   */
  pin(repo: RepoRef, revision: string, commit: string): string {
    const current = this.fresh(repo, revision);
    if (current) return current;
    this.#index.putRef(repo, revision, commit, this.#now());
    return commit;
  }
}
