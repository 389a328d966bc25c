/**
 * PostgresCacheIndex: the CacheIndex contract (cache-index-contract.ts) in PostgreSQL (`pg`),
 * shared by several mirror replicas (`index: postgres`, with `storage: s3`). The semantics are
 * the SQLite index's (sqlite-cache-index.ts, the reference); what differs comes from sharing:
 *
 * - Schema: postgres-migrations.ts (the SQLite tables; migrations under an advisory lock, so
 *   replicas starting at once migrate once). Jobs, inventory, eviction: postgres-stores.ts.
 * - The blob memo holds positive rows only: another replica may record a blob at any moment, so
 *   "absent" is never remembered; `knownBlob` answers a row or undefined, never `false`, and a
 *   miss asks the database. A row this process saw stays memoised until it forgets or evicts the
 *   blob itself (another replica's eviction is seen when the store no longer has the object).
 * - `storedBytes`: this process's writes are applied at once; the sum of every replica's blobs is
 *   re-read on each `flushTouches` and `stats`.
 * - Deferred writes: a write the server cannot take now (unreachable, restarting, out of
 *   connections: postgres-errors.ts) waits in memory, in order, and the queue is retried every
 *   second until it lands, in one transaction; meanwhile reads of refs and blobs see the waiting
 *   writes. A write issued while others wait goes behind them. Writes issued concurrently while
 *   the queue is empty are not ordered among themselves (as from two clients). Other errors
 *   reject. Reads on an unreachable server reject.
 * - `touchBlob` is memory only; `flushTouches` writes hits and counters in one transaction.
 * - The URL's password is never shown: errors that leave this module, and events, are scrubbed.
 */
import { LRUCache } from 'lru-cache';
import pg from 'pg';
import { systemClock } from '../clock.js';
import type { FileView, RepoRef } from '../hub/repo-ref.js';
import type { Logger } from '../observability/logger.js';
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
import { isTransientPgError, passwordScrubber, pgErrorText, redactUrl } from './postgres-errors.js';
import { migratePostgresIndex } from './postgres-migrations.js';
import { PgEviction, PgInventory, PgJobStore, addCountersWith, type PgDb } from './postgres-stores.js';

export interface PostgresCacheIndexOptions {
  /** `postgres://user:password@host:port/database` (the password is never shown). */
  url: string;
  log?: Pick<Logger, 'warn'>;
  /** Writes were deferred (server unreachable or restarting), caught up, or dropped (too many waiting). */
  onWriteProblem?: WriteProblemListener;
  /** Connections at most (default 10). */
  poolSize?: number;
}

/** Deferred writes are retried this often. */
const RETRY_MS = 1_000;
/** Deferred writes kept at most; later ones are dropped (metadata is asked again, blobs are adopted at start). */
const MAX_PENDING_WRITES = 50_000;
/** A connect that takes longer fails (the request is then a miss, or the write deferred). */
const CONNECT_TIMEOUT_MS = 5_000;
/** A statement whose answer takes longer fails the same way (a server that hangs is as good as down). */
const QUERY_TIMEOUT_MS = 15_000;

type Query = PgDb['query'];
type Op = (query: Query) => Promise<unknown>;

/** BIGINT (oid 20) as a JS number: every BIGINT here is a time in ms or a size, far below 2^53. */
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown => (oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format))) as typeof pg.types.getTypeParser,
};

interface BlobDbRow {
  size: number;
  stored_at: number;
  last_accessed_at: number;
}

export class PostgresCacheIndex implements CacheIndex {
  readonly kind = 'postgres';
  readonly jobs: PgJobStore;
  readonly inventory: PgInventory;
  readonly eviction: PgEviction;
  readonly #pool: pg.Pool;
  readonly #scrub: (text: string) => string;
  readonly #onWriteProblem: WriteProblemListener | undefined;
  readonly #db: PgDb;
  /** One statement on the pool (its errors scrubbed). */
  readonly #query: Query;
  /** Positive blob rows as last read or written (see the header: never a negative answer). */
  readonly #blobRows = new LRUCache<BlobKey, BlobRow>({ max: 100_000 });
  #pendingTouches = new Map<BlobKey, { at: number; hits: number }>();
  #pendingWrites: Op[] = [];
  readonly #pendingRefs = new Map<string, RefRow>();
  readonly #pendingBlobs = new Map<BlobKey, BlobRow | null>();
  #retryTimer: NodeJS.Timeout | null = null;
  #retrying: Promise<void> | null = null;
  #storedBytes = 0;
  /** Bumped by every blob write of this process: a re-read sum (or a blob row) that raced one is not taken. */
  #blobWrites = 0;
  /** When (in #blobWrites) this process last forgot a blob, for reads that were in flight then. */
  readonly #forgottenAt = new LRUCache<BlobKey, number>({ max: 10_000 });
  #closed = false;

  private constructor(pool: pg.Pool, opts: PostgresCacheIndexOptions) {
    this.#pool = pool;
    this.#scrub = passwordScrubber(opts.url);
    this.#onWriteProblem = opts.onWriteProblem;
    const query: Query = async <R extends object>(sql: string, params?: unknown[]) => {
      try {
        return (await pool.query<R>(sql, params)).rows;
      } catch (err) {
        throw this.#scrubbed(err);
      }
    };
    this.#query = query;
    this.#db = { query, transaction: (work) => this.#transaction(work) };
    this.jobs = new PgJobStore(this.#db);
    this.inventory = new PgInventory(this.#db);
    this.eviction = new PgEviction(this.#db);
  }

  /**
   * Connects, applies pending migrations and reads the stored bytes. Rejects (with the URL's
   * password removed) when the server cannot be reached or refuses.
   */
  static async open(opts: PostgresCacheIndexOptions): Promise<PostgresCacheIndex> {
    const scrub = passwordScrubber(opts.url);
    const pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      application_name: 'hubcache-index',
      types: TYPES,
    });
    // An idle connection the server drops (restart, network) is reported here, not thrown.
    pool.on('error', (err) => opts.log?.warn({ reason: scrub(pgErrorText(err)) }, 'index: an idle PostgreSQL connection failed (it is replaced on the next query)'));
    const index = new PostgresCacheIndex(pool, opts);
    try {
      await migratePostgresIndex(pool);
      index.#storedBytes = await index.#sumOfBlobs();
    } catch (err) {
      await pool.end().catch(() => undefined);
      const e = index.#scrubbed(err);
      e.message = `PostgreSQL index at ${redactUrl(opts.url)}: ${e.message}`;
      throw e;
    }
    return index;
  }

  /** The error with the URL's password removed from its message (and stack). */
  #scrubbed(err: unknown): Error {
    const e = err instanceof Error ? err : new Error(String(err));
    e.message = this.#scrub(e.message);
    if (e.stack) e.stack = this.#scrub(e.stack);
    return e;
  }

  async #transaction<T>(work: (query: Query) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw this.#scrubbed(err);
    }
    let broken: Error | undefined;
    const query: Query = async <R extends object>(sql: string, params?: unknown[]) => (await client.query<R>(sql, params)).rows;
    try {
      await client.query('BEGIN');
      const result = await work(query);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      // A connection that cannot even roll back is not given back to the pool.
      await client.query('ROLLBACK').catch((e: Error) => (broken = e));
      throw this.#scrubbed(err);
    } finally {
      client.release(broken);
    }
  }

  async #sumOfBlobs(): Promise<number> {
    const [row] = await this.#db.query<{ n: number }>('SELECT coalesce(sum(size), 0)::bigint AS n FROM blobs');
    return row?.n ?? 0;
  }

  get pendingWrites(): number {
    return this.#pendingWrites.length;
  }

  get storedBytes(): number {
    return this.#storedBytes;
  }

  /**
   * Runs `op` now, or (server unreachable, or earlier writes still waiting) queues it for the
   * retry timer and applies `overlay` so reads see it meanwhile. Other errors reject.
   */
  async #write(op: Op, overlay?: () => void): Promise<void> {
    if (this.#pendingWrites.length === 0) {
      try {
        await op(this.#query);
        return;
      } catch (err) {
        if (!isTransientPgError(err)) throw err;
        this.#onWriteProblem?.('deferred', { error: this.#scrub(pgErrorText(err)), pending: this.#pendingWrites.length + 1 });
      }
    }
    if (this.#pendingWrites.length >= MAX_PENDING_WRITES) {
      this.#onWriteProblem?.('dropped', { pending: this.#pendingWrites.length });
      return;
    }
    this.#pendingWrites.push(op);
    overlay?.();
    if (!this.#closed) this.#retryTimer ??= setTimeout(() => void this.#retryWrites(), RETRY_MS).unref();
  }

  /** Lands the deferred writes in one transaction, or tries again later. One run at a time. */
  #retryWrites(): Promise<void> {
    this.#retrying ??= this.#retryOnce().finally(() => (this.#retrying = null));
    return this.#retrying;
  }

  async #retryOnce(): Promise<void> {
    this.#retryTimer = null;
    const ops = this.#pendingWrites.slice();
    if (ops.length === 0) return;
    try {
      await this.#transaction(async (query) => {
        for (const op of ops) await op(query);
      });
    } catch (err) {
      if (isTransientPgError(err)) {
        if (!this.#closed) this.#retryTimer ??= setTimeout(() => void this.#retryWrites(), RETRY_MS).unref();
        return;
      }
      // Not a passing condition: give them up rather than retry forever (reconcile repairs blobs).
      this.#onWriteProblem?.('dropped', { error: this.#scrub(pgErrorText(err)), pending: ops.length });
    }
    // Writes queued while the transaction ran stay for the next round, with their overlays.
    const later = this.#pendingWrites.slice(ops.length);
    this.#pendingWrites = later;
    if (later.length === 0) {
      this.#pendingRefs.clear();
      this.#pendingBlobs.clear();
      this.#onWriteProblem?.('caught-up', { pending: ops.length });
    } else if (!this.#closed) this.#retryTimer ??= setTimeout(() => void this.#retryWrites(), 0).unref();
  }

  // ---- refs, files, API answers ---------------------------------------------------------------

  async getRef(repo: RepoRef, revision: string): Promise<RefRow | undefined> {
    const waiting = this.#pendingRefs.get(refKey(repo, revision));
    if (waiting) return waiting;
    const [row] = await this.#db.query<{ commit_sha: string; checked_at: number; scope: string }>(
      'SELECT commit_sha, checked_at, scope FROM refs WHERE repo_type = $1 AND repo_id = $2 AND revision = $3',
      [repo.type, repo.id, revision],
    );
    return row ? { commit: row.commit_sha, checkedAt: row.checked_at, scope: row.scope } : undefined;
  }

  putRef(repo: RepoRef, revision: string, commit: string, checkedAt: number, scope: string = PUBLIC_SCOPE): Promise<void> {
    return this.#write(
      (query) =>
        query(
          `INSERT INTO refs (repo_type, repo_id, revision, commit_sha, checked_at, scope) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (repo_type, repo_id, revision) DO UPDATE SET commit_sha = excluded.commit_sha, checked_at = excluded.checked_at, scope = excluded.scope`,
          [repo.type, repo.id, revision, commit, checkedAt, scope],
        ),
      () => this.#pendingRefs.set(refKey(repo, revision), { commit, checkedAt, scope }),
    );
  }

  async getFile(repo: RepoRef, commit: string, view: FileView, path: string): Promise<FileRow | undefined> {
    const [row] = await this.#db.query<{ blob_key: string; size: number; etag: string; is_lfs: boolean; content_type: string; scope: string | null; checked_at: number }>(
      `SELECT blob_key, size, etag, is_lfs, content_type, scope, checked_at FROM files
       WHERE repo_type = $1 AND repo_id = $2 AND commit_sha = $3 AND view = $4 AND path = $5`,
      [repo.type, repo.id, commit, view, path],
    );
    if (!row) return undefined;
    return { repo, commit, view, path, blobKey: row.blob_key as BlobKey, size: row.size, etag: row.etag, isLfs: row.is_lfs, contentType: row.content_type, scope: row.scope, checkedAt: row.checked_at };
  }

  /** Records a file entry; the public scope is sticky (an authenticated answer never narrows it). */
  putFile(row: FileRow): Promise<void> {
    return this.#write((query) =>
      query(
        `INSERT INTO files (repo_type, repo_id, commit_sha, view, path, blob_key, size, etag, is_lfs, content_type, scope, checked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (repo_type, repo_id, commit_sha, view, path) DO UPDATE SET
           blob_key = excluded.blob_key, size = excluded.size, etag = excluded.etag, is_lfs = excluded.is_lfs, content_type = excluded.content_type,
           scope = CASE WHEN files.scope = $13 OR excluded.scope = $13 THEN $13 ELSE coalesce(excluded.scope, files.scope) END,
           checked_at = excluded.checked_at`,
        [row.repo.type, row.repo.id, row.commit, row.view, row.path, row.blobKey, row.size, row.etag, row.isLfs, row.contentType, row.scope, row.checkedAt, PUBLIC_SCOPE],
      ),
    );
  }

  async getApiResponse(repo: RepoRef, commit: string, requestKey: string): Promise<ApiResponseRow | undefined> {
    const [row] = await this.#db.query<{ status: number; headers: string; next_page: string | null; body: Buffer; stored_at: number; scope: string }>(
      `SELECT status, headers, next_page, body, stored_at, scope FROM api_responses
       WHERE repo_type = $1 AND repo_id = $2 AND commit_sha = $3 AND request_key = $4`,
      [repo.type, repo.id, commit, requestKey],
    );
    if (!row) return undefined;
    return { status: row.status, headers: JSON.parse(row.headers) as Record<string, string>, nextPage: row.next_page ?? undefined, body: row.body, storedAt: row.stored_at, scope: row.scope };
  }

  /** Records an API answer; the public scope is sticky, like a file row's. */
  putApiResponse(repo: RepoRef, commit: string, requestKey: string, row: ApiResponseRow): Promise<void> {
    return this.#write((query) =>
      query(
        `INSERT INTO api_responses (repo_type, repo_id, commit_sha, request_key, status, headers, next_page, body, stored_at, scope)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (repo_type, repo_id, commit_sha, request_key) DO UPDATE SET
           status = excluded.status, headers = excluded.headers, next_page = excluded.next_page, body = excluded.body, stored_at = excluded.stored_at,
           scope = CASE WHEN api_responses.scope = $11 THEN $11 ELSE excluded.scope END`,
        [repo.type, repo.id, commit, requestKey, row.status, JSON.stringify(row.headers), row.nextPage ?? null, row.body, row.storedAt, row.scope, PUBLIC_SCOPE],
      ),
    );
  }

  // ---- blobs ----------------------------------------------------------------------------------

  async getBlob(key: BlobKey): Promise<BlobRow | undefined> {
    const known = this.knownBlob(key);
    if (known) return known;
    if (this.#pendingBlobs.has(key)) return undefined; // forgotten, the write still waiting
    const writes = this.#blobWrites;
    const [found] = await this.#db.query<BlobDbRow>('SELECT size, stored_at, last_accessed_at FROM blobs WHERE blob_key = $1', [key]);
    if (!found) return undefined;
    const row: BlobRow = { blobKey: key, size: found.size, storedAt: found.stored_at, lastAccessedAt: found.last_accessed_at };
    // This process's own write of the blob, made while the answer was on its way, wins over it.
    if ((this.#forgottenAt.get(key) ?? -1) >= writes) return undefined;
    const recorded = this.knownBlob(key);
    if (recorded) return recorded;
    this.#blobRows.set(key, row);
    return row;
  }

  /** The memo's row, a waiting write's row, or undefined (ask getBlob): never `false`, another replica may record it. */
  knownBlob(key: BlobKey): BlobRow | undefined {
    const waiting = this.#pendingBlobs.get(key);
    if (waiting !== undefined) return waiting ?? undefined;
    return this.#blobRows.get(key);
  }

  async allBlobs(): Promise<BlobRow[]> {
    const rows = await this.#db.query<BlobDbRow & { blob_key: string }>('SELECT blob_key, size, stored_at, last_accessed_at FROM blobs ORDER BY blob_key');
    return rows.map((r) => ({ blobKey: r.blob_key as BlobKey, size: r.size, storedAt: r.stored_at, lastAccessedAt: r.last_accessed_at }));
  }

  /** Upserted: another replica may have recorded the same blob (same bytes) first. */
  recordBlob(key: BlobKey, size: number, now = systemClock.now()): Promise<void> {
    this.#storedBytes += size - (this.knownBlob(key)?.size ?? 0);
    this.#blobWrites++;
    const row: BlobRow = { blobKey: key, size, storedAt: now, lastAccessedAt: now };
    this.#blobRows.set(key, row);
    return this.#write(
      (query) =>
        query(
          `INSERT INTO blobs (blob_key, size, stored_at, last_accessed_at) VALUES ($1, $2, $3, $3)
           ON CONFLICT (blob_key) DO UPDATE SET size = excluded.size, stored_at = excluded.stored_at`,
          [key, size, now],
        ),
      () => this.#pendingBlobs.set(key, row),
    );
  }

  forgetBlob(key: BlobKey): Promise<void> {
    this.#forgetLocally(key);
    return this.#write(
      (query) => query('DELETE FROM blobs WHERE blob_key = $1', [key]),
      () => this.#pendingBlobs.set(key, null),
    );
  }

  /** Forgets an evicted blob and the file rows that name it, in one transaction (one statement). */
  evictBlob(key: BlobKey): Promise<void> {
    this.#forgetLocally(key);
    return this.#write(
      (query) => query('WITH gone AS (DELETE FROM blobs WHERE blob_key = $1) DELETE FROM files WHERE blob_key = $1', [key]),
      () => this.#pendingBlobs.set(key, null),
    );
  }

  #forgetLocally(key: BlobKey): void {
    this.#storedBytes -= this.knownBlob(key)?.size ?? 0;
    this.#forgottenAt.set(key, this.#blobWrites);
    this.#blobWrites++;
    this.#pendingTouches.delete(key);
    this.#blobRows.delete(key);
  }

  touchBlob(key: BlobKey, now = systemClock.now()): void {
    const t = this.#pendingTouches.get(key);
    if (t) {
      t.at = Math.max(t.at, now);
      t.hits++;
    } else this.#pendingTouches.set(key, { at: now, hits: 1 });
    const known = this.#blobRows.get(key);
    if (known && now > known.lastAccessedAt) this.#blobRows.set(key, { ...known, lastAccessedAt: now });
  }

  /** Hits and counters in one transaction; then the stored bytes of every replica are re-read. */
  async flushTouches(counters?: CounterDeltas): Promise<boolean> {
    const landed = await this.#flushTouchesNow(counters);
    if (landed) await this.#rereadStoredBytes().catch(() => undefined);
    return landed;
  }

  async #flushTouchesNow(counters?: CounterDeltas): Promise<boolean> {
    if (this.#pendingTouches.size === 0 && !counters) return true;
    const touches = [...this.#pendingTouches];
    this.#pendingTouches.clear();
    try {
      await this.#transaction(async (query) => {
        if (touches.length > 0) {
          await query(
            `UPDATE blobs b SET last_accessed_at = greatest(b.last_accessed_at, t.at), hits = b.hits + t.hits
             FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(key, at, hits) WHERE b.blob_key = t.key`,
            [touches.map((e) => e[0]), touches.map((e) => e[1].at), touches.map((e) => e[1].hits)],
          );
        }
        if (counters) await addCountersWith(query, counters.deltas, counters.initial);
      });
      return true;
    } catch (err) {
      // Kept for the next flush, merged with touches made meanwhile.
      for (const [key, t] of touches) {
        const newer = this.#pendingTouches.get(key);
        this.#pendingTouches.set(key, newer ? { at: Math.max(t.at, newer.at), hits: t.hits + newer.hits } : t);
      }
      if (!isTransientPgError(err)) throw err;
      return false;
    }
  }

  /** The sum of every replica's blobs, unless one of this process's blob writes raced the read or still waits. */
  async #rereadStoredBytes(): Promise<void> {
    const before = this.#blobWrites;
    const sum = await this.#sumOfBlobs();
    if (before === this.#blobWrites && this.#pendingWrites.length === 0) this.#storedBytes = sum;
  }

  async stats(): Promise<IndexStats> {
    const before = this.#blobWrites;
    const [row] = await this.#db.query<{ refs: number; files: number; blobs: number; api_responses: number; blob_bytes: number }>(
      `SELECT (SELECT count(*) FROM refs) AS refs, (SELECT count(*) FROM files) AS files, (SELECT count(*) FROM blobs) AS blobs,
              (SELECT count(*) FROM api_responses) AS api_responses, (SELECT coalesce(sum(size), 0) FROM blobs)::bigint AS blob_bytes`,
    );
    const stats: IndexStats = {
      rows: { refs: row?.refs ?? 0, files: row?.files ?? 0, blobs: row?.blobs ?? 0, api_responses: row?.api_responses ?? 0 },
      blobBytes: row?.blob_bytes ?? 0,
    };
    if (before === this.#blobWrites && this.#pendingWrites.length === 0) this.#storedBytes = stats.blobBytes;
    return stats;
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.#db.query('SELECT 1 AS ok')).length === 1;
    } catch {
      return false;
    }
  }

  /** Lands what it can of the deferred writes and touches (one try each), then closes the pool. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    try {
      await this.#retrying;
      await this.#retryWrites();
      await this.#flushTouchesNow().catch(() => false);
    } finally {
      if (this.#retryTimer) clearTimeout(this.#retryTimer);
      await this.#pool.end();
    }
  }
}

function refKey(repo: RepoRef, revision: string): string {
  return `${repo.type}\0${repo.id}\0${revision}`;
}
