/**
 * EvictionQueries: the EvictionStore of the SQLite index: what eviction reads of the index (which blobs to consider, in the policy's
 * order) and the bound on metadata (API answers and refs, pruned oldest first). Removing a blob's
 * rows is CacheIndex.evictBlob (it goes through the index's deferred writes); what is here either
 * reads or prunes metadata, which nothing needs back after a crash.
 */
import type Database from 'better-sqlite3';
import type { BlobKey } from './blob-layout.js';
import type { CandidateCursor, EvictionCandidate, EvictionPolicy, EvictionSelection, EvictionStore } from './cache-index-contract.js';
import { now } from './job-table.js';

export type { CandidateCursor, EvictionCandidate, EvictionPolicy, EvictionSelection } from './cache-index-contract.js';

interface CandidateDbRow {
  blob_key: string;
  size: number;
  last_accessed_at: number;
}

interface SelectionParams {
  type: string | null;
  id: string | null;
  commit: string | null;
  before: number | null;
}

/**
 * An operator's selection (every condition optional: NULL, not asked for). A repo's blobs named
 * by a file outside the selection (another repo or commit) stay. Constant SQL, ordered two ways.
 */
const SELECTED = `SELECT b.blob_key, b.size, b.last_accessed_at FROM blobs b WHERE
  (@type IS NULL OR (
    EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND f.repo_type = @type AND f.repo_id = @id AND (@commit IS NULL OR f.commit_sha = @commit))
    AND NOT EXISTS (SELECT 1 FROM files f WHERE f.blob_key = b.blob_key AND NOT (f.repo_type = @type AND f.repo_id = @id AND (@commit IS NULL OR f.commit_sha = @commit)))))
  AND (@before IS NULL OR b.last_accessed_at < @before)`;
const SELECTED_LRU = `${SELECTED} ORDER BY b.last_accessed_at, b.blob_key`;
const SELECTED_LARGEST = `${SELECTED} ORDER BY b.size DESC, b.blob_key DESC`;

export class EvictionQueries implements EvictionStore {
  readonly #stmts;

  constructor(db: Database.Database) {
    this.#stmts = {
      lru: db.prepare<[number, string, number], CandidateDbRow>(
        'SELECT blob_key, size, last_accessed_at FROM blobs WHERE (last_accessed_at, blob_key) > (?, ?) ORDER BY last_accessed_at, blob_key LIMIT ?',
      ),
      largest: db.prepare<[number, string, number], CandidateDbRow>('SELECT blob_key, size, last_accessed_at FROM blobs WHERE (size, blob_key) < (?, ?) ORDER BY size DESC, blob_key DESC LIMIT ?'),
      selectedLru: db.prepare<[SelectionParams], CandidateDbRow>(SELECTED_LRU),
      selectedLargest: db.prepare<[SelectionParams], CandidateDbRow>(SELECTED_LARGEST),
      // Sizes: the texts and blobs of a row plus about 48 bytes for its keys, integers and page overhead.
      apiBytes: db.prepare<[], { n: number }>(
        'SELECT coalesce(sum(length(body) + length(headers) + length(request_key) + length(repo_id) + length(commit_sha) + coalesce(length(next_page), 0) + 48), 0) AS n FROM api_responses',
      ),
      refBytes: db.prepare<[], { n: number }>('SELECT coalesce(sum(length(repo_id) + length(revision) + length(commit_sha) + length(scope) + 48), 0) AS n FROM refs'),
      oldestApi: db.prepare<[], { t: number | null }>('SELECT min(stored_at) AS t FROM api_responses'),
      oldestRef: db.prepare<[], { t: number | null }>('SELECT min(checked_at) AS t FROM refs'),
      // 200 rows per step: few statements, little pruned beyond the bound.
      pruneApi: db.prepare('DELETE FROM api_responses WHERE rowid IN (SELECT rowid FROM api_responses ORDER BY stored_at LIMIT 200)'),
      pruneRefs: db.prepare('DELETE FROM refs WHERE (repo_type, repo_id, revision) IN (SELECT repo_type, repo_id, revision FROM refs ORDER BY checked_at LIMIT 200)'),
    };
  }

  /**
   * The next `limit` blobs in the policy's order (least recently used first, or largest first),
   * after `cursor`. Pages, not one open iterator: the connection writes between pages.
   */
  candidates(policy: EvictionPolicy, cursor: CandidateCursor | null, limit: number): Promise<{ rows: EvictionCandidate[]; cursor: CandidateCursor | null }> {
    return now(() => this.#candidatesNow(policy, cursor, limit));
  }

  #candidatesNow(policy: EvictionPolicy, cursor: CandidateCursor | null, limit: number): { rows: EvictionCandidate[]; cursor: CandidateCursor | null } {
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
  selection(sel: EvictionSelection, policy: EvictionPolicy): Promise<EvictionCandidate[]> {
    const params: SelectionParams = { type: sel.repo?.type ?? null, id: sel.repo?.id ?? null, commit: sel.commit ?? null, before: sel.usedBefore ?? null };
    return now(() => (policy === 'lru' ? this.#stmts.selectedLru : this.#stmts.selectedLargest).all(params).map(toCandidate));
  }

  /** Approximate bytes of the recorded API answers and refs. */
  metadataBytes(): Promise<number> {
    return now(() => this.#metadataBytesNow());
  }

  #metadataBytesNow(): number {
    return (this.#stmts.apiBytes.get()?.n ?? 0) + (this.#stmts.refBytes.get()?.n ?? 0);
  }

  /**
   * Deletes API answers and refs, oldest first (by when upstream gave them), until they take at
   * most `limit` bytes. Returns how many rows of each went.
   */
  pruneMetadata(limit: number): Promise<{ apiResponses: number; refs: number }> {
    return now(() => this.#pruneMetadataNow(limit));
  }

  #pruneMetadataNow(limit: number): { apiResponses: number; refs: number } {
    const pruned = { apiResponses: 0, refs: 0 };
    let bytes = this.#metadataBytesNow();
    while (bytes > limit) {
      const api = this.#stmts.oldestApi.get()?.t ?? null;
      const ref = this.#stmts.oldestRef.get()?.t ?? null;
      if (api === null && ref === null) break;
      if (ref === null || (api !== null && api <= ref)) pruned.apiResponses += this.#stmts.pruneApi.run().changes;
      else pruned.refs += this.#stmts.pruneRefs.run().changes;
      bytes = this.#metadataBytesNow();
    }
    return pruned;
  }
}

function toCandidate(r: CandidateDbRow): EvictionCandidate {
  return { blobKey: r.blob_key as BlobKey, size: r.size, lastAccessedAt: r.last_accessed_at };
}
