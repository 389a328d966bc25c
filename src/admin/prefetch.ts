/**
 * Prefetch: fills every file of one commit of a repo (optionally a subset, by globs) through the
 * mirror's normal path, so a job of hundreds of nodes starts on a warm cache.
 *
 * - The revision is resolved to a commit once, when the job first runs, and kept with the job:
 *   a resumed prefetch stays on that commit.
 * - Files are listed through the MetadataCache (the recursive tree, every page), as a client's
 *   listing would be: same pins, same cache, same access rules.
 * - Each file is resolved (FileResolver) and opened (Mirror.open) as a client's GET would be:
 *   one fill per blob however many ask, within the fill cap and queue and the free-space guard,
 *   gated files only with a token upstream grants. The prefetch reads its own copy of the bytes
 *   as they land and drops them; the download is complete when the last byte arrives (the Mirror
 *   releases it only after the blob is verified). Cached files are skipped without a download.
 * - Identity: the Hub token given with the request (in memory only, never in the job row), else
 *   the tokenless identity (the service token, or anonymous).
 * - A few files at a time (`concurrency`); a cancel stops starting new ones, and downloads already
 *   running go on for whoever else reads them (as when a client disconnects).
 */
import { MirrorError } from '../errors.js';
import type { AccessPolicy, Identity } from '../hub/access-policy.js';
import type { FileEntry, FileResolver } from '../hub/file-resolver.js';
import type { MetadataCache } from '../hub/metadata-cache.js';
import { nextPage } from '../hub/api-answer.js';
import type { ApiAnswer } from '../hub/api-answer.js';
import type { RepoPolicy } from '../hub/repo-policy.js';
import { isCommitSha, isRepoType, validatePath, validateRepoId, validateRevision, type RepoRef } from '../hub/repo-ref.js';
import type { BlobSource, Mirror } from '../mirror/mirror.js';
import { fromUpstreamStatus } from '../upstream/upstream-errors.js';
import type { JobContext, JobRunner } from './jobs.js';
import { globToRegExp, pathSelector } from './path-glob.js';

/** What an operator asks for. */
export interface PrefetchRequest {
  repo: RepoRef;
  revision: string;
  include: string[];
  exclude: string[];
  /** Files downloaded at once (through the fill cap like any other download). */
  concurrency: number;
}

const DEFAULT_CONCURRENCY = 4;
const MAX_CONCURRENCY = 64;
/** Tree pages followed at most (a page holds up to 1,000 entries on the Hub). */
const MAX_TREE_PAGES = 10_000;
const MAX_GLOBS = 100;

/**
 * Checks a request body (JSON) and gives the request; throws a 400 naming the problem. Fields:
 * `repo` (required), `type` (model, dataset, space), `revision` (default main), `include` and
 * `exclude` (lists of globs), `concurrency`.
 */
export function parsePrefetchRequest(body: Record<string, unknown>): PrefetchRequest {
  const bad = (message: string): never => {
    throw new MirrorError('InvalidRequest', `prefetch: ${message}`);
  };
  const known = new Set(['repo', 'type', 'revision', 'include', 'exclude', 'concurrency', 'hubToken']);
  for (const k of Object.keys(body)) if (!known.has(k)) bad(`unknown field ${JSON.stringify(k)}`);
  if (typeof body.repo !== 'string') bad('"repo" (org/name) is required');
  const type = body.type ?? 'model';
  if (typeof type !== 'string' || !isRepoType(type)) bad('"type" must be model, dataset or space');
  const revision = body.revision ?? 'main';
  if (typeof revision !== 'string') bad('"revision" must be a string');
  const globs = (name: 'include' | 'exclude'): string[] => {
    const v = body[name] ?? [];
    if (!Array.isArray(v) || !v.every((g): g is string => typeof g === 'string' && g.length > 0 && g.length <= 1000) || v.length > MAX_GLOBS) {
      return bad(`"${name}" must be a list of at most ${MAX_GLOBS} non-empty globs`);
    }
    for (const g of v) {
      try {
        globToRegExp(g);
      } catch (err) {
        bad(`${name}: ${(err as Error).message}`);
      }
    }
    return v;
  };
  const concurrency = body.concurrency ?? DEFAULT_CONCURRENCY;
  if (typeof concurrency !== 'number' || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) bad(`"concurrency" must be an integer from 1 to ${MAX_CONCURRENCY}`);
  if (body.hubToken !== undefined && (typeof body.hubToken !== 'string' || !/^[\x21-\x7e]+$/.test(body.hubToken))) bad('"hubToken" must be a token (visible ASCII, no spaces)');
  return {
    repo: { type: type as RepoRef['type'], id: validateRepoId(body.repo as string) },
    revision: validateRevision(revision as string),
    include: globs('include'),
    exclude: globs('exclude'),
    concurrency: concurrency as number,
  };
}

/** The job params of a request: what it asked, and whether it came with a token (the token itself is never kept). */
export function prefetchParams(req: PrefetchRequest, withToken: boolean): Record<string, unknown> {
  return { repo: req.repo, revision: req.revision, include: req.include, exclude: req.exclude, concurrency: req.concurrency, withToken };
}

/** Two submissions of the same prefetch (same repo, revision, selection, kind of identity) are one job. */
export function prefetchKey(req: PrefetchRequest, withToken: boolean): string {
  return JSON.stringify([req.repo.type, req.repo.id, req.revision, req.include, req.exclude, withToken]);
}

export interface PrefetchDeps {
  resolver: FileResolver;
  mirror: Mirror;
  metadata: MetadataCache;
  access: AccessPolicy;
  policy: RepoPolicy;
}

/** One file of the listing. */
interface ListedFile {
  path: string;
  size: number;
}

export class PrefetchRunner implements JobRunner {
  readonly #deps: PrefetchDeps;

  constructor(deps: PrefetchDeps) {
    this.#deps = deps;
  }

  needsSecret(params: Readonly<Record<string, unknown>>): boolean {
    return params.withToken === true;
  }

  async run(ctx: JobContext): Promise<void> {
    const p = ctx.job.params;
    const req = parsePrefetchRequest({ repo: (p.repo as RepoRef).id, type: (p.repo as RepoRef).type, revision: p.revision, include: p.include, exclude: p.exclude, concurrency: p.concurrency });
    this.#deps.policy.check(req.repo);
    const who = ctx.secret === undefined ? this.#deps.access.tokenless : this.#deps.access.client(`Bearer ${ctx.secret}`);
    let commit = typeof p.commit === 'string' && isCommitSha(p.commit) ? p.commit : undefined;
    if (commit === undefined) {
      commit = await this.#commitOf(req.repo, req.revision, who);
      ctx.setParams({ commit });
    }
    const selected = pathSelector(req.include, req.exclude);
    const files = (await this.#listFiles(req.repo, commit, who, ctx.signal)).filter((f) => selected(f.path));
    ctx.setTotals(files.length, files.reduce((n, f) => n + f.size, 0));
    const todo = files.filter((f) => !ctx.succeeded.has(f.path));
    let next = 0;
    const worker = async (): Promise<void> => {
      while (!ctx.signal.aborted && next < todo.length) {
        const file = todo[next++] as ListedFile;
        const item = ctx.item(file.path);
        try {
          const outcome = await this.#fetch(req.repo, commit, file.path, who, item.add, ctx.signal);
          item.finish(outcome.status, true, outcome.size);
        } catch (err) {
          // Interrupted (cancel, shutdown): not a failure of the file; a resumed job does it again.
          if (!ctx.signal.aborted) item.finish('failed', false, 0, (err as Error).message);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(req.concurrency, todo.length) }, worker));
  }

  /** The commit `revision` names, asked as `who` through the metadata cache (the same pin clients get). */
  async #commitOf(repo: RepoRef, revision: string, who: Identity): Promise<string> {
    if (isCommitSha(revision)) return revision;
    const answer = await this.#deps.metadata.answer({ repo, revision, question: { kind: 'info', query: '' } }, who);
    const info = jsonOf(answer, `the repo info of ${repo.type}s/${repo.id} at ${revision}`) as { sha?: unknown };
    if (typeof info.sha !== 'string' || !isCommitSha(info.sha)) throw new MirrorError('UpstreamError', `The repo info of ${repo.type}s/${repo.id} names no commit`);
    return info.sha;
  }

  /** Every file of the commit, following the tree's pages. */
  async #listFiles(repo: RepoRef, commit: string, who: Identity, signal: AbortSignal): Promise<ListedFile[]> {
    const files: ListedFile[] = [];
    let query = 'recursive=true';
    for (let page = 0; page < MAX_TREE_PAGES && !signal.aborted; page++) {
      const answer = await this.#deps.metadata.answer({ repo, revision: commit, question: { kind: 'tree', path: '', query } }, who);
      const entries = jsonOf(answer, `the file list of ${repo.type}s/${repo.id}`);
      if (!Array.isArray(entries)) throw new MirrorError('UpstreamError', `The file list of ${repo.type}s/${repo.id} is not a list`);
      for (const e of entries as Array<{ type?: unknown; path?: unknown; size?: unknown; lfs?: { size?: unknown } }>) {
        if (e.type !== 'file' || typeof e.path !== 'string') continue;
        const size = typeof e.lfs?.size === 'number' ? e.lfs.size : typeof e.size === 'number' ? e.size : 0;
        files.push({ path: validatePath(e.path), size });
      }
      const next = nextPage(answer.links);
      if (next === undefined) return files;
      query = new URL(next, 'http://upstream.invalid').searchParams.toString();
    }
    if (signal.aborted) return files;
    throw new MirrorError('UpstreamError', `The file list of ${repo.type}s/${repo.id} has more than ${MAX_TREE_PAGES} pages`);
  }

  /**
   * One file through the mirror: `cached` when its blob is on disk already, else `filled` (this
   * prefetch started the download) or `joined` (another request's), once the blob is stored.
   */
  async #fetch(repo: RepoRef, commit: string, path: string, who: Identity, moved: (n: number) => void, signal: AbortSignal): Promise<{ status: 'cached' | 'filled' | 'joined'; size: number }> {
    const entry: FileEntry = await this.#deps.resolver.resolve({ repo, view: 'resolve', revision: commit, path }, who);
    const { mirror } = this.#deps;
    if (await mirror.isCached(entry.blobKey)) return { status: 'cached', size: entry.size };
    const source = await mirror.open(entry, who.auth);
    try {
      return await this.#follow(source, entry, path, moved, signal);
    } finally {
      source.release();
    }
  }

  async #follow(source: BlobSource, entry: FileEntry, path: string, moved: (n: number) => void, signal: AbortSignal): Promise<{ status: 'cached' | 'filled' | 'joined'; size: number }> {
    const { mirror } = this.#deps;
    if (source.cacheStatus === 'hit') return { status: 'cached', size: entry.size };
    if (entry.size > 0) {
      const reader = source.createReader(0, entry.size - 1);
      const onAbort = (): void => reader.close();
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        for (let chunk = await reader.next(); chunk !== null; chunk = await reader.next()) {
          moved(chunk.length);
          reader.release(chunk);
        }
      } finally {
        signal.removeEventListener('abort', onAbort);
        reader.close();
      }
    }
    if (signal.aborted) throw new MirrorError('Conflict', 'interrupted');
    // The last byte comes only after verification; the index must say so too.
    if (!(await mirror.isCached(entry.blobKey))) throw new MirrorError('IntegrityError', `The download of ${path} ended but its blob was not stored`);
    return { status: source.cacheStatus === 'joined' ? 'joined' : 'filled', size: entry.size };
  }
}

/** The JSON of a 200 answer; any other status becomes the error upstream gave. */
function jsonOf(answer: ApiAnswer, what: string): unknown {
  if (answer.status !== 200) throw fromUpstreamStatus(answer.status, answer.headers, what);
  try {
    return JSON.parse(answer.body.toString('utf8'));
  } catch {
    throw new MirrorError('UpstreamError', `${what} is not JSON`);
  }
}
