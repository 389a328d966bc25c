/**
 * JobTable: the JobStore of the SQLite index: the operator's background jobs (prefetch, import, verify) in the cache index, so a job
 * interrupted by a restart or a crash is found again and resumed (admin/jobs.ts runs them).
 *
 * - `jobs`: one row per job: kind, state, what was asked (`params`, JSON, never a token), progress
 *   counters (JSON), a message (why it failed, what it waits for) and its times.
 * - `job_items`: one row per finished item (a file, a blob), numbered per job in the order they
 *   finished: the per-file lines a client follows, and what a resumed job skips.
 * Statements are prepared once on the index's connection; errors (a busy database included) are
 * thrown to the caller, which keeps the job's state in memory meanwhile.
 */
import type Database from 'better-sqlite3';
import type { JobItem, JobKind, JobProgress, JobRow, JobState, JobStore } from './cache-index-contract.js';

export type { JobItem, JobKind, JobProgress, JobRow, JobState } from './cache-index-contract.js';

interface JobDbRow {
  id: string;
  kind: string;
  state: string;
  params: string;
  progress: string;
  message: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
}

interface ItemDbRow {
  seq: number;
  item: string;
  outcome: string;
  ok: number;
  bytes: number;
  message: string | null;
}

export class JobTable implements JobStore {
  readonly #stmts;

  constructor(db: Database.Database) {
    this.#stmts = {
      insert: db.prepare(
        `INSERT INTO jobs (id, kind, state, params, progress, message, created_at, started_at, finished_at)
         VALUES (@id, @kind, @state, @params, @progress, @message, @created_at, @started_at, @finished_at)`,
      ),
      save: db.prepare(
        `UPDATE jobs SET state = @state, params = @params, progress = @progress, message = @message,
           started_at = @started_at, finished_at = @finished_at WHERE id = @id`,
      ),
      get: db.prepare<[string], JobDbRow>('SELECT * FROM jobs WHERE id = ?'),
      list: db.prepare<[number], JobDbRow>('SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ?'),
      unfinished: db.prepare<[], JobDbRow>("SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at, id"),
      addItem: db.prepare<[string, string, string, number, number, string | null, string], { seq: number }>(
        `INSERT INTO job_items (job_id, seq, item, outcome, ok, bytes, message)
         SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ?, ? FROM job_items WHERE job_id = ? RETURNING seq`,
      ),
      items: db.prepare<[string, number, number], ItemDbRow>('SELECT seq, item, outcome, ok, bytes, message FROM job_items WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?'),
      okItems: db.prepare<[string], { item: string; bytes: number }>('SELECT item, bytes FROM job_items WHERE job_id = ? AND ok = 1'),
      prune: db.prepare<[number]>(
        `DELETE FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND id NOT IN (
           SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY created_at DESC, id LIMIT ?)`,
      ),
    };
  }

  insert(job: JobRow): Promise<void> {
    return now(() => void this.#stmts.insert.run(toDb(job)));
  }

  /** Writes the job's state, params, progress, message and times. */
  save(job: JobRow): Promise<void> {
    return now(() => void this.#stmts.save.run(toDb(job)));
  }

  get(id: string): Promise<JobRow | undefined> {
    return now(() => {
      const row = this.#stmts.get.get(id);
      return row && fromDb(row);
    });
  }

  /** The newest jobs first. */
  list(limit: number): Promise<JobRow[]> {
    return now(() => this.#stmts.list.all(limit).map(fromDb));
  }

  /** Jobs queued or running when the last process stopped, oldest first. */
  unfinished(): Promise<JobRow[]> {
    return now(() => this.#stmts.unfinished.all().map(fromDb));
  }

  /** Records a finished item; returns its sequence number in the job. */
  addItem(jobId: string, item: Omit<JobItem, 'seq'>): Promise<number> {
    return now(() => this.#stmts.addItem.get(jobId, item.item, item.outcome, item.ok ? 1 : 0, item.bytes, item.message, jobId)?.seq ?? 0);
  }

  /** Items finished after `afterSeq`, in order, at most `limit`. */
  items(jobId: string, afterSeq: number, limit: number): Promise<JobItem[]> {
    return now(() => this.#stmts.items.all(jobId, afterSeq, limit).map((r) => ({ seq: r.seq, item: r.item, outcome: r.outcome, ok: r.ok === 1, bytes: r.bytes, message: r.message })));
  }

  /** Items that finished successfully (what a resumed job skips), with their bytes. */
  succeededItems(jobId: string): Promise<Map<string, number>> {
    return now(() => new Map(this.#stmts.okItems.all(jobId).map((r) => [r.item, r.bytes])));
  }

  /** Forgets finished jobs (and their items) beyond the newest `keep`. */
  prune(keep: number): Promise<void> {
    return now(() => void this.#stmts.prune.run(keep));
  }
}

/** Runs a synchronous statement as the contract's promise (its errors as a rejection). */
export function now<T>(op: () => T): Promise<T> {
  return new Promise<T>((resolve) => resolve(op()));
}

function toDb(job: JobRow): JobDbRow {
  return {
    id: job.id,
    kind: job.kind,
    state: job.state,
    params: JSON.stringify(job.params),
    progress: JSON.stringify(job.progress),
    message: job.message,
    created_at: job.createdAt,
    started_at: job.startedAt,
    finished_at: job.finishedAt,
  };
}

function fromDb(row: JobDbRow): JobRow {
  return {
    id: row.id,
    kind: row.kind as JobKind,
    state: row.state as JobState,
    params: JSON.parse(row.params) as Record<string, unknown>,
    progress: JSON.parse(row.progress) as JobProgress,
    message: row.message,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}
