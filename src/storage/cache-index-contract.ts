/**
 * The CacheIndex contract: what the mirror knows (refs, files, blobs, API answers, the operator's
 * jobs and counters), whatever engine keeps it. Two implementations: SQLite in the data dir
 * (cache-index.ts, one process per data dir, the default) and PostgreSQL shared by several
 * replicas (postgres-cache-index.ts). test/integration/cache-index-contract.test.ts runs one
 * conformance suite against both.
 *
 * Rules every implementation keeps:
 * - Reads and writes are asynchronous (the engine may be across a network). A warm hit or HEAD
 *   must still cost no round trip: blob rows are memoised in memory (`knownBlob` reads the memo
 *   synchronously; `getBlob` answers from it when it can).
 * - Writes degrade instead of failing: when the engine cannot take a write now (SQLite busy or
 *   full; PostgreSQL unreachable, restarting), the write waits in memory, in order, and is retried
 *   until it lands; reads of refs and blobs see the waiting writes meanwhile. A write's promise
 *   resolves once the write landed or was deferred; it rejects only for errors that are no passing
 *   condition (a bug, a constraint).
 * - Access times are batched: `touchBlob` is memory only, `flushTouches` writes them.
 * - Scopes are opaque strings; on a conflict the public scope `anonymous` is sticky (an answer to
 *   a token never narrows public content).
 */
import type { FileView, RepoRef } from '../hub/repo-ref.js';
import type { BlobKey } from './blob-layout.js';

/** The scope every identity may read back: public content. */
export const PUBLIC_SCOPE = 'anonymous';

export type IndexKind = 'sqlite' | 'postgres';

export interface RefRow {
  commit: string;
  checkedAt: number;
  /** Who learnt it (see the header comment). */
  scope: string;
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
  /** Who upstream gave it to; null: a client's own token (never read back). */
  scope: string | null;
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
  /** Who upstream gave it to. */
  scope: string;
}

export interface IndexStats {
  rows: { refs: number; files: number; blobs: number; api_responses: number };
  blobBytes: number;
}

/** Traffic counters to add in the same transaction as a flush of access times. */
export interface CounterDeltas {
  deltas: Readonly<Record<string, number>>;
  /** Set only where absent. */
  initial?: Readonly<Record<string, number>>;
}

/** Writes were deferred (engine busy, full or unreachable), caught up, or dropped (too many waiting). */
export type WriteProblemListener = (event: 'deferred' | 'caught-up' | 'dropped', detail: { error?: string; pending: number }) => void;

// ---- jobs -------------------------------------------------------------------------------------

export type JobKind = 'prefetch' | 'import' | 'verify';
export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export const JOB_KINDS: readonly JobKind[] = ['prefetch', 'import', 'verify'];
export const FINISHED_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];

/** Counters every job keeps (items: files for prefetch and import, blobs for verify). */
export interface JobProgress {
  /** Items the job will handle, once known. */
  itemsTotal: number | null;
  /** Items finished, successfully or not (failed included). */
  itemsDone: number;
  itemsFailed: number;
  bytesTotal: number | null;
  /** Bytes of items handled so far (finished items, and what running ones moved). */
  bytesDone: number;
}

export interface JobRow {
  id: string;
  kind: JobKind;
  state: JobState;
  params: Record<string, unknown>;
  progress: JobProgress;
  message: string | null;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
}

export interface JobItem {
  seq: number;
  /** What the item is: a repo path, a blob key. */
  item: string;
  /** What happened to it: 'cached', 'filled', 'linked', 'copied', 'corrupt', 'failed', ... */
  outcome: string;
  ok: boolean;
  bytes: number;
  message: string | null;
}

/**
 * The operator's background jobs (prefetch, import, verify), so a job interrupted by a restart is
 * found again and resumed (admin/jobs.ts runs them). Errors (an unreachable engine included) are
 * thrown to the caller, which keeps the job's state in memory meanwhile.
 */
export interface JobStore {
  insert(job: JobRow): Promise<void>;
  /** Writes the job's state, params, progress, message and times. */
  save(job: JobRow): Promise<void>;
  get(id: string): Promise<JobRow | undefined>;
  /** The newest jobs first. */
  list(limit: number): Promise<JobRow[]>;
  /** Jobs queued or running when the last process stopped, oldest first. */
  unfinished(): Promise<JobRow[]>;
  /** Records a finished item; returns its sequence number in the job (1, 2, ...). */
  addItem(jobId: string, item: Omit<JobItem, 'seq'>): Promise<number>;
  /** Items finished after `afterSeq`, in order, at most `limit`. */
  items(jobId: string, afterSeq: number, limit: number): Promise<JobItem[]>;
  /** Items that finished successfully (what a resumed job skips), with their bytes. */
  succeededItems(jobId: string): Promise<Map<string, number>>;
  /** Forgets finished jobs (and their items) beyond the newest `keep`. */
  prune(keep: number): Promise<void>;
}

// ---- inventory --------------------------------------------------------------------------------

export interface RepoSummary {
  repo: RepoRef;
  /** Commits with at least one recorded file. */
  commits: number;
  /** Recorded files (repo, commit, view, path), cached or not. */
  files: number;
  /** Of those, the ones whose blob is stored. */
  cachedFiles: number;
  /** Bytes of the distinct cached blobs its files name (a blob shared by two paths counts once). */
  cachedBytes: number;
  /** Latest hit on one of its blobs (ms since epoch), null if none was ever read. */
  lastAccessAt: number | null;
  /** Hits on its distinct blobs (a blob shared with another repo counts in both). */
  hits: number;
  /** Branch and tag names → commit. */
  refs: Record<string, string>;
}

export interface InventoryFile {
  commit: string;
  view: string;
  path: string;
  size: number;
  blobKey: string;
  isLfs: boolean;
  /** Who may read it back from the index: 'public', 'service' (the service token's), 'token' (a client token's: never). */
  visibility: 'public' | 'service' | 'token';
  cached: boolean;
  storedAt: number | null;
  lastAccessAt: number | null;
  hits: number;
}

export interface BlobTotals {
  blobs: number;
  bytes: number;
}

/** What `hubcache ls` and `hubcache stats` show, and the traffic counters kept across restarts. */
export interface InventoryStore {
  /** Every repo with recorded files, by type then id. */
  repos(): Promise<RepoSummary[]>;
  /** The recorded files of one repo, by commit then view then path. */
  files(repo: RepoRef): Promise<InventoryFile[]>;
  /** Blobs stored (as recorded) and their bytes. */
  blobTotals(): Promise<BlobTotals>;
  /** Every persisted counter. */
  counters(): Promise<Record<string, number>>;
  /** Adds deltas to counters in one transaction; `initial` values are set only where absent. */
  addCounters(deltas: Readonly<Record<string, number>>, initial?: Readonly<Record<string, number>>): Promise<void>;
}

// ---- eviction ---------------------------------------------------------------------------------

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

/**
 * What eviction reads of the index (which blobs to consider, in the policy's order) and the bound
 * on metadata (API answers and refs, pruned oldest first). Removing a blob's rows is
 * CacheIndex.evictBlob (it goes through the deferred writes).
 */
export interface EvictionStore {
  /** The next `limit` blobs in the policy's order, after `cursor` (pages: writes happen between them). */
  candidates(policy: EvictionPolicy, cursor: CandidateCursor | null, limit: number): Promise<{ rows: EvictionCandidate[]; cursor: CandidateCursor | null }>;
  /** The stored blobs an operator's selection names, in the policy's order. */
  selection(sel: EvictionSelection, policy: EvictionPolicy): Promise<EvictionCandidate[]>;
  /** Approximate bytes of the recorded API answers and refs. */
  metadataBytes(): Promise<number>;
  /** Deletes API answers and refs, oldest first, until they take at most `limit` bytes. */
  pruneMetadata(limit: number): Promise<{ apiResponses: number; refs: number }>;
}

// ---- the index --------------------------------------------------------------------------------

export interface CacheIndex {
  readonly kind: IndexKind;
  readonly jobs: JobStore;
  readonly inventory: InventoryStore;
  readonly eviction: EvictionStore;
  /** Writes waiting for the engine; 0 normally. */
  readonly pendingWrites: number;
  /**
   * Bytes of the recorded blobs as this process knows them now (what the cache budget counts with
   * `storage: fs`), without a round trip. SQLite: exact (this connection is the only writer).
   * PostgreSQL: this process's writes applied at once, re-read from the database on each
   * `flushTouches` and `stats` (other replicas' writes appear then).
   */
  readonly storedBytes: number;

  getRef(repo: RepoRef, revision: string): Promise<RefRow | undefined>;
  putRef(repo: RepoRef, revision: string, commit: string, checkedAt: number, scope?: string): Promise<void>;
  getFile(repo: RepoRef, commit: string, view: FileView, path: string): Promise<FileRow | undefined>;
  /** Records a file entry; the public scope is sticky. */
  putFile(row: FileRow): Promise<void>;
  /** A stored API answer for `commit`, keyed by endpoint + canonical query (see hub/api-request.ts). */
  getApiResponse(repo: RepoRef, commit: string, requestKey: string): Promise<ApiResponseRow | undefined>;
  /** Records an API answer; the public scope is sticky. */
  putApiResponse(repo: RepoRef, commit: string, requestKey: string, row: ApiResponseRow): Promise<void>;

  /** The blob's row: from the memo when it knows, else from the engine (and memoised). */
  getBlob(key: BlobKey): Promise<BlobRow | undefined>;
  /**
   * The memo's answer without any I/O: the row, `false` (known absent), or undefined (not known:
   * ask `getBlob`). An implementation whose negative answers may go stale (another replica
   * records blobs) never answers `false`.
   */
  knownBlob(key: BlobKey): BlobRow | false | undefined;
  /** Every recorded blob, ordered by key (reconcile and verify walk them). */
  allBlobs(): Promise<BlobRow[]>;
  /** Called after the blob is committed to the store. */
  recordBlob(key: BlobKey, size: number, now?: number): Promise<void>;
  forgetBlob(key: BlobKey): Promise<void>;
  /** Forgets an evicted blob and the file rows that name it, in one transaction. */
  evictBlob(key: BlobKey): Promise<void>;
  /** Notes a hit; memory only, written by the next `flushTouches` (a hit costs no write). */
  touchBlob(key: BlobKey, now?: number): void;
  /**
   * Writes the batched hits, and `counters` in the same transaction. Resolves with whether it
   * landed; when the engine cannot take it now the hits are kept for the next flush (the caller
   * keeps its counters).
   */
  flushTouches(counters?: CounterDeltas): Promise<boolean>;

  /** Row counts per table and the bytes of the recorded blobs (metrics). */
  stats(): Promise<IndexStats>;
  /** True when the engine answers a trivial query. */
  ping(): Promise<boolean>;
  /** Lands what it can of the deferred writes and touches, then closes. */
  close(): Promise<void>;
}


/**
 * A read of the index whose failure (an engine across the network, unreachable or restarting)
 * is answered as a miss: the caller then asks upstream, as it would if the index did not know,
 * instead of failing the request. For reads whose miss is always safe (refs, files, API answers,
 * blob rows); a synchronous throw counts as a failure too.
 */
export async function orMiss<T>(read: () => Promise<T | undefined>): Promise<T | undefined> {
  try {
    return await read();
  } catch {
    return undefined;
  }
}
