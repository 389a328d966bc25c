/**
 * MetadataCache: answers the Hub API questions clients ask around downloads (repo info, tree
 * pages, paths-info) so that they stay consistent with the files and keep working offline.
 *
 * - A question at a 40-hex commit is immutable: its anonymous answer is stored in the index and
 *   served forever with no upstream request (an `EntryNotFound` for a tree path too).
 * - A branch, tag or other ref is answered at the commit it is pinned to (RefPins, the same
 *   `refs` rows the file resolver uses, within `refsTtlSeconds`): repo info, tree and the file
 *   answers of one snapshot all name one commit even if upstream moves the branch meanwhile.
 *   An unpinned ref is pinned by the question itself when its answer names the commit (repo info
 *   with `sha`), else by a `revision/{ref}?expand=sha` call first.
 * - Identical concurrent questions share one upstream request (anonymous ones, and those of one
 *   token, keyed by a keyed hash of it).
 * - With a token: always asked upstream with that token, never served from or stored in the
 *   cache, and no ref pinned from the answer (it may describe a private repo).
 * - Upstream unreachable (connection refused, DNS, timeout, 5xx): an anonymous question is
 *   answered from the index at the commit last pinned for its ref; otherwise the error stands
 *   (503/504/502). Token holders fail closed.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Dispatcher } from 'undici';
import { PromiseFlights } from '../mirror/flights.js';
import type { ApiResponseRow, CacheIndex } from '../storage/cache-index.js';
import { describe, type HubClient, type UpstreamApiAnswer } from '../upstream/hub-client.js';
import { fromUpstreamStatus, isUnreachable } from '../upstream/upstream-errors.js';
import { nextPage, toApiAnswer, type ApiAnswer } from './api-answer.js';
import { infoCarriesSha, pathsInfoBody, questionKey, upstreamApiPath, type ApiQuestion } from './api-request.js';
import type { RefPins } from './ref-pins.js';
import { isCommitSha, repoKey, type RepoRef } from './repo-ref.js';

/** The pin name of a repo's default branch (what `/api/{type}s/{repo}` without a revision, and `revision/HEAD`, mean). */
export const DEFAULT_REF = 'HEAD';

export interface MetadataRequest {
  repo: RepoRef;
  /** Branch, tag, ref or commit; undefined: the default branch, asked without a revision. */
  revision: string | undefined;
  question: ApiQuestion;
}

export interface MetadataCacheOptions {
  index: CacheIndex;
  hub: HubClient;
  pins: RefPins;
  now?: () => number;
  /** Called when an answer comes from the index because upstream could not be asked. */
  onStale?: (repo: RepoRef, revision: string) => void;
}

/** Headers kept with a stored answer; everything else about it is rebuilt when served. */
const STORED_HEADERS = ['content-type', 'x-error-code', 'x-error-message', 'x-repo-commit'];

export class MetadataCache {
  readonly #index: CacheIndex;
  readonly #hub: HubClient;
  readonly #pins: RefPins;
  readonly #now: () => number;
  readonly #onStale: MetadataCacheOptions['onStale'];
  readonly #answers = new PromiseFlights<ApiAnswer>();
  readonly #refs = new PromiseFlights<string | ApiAnswer | null>();
  /** Per-process key for hashing tokens into coalescing keys (the token itself is never kept). */
  readonly #tokenKey = randomBytes(32);

  constructor(opts: MetadataCacheOptions) {
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#pins = opts.pins;
    this.#now = opts.now ?? Date.now;
    this.#onStale = opts.onStale;
  }

  async answer(req: MetadataRequest, auth: string | undefined): Promise<ApiAnswer> {
    if (auth) return this.#withToken(req, auth);
    try {
      return await this.#anonymous(req);
    } catch (err) {
      if (!isUnreachable(err)) throw err;
      const stale = this.#stale(req);
      if (!stale) throw err;
      this.#onStale?.(req.repo, req.revision ?? DEFAULT_REF);
      return stale;
    }
  }

  async #anonymous(req: MetadataRequest): Promise<ApiAnswer> {
    const ref = req.revision ?? DEFAULT_REF;
    if (isCommitSha(ref)) return this.#atCommit(req, ref);
    const pinned = this.#pins.fresh(req.repo, ref);
    if (pinned) return this.#atCommit(req, pinned);
    const q = req.question;
    if (q.kind === 'info' && infoCarriesSha(q.query)) {
      // The answer names its commit: it pins the ref itself (one upstream request for a herd).
      return this.#answers.run(`anon|${repoKey(req.repo)}|ref:${ref}|${questionKey(q)}`, () => this.#infoPinningRef(req, ref));
    }
    const resolved = await this.#resolveRef(req.repo, ref);
    if (typeof resolved === 'string') return this.#atCommit(req, resolved);
    // The ref could not be pinned: upstream's error about it, or (no `sha` in its answer) the
    // question passed on as asked.
    return resolved ?? this.#answers.run(`anon|${repoKey(req.repo)}|unpinned:${ref}|${questionKey(q)}`, () => this.#ask(req, req.revision, undefined));
  }

  async #infoPinningRef(req: MetadataRequest, ref: string): Promise<ApiAnswer> {
    const answer = await this.#ask(req, req.revision, undefined);
    const sha = answer.status === 200 ? shaOf(answer.body) : undefined;
    if (!sha) return answer;
    const stored = this.#store(req.repo, sha, req.question, answer);
    const commit = this.#pins.pin(req.repo, ref, sha);
    // Another answer pinned the ref first: stay on its commit.
    if (commit !== sha) return this.#atCommit(req, commit);
    return stored ? { ...answer, source: 'miss' } : answer;
  }

  /** branch/tag/ref → commit via `revision/{ref}?expand=sha`; upstream's answer when it cannot; null when it names no commit. */
  #resolveRef(repo: RepoRef, ref: string): Promise<string | ApiAnswer | null> {
    return this.#refs.run(`${repoKey(repo)}|${ref}`, async () => {
      const answer = await this.#ask({ repo, revision: ref, question: { kind: 'info', query: 'expand=sha' } }, ref, undefined);
      if (answer.status !== 200) return answer;
      const sha = shaOf(answer.body);
      return sha ? this.#pins.pin(repo, ref, sha) : null;
    });
  }

  #atCommit(req: MetadataRequest, commit: string): Promise<ApiAnswer> {
    const key = questionKey(req.question);
    const row = this.#index.getApiResponse(req.repo, commit, key);
    if (row) return Promise.resolve(fromRow(row, 'hit'));
    return this.#answers.run(`anon|${repoKey(req.repo)}|${commit}|${key}`, async () => {
      const answer = await this.#ask(req, commit, undefined);
      return this.#store(req.repo, commit, req.question, answer) ? { ...answer, source: 'miss' } : answer;
    });
  }

  #withToken(req: MetadataRequest, auth: string): Promise<ApiAnswer> {
    const ref = req.revision ?? DEFAULT_REF;
    // A fresh pin is public knowledge (only anonymous answers pin): ask at its commit, for consistency.
    const commit = isCommitSha(ref) ? ref : this.#pins.fresh(req.repo, ref);
    const revision = commit ?? req.revision;
    const identity = createHmac('sha256', this.#tokenKey).update(auth).digest('base64url');
    const key = `${identity}|${repoKey(req.repo)}|${revision ?? ''}|${questionKey(req.question)}`;
    return this.#answers.run(key, () => this.#ask(req, revision, auth));
  }

  #stale(req: MetadataRequest): ApiAnswer | undefined {
    const ref = req.revision ?? DEFAULT_REF;
    const commit = isCommitSha(ref) ? ref : this.#pins.last(req.repo, ref);
    const row = commit === undefined ? undefined : this.#index.getApiResponse(req.repo, commit, questionKey(req.question));
    return row ? fromRow(row, 'stale') : undefined;
  }

  /** One upstream request for `req.question` at `revision`; 5xx is thrown (offline fallback applies). */
  async #ask(req: MetadataRequest, revision: string | undefined, auth: string | undefined): Promise<ApiAnswer> {
    const q = req.question;
    const method: Dispatcher.HttpMethod = q.kind === 'paths-info' ? 'POST' : 'GET';
    // paths-info is a POST that only reads: a 429/5xx may be retried like the GETs.
    const options = q.kind === 'paths-info' ? { body: pathsInfoBody(q.body), contentType: 'application/json', idempotent: true } : {};
    const raw: UpstreamApiAnswer = await this.#hub.requestApi(method, upstreamApiPath(req.repo, q, revision), auth, options);
    if (raw.statusCode >= 500) throw fromUpstreamStatus(raw.statusCode, raw.headers, describe(raw.url));
    return toApiAnswer(raw, (u) => this.#hub.upstreamPathOf(u, raw.url), { repoScoped: true });
  }

  /** Stores an answer for (repo, commit, question) when it is safe to serve forever; tells whether it did. */
  #store(repo: RepoRef, commit: string, q: ApiQuestion, answer: ApiAnswer): boolean {
    if (!isStorable(q, answer)) return false;
    const headers: Record<string, string> = {};
    for (const name of STORED_HEADERS) {
      const v = answer.headers[name];
      if (v !== undefined) headers[name] = v;
    }
    this.#index.putApiResponse(repo, commit, questionKey(q), {
      status: answer.status,
      headers,
      nextPage: nextPage(answer.links),
      body: answer.body,
      storedAt: this.#now(),
    });
    return true;
  }
}

/**
 * What may be served forever for a commit: a well-formed JSON success (an object for repo info, a
 * list for tree and paths-info) whose next page, if any, is on upstream; and the 404 EntryNotFound
 * of a tree path. Never 401/403/429 or anything else.
 */
function isStorable(q: ApiQuestion, answer: ApiAnswer): boolean {
  if (answer.status === 404) return q.kind === 'tree' && q.path !== '' && answer.headers['x-error-code'] === 'EntryNotFound';
  if (answer.status !== 200) return false;
  if (answer.links.some((l) => l.params.some((p) => /rel\s*=\s*"?next/i.test(p))) && nextPage(answer.links) === undefined) return false;
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer.body.toString('utf8'));
  } catch {
    return false;
  }
  return q.kind === 'info' ? typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) : Array.isArray(parsed);
}

function shaOf(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { sha?: unknown };
    return typeof parsed.sha === 'string' && isCommitSha(parsed.sha) ? parsed.sha : undefined;
  } catch {
    return undefined;
  }
}

function fromRow(row: ApiResponseRow, source: ApiAnswer['source']): ApiAnswer {
  return {
    status: row.status,
    headers: { ...row.headers },
    body: row.body,
    links: row.nextPage === undefined ? [] : [{ url: { upstreamPath: row.nextPage }, params: ['rel="next"'] }],
    source,
  };
}
