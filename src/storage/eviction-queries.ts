/**
 * EvictionQueries: what eviction reads of the index (which blobs to consider, in the policy's
 * order) and the bound on metadata (API answers and refs, pruned oldest first). Removing a blob's
 * rows is CacheIndex.evictBlob (it goes through the index's deferred writes); what is here either
 * reads or prunes metadata, which nothing needs back after a crash.
 */
import type Database from 'better-sqlite3';
import type { RepoRef } from '../hub/repo-ref.js';
import type { BlobKey } from './blob-layout.js';

export type EvictionPolicy = 'lru' | 'largest-first';

export interface EvictionCandidate {
  blobKey: BlobKey;
  size: number;
  lastAccessedAt: number;
}

/** Where a page of candidates ended; the next page starts after it. */
export interface CandidateCursor {
  value: number;
  blobKey: string;
}

/** Which blobs an operator's eviction is about; every given condition must hold. */
export interface EvictionSelection {
  /** Blobs named by files of this repo (at `commit`, if given) and by no file outside that. */
  repo?: RepoRef;
  commit?: string;
  /** Blobs last used before this time (ms since epoch). */
  usedBefore?: number;
}

interface CandidateDbRow {
  blob_key: string;
  size: number;
  last_accessed_at: number;
}

/** A rough size of one row besides its texts (keys, integers, page overhead). */
const ROW_OVERHEAD = 48;
const PRUNE_BATCH = 200;

export class EvictionQueries {
  readonly #db: Database.Database;
  readonly #stmts;

  constructor(db: Database.Database) {
    this.#db = db;
    const cols = 'blob_key, size, last_accessed_at';
    this.#stmts = {
      lru: db.prepare<[number, string, number], CandidateDbRow>(`SELECT ${cols} FROM blobs WHERE (last_accessed_at, blob_key) > (?, ?) ORDER BY last_accessed_at, blob_key LIMIT ?`),
      largest: db.prepare<[number, string, number], CandidateDbRow>(`SELECT ${cols} FROM blobs WHERE (size, blob_key) < (?, ?) ORDER BY size DESC, blob_key DESC LIMIT ?`),
      apiBytes: db.prepare<[], { n: number }>(
        `SELECT coalesce(sum(length(body) + length(headers) + length(request_key) + length(repo_id) + length(commit_sha) + coalesce(length(next_page), 0) + ${ROW_OVERHEAD}), 0) AS n FROM api_responses`,
      ),
      refBytes: db.prepare<[], { n: number }>(`SELECT coalesce(sum(length(repo_id) + length(revision) + length(commit_sha) + length(scope) + ${ROW_OVERHEAD}), 0) AS n FROM refs`),
      oldestApi: db.prepare<[], { t: number | null }>('SELECT min(stored_at) AS t FROM api_responses'),
      oldestRef: db.prepare<[], { t: number | null }>('SELECT min(checked_at) AS t FROM refs'),
      pruneApi: db.prepare(`DELETE FROM api_responses WHERE rowid IN (SELECT rowid FROM api_responses ORDER BY stored_at LIMIT ${PRUNE_BATCH})`),
      pruneRefs: db.prepare(
        `DELETE FROM refs WHERE (repo_type, repo_id, revision) IN (SELECT repo_type, repo_id, revision FROM refs ORDER BY checked_at LIMIT ${PRUNE_BATCH})`,
      ),
    };
  }

  /**
   * The next `limit` blobs in the policy's order (least recently used first, or largest first),
   * after `cursor`. Pages, not one open iterator: the connection writes between pages.
   */
  candidates(policy: EvictionPolicy, cursor: CandidateCursor | null, limit: number): { rows: EvictionCandidate[]; cursor: CandidateCursor | null } {
    const rows =
      policy === 'lru'
        ? this.#stmts.lru.all(cursor?.value ?? -Infinity, cursor?.blobKey ?? '', limit)
        : this.#stmts.largest.all(cursor?.value ?? Infinity, cursor?.blobKey ?? '\uffff', limit);
    const last = rows.at(-1);
    return {
      rows: rows.map(toCandidate),
      cursor: last ? { value: policy === 'lru' ? last.last_accessed_at : last.size, blobKey: last.blob_key } : null,
    };
  }

  /** The stored blobs an operator's selection names, in the policy's order. */
  selection(sel: EvictionSelection, policy: EvictionPolicy): EvictionCandidate[] {
    const where: string[] = [];
    const params: Record<string, unknown> = {};
    if (sel.repo) {
      const mine = `f.repo_type = @type AND f.repo_id = @id${sel.commit ? ' AND f.commit_sha = @commit' : ''}`;
      where.push(`EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND ${mine})`);
      // A blob also named by another repo (or another commit) stays: evicting this one must not take it from them.
      where.push(`NOT EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND NOT (${mine}))`);
      params.type = sel.repo.type;
      params.id = sel.repo.id;
      if (sel.commit) params.commit = sel.commit;
    }
    if (sel.usedBefore !== undefined) {
      where.push('b.last_accessed_at < @before');
      params.before = sel.usedBefore;
    }
    const order = policy === 'lru' ? 'b.last_accessed_at, b.blob_key' : 'b.size DESC, b.blob_key DESC';
    const sql = `SELECT b.blob_key, b.size, b.last_accessed_at FROM blobs b${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY ${order}`;
    return this.#db.prepare<[Record<string, unknown>], CandidateDbRow>(sql).all(params).map(toCandidate);
  }

  /** Approximate bytes of the recorded API answers and refs. */
  metadataBytes(): number {
    return (this.#stmts.apiBytes.get()?.n ?? 0) + (this.#stmts.refBytes.get()?.n ?? 0);
  }

  /**
   * Deletes API answers and refs, oldest first (by when upstream gave them), until they take at
   * most `limit` bytes. Returns how many rows of each went.
   */
  pruneMetadata(limit: number): { apiResponses: number; refs: number } {
    const pruned = { apiResponses: 0, refs: 0 };
    let bytes = this.metadataBytes();
    while (bytes > limit) {
      const api = this.#stmts.oldestApi.get()?.t ?? null;
      const ref = this.#stmts.oldestRef.get()?.t ?? null;
      if (api === null && ref === null) break;
      if (ref === null || (api !== null && api <= ref)) pruned.apiResponses += this.#stmts.pruneApi.run().changes;
      else pruned.refs += this.#stmts.pruneRefs.run().changes;
      bytes = this.metadataBytes();
    }
    return pruned;
  }
}

function toCandidate(r: CandidateDbRow): EvictionCandidate {
  return { blobKey: r.blob_key as BlobKey, size: r.size, lastAccessedAt: r.last_accessed_at };
}
