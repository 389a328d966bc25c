/**
 * The operator's repo policy (`allowRepos`, `denyRepos`): globs matched against
 * `models/<id>`, `datasets/<id>`, `spaces/<id>`; `*` matches within one path segment, `**`
 * across segments, `?` one character. Deny wins over allow; an empty allow list allows all.
 * Globs are checked up front by config validation with the same parser ({@link parseRepoGlob}).
 */
import { MirrorError } from '../errors.js';
import { apiTypeSegment, type RepoRef } from './repo-ref.js';

const REPO_TYPES = ['models', 'datasets', 'spaces'];

/**
 * One `allowRepos`/`denyRepos` glob → its matcher. Throws an Error naming the problem when the
 * glob could never match a repo name, so a typo is caught at start instead of silently allowing
 * or denying nothing: characters outside repo ids and `* ** ?` (no `[..]`, `{..}`, `!`), empty
 * segments, `***`, a first segment that matches none of models/datasets/spaces (a forgotten
 * type), or, without `**`, a depth other than type/name or type/org/name.
 */
export function parseRepoGlob(glob: string): RegExp {
  const shown = JSON.stringify(glob);
  if (!/^[A-Za-z0-9_.\-/*?]+$/.test(glob)) throw new Error(`${shown}: only letters, digits, _ . - / and the wildcards * ** ? are allowed`);
  if (glob.includes('***')) throw new Error(`${shown}: "***" is ambiguous; use * (within a segment) or ** (across segments)`);
  const segments = glob.split('/');
  if (segments.some((s) => s === '')) throw new Error(`${shown}: empty path segment`);
  const [first = ''] = segments;
  if (!first.includes('**') && !REPO_TYPES.some((t) => segmentRegExp(first).test(t))) {
    const hint = REPO_TYPES.includes(`${first}s`) ? `${first}s/${segments.slice(1).join('/')}` : `models/${glob}`;
    throw new Error(`${shown}: must start with models/, datasets/ or spaces/ (or a wildcard), e.g. ${hint}`);
  }
  if (!glob.includes('**') && (segments.length < 2 || segments.length > 3)) {
    throw new Error(`${shown}: a repo is <type>/<name> or <type>/<org>/<name>; this glob has ${segments.length} segment(s) and no **`);
  }
  return new RegExp(`^${globBody(glob)}$`);
}

function segmentRegExp(segment: string): RegExp {
  return new RegExp(`^${globBody(segment)}$`);
}

function globBody(glob: string): string {
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
  return re;
}

export class RepoPolicy {
  readonly #allow: RegExp[];
  readonly #deny: RegExp[];

  constructor(allow: readonly string[], deny: readonly string[]) {
    this.#allow = allow.map(parseRepoGlob);
    this.#deny = deny.map(parseRepoGlob);
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
