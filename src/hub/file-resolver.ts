/**
 * FileResolver: (repo, revision, view, path) + the caller's Identity → FileEntry, the facts
 * needed to serve a file: commit, blob key, size, etag. Who may be answered from what is the
 * AccessPolicy's call (hub/access-policy.ts); this module applies it in order:
 * 1. Upstream's recent answer to this same question for this same identity (the grant memo, for
 *    the grant TTL: revocation takes effect within it).
 * 2. Revision known as a commit (given, or a branch pinned within the refs TTL, in a scope the
 *    caller sees) and a file row the policy lets this identity read from the index (its own
 *    scope or public, repo still public) → answered with no file request upstream.
 * 3. Otherwise one upstream HEAD with the identity's credentials; identical concurrent
 *    questions share it. The answer is recorded (row, and the branch's pin) under the scope the
 *    policy gives it; a client token's rows are kept but never read back.
 * When upstream cannot be reached, the last known ref and row answer if the policy's offline
 * rule allows (the identity's own recordings, or public content); otherwise the error stands.
 * Answers from 1–3 are kept in memory per identity and request until the earliest expiry of what
 * they rest on (grant, repo publicity, branch pin): a warm request reads nothing, not even the
 * index. Offline answers are decided afresh each time.
 */
import { LRUCache } from 'lru-cache';
import { MirrorError } from '../errors.js';
import { blobKey, type BlobKey } from '../storage/blob-layout.js';
import { orMiss, type CacheIndex, type FileRow } from '../storage/cache-index-contract.js';
import type { UpstreamApi, UpstreamFileMeta } from '../upstream/hub-client.js';
import { isUnreachable } from '../upstream/upstream-errors.js';
import { PromiseFlights } from '../mirror/flights.js';
import type { AccessPolicy, GrantMemo, Identity } from './access-policy.js';
import type { RefPins } from './ref-pins.js';
import { isCommitSha, repoKey, type FileRequest } from './repo-ref.js';

export interface FileEntry {
  request: FileRequest;
  commit: string;
  blobKey: BlobKey;
  size: number;
  /** Unquoted etag as the Hub gives it: git sha1 for regular files, sha256 for LFS files. */
  etag: string;
  isLfs: boolean;
  contentType: string;
  /** Where the answer came from: the index, the grant memo, upstream, or a stale index row (offline). */
  source: 'index' | 'memo' | 'upstream' | 'stale';
}

export interface FileResolverOptions {
  index: CacheIndex;
  hub: UpstreamApi;
  /** Branch or tag → commit, shared with the metadata API (one pin per revision within the refs TTL). */
  pins: RefPins;
  policy: AccessPolicy;
  onStale?: (req: FileRequest) => void;
}

export class FileResolver {
  readonly #index: CacheIndex;
  readonly #hub: UpstreamApi;
  readonly #pins: RefPins;
  readonly #policy: AccessPolicy;
  readonly #probes = new PromiseFlights<FileEntry>();
  readonly #grants: GrantMemo<FileEntry>;
  /** Answers per identity and request as asked, each until its earliest expiry (see #remember). */
  readonly #answers = new LRUCache<string, { entry: FileEntry; until: number }>({ max: 50_000 });
  readonly #onStale: ((req: FileRequest) => void) | undefined;

  constructor(opts: FileResolverOptions) {
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#pins = opts.pins;
    this.#policy = opts.policy;
    this.#onStale = opts.onStale;
    this.#grants = opts.policy.grants<FileEntry>();
  }

  async resolve(req: FileRequest, who: Identity): Promise<FileEntry> {
    const asked = `${who.key}|${repoKey(req.repo)}|${req.view}|${req.revision}|${req.path}`;
    const known = this.#answers.get(asked);
    if (known) {
      if (this.#policy.clock.monotonic() < known.until) return known.entry;
      this.#answers.delete(asked);
    }

    const pin = isCommitSha(req.revision) ? undefined : await this.#pins.freshPin(req.repo, req.revision, who.sees);
    const commit = isCommitSha(req.revision) ? req.revision : pin?.commit;
    // An answer about a branch holds no longer than the branch's pin.
    const pinUntil = pin?.until ?? Infinity;
    const question = `${repoKey(req.repo)}|${req.view}|${commit ?? req.revision}|${req.path}`;

    const granted = this.#grants.lookup(who, question);
    if (granted) return this.#remember(asked, { ...granted.value, request: req, source: 'memo' }, Math.min(granted.until, pinUntil));

    if (commit) {
      const row = await orMiss(() => this.#index.getFile(req.repo, commit, req.view, req.path));
      if (row?.scope) {
        const decision = await this.#policy.indexDecision(who, row.scope, req.repo);
        if (decision.serves) return this.#remember(asked, fromRow(req, row, 'index'), Math.min(decision.until, pinUntil));
      }
    }

    try {
      const entry = await this.#probes.run(`${who.key}|${question}`, () => this.#probe(req, commit, who));
      // A question asked by branch name must not outlive the branch's pin.
      const until = this.#grants.set(who, question, entry, commit === undefined ? this.#pins.ttlMs : undefined);
      return this.#remember(asked, { ...entry, request: req }, Math.min(until, pinUntil));
    } catch (err) {
      if (isUnreachable(err)) {
        const stale = await this.#staleEntry(req, who);
        if (stale) {
          this.#onStale?.(req);
          return stale;
        }
      }
      throw err;
    }
  }

  /**
   * Keeps an answer for this identity and request, as asked (branch name or commit), until the
   * first of the facts it rests on expires: the grant, the repo's publicity, the branch pin. Within
   * that time every path above would give the same answer, so asking again costs nothing: no
   * index read, no upstream request. Answers decided by the offline rule are not kept.
   */
  #remember(asked: string, entry: FileEntry, until: number): FileEntry {
    if (until > this.#policy.clock.monotonic()) this.#answers.set(asked, { entry: { ...entry, source: 'memo' }, until });
    return entry;
  }

  async #staleEntry(req: FileRequest, who: Identity): Promise<FileEntry | undefined> {
    const commit = isCommitSha(req.revision) ? req.revision : await this.#pins.last(req.repo, req.revision, who.sees);
    if (!commit) return undefined;
    const row = await orMiss(() => this.#index.getFile(req.repo, commit, req.view, req.path));
    return row?.scope && this.#policy.servesStale(who, row.scope, req.repo) ? fromRow(req, row, 'stale') : undefined;
  }

  async #probe(req: FileRequest, commit: string | undefined, who: Identity): Promise<FileEntry> {
    // Asked alongside the HEAD (the service token's answers about a public repo are public).
    const scope = this.#policy.recordScope(who, req.repo);
    // Ask about the pinned commit when we have one, so every answer inside the refs TTL names the
    // same commit even if upstream moves the branch meanwhile.
    const meta = await this.#hub.headFile(commit ? { ...req, revision: commit } : req, who.auth);
    const entry = toEntry(req, meta);
    const recordAs = await scope;
    const row: FileRow = {
      repo: req.repo,
      commit: entry.commit,
      view: req.view,
      path: req.path,
      blobKey: entry.blobKey,
      size: entry.size,
      etag: entry.etag,
      isLfs: entry.isLfs,
      contentType: entry.contentType,
      scope: recordAs ?? null,
      checkedAt: this.#policy.clock.now(),
    };
    await this.#index.putFile(row);
    // A client token's refs are not recorded: they may describe a repo only it can read. A pin
    // the caller sees that someone else (e.g. a metadata request) set meanwhile wins: ask again
    // about its commit.
    if (recordAs && !isCommitSha(req.revision) && !commit) {
      const pinned = await this.#pins.pin(req.repo, req.revision, entry.commit, recordAs, who.sees);
      if (pinned !== entry.commit) return this.#probe(req, pinned, who);
    }
    return entry;
  }
}

function fromRow(req: FileRequest, row: FileRow, source: FileEntry['source']): FileEntry {
  return {
    request: req,
    commit: row.commit,
    blobKey: row.blobKey,
    size: row.size,
    etag: row.etag,
    isLfs: row.isLfs,
    contentType: row.contentType,
    source,
  };
}

/**
 * Upstream metadata → entry. The blob key must be a digest we can verify, else we refuse to cache.
 * A redirect (the Hub's LFS answer) is keyed by its `X-Linked-Etag` sha256 and `X-Linked-Size`; a
 * direct 200 (regular files, and `/raw/` of an LFS pointer) by its git blob id and `Content-Length`.
 */
export function toEntry(req: FileRequest, meta: UpstreamFileMeta): FileEntry {
  const lfsKey = meta.linkedEtag ? blobKey('sha256', meta.linkedEtag) : null;
  const gitKey = meta.etag ? blobKey('gitsha1', meta.etag) : null;
  const useLfs = meta.redirected ? lfsKey !== null : gitKey === null && lfsKey !== null;
  const key = useLfs ? lfsKey : gitKey;
  const size = useLfs ? (meta.linkedSize ?? meta.contentLength) : (meta.contentLength ?? meta.linkedSize);
  if (!key) {
    throw new MirrorError('UpstreamError', `Upstream gave no verifiable digest for ${req.path} (etag ${JSON.stringify(meta.etag ?? null)})`);
  }
  if (size === undefined) throw new MirrorError('UpstreamError', `Upstream gave no size for ${req.path}`);
  const hex = key.slice(key.indexOf(':') + 1);
  return {
    request: req,
    commit: meta.commit,
    blobKey: key,
    size,
    etag: hex,
    isLfs: useLfs,
    contentType: useLfs || !meta.contentType ? 'application/octet-stream' : meta.contentType,
    source: 'upstream',
  };
}
