/**
 * Mirror: `open(entry)` gives a BlobSource of the same shape whether the blob is on disk (hit),
 * being fetched by another request (joined) or fetched now (miss), so routes never branch on it
 * (the decorator of distribution's proxy blob store).
 *
 * However many requests ask for a blob at once, one Fill runs; every reader streams from the disk
 * at its own pace, so a slow client never slows the fill or the others.
 */
import type { Readable } from 'node:stream';
import { MirrorError } from '../errors.js';
import type { FileEntry } from '../hub/file-resolver.js';
import { fileUrlPath } from '../hub/repo-ref.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { FsBlobStore } from '../storage/blob-store.js';
import type { CacheIndex } from '../storage/cache-index.js';
import type { HubClient } from '../upstream/hub-client.js';
import { Fill } from './fill.js';
import { Flights } from './flights.js';
import { GrowingFileReader } from './growing-file-reader.js';

export type CacheStatus = 'hit' | 'miss' | 'joined';

export interface BlobSource {
  readonly size: number;
  readonly cacheStatus: CacheStatus;
  /**
   * Resolves once bytes can start to flow (at once for hits; when upstream answered for fills),
   * rejects if the fill failed before that. Callers wait for it only a bounded time.
   */
  readonly ready: Promise<void>;
  /** A new stream of bytes [start, end] (inclusive). The caller owns and destroys it. */
  createReader(start: number, end: number): Readable;
}

export interface MirrorOptions {
  store: FsBlobStore;
  index: CacheIndex;
  hub: HubClient;
  maxResumes: number;
  onFillEvent?: (event: 'started' | 'committed' | 'failed' | 'resumed', key: BlobKey, error?: MirrorError) => void;
}

export class Mirror {
  readonly #store: FsBlobStore;
  readonly #index: CacheIndex;
  readonly #hub: HubClient;
  readonly #maxResumes: number;
  readonly #fills = new Flights<Fill>((fill) => fill.done);
  readonly #onFillEvent: MirrorOptions['onFillEvent'];

  constructor(opts: MirrorOptions) {
    this.#store = opts.store;
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#maxResumes = opts.maxResumes;
    this.#onFillEvent = opts.onFillEvent;
  }

  /** Whether the blob is verified and on disk (for HEAD's cache status; no I/O beyond the index). */
  isCached(key: BlobKey): boolean {
    return this.#index.getBlob(key) !== undefined;
  }

  async open(entry: FileEntry, auth: string | undefined): Promise<BlobSource> {
    const key = entry.blobKey;
    const running = this.#fills.get(key);
    if (!running && this.#index.getBlob(key)) {
      const st = await this.#store.stat(key);
      if (st && st.size === entry.size) {
        this.#index.touchBlob(key);
        return this.#hit(key, entry.size);
      }
      // The index remembers a blob the disk lost (or a different size): forget it and refetch.
      this.#index.forgetBlob(key);
    }
    const { value: fill, joined } = this.#fills.run(key, () => {
      this.#onFillEvent?.('started', key);
      return Fill.start(
        { key, size: entry.size, upstreamPath: fileUrlPath({ ...entry.request, revision: entry.commit }), auth },
        {
          store: this.#store,
          index: this.#index,
          hub: this.#hub,
          maxResumes: this.#maxResumes,
          onEvent: (event, f, error) => this.#onFillEvent?.(event, f.key, error),
        },
      );
    });
    if (fill.state === 'committed') return this.#hit(key, entry.size);
    if (entry.size === 0) await fill.done; // nothing to hold back: wait for the verification
    return {
      size: entry.size,
      cacheStatus: joined ? 'joined' : 'miss',
      ready: fill.started,
      createReader: (start, end) => new GrowingFileReader(fill, start, end),
    };
  }

  #hit(key: BlobKey, size: number): BlobSource {
    return {
      size,
      cacheStatus: 'hit',
      ready: Promise.resolve(),
      createReader: (start, end) => this.#store.openRead(key, start, end),
    };
  }

  /** Fills in progress (for health and metrics). */
  get activeFills(): number {
    return this.#fills.size;
  }

  /** Cancels running fills and waits for them to settle (shutdown). */
  async close(): Promise<void> {
    const fills = [...this.#fills.values()];
    for (const f of fills) f.cancel();
    await Promise.allSettled(fills.map((f) => f.done));
  }
}
