/**
 * SqliteCacheIndex: the CacheIndex contract (cache-index-contract.ts) over SQLite in the data dir
 * (better-sqlite3, WAL), for one mirror process per data dir (the default).
 *
 * - `refs`: (repo, revision) → commit, with the time upstream said so (branches expire after a TTL).
 * - `files`: (repo, commit, view, path) → blob key, size, etag. Immutable once a commit is known.
 * - `blobs`: what is verified and on disk, with access times (flushed in batches, not per hit).
 * - `api_responses`: JSON answers of the Hub API for a commit (repo info, tree pages, paths-info),
 *   immutable like the commit they describe.
 * - `jobs`, `job_items`, `counters`: the operator's background jobs and traffic counters, through
 *   `jobs` (job-table.ts) and `inventory` (inventory-queries.ts).
 * Refs, files and API answers carry the scope of the identity upstream gave them to (who may read
 * them back, decided in hub/access-policy.ts): an opaque string here. On a conflict the public
 * scope `anonymous` is sticky (an answer to a token never narrows public content).
 *
 * All statements are prepared once. Writes happen on this one connection; better-sqlite3 is
 * synchronous, so every call here is short and the busy timeout is kept low. The contract's
 * methods are asynchronous; here each one does its work synchronously, before it returns (a write
 * is applied, or deferred with its overlay, by the time the call returns).
 *
 * Writes degrade instead of failing: when the database is locked by another
 * connection (SQLITE_BUSY after the short busy timeout) or the disk is full (SQLITE_FULL), the
 * write waits in memory, in order, and is retried every second until it lands; meanwhile reads of
 * refs and blobs see the waiting writes, so the mirror keeps answering as if they had landed.
 * Nothing of this is needed for correctness after a crash: reconcile adopts a verified blob whose
 * row never landed, and metadata is asked upstream again.
 */
import Database from 'better-sqlite3';
import { LRUCache } from 'lru-cache';
import { systemClock } from '../clock.js';
import type { BlobKey } from './blob-layout.js';
import {
  PUBLIC_SCOPE,
  type ApiResponseRow,
  type BlobRow,
  type CacheIndex,
  type CounterDeltas,
  type FileRow,
  type IndexStats,
  type RefRow,
  type WriteProblemListener,
} from './cache-index-contract.js';
import { EvictionQueries } from './eviction-queries.js';
import { InventoryQueries } from './inventory-queries.js';
import { JobTable, now } from './job-table.js';
import { MIGRATIONS } from './migrations.js';
import type { FileView, RepoRef } from '../hub/repo-ref.js';

export type { ApiResponseRow, BlobRow, FileRow, RefRow } from './cache-index-contract.js';

export interface CacheIndexOptions {
  /**
   * How long a write waits for another connection's lock before it is deferred. The event loop is
   * blocked meanwhile (better-sqlite3 is synchronous): keep it short.
   */
  busyTimeoutMs?: number;
  /** Writes were deferred (database busy or full), caught up, or dropped (too many waiting). */
  onWriteProblem?: WriteProblemListener;
}

/** Deferred writes are retried this often. */
const RETRY_MS = 1_000;
/** Deferred writes kept at most; later ones are dropped (metadata is asked again, blobs are adopted at start). */
const MAX_PENDING_WRITES = 50_000;

/** SQLite errors that say "not now" (locked, busy, disk full, I/O): the write is retried later. */
export function isTransientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^SQLITE_(BUSY|LOCKED|FULL|IOERR)/.test(code);
}

interface FileDbRow {
  blob_key: string;
  size: number;
  etag: string;
  is_lfs: number;
  content_type: string;
  scope: string | null;
  checked_at: number;
}

export class SqliteCacheIndex implements CacheIndex {
  readonly kind = 'sqlite';
  /** The operator's background jobs (see job-table.ts). */
  readonly jobs: JobTable;
  /** What `ls` and `stats` show, and the traffic counters (see inventory-queries.ts). */
  readonly inventory: InventoryQueries;
  readonly #db: Database.Database;
  readonly #stmts;
  /** Hits since the last flush: the latest access time and how many. */
  #pendingTouches = new Map<BlobKey, { at: number; hits: number }>();
  /** Writes that could not land yet, in order (see the header comment). */
  #pendingWrites: Array<() => void> = [];
  /** What those writes will set, for reads meanwhile: ref rows, and blob rows (null: forgotten). */
  readonly #pendingRefs = new Map<string, RefRow>();
  readonly #pendingBlobs = new Map<BlobKey, BlobRow | null>();
  /**
   * Blob rows as last read or written (`false`: none). This connection is the blobs table's only
   * writer while the mirror runs (one process per data dir), so a hit or a HEAD reads no SQLite.
   */
  readonly #blobRows = new LRUCache<BlobKey, BlobRow | false>({ max: 100_000 });
  #retryTimer: NodeJS.Timeout | null = null;
  readonly #onWriteProblem: CacheIndexOptions['onWriteProblem'];
  /** Sum of the recorded blobs' sizes, kept up to date by this connection's writes. */
  #storedBytes: number;
  /** Eviction's view of blobs and the metadata bound (see eviction-queries.ts). */
  readonly eviction: EvictionQueries;

  private constructor(db: Database.Database, opts: CacheIndexOptions) {
    this.#db = db;
    this.#storedBytes = (db.prepare('SELECT coalesce(sum(size), 0) AS n FROM blobs').get() as { n: number }).n;
    this.eviction = new EvictionQueries(db);
    this.#onWriteProblem = opts.onWriteProblem;
    this.jobs = new JobTable(db);
    this.inventory = new InventoryQueries(db);
    this.#stmts = {
      getRef: db.prepare<[string, string, string], { commit_sha: string; checked_at: number; scope: string }>(
        'SELECT commit_sha, checked_at, scope FROM refs WHERE repo_type = ? AND repo_id = ? AND revision = ?',
      ),
      putRef: db.prepare(
        `INSERT INTO refs (repo_type, repo_id, revision, commit_sha, checked_at, scope) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (repo_type, repo_id, revision) DO UPDATE SET
           commit_sha = excluded.commit_sha, checked_at = excluded.checked_at, scope = excluded.scope`,
      ),
      getFile: db.prepare<[string, string, string, string, string], FileDbRow>(
        `SELECT blob_key, size, etag, is_lfs, content_type, scope, checked_at FROM files
         WHERE repo_type = ? AND repo_id = ? AND commit_sha = ? AND view = ? AND path = ?`,
      ),
      putFile: db.prepare(
        `INSERT INTO files (repo_type, repo_id, commit_sha, view, path, blob_key, size, etag, is_lfs, content_type, scope, checked_at)
         VALUES (@repo_type, @repo_id, @commit_sha, @view, @path, @blob_key, @size, @etag, @is_lfs, @content_type, @scope, @checked_at)
         ON CONFLICT (repo_type, repo_id, commit_sha, view, path) DO UPDATE SET
           blob_key = excluded.blob_key, size = excluded.size, etag = excluded.etag, is_lfs = excluded.is_lfs,
           content_type = excluded.content_type,
           scope = CASE WHEN files.scope = @public OR excluded.scope = @public THEN @public ELSE coalesce(excluded.scope, files.scope) END,
           checked_at = excluded.checked_at`,
      ),
      getBlob: db.prepare<[string], { size: number; stored_at: number; last_accessed_at: number }>(
        'SELECT size, stored_at, last_accessed_at FROM blobs WHERE blob_key = ?',
      ),
      putBlob: db.prepare(
        `INSERT INTO blobs (blob_key, size, stored_at, last_accessed_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (blob_key) DO UPDATE SET size = excluded.size, stored_at = excluded.stored_at`,
      ),
      touchBlob: db.prepare('UPDATE blobs SET last_accessed_at = max(last_accessed_at, ?), hits = hits + ? WHERE blob_key = ?'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE blob_key = ?'),
      deleteFilesOfBlob: db.prepare('DELETE FROM files WHERE blob_key = ?'),
      getApi: db.prepare<[string, string, string, string], { status: number; headers: string; next_page: string | null; body: Buffer; stored_at: number; scope: string }>(
        `SELECT status, headers, next_page, body, stored_at, scope FROM api_responses
         WHERE repo_type = ? AND repo_id = ? AND commit_sha = ? AND request_key = ?`,
      ),
      putApi: db.prepare(
        `INSERT INTO api_responses (repo_type, repo_id, commit_sha, request_key, status, headers, next_page, body, stored_at, scope)
         VALUES (@repo_type, @repo_id, @commit_sha, @request_key, @status, @headers, @next_page, @body, @stored_at, @scope)
         ON CONFLICT (repo_type, repo_id, commit_sha, request_key) DO UPDATE SET
           status = excluded.status, headers = excluded.headers, next_page = excluded.next_page,
           body = excluded.body, stored_at = excluded.stored_at,
           scope = CASE WHEN api_responses.scope = @public THEN @public ELSE excluded.scope END`,
      ),
      ping: db.prepare('SELECT 1 AS ok'),
    };
  }

  /** Opens (creating if needed) the index at `file` and applies pending migrations. */
  static open(file: string, opts: CacheIndexOptions = {}): SqliteCacheIndex {
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    // Long enough for a checkpoint or a sibling's short write; a longer lock defers our writes.
    db.pragma(`busy_timeout = ${Math.max(0, Math.round(opts.busyTimeoutMs ?? 100))}`);
    db.pragma('foreign_keys = ON');
    migrate(db);
    return new SqliteCacheIndex(db, opts);
  }

  /** Writes waiting for the database (busy or full); 0 normally. */
  get pendingWrites(): number {
    return this.#pendingWrites.length;
  }

  /**
   * Runs `op` now, or (database busy or full, or earlier writes still waiting) queues it for the
   * retry timer and applies `overlay` so reads see it meanwhile. Other errors are thrown.
   */
  #write(op: () => void, overlay?: () => void): Promise<void> {
    return now(() => this.#writeNow(op, overlay));
  }

  #writeNow(op: () => void, overlay?: () => void): void {
    if (this.#pendingWrites.length === 0) {
      try {
        op();
        return;
      } catch (err) {
        if (!isTransientDbError(err)) throw err;
        this.#onWriteProblem?.('deferred', { error: errorText(err), pending: 1 });
      }
    }
    if (this.#pendingWrites.length >= MAX_PENDING_WRITES) {
      this.#onWriteProblem?.('dropped', { pending: this.#pendingWrites.length });
      return;
    }
    this.#pendingWrites.push(op);
    overlay?.();
    this.#retryTimer ??= setTimeout(() => this.#retryWrites(), RETRY_MS).unref();
  }

  /** Lands the deferred writes in one transaction, or tries again later. */
  #retryWrites(): void {
    this.#retryTimer = null;
    const ops = this.#pendingWrites;
    if (ops.length === 0) return;
    try {
      this.#db.transaction(() => {
        for (const op of ops) op();
      })();
    } catch (err) {
      if (isTransientDbError(err)) {
        this.#retryTimer = setTimeout(() => this.#retryWrites(), RETRY_MS).unref();
        return;
      }
      // Not a passing condition: give them up rather than retry forever (reconcile repairs blobs).
      this.#onWriteProblem?.('dropped', { error: errorText(err), pending: ops.length });
    }
    this.#pendingWrites = [];
    this.#pendingRefs.clear();
    this.#pendingBlobs.clear();
    this.#onWriteProblem?.('caught-up', { pending: ops.length });
  }

  getRef(repo: RepoRef, revision: string): Promise<RefRow | undefined> {
    return Promise.resolve(this.#getRefNow(repo, revision));
  }

  #getRefNow(repo: RepoRef, revision: string): RefRow | undefined {
    const waiting = this.#pendingRefs.get(refKey(repo, revision));
    if (waiting) return waiting;
    const row = this.#stmts.getRef.get(repo.type, repo.id, revision);
    return row ? { commit: row.commit_sha, checkedAt: row.checked_at, scope: row.scope } : undefined;
  }

  putRef(repo: RepoRef, revision: string, commit: string, checkedAt: number, scope: string = PUBLIC_SCOPE): Promise<void> {
    return this.#write(
      () => this.#stmts.putRef.run(repo.type, repo.id, revision, commit, checkedAt, scope),
      () => this.#pendingRefs.set(refKey(repo, revision), { commit, checkedAt, scope }),
    );
  }

  getFile(repo: RepoRef, commit: string, view: FileView, path: string): Promise<FileRow | undefined> {
    const row = this.#stmts.getFile.get(repo.type, repo.id, commit, view, path);
    if (!row) return Promise.resolve(undefined);
    return Promise.resolve({
      repo,
      commit,
      view,
      path,
      blobKey: row.blob_key as BlobKey,
      size: row.size,
      etag: row.etag,
      isLfs: row.is_lfs === 1,
      contentType: row.content_type,
      scope: row.scope,
      checkedAt: row.checked_at,
    });
  }

  /** Records a file entry; the public scope is sticky (an authenticated answer never narrows it). */
  putFile(row: FileRow): Promise<void> {
    return this.#write(() => this.#putFileNow(row));
  }

  #putFileNow(row: FileRow): void {
    this.#stmts.putFile.run({
      repo_type: row.repo.type,
      repo_id: row.repo.id,
      commit_sha: row.commit,
      view: row.view,
      path: row.path,
      blob_key: row.blobKey,
      size: row.size,
      etag: row.etag,
      is_lfs: row.isLfs ? 1 : 0,
      content_type: row.contentType,
      scope: row.scope,
      checked_at: row.checkedAt,
      public: PUBLIC_SCOPE,
    });
  }


  /** A stored API answer for `commit`, keyed by endpoint + canonical query (see hub/api-request.ts). */
  getApiResponse(repo: RepoRef, commit: string, requestKey: string): Promise<ApiResponseRow | undefined> {
    const row = this.#stmts.getApi.get(repo.type, repo.id, commit, requestKey);
    if (!row) return Promise.resolve(undefined);
    return Promise.resolve({
      status: row.status,
      headers: JSON.parse(row.headers) as Record<string, string>,
      nextPage: row.next_page ?? undefined,
      body: row.body,
      storedAt: row.stored_at,
      scope: row.scope,
    });
  }

  /** Records an API answer; the public scope is sticky, like a file row's. */
  putApiResponse(repo: RepoRef, commit: string, requestKey: string, row: ApiResponseRow): Promise<void> {
    return this.#write(() =>
      this.#stmts.putApi.run({
        repo_type: repo.type,
        repo_id: repo.id,
        commit_sha: commit,
        request_key: requestKey,
        status: row.status,
        headers: JSON.stringify(row.headers),
        next_page: row.nextPage ?? null,
        body: row.body,
        stored_at: row.storedAt,
        scope: row.scope,
        public: PUBLIC_SCOPE,
      }),
    );
  }

  getBlob(key: BlobKey): Promise<BlobRow | undefined> {
    return Promise.resolve(this.#getBlobNow(key));
  }

  /** This connection is the blobs table's only writer: the memo's negative answers stay true. */
  knownBlob(key: BlobKey): BlobRow | false | undefined {
    const known = this.#blobRows.get(key);
    if (known !== undefined) return known;
    if (this.#pendingBlobs.has(key)) return this.#pendingBlobs.get(key) ?? false;
    return undefined;
  }

  #getBlobNow(key: BlobKey): BlobRow | undefined {
    const known = this.#blobRows.get(key);
    if (known !== undefined) return known || undefined;
    if (this.#pendingBlobs.has(key)) return this.#pendingBlobs.get(key) ?? undefined;
    const found = this.#stmts.getBlob.get(key);
    const row = found ? { blobKey: key, size: found.size, storedAt: found.stored_at, lastAccessedAt: found.last_accessed_at } : undefined;
    this.#blobRows.set(key, row ?? false);
    return row;
  }

  /** Every recorded blob (reconcile and verify walk them; ordered for stable progress output). */
  allBlobs(): Promise<BlobRow[]> {
    return Promise.resolve(
      this.#db
        .prepare<[], { blob_key: string; size: number; stored_at: number; last_accessed_at: number }>('SELECT blob_key, size, stored_at, last_accessed_at FROM blobs ORDER BY blob_key')
        .all()
        .map((row) => ({ blobKey: row.blob_key as BlobKey, size: row.size, storedAt: row.stored_at, lastAccessedAt: row.last_accessed_at })),
    );
  }

  /** Bytes of the blobs recorded (what the cache budget counts). */
  get storedBytes(): number {
    return this.#storedBytes;
  }

  /** Called after the blob file is committed (renamed and its directory fsynced). */
  recordBlob(key: BlobKey, size: number, now = systemClock.now()): Promise<void> {
    this.#storedBytes += size - (this.#getBlobNow(key)?.size ?? 0);
    this.#blobRows.set(key, { blobKey: key, size, storedAt: now, lastAccessedAt: now });
    return this.#write(
      () => this.#stmts.putBlob.run(key, size, now, now),
      () => this.#pendingBlobs.set(key, { blobKey: key, size, storedAt: now, lastAccessedAt: now }),
    );
  }

  forgetBlob(key: BlobKey): Promise<void> {
    this.#storedBytes -= this.#getBlobNow(key)?.size ?? 0;
    this.#pendingTouches.delete(key);
    this.#blobRows.set(key, false);
    return this.#write(
      () => this.#stmts.deleteBlob.run(key),
      () => this.#pendingBlobs.set(key, null),
    );
  }

  /**
   * Forgets an evicted blob and the file rows that name it, in one transaction: no file row is
   * left pointing at a blob that is gone (the next request asks upstream about the file again).
   */
  evictBlob(key: BlobKey): Promise<void> {
    this.#storedBytes -= this.#getBlobNow(key)?.size ?? 0;
    this.#pendingTouches.delete(key);
    this.#blobRows.set(key, false);
    return this.#write(
      () =>
        this.#db.transaction(() => {
          this.#stmts.deleteBlob.run(key);
          this.#stmts.deleteFilesOfBlob.run(key);
        })(),
      () => this.#pendingBlobs.set(key, null),
    );
  }

  /** Notes a hit (an access served from disk); written on the next `flushTouches()` (batched: a hit costs no write). */
  touchBlob(key: BlobKey, now = systemClock.now()): void {
    const t = this.#pendingTouches.get(key);
    if (t) {
      t.at = Math.max(t.at, now);
      t.hits++;
    } else this.#pendingTouches.set(key, { at: now, hits: 1 });
    const known = this.#blobRows.get(key);
    if (known && now > known.lastAccessedAt) this.#blobRows.set(key, { ...known, lastAccessedAt: now });
  }

  /**
   * Writes the batched hits, and `also` (e.g. traffic counters) in the same transaction, so a
   * locked database costs one short busy wait, not one per kind of write. Returns whether it
   * landed; when busy or full the hits are kept for the next flush (the caller keeps its own).
   */
  flushTouches(counters?: CounterDeltas): Promise<boolean> {
    return now(() => this.#flushTouchesNow(counters && (() => this.inventory.addCountersNow(counters.deltas, counters.initial))));
  }

  #flushTouchesNow(also?: () => void): boolean {
    if (this.#pendingTouches.size === 0 && !also) return true;
    const touches = [...this.#pendingTouches];
    this.#pendingTouches.clear();
    try {
      this.#db.transaction(() => {
        for (const [key, t] of touches) this.#stmts.touchBlob.run(t.at, t.hits, key);
        also?.();
      })();
      return true;
    } catch (err) {
      // Keep them for the next flush, merged with touches made meanwhile.
      for (const [key, t] of touches) {
        const newer = this.#pendingTouches.get(key);
        this.#pendingTouches.set(key, newer ? { at: Math.max(t.at, newer.at), hits: t.hits + newer.hits } : t);
      }
      if (!isTransientDbError(err)) throw err;
      return false;
    }
  }

  /** Row counts per table and the bytes of the recorded blobs (metrics; one scan of each table). */
  stats(): Promise<IndexStats> {
    return Promise.resolve(this.#statsNow());
  }

  #statsNow(): IndexStats {
    const row = this.#db
      .prepare<[], { refs: number; files: number; blobs: number; api_responses: number; blob_bytes: number }>(
        `SELECT (SELECT COUNT(*) FROM refs) AS refs, (SELECT COUNT(*) FROM files) AS files, (SELECT COUNT(*) FROM blobs) AS blobs,
                (SELECT COUNT(*) FROM api_responses) AS api_responses, (SELECT COALESCE(SUM(size), 0) FROM blobs) AS blob_bytes`,
      )
      .get();
    return {
      rows: { refs: row?.refs ?? 0, files: row?.files ?? 0, blobs: row?.blobs ?? 0, api_responses: row?.api_responses ?? 0 },
      blobBytes: row?.blob_bytes ?? 0,
    };
  }

  /** True when the database answers a trivial query. */
  ping(): Promise<boolean> {
    try {
      return Promise.resolve(this.#stmts.ping.get() !== undefined);
    } catch {
      return Promise.resolve(false);
    }
  }

  close(): Promise<void> {
    return now(() => this.#closeNow());
  }

  #closeNow(): void {
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    try {
      // Last chance for deferred writes; whatever still cannot land is repaired at the next start.
      this.#retryWrites();
      if (this.#retryTimer) clearTimeout(this.#retryTimer);
      this.#flushTouchesNow();
    } finally {
      this.#db.close();
    }
  }
}

function refKey(repo: RepoRef, revision: string): string {
  return `${repo.type}\0${repo.id}\0${revision}`;
}

function errorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : 'error';
  return `${code}: ${typeof e?.message === 'string' ? e.message : 'unknown'}`;
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let version = current; version < MIGRATIONS.length; version++) {
    const step = MIGRATIONS[version];
    if (step === undefined) break;
    db.transaction(() => {
      db.exec(step);
      db.pragma(`user_version = ${version + 1}`);
    })();
  }
}
