/**
 * The JobStore, InventoryStore and EvictionStore of the PostgreSQL cache index: the same queries
 * as the SQLite ones (job-table.ts, inventory-queries.ts, eviction-queries.ts), in PostgreSQL's
 * dialect, over the index's pool. Errors (an unreachable server included) reject: the callers
 * keep their state in memory meanwhile (jobs), or try again later (eviction, `ls`, `stats`).
 */
import type { RepoRef } from '../hub/repo-ref.js';
import type { BlobKey } from './blob-layout.js';
import { repoSummaries, type RepoBlobSumRow, type RepoCountRow, type RepoRefRow } from './repo-summaries.js';
import type {
  BlobTotals,
  CandidateCursor,
  EvictionCandidate,
  EvictionPolicy,
  EvictionSelection,
  EvictionStore,
  InventoryFile,
  InventoryStore,
  JobItem,
  JobKind,
  JobProgress,
  JobRow,
  JobState,
  JobStore,
  RepoSummary,
} from './cache-index-contract.js';

/** What the stores need of the index: one statement, or several in one transaction. */
export interface PgDb {
  query<R extends object = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  transaction<T>(work: (query: PgDb['query']) => Promise<T>): Promise<T>;
}

// ---- jobs -------------------------------------------------------------------------------------

interface JobDbRow {
  id: string;
  kind: string;
  state: string;
  params: Record<string, unknown>;
  progress: JobProgress;
  message: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

const JOB_COLUMNS = 'id, kind, state, params, progress, message, created_at, started_at, finished_at';

export class PgJobStore implements JobStore {
  constructor(private readonly db: PgDb) {}

  async insert(job: JobRow): Promise<void> {
    await this.db.query(
      `INSERT INTO jobs (id, kind, state, params, progress, message, created_at, started_at, finished_at)
       VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9)`,
      [job.id, job.kind, job.state, JSON.stringify(job.params), JSON.stringify(job.progress), job.message, job.createdAt, job.startedAt, job.finishedAt],
    );
  }

  async save(job: JobRow): Promise<void> {
    await this.db.query(
      `UPDATE jobs SET state = $2, params = $3::jsonb, progress = $4::jsonb, message = $5, started_at = $6, finished_at = $7 WHERE id = $1`,
      [job.id, job.state, JSON.stringify(job.params), JSON.stringify(job.progress), job.message, job.startedAt, job.finishedAt],
    );
  }

  async get(id: string): Promise<JobRow | undefined> {
    const [row] = await this.db.query<JobDbRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = $1`, [id]);
    return row && jobFromDb(row);
  }

  async list(limit: number): Promise<JobRow[]> {
    return (await this.db.query<JobDbRow>(`SELECT ${JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id LIMIT $1`, [limit])).map(jobFromDb);
  }

  async unfinished(): Promise<JobRow[]> {
    return (await this.db.query<JobDbRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, id`)).map(jobFromDb);
  }

  /** Numbered by the job row's counter, taken under its row lock: concurrent items never share a number. */
  async addItem(jobId: string, item: Omit<JobItem, 'seq'>): Promise<number> {
    const [row] = await this.db.query<{ seq: number }>(
      `WITH j AS (UPDATE jobs SET item_seq = item_seq + 1 WHERE id = $1 RETURNING item_seq)
       INSERT INTO job_items (job_id, seq, item, outcome, ok, bytes, message)
       SELECT $1, j.item_seq, $2, $3, $4, $5, $6 FROM j RETURNING seq`,
      [jobId, item.item, item.outcome, item.ok, item.bytes, item.message],
    );
    if (!row) throw new Error(`job ${jobId} does not exist`);
    return row.seq;
  }

  async items(jobId: string, afterSeq: number, limit: number): Promise<JobItem[]> {
    return this.db.query<JobItem>('SELECT seq, item, outcome, ok, bytes, message FROM job_items WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3', [jobId, afterSeq, limit]);
  }

  async succeededItems(jobId: string): Promise<Map<string, number>> {
    const rows = await this.db.query<{ item: string; bytes: number }>('SELECT item, bytes FROM job_items WHERE job_id = $1 AND ok', [jobId]);
    return new Map(rows.map((r) => [r.item, r.bytes]));
  }

  async prune(keep: number): Promise<void> {
    await this.db.query(
      `DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND id NOT IN (
         SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY created_at DESC, id LIMIT $1)`,
      [keep],
    );
  }
}

function jobFromDb(row: JobDbRow): JobRow {
  return {
    id: row.id,
    kind: row.kind as JobKind,
    state: row.state as JobState,
    params: row.params,
    progress: row.progress,
    message: row.message,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

// ---- inventory --------------------------------------------------------------------------------

/** Counter upserts over arrays: one statement whatever the number of counters. */
export async function addCountersWith(query: PgDb['query'], deltas: Readonly<Record<string, number>>, initial: Readonly<Record<string, number>> = {}): Promise<void> {
  const init = Object.entries(initial);
  if (init.length > 0) {
    await query('INSERT INTO counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (name) DO NOTHING', [init.map((e) => e[0]), init.map((e) => e[1])]);
  }
  const add = Object.entries(deltas).filter((e) => e[1] !== 0);
  if (add.length > 0) {
    await query('INSERT INTO counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value', [
      add.map((e) => e[0]),
      add.map((e) => e[1]),
    ]);
  }
}

export class PgInventory implements InventoryStore {
  constructor(private readonly db: PgDb) {}

  async repos(): Promise<RepoSummary[]> {
    const [counts, sums, refRows] = await Promise.all([
      this.db.query<RepoCountRow>(
        `SELECT f.repo_type, f.repo_id, count(DISTINCT f.commit_sha) AS commits, count(*) AS files, count(b.blob_key) AS cached_files
         FROM files f LEFT JOIN blobs b ON b.blob_key = f.blob_key GROUP BY f.repo_type, f.repo_id ORDER BY f.repo_type, f.repo_id`,
      ),
      this.db.query<RepoBlobSumRow>(
        `SELECT fb.repo_type, fb.repo_id, coalesce(sum(b.size), 0)::bigint AS cached_bytes, max(b.last_accessed_at) AS last_access, coalesce(sum(b.hits), 0)::bigint AS hits
         FROM (SELECT DISTINCT repo_type, repo_id, blob_key FROM files) fb JOIN blobs b ON b.blob_key = fb.blob_key
         GROUP BY fb.repo_type, fb.repo_id`,
      ),
      this.db.query<RepoRefRow>('SELECT repo_type, repo_id, revision, commit_sha FROM refs ORDER BY revision'),
    ]);
    return repoSummaries(counts, sums, refRows);
  }

  async files(repo: RepoRef): Promise<InventoryFile[]> {
    const rows = await this.db.query<{
      commit_sha: string;
      view: string;
      path: string;
      size: number;
      blob_key: string;
      is_lfs: boolean;
      scope: string | null;
      cached: boolean;
      stored_at: number | null;
      last_accessed_at: number | null;
      hits: number | null;
    }>(
      `SELECT f.commit_sha, f.view, f.path, f.size, f.blob_key, f.is_lfs, f.scope, b.blob_key IS NOT NULL AS cached, b.stored_at, b.last_accessed_at, b.hits
       FROM files f LEFT JOIN blobs b ON b.blob_key = f.blob_key
       WHERE f.repo_type = $1 AND f.repo_id = $2 ORDER BY f.commit_sha, f.view, f.path`,
      [repo.type, repo.id],
    );
    return rows.map((r) => ({
      commit: r.commit_sha,
      view: r.view,
      path: r.path,
      size: r.size,
      blobKey: r.blob_key,
      isLfs: r.is_lfs,
      visibility: r.scope === 'anonymous' ? 'public' : r.scope?.startsWith('service:') ? 'service' : 'token',
      cached: r.cached,
      storedAt: r.stored_at,
      lastAccessAt: r.last_accessed_at,
      hits: r.hits ?? 0,
    }));
  }

  async blobTotals(): Promise<BlobTotals> {
    const [row] = await this.db.query<BlobTotals>('SELECT count(*) AS blobs, coalesce(sum(size), 0)::bigint AS bytes FROM blobs');
    return row ?? { blobs: 0, bytes: 0 };
  }

  async counters(): Promise<Record<string, number>> {
    return Object.fromEntries((await this.db.query<{ name: string; value: number }>('SELECT name, value FROM counters')).map((r) => [r.name, r.value]));
  }

  async addCounters(deltas: Readonly<Record<string, number>>, initial: Readonly<Record<string, number>> = {}): Promise<void> {
    await this.db.transaction((query) => addCountersWith(query, deltas, initial));
  }
}

// ---- eviction ---------------------------------------------------------------------------------

interface CandidateDbRow {
  blob_key: string;
  size: number;
  last_accessed_at: number;
}

/** An operator's selection ($1 type, $2 id, $3 commit, $4 before; NULL: not asked for), as in eviction-queries.ts. */
const SELECTED = `SELECT b.blob_key, b.size, b.last_accessed_at FROM blobs b WHERE
  ($1::text IS NULL OR (
    EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND f.repo_type = $1 AND f.repo_id = $2 AND ($3::text IS NULL OR f.commit_sha = $3))
    AND NOT EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND NOT (f.repo_type = $1 AND f.repo_id = $2 AND ($3::text IS NULL OR f.commit_sha = $3)))))
  AND ($4::bigint IS NULL OR b.last_accessed_at < $4)`;

/** Bytes of the metadata rows: their texts and bodies plus about 48 bytes of keys, integers and overhead (as SQLite counts). */
const METADATA_BYTES = `SELECT
  (SELECT coalesce(sum(octet_length(body) + octet_length(headers) + octet_length(request_key) + octet_length(repo_id) + octet_length(commit_sha) + coalesce(octet_length(next_page), 0) + 48), 0) FROM api_responses)::bigint
  + (SELECT coalesce(sum(octet_length(repo_id) + octet_length(revision) + octet_length(commit_sha) + octet_length(scope) + 48), 0) FROM refs)::bigint AS n`;

export class PgEviction implements EvictionStore {
  constructor(private readonly db: PgDb) {}

  async candidates(policy: EvictionPolicy, cursor: CandidateCursor | null, limit: number): Promise<{ rows: EvictionCandidate[]; cursor: CandidateCursor | null }> {
    const rows =
      policy === 'lru'
        ? await this.db.query<CandidateDbRow>(
            'SELECT blob_key, size, last_accessed_at FROM blobs WHERE ($1::bigint IS NULL OR (last_accessed_at, blob_key) > ($1, $2::text)) ORDER BY last_accessed_at, blob_key LIMIT $3',
            [cursor?.value ?? null, cursor?.blobKey ?? '', limit],
          )
        : await this.db.query<CandidateDbRow>(
            'SELECT blob_key, size, last_accessed_at FROM blobs WHERE ($1::bigint IS NULL OR (size, blob_key) < ($1, $2::text)) ORDER BY size DESC, blob_key DESC LIMIT $3',
            [cursor?.value ?? null, cursor?.blobKey ?? '', limit],
          );
    const last = rows.at(-1);
    return { rows: rows.map(toCandidate), cursor: last ? { value: policy === 'lru' ? last.last_accessed_at : last.size, blobKey: last.blob_key } : null };
  }

  async selection(sel: EvictionSelection, policy: EvictionPolicy): Promise<EvictionCandidate[]> {
    const order = policy === 'lru' ? 'ORDER BY b.last_accessed_at, b.blob_key' : 'ORDER BY b.size DESC, b.blob_key DESC';
    const rows = await this.db.query<CandidateDbRow>(`${SELECTED} ${order}`, [sel.repo?.type ?? null, sel.repo?.id ?? null, sel.commit ?? null, sel.usedBefore ?? null]);
    return rows.map(toCandidate);
  }

  async metadataBytes(): Promise<number> {
    const [row] = await this.db.query<{ n: number }>(METADATA_BYTES);
    return row?.n ?? 0;
  }

  /** Deletes API answers and refs, oldest first, 200 rows a step, until they take at most `limit` bytes. */
  async pruneMetadata(limit: number): Promise<{ apiResponses: number; refs: number }> {
    const pruned = { apiResponses: 0, refs: 0 };
    let bytes = await this.metadataBytes();
    while (bytes > limit) {
      const [oldest] = await this.db.query<{ api: number | null; ref: number | null }>('SELECT (SELECT min(stored_at) FROM api_responses) AS api, (SELECT min(checked_at) FROM refs) AS ref');
      const api = oldest?.api ?? null;
      const ref = oldest?.ref ?? null;
      if (api === null && ref === null) break;
      if (ref === null || (api !== null && api <= ref)) {
        const gone = await this.db.query(
          `DELETE FROM api_responses WHERE (repo_type, repo_id, commit_sha, request_key) IN (
             SELECT repo_type, repo_id, commit_sha, request_key FROM api_responses ORDER BY stored_at LIMIT 200) RETURNING 1`,
        );
        pruned.apiResponses += gone.length;
      } else {
        const gone = await this.db.query(
          'DELETE FROM refs WHERE (repo_type, repo_id, revision) IN (SELECT repo_type, repo_id, revision FROM refs ORDER BY checked_at LIMIT 200) RETURNING 1',
        );
        pruned.refs += gone.length;
      }
      bytes = await this.metadataBytes();
    }
    return pruned;
  }
}

function toCandidate(r: CandidateDbRow): EvictionCandidate {
  return { blobKey: r.blob_key as BlobKey, size: r.size, lastAccessedAt: r.last_accessed_at };
}
