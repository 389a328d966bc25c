/**
 * Evictor: keeps the cache within its budget (config maxCacheBytes) by removing blobs nobody uses,
 * in the policy's order (least recently used, or largest first).
 *
 * Leases: a blob is never evicted while it is leased (a request opened it and has not released it,
 * or a reader of it is open), while it is being filled, or within `graceMs` of its last use (or of
 * being stored). So eviction never cuts a running download or a slow reader, and a client asking
 * for the next file of a model does not lose the previous one.
 *
 * When it runs:
 * - before a fill is admitted, for the bytes that fill needs (the Mirror asks `evict(deficit)`);
 * - in the background, when the stored bytes plus what admitted fills will still write pass the
 *   high-water mark (95 % of the budget), down to the low-water mark (90 %); also the metadata
 *   bound (API answers and refs, oldest first);
 * - on the operator's request (`hubcache evict`, `POST /admin/evict`).
 *
 * Crash safety, the order of one eviction: the key is marked `evicting` (the Mirror's open() waits
 * for it, so no reader opens the file and no fill of the same blob starts meanwhile), the file is
 * unlinked, then its rows (blob and the file rows naming it) are deleted in one transaction.
 * File first, rows second, because a crash in between then leaves a row whose file is gone, which
 * the startup reconcile forgets with one stat: the blob stays evicted and nothing wrong is ever
 * visible. The other order would leave an unrecorded file that reconcile must re-hash and would
 * adopt back (undoing the eviction), and a failed unlink would leak disk the index no longer knows.
 * A failed unlink leaves the blob as it was: stored and recorded.
 *
 * With `storage: s3` only the local copy is evicted (BlobStore.dropLocal): the object stays in the
 * bucket and the index keeps the blob, which is then read from the store. The budget then counts
 * the local copies (BlobStore.localCopies), not every blob the index records: the bucket may hold
 * far more than the disk, and only local copies can be freed.
 */
import { systemClock, type Clock } from '../clock.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import { crashPoint } from '../storage/crash-points.js';
import type { CacheIndex, EvictionCandidate, EvictionPolicy, EvictionSelection } from '../storage/cache-index-contract.js';

/** Background eviction starts above this share of the budget... */
export const HIGH_WATER = 0.95;
/** ...and stops at this one. */
export const LOW_WATER = 0.9;
/** How often the background check runs besides after each stored blob. */
const BACKGROUND_MS = 10_000;
const PAGE = 256;

export interface EvictorOptions {
  store: BlobStore;
  index: CacheIndex;
  /** The budget in bytes (config maxCacheBytes, resolved against the filesystem). */
  budgetBytes: number;
  policy: EvictionPolicy;
  /** A blob used within this many ms is not evicted. */
  graceMs: number;
  /** Bytes of API answers and refs kept at most; 0: unbounded. */
  maxMetadataBytes?: number;
  clock?: Clock;
  onEvicted?: (key: BlobKey, size: number, why: 'room' | 'background' | 'operator') => void;
  onProblem?: (what: string, err: unknown) => void;
}

/** What a Mirror tells the Evictor: the blobs being filled, and the bytes their fills will add to the store. */
export interface FillView {
  isFilling(key: BlobKey): boolean;
  reservedBytes(): number;
}

export interface Lease {
  /** Idempotent. */
  release(): void;
}

export type EvictOutcome = 'evicted' | 'would-evict' | 'in-use' | 'failed';

export interface EvictReport {
  dryRun: boolean;
  /** Bytes evicted (or that would be). */
  bytes: number;
  blobs: Array<{ blob: BlobKey; size: number; outcome: EvictOutcome; message?: string }>;
}

export class Evictor {
  readonly budgetBytes: number;
  readonly policy: EvictionPolicy;
  readonly #store: BlobStore;
  readonly #index: CacheIndex;
  readonly #graceMs: number;
  readonly #maxMetadataBytes: number;
  readonly #clock: Clock;
  readonly #onEvicted: EvictorOptions['onEvicted'];
  readonly #onProblem: EvictorOptions['onProblem'];
  readonly #leases = new Map<BlobKey, number>();
  /** Last use seen in memory (hits are written to the index in batches). */
  readonly #lastUsed = new Map<BlobKey, number>();
  readonly #evicting = new Map<BlobKey, Promise<void>>();
  #fills: FillView = { isFilling: () => false, reservedBytes: () => 0 };
  /** One eviction pass at a time: two passes would count the same blob twice. */
  #queue: Promise<unknown> = Promise.resolve();
  #background: Promise<void> | null = null;
  #again = false;
  #timer: NodeJS.Timeout | null = null;

  constructor(opts: EvictorOptions) {
    this.budgetBytes = opts.budgetBytes;
    this.policy = opts.policy;
    this.#store = opts.store;
    this.#index = opts.index;
    this.#graceMs = opts.graceMs;
    this.#maxMetadataBytes = opts.maxMetadataBytes ?? 0;
    this.#clock = opts.clock ?? systemClock;
    this.#onEvicted = opts.onEvicted;
    this.#onProblem = opts.onProblem;
  }

  /** Called once by the Mirror that admits fills. */
  attach(fills: FillView): void {
    this.#fills = fills;
  }

  /** Bytes the budget counts now: the blobs on the local disk (every recorded blob with fs). */
  usedBytes(): number {
    return this.#store.localCopies?.bytes() ?? this.#index.storedBytes;
  }

  /** Bytes the budget still has for a new fill (negative: over by that much). */
  headroom(): number {
    return this.budgetBytes - this.usedBytes() - this.#fills.reservedBytes();
  }

  /** Whether evicting the blob frees local disk (with s3, a blob only in the bucket frees nothing). */
  #local(key: BlobKey): boolean {
    return this.#store.localCopies?.has(key) ?? true;
  }

  /** Settles when the blob's eviction, if one is running, is over; undefined when none is. */
  evicting(key: BlobKey): Promise<void> | undefined {
    return this.#evicting.get(key);
  }

  /** From now until `release()`, the blob is not evicted. Taken synchronously. */
  lease(key: BlobKey): Lease {
    this.#leases.set(key, (this.#leases.get(key) ?? 0) + 1);
    this.#lastUsed.set(key, this.#clock.now());
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        const n = (this.#leases.get(key) ?? 1) - 1;
        if (n > 0) this.#leases.set(key, n);
        else this.#leases.delete(key);
        this.#lastUsed.set(key, this.#clock.now());
      },
    };
  }

  /** Why the blob may not be evicted now, or null. */
  #protected(c: EvictionCandidate, now: number): 'in-use' | null {
    if (this.#leases.has(c.blobKey) || this.#fills.isFilling(c.blobKey) || this.#evicting.has(c.blobKey)) return 'in-use';
    const last = Math.max(c.lastAccessedAt, this.#lastUsed.get(c.blobKey) ?? 0);
    return now - last < this.#graceMs ? 'in-use' : null;
  }

  /**
   * Evicts evictable blobs in the policy's order until at least `bytes` are freed, or nothing
   * evictable is left. Resolves with the bytes freed (0: nothing could go).
   */
  evict(bytes: number, why: 'room' | 'background' = 'room'): Promise<number> {
    return this.#serial(async () => {
      await this.#index.flushTouches(); // the order sees the latest hits
      const now = this.#clock.now();
      let freed = 0;
      let cursor = null;
      while (freed < bytes) {
        const page = await this.#index.eviction.candidates(this.policy, cursor, PAGE);
        if (page.rows.length === 0) break;
        cursor = page.cursor;
        for (const c of page.rows) {
          if (freed >= bytes) break;
          if (!this.#local(c.blobKey) || this.#protected(c, now)) continue;
          if (await this.#evictOne(c, why)) freed += c.size;
        }
      }
      this.#pruneLastUsed(now);
      return freed;
    });
  }

  /** The operator's eviction: the selected blobs (at most `bytes` of them, in the policy's order). */
  evictSelection(sel: EvictionSelection, opts: { bytes?: number; dryRun: boolean }): Promise<EvictReport> {
    return this.#serial(async () => {
      await this.#index.flushTouches();
      const now = this.#clock.now();
      const report: EvictReport = { dryRun: opts.dryRun, bytes: 0, blobs: [] };
      for (const c of await this.#index.eviction.selection(sel, this.policy)) {
        if (opts.bytes !== undefined && report.bytes >= opts.bytes) break;
        if (!this.#local(c.blobKey)) continue; // nothing here to free: it is only in the bucket
        if (this.#protected(c, now)) {
          report.blobs.push({ blob: c.blobKey, size: c.size, outcome: 'in-use' });
          continue;
        }
        if (opts.dryRun) {
          report.blobs.push({ blob: c.blobKey, size: c.size, outcome: 'would-evict' });
          report.bytes += c.size;
          continue;
        }
        try {
          await this.#evictOne(c, 'operator', true);
          report.blobs.push({ blob: c.blobKey, size: c.size, outcome: 'evicted' });
          report.bytes += c.size;
        } catch (err) {
          report.blobs.push({ blob: c.blobKey, size: c.size, outcome: 'failed', message: (err as Error).message });
        }
      }
      return report;
    });
  }

  /** Checks the high-water mark (and the metadata bound) soon; coalesced. */
  check(): void {
    if (this.#background) {
      this.#again = true;
      return;
    }
    this.#background = (async () => {
      do {
        this.#again = false;
        await this.#backgroundPass();
      } while (this.#again);
    })().finally(() => {
      this.#background = null;
    });
  }

  /** Starts the periodic background check (and runs one now). */
  start(): void {
    this.#timer ??= setInterval(() => this.check(), BACKGROUND_MS);
    this.#timer.unref();
    this.check();
  }

  /** Stops the background check and waits for a running pass. */
  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#background;
    await this.#queue.catch(() => undefined);
  }

  async #backgroundPass(): Promise<void> {
    try {
      const used = this.usedBytes() + this.#fills.reservedBytes();
      if (used > this.budgetBytes * HIGH_WATER) await this.evict(used - Math.floor(this.budgetBytes * LOW_WATER), 'background');
      if (this.#maxMetadataBytes > 0) await this.#index.eviction.pruneMetadata(this.#maxMetadataBytes);
    } catch (err) {
      this.#onProblem?.('background eviction', err);
    }
  }

  /**
   * File first, then rows (see the header comment). False (or, with `rethrow`, the error) when
   * the file could not be removed: the blob then stays as it was.
   */
  async #evictOne(c: EvictionCandidate, why: 'room' | 'background' | 'operator', rethrow = false): Promise<boolean> {
    const key = c.blobKey;
    let done!: () => void;
    this.#evicting.set(key, new Promise<void>((resolve) => (done = resolve)));
    try {
      // With fs the local file is the blob: today's remove, then its rows are forgotten. With s3 it
      // is only a read cache in front of the bucket: dropping it frees local disk, but the object
      // is not deleted and the index rows stay (the blob is still cached; reads go to the store).
      await this.#store.dropLocal(key);
      crashPoint('after-evict-unlink');
      if (!this.#store.localCopiesAreCache) await this.#index.evictBlob(key);
      this.#lastUsed.delete(key);
      this.#onEvicted?.(key, c.size, why);
      return true;
    } catch (err) {
      if (rethrow) throw err;
      this.#onProblem?.(`evicting ${key}`, err);
      return false;
    } finally {
      this.#evicting.delete(key);
      done();
    }
  }

  #serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task, task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Last uses older than the grace no longer protect anything: keep the map small. */
  #pruneLastUsed(now: number): void {
    for (const [key, at] of this.#lastUsed) if (now - at >= this.#graceMs && !this.#leases.has(key)) this.#lastUsed.delete(key);
  }
}
