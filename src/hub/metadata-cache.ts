/**
 * MetadataCache: answers the Hub API questions clients ask around downloads (repo info, tree
 * pages, paths-info) so that they stay consistent with the files and keep working offline.
 *
 * - A question at a 40-hex commit is immutable: its answer is stored in the index under the
 *   scope the AccessPolicy gives it (public for anonymous answers and for the service token's
 *   answers about a public repo, else the service's own) and served forever, with no upstream
 *   request, to every identity that sees that scope (an `EntryNotFound` for a tree path too).
 * - A branch, tag or other ref is answered at the commit it is pinned to (RefPins, the same
 *   `refs` rows the file resolver uses, within `refsTtlSeconds`): repo info, tree and the file
 *   answers of one snapshot all name one commit even if upstream moves the branch meanwhile.
 *   An unpinned ref is pinned by the question itself when its answer names the commit (repo info
 *   with `sha`), else by a `revision/{ref}?expand=sha` call first.
 * - Identical concurrent questions of one identity share one upstream request.
 * - A client's own token: always asked upstream with that token (at a public pin's commit, if
 *   any), never served from or stored in the cache online, and no ref pinned from the answer.
 * - Upstream unreachable (connection refused, DNS, timeout, 5xx, an unusable answer): answered
 *   from the index at the commit last pinned for its ref when the policy's offline rule allows
 *   (the identity's own recordings, or public content, a client token included); otherwise the
 *   error stands (503/504/502).
 * - A 200 the mirror cannot use (not JSON, not the expected object or list, a repo info without
 *   its commit) is a 502 `UpstreamError`, never passed on or stored.
 */
import type { Dispatcher } from 'undici';
import type { Clock } from '../clock.js';
import { MirrorError } from '../errors.js';
import { PromiseFlights } from '../mirror/flights.js';
import { orMiss, type ApiResponseRow, type CacheIndex } from '../storage/cache-index-contract.js';
import { describe, type UpstreamApi, type UpstreamApiAnswer } from '../upstream/hub-client.js';
import { fromUpstreamStatus, isUnreachable } from '../upstream/upstream-errors.js';
import type { AccessPolicy, Identity } from './access-policy.js';
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
  hub: UpstreamApi;
  pins: RefPins;
  /** Who may read what; its clock times what is stored. */
  policy: AccessPolicy;
  /** Called when an answer comes from the index because upstream could not be asked. */
  onStale?: (repo: RepoRef, revision: string) => void;
}

/** Headers kept with a stored answer; everything else about it is rebuilt when served. */
const STORED_HEADERS = ['content-type', 'x-error-code', 'x-error-message', 'x-repo-commit'];

export class MetadataCache {
  readonly #index: CacheIndex;
  readonly #hub: UpstreamApi;
  readonly #pins: RefPins;
  readonly #policy: AccessPolicy;
  readonly #clock: Clock;
  readonly #onStale: MetadataCacheOptions['onStale'];
  readonly #answers = new PromiseFlights<ApiAnswer>();
  readonly #refs = new PromiseFlights<string | ApiAnswer>();

  constructor(opts: MetadataCacheOptions) {
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#pins = opts.pins;
    this.#policy = opts.policy;
    this.#clock = opts.policy.clock;
    this.#onStale = opts.onStale;
  }

  async answer(req: MetadataRequest, who: Identity): Promise<ApiAnswer> {
    try {
      return who.scope === undefined ? await this.#withToken(req, who) : await this.#recorded(req, who);
    } catch (err) {
      if (!isUnreachable(err)) throw err;
      const stale = await this.#stale(req, who);
      if (!stale) throw err;
      this.#onStale?.(req.repo, req.revision ?? DEFAULT_REF);
      return stale;
    }
  }

  /** An identity whose answers are recorded (anonymous, service): from the index, else asked and stored. */
  async #recorded(req: MetadataRequest, who: Identity): Promise<ApiAnswer> {
    const ref = req.revision ?? DEFAULT_REF;
    if (isCommitSha(ref)) return this.#atCommit(req, ref, who);
    const pinned = await this.#pins.fresh(req.repo, ref, who.sees);
    if (pinned) return this.#atCommit(req, pinned, who);
    const q = req.question;
    if (q.kind === 'info' && infoCarriesSha(q.query)) {
      // The answer names its commit: it pins the ref itself (one upstream request for a herd).
      return this.#answers.run(`${who.key}|${repoKey(req.repo)}|ref:${ref}|${questionKey(q)}`, () => this.#infoPinningRef(req, ref, who));
    }
    const resolved = await this.#resolveRef(req.repo, ref, who);
    // The ref could not be pinned: upstream's error about it.
    return typeof resolved === 'string' ? this.#atCommit(req, resolved, who) : resolved;
  }

  async #infoPinningRef(req: MetadataRequest, ref: string, who: Identity): Promise<ApiAnswer> {
    const answer = await this.#ask(req, req.revision, who);
    if (answer.status !== 200) return answer;
    const sha = requireSha(answer, req.repo);
    const scope = await this.#policy.recordScope(who, req.repo);
    const stored = scope !== undefined && (await this.#store(req.repo, sha, req.question, answer, scope));
    const commit = scope === undefined ? sha : await this.#pins.pin(req.repo, ref, sha, scope, who.sees);
    // Another answer pinned the ref first: stay on its commit.
    if (commit !== sha) return this.#atCommit(req, commit, who);
    return stored ? { ...answer, source: 'miss' } : answer;
  }

  /** branch/tag/ref → commit via `revision/{ref}?expand=sha`; upstream's answer when it cannot. */
  #resolveRef(repo: RepoRef, ref: string, who: Identity): Promise<string | ApiAnswer> {
    return this.#refs.run(`${who.key}|${repoKey(repo)}|${ref}`, async () => {
      const answer = await this.#ask({ repo, revision: ref, question: { kind: 'info', query: 'expand=sha' } }, ref, who);
      if (answer.status !== 200) return answer;
      const sha = requireSha(answer, repo);
      const scope = await this.#policy.recordScope(who, repo);
      return scope === undefined ? sha : this.#pins.pin(repo, ref, sha, scope, who.sees);
    });
  }

  async #atCommit(req: MetadataRequest, commit: string, who: Identity): Promise<ApiAnswer> {
    const key = questionKey(req.question);
    const row = await orMiss(() => this.#index.getApiResponse(req.repo, commit, key));
    if (row && who.sees(row.scope)) return fromRow(row, 'hit');
    return this.#answers.run(`${who.key}|${repoKey(req.repo)}|${commit}|${key}`, async () => {
      const answer = await this.#ask(req, commit, who);
      if (!isStorable(req.question, answer)) return answer;
      const scope = await this.#policy.recordScope(who, req.repo);
      return scope !== undefined && (await this.#store(req.repo, commit, req.question, answer, scope)) ? { ...answer, source: 'miss' } : answer;
    });
  }

  async #withToken(req: MetadataRequest, who: Identity): Promise<ApiAnswer> {
    const ref = req.revision ?? DEFAULT_REF;
    // A fresh public pin is public knowledge: ask at its commit, for consistency.
    const commit = isCommitSha(ref) ? ref : await this.#pins.fresh(req.repo, ref, who.sees);
    const revision = commit ?? req.revision;
    const key = `${who.key}|${repoKey(req.repo)}|${revision ?? ''}|${questionKey(req.question)}`;
    return this.#answers.run(key, () => this.#ask(req, revision, who));
  }

  async #stale(req: MetadataRequest, who: Identity): Promise<ApiAnswer | undefined> {
    const ref = req.revision ?? DEFAULT_REF;
    const commit = isCommitSha(ref) ? ref : await this.#pins.last(req.repo, ref, who.sees);
    const row = commit === undefined ? undefined : await orMiss(() => this.#index.getApiResponse(req.repo, commit, questionKey(req.question)));
    return row && this.#policy.servesStale(who, row.scope, req.repo) ? fromRow(row, 'stale') : undefined;
  }

  /**
   * One upstream request for `req.question` at `revision`; 5xx is thrown (offline fallback
   * applies), and so is a 200 the mirror cannot use (502).
   */
  async #ask(req: MetadataRequest, revision: string | undefined, who: Identity): Promise<ApiAnswer> {
    const q = req.question;
    const method: Dispatcher.HttpMethod = q.kind === 'paths-info' ? 'POST' : 'GET';
    // paths-info is a POST that only reads: a 429/5xx may be retried like the GETs.
    const options = q.kind === 'paths-info' ? { body: pathsInfoBody(q.body), contentType: 'application/json', idempotent: true } : {};
    const raw: UpstreamApiAnswer = await this.#hub.requestApi(method, upstreamApiPath(req.repo, q, revision), who.auth, options);
    if (raw.statusCode >= 500) throw fromUpstreamStatus(raw.statusCode, raw.headers, describe(raw.url));
    const answer = toApiAnswer(raw, (u) => this.#hub.upstreamPathOf(u, raw.url), { repoScoped: true });
    if (answer.status === 200 && !isWellFormed(q, answer.body)) {
      const type = answer.headers['content-type'] ?? 'none';
      throw new MirrorError('UpstreamError', `Upstream's answer for ${describe(raw.url)} is not the Hub's JSON ${q.kind === 'info' ? 'object' : 'list'} (content type ${type}): is the upstream a Hugging Face hub?`);
    }
    return answer;
  }

  /** Stores an answer for (repo, commit, question) when it is safe to serve forever; tells whether it did. */
  async #store(repo: RepoRef, commit: string, q: ApiQuestion, answer: ApiAnswer, scope: string): Promise<boolean> {
    if (!isStorable(q, answer)) return false;
    const headers: Record<string, string> = {};
    for (const name of STORED_HEADERS) {
      const v = answer.headers[name];
      if (v !== undefined) headers[name] = v;
    }
    await this.#index.putApiResponse(repo, commit, questionKey(q), {
      status: answer.status,
      headers,
      nextPage: nextPage(answer.links),
      body: answer.body,
      storedAt: this.#clock.now(),
      scope,
    });
    return true;
  }
}

/**
 * What may be served forever for a commit: a success (already checked to be well-formed JSON)
 * whose next page, if any, is on upstream; and the 404 EntryNotFound of a tree path. Never
 * 401/403/429 or anything else.
 */
function isStorable(q: ApiQuestion, answer: ApiAnswer): boolean {
  if (answer.status === 404) return q.kind === 'tree' && q.path !== '' && answer.headers['x-error-code'] === 'EntryNotFound';
  if (answer.status !== 200) return false;
  return !(answer.links.some((l) => l.params.some((p) => /rel\s*=\s*"?next/i.test(p))) && nextPage(answer.links) === undefined);
}

/** A success the mirror can use: a JSON object for repo info, a list for tree and paths-info. */
function isWellFormed(q: ApiQuestion, body: Buffer): boolean {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return false;
  }
  return q.kind === 'info' ? typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) : Array.isArray(parsed);
}

/** The commit a repo-info answer names; a 502 when it names none (it was asked for it). */
function requireSha(answer: ApiAnswer, repo: RepoRef): string {
  const sha = shaOf(answer.body);
  if (sha === undefined) throw new MirrorError('UpstreamError', `Upstream's repo info for ${repo.type}s/${repo.id} names no commit ("sha"): is the upstream a Hugging Face hub?`);
  return sha;
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
