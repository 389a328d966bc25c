/**
 * The operator's repo policy (`allowRepos`, `denyRepos`): globs matched against
 * `models/<id>`, `datasets/<id>`, `spaces/<id>`; `*` matches within one path segment, `**`
 * across segments, `?` one character. Deny wins over allow; an empty allow list allows all.
 */
import { MirrorError } from '../errors.js';
import { apiTypeSegment, type RepoRef } from './repo-ref.js';

function globToRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i] ?? '';
    if (ch === '*' && glob[i + 1] === '*') {
      re += '.*';
      i++;
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

export class RepoPolicy {
  readonly #allow: RegExp[];
  readonly #deny: RegExp[];

  constructor(allow: readonly string[], deny: readonly string[]) {
    this.#allow = allow.map(globToRegExp);
    this.#deny = deny.map(globToRegExp);
  }

  /** Whether the repo may be served. */
  allows(repo: RepoRef): boolean {
    const name = `${apiTypeSegment(repo.type)}/${repo.id}`;
    if (this.#deny.some((r) => r.test(name))) return false;
    return this.#allow.length === 0 || this.#allow.some((r) => r.test(name));
  }

  /** Throws RepoNotAllowed (403) when the policy refuses the repo. */
  check(repo: RepoRef): void {
    if (!this.allows(repo)) {
      throw new MirrorError('RepoNotAllowed', `This mirror does not serve ${apiTypeSegment(repo.type)}/${repo.id} (operator policy)`);
    }
  }
}
