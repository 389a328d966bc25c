/**
 * FileResolver: (repo, revision, view, path) + the caller's credentials → FileEntry, the facts
 * needed to serve a file: commit, blob key, size, etag.
 *
 * Order of answers:
 * 1. Upstream's recent answer to this same question for this same identity (a token, by a keyed
 *    hash; or anonymous), memoized for `authTtlMs` (revocation takes effect within it).
 * 2. Anonymous caller, revision known as a commit (given, or a branch pinned within the refs TTL),
 *    and a file row upstream once granted anonymously, while the repo is still public (checked
 *    once per repo and auth TTL) → answered from the index, no file request upstream.
 * 3. Otherwise one upstream HEAD with the caller's own credentials; identical concurrent
 *    questions share it. A successful anonymous answer is recorded in the index.
 * When upstream cannot be reached, an anonymous caller is answered from the last known ref and row
 * (offline fallback); a caller with a token fails closed.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { systemClock, type Clock } from '../clock.js';
import { MirrorError } from '../errors.js';
import { blobKey, type BlobKey } from '../storage/blob-layout.js';
import type { CacheIndex, FileRow } from '../storage/cache-index.js';
import type { HubClient, UpstreamFileMeta } from '../upstream/hub-client.js';
import { isUnreachable } from '../upstream/upstream-errors.js';
import { PromiseFlights } from '../mirror/flights.js';
import type { RefPins } from './ref-pins.js';
import { apiTypeSegment, isCommitSha, repoKey, type FileRequest, type RepoRef } from './repo-ref.js';

type RepoAccess = 'public' | 'restricted' | 'unknown';

export interface FileEntry {
  request: FileRequest;
  commit: string;
  blobKey: BlobKey;
  size: number;
  /** Unquoted etag as the Hub gives it: git sha1 for regular files, sha256 for LFS files. */
  etag: string;
  isLfs: boolean;
  contentType: string;
  /** Where the answer came from: the index, the token memo, upstream, or a stale index row (offline). */
  source: 'index' | 'memo' | 'upstream' | 'stale';
}

export interface FileResolverOptions {
  index: CacheIndex;
  hub: HubClient;
  /** Branch or tag → commit, shared with the metadata API (one pin per revision within the refs TTL). */
  pins: RefPins;
  /** How long upstream's grant to one token for one file is trusted. */
  authTtlMs: number;
  /** Grants age on its monotonic clock; rows are stamped with its wall clock. */
  clock?: Clock;
  onStale?: (req: FileRequest) => void;
}

export class FileResolver {
  readonly #index: CacheIndex;
  readonly #hub: HubClient;
  readonly #pins: RefPins;
  readonly #now: () => number;
  readonly #probes = new PromiseFlights<FileEntry>();
  readonly #grants: LRUCache<string, FileEntry>;
  readonly #repoAccessMemo: LRUCache<string, 'public' | 'restricted'>;
  readonly #authTtlMs: number;
  readonly #repoAccessFlights = new PromiseFlights<RepoAccess>();
  /** Per-process key for hashing tokens: memo keys are useless outside this process. */
  readonly #tokenKey = randomBytes(32);
  readonly #onStale: ((req: FileRequest) => void) | undefined;

  constructor(opts: FileResolverOptions) {
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#pins = opts.pins;
    this.#authTtlMs = opts.authTtlMs;
    const clock = opts.clock ?? systemClock;
    this.#now = () => clock.now();
    this.#onStale = opts.onStale;
    // TTLs on the monotonic clock, read at every lookup (no cached "now": a grant expires on time).
    const ttlClock = { perf: { now: () => clock.monotonic() }, ttlResolution: 0, ttlAutopurge: false };
    this.#grants = new LRUCache<string, FileEntry>({ max: 50_000, ttl: Math.max(1, opts.authTtlMs), ...ttlClock });
    this.#repoAccessMemo = new LRUCache<string, 'public' | 'restricted'>({ max: 10_000, ttl: Math.max(1, opts.authTtlMs), ...ttlClock });
  }

  async resolve(req: FileRequest, auth: string | undefined): Promise<FileEntry> {
    const identity = auth ? createHmac('sha256', this.#tokenKey).update(auth).digest('base64url') : 'anonymous';
    const commit = this.#knownCommit(req);
    const questionKey = `${identity}|${repoKey(req.repo)}|${req.view}|${commit ?? req.revision}|${req.path}`;

    // Upstream granted this very question to this identity (or anonymously) within the TTL.
    const granted = this.#grants.get(questionKey);
    if (granted) return { ...granted, request: req, source: 'memo' };

    // An anonymous question about a file upstream once served anonymously: answered from the
    // index while the repo is still public (decided once per repo and TTL, see #repoAccess).
    if (!auth && commit) {
      const row = this.#index.getFile(req.repo, commit, req.view, req.path);
      if (row?.anonymousOk && (await this.#repoAccess(req.repo)) !== 'restricted') return fromRow(req, row, 'index');
    }

    try {
      const entry = await this.#probes.run(questionKey, () => this.#probe(req, commit, auth));
      // A question asked by branch name must not outlive the branch's pin.
      const pinned = commit !== undefined;
      this.#grants.set(questionKey, entry, { ttl: Math.max(1, pinned ? this.#authTtlMs : Math.min(this.#authTtlMs, this.#pins.ttlMs)) });
      return { ...entry, request: req };
    } catch (err) {
      if (!auth && isUnreachable(err)) {
        const stale = this.#staleEntry(req);
        if (stale) {
          this.#onStale?.(req);
          return stale;
        }
      }
      throw err;
    }
  }

  /**
   * Whether anonymous access to a repo still stands: its info is public (`private: false` and not
   * gated), asked anonymously once per repo and auth TTL. `unknown` when upstream cannot be asked:
   * files upstream served anonymously are public content, which the offline fallback may serve.
   * A repo that became private or gated answers `restricted`, and every anonymous request then
   * goes through a file-level probe (which upstream refuses for gated files).
   */
  async #repoAccess(repo: RepoRef): Promise<RepoAccess> {
    const key = repoKey(repo);
    const known = this.#repoAccessMemo.get(key);
    if (known) return known;
    const decided = await this.#repoAccessFlights.run(key, async () => {
      try {
        const res = await this.#hub.requestApi('GET', `/api/${apiTypeSegment(repo.type)}/${repo.id}`, undefined);
        if (res.statusCode >= 500) return 'unknown';
        if (res.statusCode !== 200) return 'restricted';
        const info = JSON.parse(res.body.toString('utf8')) as { private?: unknown; gated?: unknown };
        return info.private === false && (info.gated === false || info.gated === undefined) ? 'public' : 'restricted';
      } catch (err) {
        if (isUnreachable(err)) return 'unknown';
        throw err;
      }
    });
    if (decided !== 'unknown') this.#repoAccessMemo.set(key, decided);
    return decided;
  }

  /** The commit a revision stands for without asking upstream, if known and fresh. */
  #knownCommit(req: FileRequest): string | undefined {
    return isCommitSha(req.revision) ? req.revision : this.#pins.fresh(req.repo, req.revision);
  }

  #staleEntry(req: FileRequest): FileEntry | undefined {
    const commit = isCommitSha(req.revision) ? req.revision : this.#pins.last(req.repo, req.revision);
    if (!commit) return undefined;
    const row = this.#index.getFile(req.repo, commit, req.view, req.path);
    return row?.anonymousOk ? fromRow(req, row, 'stale') : undefined;
  }

  async #probe(req: FileRequest, commit: string | undefined, auth: string | undefined): Promise<FileEntry> {
    // Ask about the pinned commit when we have one, so every answer inside the refs TTL names the
    // same commit even if upstream moves the branch meanwhile.
    const meta = await this.#hub.headFile(commit ? { ...req, revision: commit } : req, auth);
    const entry = toEntry(req, meta);
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
      anonymousOk: !auth,
      checkedAt: this.#now(),
    };
    this.#index.putFile(row);
    // Refs learnt with a token are not recorded: they may describe a private repo. A pin that
    // someone else (e.g. a metadata request) set meanwhile wins: ask again about its commit.
    if (!auth && !isCommitSha(req.revision) && !commit) {
      const pinned = this.#pins.pin(req.repo, req.revision, entry.commit);
      if (pinned !== entry.commit) return this.#probe(req, pinned, auth);
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
function toEntry(req: FileRequest, meta: UpstreamFileMeta): FileEntry {
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
