/**
 * Mirror: `open(entry)` gives a BlobSource of the same shape whether the blob is on disk (hit),
 * being fetched by another request (joined) or fetched now (miss), so routes never branch on it
 * (the decorator of distribution's proxy blob store).
 *
 * However many requests ask for a blob at once, one Fill runs; every reader streams from the disk
 * at its own pace, so a slow client never slows the fill or the others.
 */
import { Readable } from 'node:stream';
import type { ByteSpan } from '../http/byte-range.js';
import { MirrorError } from '../errors.js';
import type { FileEntry } from '../hub/file-resolver.js';
import { fileUrlPath } from '../hub/repo-ref.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { FsBlobStore } from '../storage/blob-store.js';
import type { CacheIndex } from '../storage/cache-index.js';
import type { HubClient } from '../upstream/hub-client.js';
import { Fill } from './fill.js';
import { fromUpstreamStatus, headerValue } from '../upstream/upstream-errors.js';
import { Flights, PromiseFlights } from './flights.js';
import { GrowingFileReader } from './growing-file-reader.js';

/**
 * `hit`: from disk. `miss`: this request started the fill. `joined`: another request's fill.
 * `bypass`: a small range of a cold blob, fetched upstream as that range only (not stored).
 */
export type CacheStatus = 'hit' | 'miss' | 'joined' | 'bypass';

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

/** Files up to this size are verified before their response starts (bounded by the route's wait). */
const SMALL_FILE_BYTES = 1024 * 1024;

export interface MirrorOptions {
  store: FsBlobStore;
  index: CacheIndex;
  hub: HubClient;
  maxResumes: number;
  /**
   * A range of at most this many bytes on a blob that is neither cached nor being filled is fetched
   * upstream as that range alone (size probes, file-header reads), instead of starting a fill of the
   * whole file. 0 disables it.
   */
  rangeBypassMaxBytes: number;
  onFillEvent?: (event: 'started' | 'committed' | 'failed' | 'resumed', key: BlobKey, error?: MirrorError) => void;
}

export class Mirror {
  readonly #store: FsBlobStore;
  readonly #index: CacheIndex;
  readonly #hub: HubClient;
  readonly #maxResumes: number;
  readonly #fills = new Flights<Fill>((fill) => fill.done);
  readonly #slices = new PromiseFlights<Buffer>();
  readonly #rangeBypassMaxBytes: number;
  readonly #onFillEvent: MirrorOptions['onFillEvent'];

  constructor(opts: MirrorOptions) {
    this.#rangeBypassMaxBytes = opts.rangeBypassMaxBytes;
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

  /**
   * @param span the bytes the caller will read, when it is a Range request (decides the bypass).
   * @param auth credentials already granted by upstream for this file (used for the upstream GET).
   */
  async open(entry: FileEntry, auth: string | undefined, span?: ByteSpan): Promise<BlobSource> {
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
    if (!running && span && span.end - span.start + 1 <= this.#rangeBypassMaxBytes && span.end - span.start + 1 < entry.size) {
      return this.#bypass(entry, auth, span);
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
      // Small files are worth waiting for whole: a bad body then becomes a clean error response.
      ready: entry.size <= SMALL_FILE_BYTES ? fill.done : fill.started,
      createReader: (start, end) => new GrowingFileReader(fill, start, end),
    };
  }

  /** One upstream ranged GET per (blob, span) however many ask at once; the slice stays in memory only. */
  #bypass(entry: FileEntry, auth: string | undefined, span: ByteSpan): BlobSource {
    const slice = this.#slices.run(`${entry.blobKey}:${span.start}-${span.end}`, () => this.#fetchSlice(entry, auth, span));
    return {
      size: entry.size,
      cacheStatus: 'bypass',
      ready: slice.then(() => undefined),
      createReader: (start, end) =>
        Readable.from(
          (async function* () {
            const buf = await slice;
            yield buf.subarray(start - span.start, end - span.start + 1);
          })(),
        ),
    };
  }

  async #fetchSlice(entry: FileEntry, auth: string | undefined, span: ByteSpan): Promise<Buffer> {
    const path = fileUrlPath({ ...entry.request, revision: entry.commit });
    const res = await this.#hub.openBody(path, auth, { range: `bytes=${span.start}-${span.end}` });
    const want = span.end - span.start + 1;
    const contentRange = headerValue(res.headers, 'content-range');
    if (res.statusCode !== 206 || contentRange !== `bytes ${span.start}-${span.end}/${entry.size}`) {
      res.body.on('error', () => undefined);
      res.body.destroy();
      if (res.statusCode >= 400) throw fromUpstreamStatus(res.statusCode, res.headers, `range of ${entry.blobKey}`);
      throw new MirrorError('UpstreamError', `Upstream answered a range request with ${res.statusCode} ${contentRange ?? ''}`.trim());
    }
    const chunks: Buffer[] = [];
    let got = 0;
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      got += buf.length;
      if (got > want) break;
      chunks.push(buf);
    }
    if (got !== want) throw new MirrorError('IntegrityError', `Upstream range body has ${got} bytes, expected ${want}`);
    return Buffer.concat(chunks);
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
