/**
 * CacheIndex: the SQLite index of what the mirror knows (better-sqlite3, WAL).
 *
 * - `refs`: (repo, revision) → commit, with the time upstream said so (branches expire after a TTL).
 * - `files`: (repo, commit, view, path) → blob key, size, etag, and whether anonymous access was
 *   granted by upstream. Immutable once a commit is known.
 * - `blobs`: what is verified and on disk, with access times (flushed in batches, not per hit).
 * - `api_responses`: JSON answers of the Hub API for a commit (repo info, tree pages, paths-info),
 *   stored only when obtained anonymously; immutable like the commit they describe.
 *
 * All statements are prepared once. Writes happen on this one connection; better-sqlite3 is
 * synchronous, so every call here is short and the busy timeout is kept low.
 */
import Database from 'better-sqlite3';
import type { BlobKey } from './blob-layout.js';
import { MIGRATIONS } from './migrations.js';
import type { FileView, RepoRef } from '../hub/repo-ref.js';

export interface RefRow {
  commit: string;
  checkedAt: number;
}

export interface FileRow {
  repo: RepoRef;
  commit: string;
  view: FileView;
  path: string;
  blobKey: BlobKey;
  size: number;
  etag: string;
  isLfs: boolean;
  contentType: string;
  anonymousOk: boolean;
  checkedAt: number;
}

export interface BlobRow {
  blobKey: BlobKey;
  size: number;
  storedAt: number;
  lastAccessedAt: number;
}

/** One stored API answer: what to send back, except the mirror's own origin (built per request). */
export interface ApiResponseRow {
  status: number;
  /** The few headers kept (lower-case names). */
  headers: Record<string, string>;
  /** `rel="next"` page as an upstream path + query (below the upstream base), if any. */
  nextPage: string | undefined;
  body: Buffer;
  storedAt: number;
}

interface FileDbRow {
  blob_key: string;
  size: number;
  etag: string;
  is_lfs: number;
  content_type: string;
  anonymous_ok: number;
  checked_at: number;
}

export class CacheIndex {
  readonly #db: Database.Database;
  readonly #stmts;
  #pendingTouches = new Map<BlobKey, number>();

  private constructor(db: Database.Database) {
    this.#db = db;
    this.#stmts = {
      getRef: db.prepare<[string, string, string], { commit_sha: string; checked_at: number }>(
        'SELECT commit_sha, checked_at FROM refs WHERE repo_type = ? AND repo_id = ? AND revision = ?',
      ),
      putRef: db.prepare(
        `INSERT INTO refs (repo_type, repo_id, revision, commit_sha, checked_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (repo_type, repo_id, revision) DO UPDATE SET commit_sha = excluded.commit_sha, checked_at = excluded.checked_at`,
      ),
      getFile: db.prepare<[string, string, string, string, string], FileDbRow>(
        `SELECT blob_key, size, etag, is_lfs, content_type, anonymous_ok, checked_at FROM files
         WHERE repo_type = ? AND repo_id = ? AND commit_sha = ? AND view = ? AND path = ?`,
      ),
      putFile: db.prepare(
        `INSERT INTO files (repo_type, repo_id, commit_sha, view, path, blob_key, size, etag, is_lfs, content_type, anonymous_ok, checked_at)
         VALUES (@repo_type, @repo_id, @commit_sha, @view, @path, @blob_key, @size, @etag, @is_lfs, @content_type, @anonymous_ok, @checked_at)
         ON CONFLICT (repo_type, repo_id, commit_sha, view, path) DO UPDATE SET
           blob_key = excluded.blob_key, size = excluded.size, etag = excluded.etag, is_lfs = excluded.is_lfs,
           content_type = excluded.content_type,
           anonymous_ok = max(files.anonymous_ok, excluded.anonymous_ok),
           checked_at = excluded.checked_at`,
      ),
      getBlob: db.prepare<[string], { size: number; stored_at: number; last_accessed_at: number }>(
        'SELECT size, stored_at, last_accessed_at FROM blobs WHERE blob_key = ?',
      ),
      putBlob: db.prepare(
        `INSERT INTO blobs (blob_key, size, stored_at, last_accessed_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (blob_key) DO UPDATE SET size = excluded.size, stored_at = excluded.stored_at`,
      ),
      touchBlob: db.prepare('UPDATE blobs SET last_accessed_at = max(last_accessed_at, ?) WHERE blob_key = ?'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE blob_key = ?'),
      getApi: db.prepare<[string, string, string, string], { status: number; headers: string; next_page: string | null; body: Buffer; stored_at: number }>(
        `SELECT status, headers, next_page, body, stored_at FROM api_responses
         WHERE repo_type = ? AND repo_id = ? AND commit_sha = ? AND request_key = ?`,
      ),
      putApi: db.prepare(
        `INSERT INTO api_responses (repo_type, repo_id, commit_sha, request_key, status, headers, next_page, body, stored_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (repo_type, repo_id, commit_sha, request_key) DO UPDATE SET
           status = excluded.status, headers = excluded.headers, next_page = excluded.next_page,
           body = excluded.body, stored_at = excluded.stored_at`,
      ),
      ping: db.prepare('SELECT 1 AS ok'),
    };
  }

  /** Opens (creating if needed) the index at `file` and applies pending migrations. */
  static open(file: string): CacheIndex {
    const db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 2000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    return new CacheIndex(db);
  }

  getRef(repo: RepoRef, revision: string): RefRow | undefined {
    const row = this.#stmts.getRef.get(repo.type, repo.id, revision);
    return row ? { commit: row.commit_sha, checkedAt: row.checked_at } : undefined;
  }

  putRef(repo: RepoRef, revision: string, commit: string, checkedAt: number): void {
    this.#stmts.putRef.run(repo.type, repo.id, revision, commit, checkedAt);
  }

  getFile(repo: RepoRef, commit: string, view: FileView, path: string): FileRow | undefined {
    const row = this.#stmts.getFile.get(repo.type, repo.id, commit, view, path);
    if (!row) return undefined;
    return {
      repo,
      commit,
      view,
      path,
      blobKey: row.blob_key as BlobKey,
      size: row.size,
      etag: row.etag,
      isLfs: row.is_lfs === 1,
      contentType: row.content_type,
      anonymousOk: row.anonymous_ok === 1,
      checkedAt: row.checked_at,
    };
  }

  /** Records a file entry; `anonymousOk` is sticky (an authenticated answer never clears it). */
  putFile(row: FileRow): void {
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
      anonymous_ok: row.anonymousOk ? 1 : 0,
      checked_at: row.checkedAt,
    });
  }

  /** Records a ref and a file entry in one transaction. */
  recordResolution(ref: { repo: RepoRef; revision: string; commit: string } | null, file: FileRow): void {
    this.#db.transaction(() => {
      if (ref) this.putRef(ref.repo, ref.revision, ref.commit, file.checkedAt);
      this.putFile(file);
    })();
  }

  /** A stored API answer for `commit`, keyed by endpoint + canonical query (see hub/api-request.ts). */
  getApiResponse(repo: RepoRef, commit: string, requestKey: string): ApiResponseRow | undefined {
    const row = this.#stmts.getApi.get(repo.type, repo.id, commit, requestKey);
    if (!row) return undefined;
    return {
      status: row.status,
      headers: JSON.parse(row.headers) as Record<string, string>,
      nextPage: row.next_page ?? undefined,
      body: row.body,
      storedAt: row.stored_at,
    };
  }

  putApiResponse(repo: RepoRef, commit: string, requestKey: string, row: ApiResponseRow): void {
    this.#stmts.putApi.run(repo.type, repo.id, commit, requestKey, row.status, JSON.stringify(row.headers), row.nextPage ?? null, row.body, row.storedAt);
  }

  getBlob(key: BlobKey): BlobRow | undefined {
    const row = this.#stmts.getBlob.get(key);
    return row ? { blobKey: key, size: row.size, storedAt: row.stored_at, lastAccessedAt: row.last_accessed_at } : undefined;
  }

  /** Every recorded blob (reconcile and verify walk them; ordered for stable progress output). */
  *allBlobs(): IterableIterator<BlobRow> {
    for (const row of this.#db
      .prepare<[], { blob_key: string; size: number; stored_at: number; last_accessed_at: number }>('SELECT blob_key, size, stored_at, last_accessed_at FROM blobs ORDER BY blob_key')
      .all()) {
      yield { blobKey: row.blob_key as BlobKey, size: row.size, storedAt: row.stored_at, lastAccessedAt: row.last_accessed_at };
    }
  }

  /** Called after the blob file is committed (renamed and its directory fsynced). */
  recordBlob(key: BlobKey, size: number, now = Date.now()): void {
    this.#stmts.putBlob.run(key, size, now, now);
  }

  forgetBlob(key: BlobKey): void {
    this.#stmts.deleteBlob.run(key);
    this.#pendingTouches.delete(key);
  }

  /** Notes an access; written on the next `flushTouches()` (batched: a hit costs no write). */
  touchBlob(key: BlobKey, now = Date.now()): void {
    this.#pendingTouches.set(key, now);
  }

  flushTouches(): void {
    if (this.#pendingTouches.size === 0) return;
    const touches = [...this.#pendingTouches];
    this.#pendingTouches.clear();
    this.#db.transaction(() => {
      for (const [key, at] of touches) this.#stmts.touchBlob.run(at, key);
    })();
  }

  /** True when the database answers a trivial query. */
  ping(): boolean {
    try {
      return this.#stmts.ping.get() !== undefined;
    } catch {
      return false;
    }
  }

  close(): void {
    try {
      this.flushTouches();
    } finally {
      this.#db.close();
    }
  }
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
