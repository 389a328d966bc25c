/**
 * InventoryQueries: the InventoryStore of the SQLite index: what the operator sees of the cache index (`hubcache ls`, `hubcache stats`),
 * and the traffic counters kept across restarts. Read-only over refs, files and blobs, except the
 * `counters` table. Prepared once on the index's connection.
 *
 * A file row names a blob; the blob may or may not be on disk (a HEAD records the row, only a
 * download stores the blob), so every view says which files are cached.
 */
import type Database from 'better-sqlite3';
import type { RepoRef } from '../hub/repo-ref.js';
import type { BlobTotals, InventoryFile, InventoryStore, RepoSummary } from './cache-index-contract.js';
import { now } from './job-table.js';
import { repoSummaries, type RepoBlobSumRow, type RepoCountRow, type RepoRefRow } from './repo-summaries.js';

export type { BlobTotals, InventoryFile, RepoSummary } from './cache-index-contract.js';

interface FileDbRow {
  commit_sha: string;
  view: string;
  path: string;
  size: number;
  blob_key: string;
  is_lfs: number;
  scope: string | null;
  cached: number;
  stored_at: number | null;
  last_accessed_at: number | null;
  hits: number | null;
}

export class InventoryQueries implements InventoryStore {
  readonly #stmts;
  readonly #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
    this.#stmts = {
      fileCounts: db.prepare<[], RepoCountRow>(
        `SELECT f.repo_type, f.repo_id, count(DISTINCT f.commit_sha) AS commits, count(*) AS files, count(b.blob_key) AS cached_files
         FROM files f LEFT JOIN blobs b ON b.blob_key = f.blob_key GROUP BY f.repo_type, f.repo_id ORDER BY f.repo_type, f.repo_id`,
      ),
      blobSums: db.prepare<[], RepoBlobSumRow>(
        `SELECT fb.repo_type, fb.repo_id, coalesce(sum(b.size), 0) AS cached_bytes, max(b.last_accessed_at) AS last_access, coalesce(sum(b.hits), 0) AS hits
         FROM (SELECT DISTINCT repo_type, repo_id, blob_key FROM files) fb JOIN blobs b ON b.blob_key = fb.blob_key
         GROUP BY fb.repo_type, fb.repo_id`,
      ),
      refs: db.prepare<[], RepoRefRow>('SELECT repo_type, repo_id, revision, commit_sha FROM refs ORDER BY revision'),
      files: db.prepare<[string, string], FileDbRow>(
        `SELECT f.commit_sha, f.view, f.path, f.size, f.blob_key, f.is_lfs, f.scope, b.blob_key IS NOT NULL AS cached,
                b.stored_at, b.last_accessed_at, b.hits
         FROM files f LEFT JOIN blobs b ON b.blob_key = f.blob_key
         WHERE f.repo_type = ? AND f.repo_id = ? ORDER BY f.commit_sha, f.view, f.path`,
      ),
      totals: db.prepare<[], { blobs: number; bytes: number }>('SELECT count(*) AS blobs, coalesce(sum(size), 0) AS bytes FROM blobs'),
      counters: db.prepare<[], { name: string; value: number }>('SELECT name, value FROM counters'),
      addCounter: db.prepare<[string, number]>('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value'),
      initCounter: db.prepare<[string, number]>('INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING'),
    };
  }

  /** Every repo with recorded files, by type then id. */
  repos(): Promise<RepoSummary[]> {
    return now(() => this.#reposNow());
  }

  #reposNow(): RepoSummary[] {
    return repoSummaries(this.#stmts.fileCounts.all(), this.#stmts.blobSums.all(), this.#stmts.refs.all());
  }

  /** The recorded files of one repo, by commit then path. */
  files(repo: RepoRef): Promise<InventoryFile[]> {
    return now(() => this.#filesNow(repo));
  }

  #filesNow(repo: RepoRef): InventoryFile[] {
    return this.#stmts.files.all(repo.type, repo.id).map((r) => ({
      commit: r.commit_sha,
      view: r.view,
      path: r.path,
      size: r.size,
      blobKey: r.blob_key,
      isLfs: r.is_lfs === 1,
      visibility: r.scope === 'anonymous' ? 'public' : r.scope?.startsWith('service:') ? 'service' : 'token',
      cached: r.cached === 1,
      storedAt: r.stored_at,
      lastAccessAt: r.last_accessed_at,
      hits: r.hits ?? 0,
    }));
  }

  /** Blobs on disk (as recorded) and their bytes. */
  blobTotals(): Promise<BlobTotals> {
    return now(() => this.#stmts.totals.get() ?? { blobs: 0, bytes: 0 });
  }

  /** Every persisted counter. */
  counters(): Promise<Record<string, number>> {
    return now(() => Object.fromEntries(this.#stmts.counters.all().map((r) => [r.name, r.value])));
  }

  /** Adds deltas to counters in one transaction; `initial` values are set only where absent. */
  addCounters(deltas: Readonly<Record<string, number>>, initial: Readonly<Record<string, number>> = {}): Promise<void> {
    return now(() => this.addCountersNow(deltas, initial));
  }

  /** addCounters, synchronously (the index's flush runs it inside its own transaction). */
  addCountersNow(deltas: Readonly<Record<string, number>>, initial: Readonly<Record<string, number>> = {}): void {
    this.#db.transaction(() => {
      for (const [name, value] of Object.entries(initial)) this.#stmts.initCounter.run(name, value);
      for (const [name, value] of Object.entries(deltas)) if (value !== 0) this.#stmts.addCounter.run(name, value);
    })();
  }
}
