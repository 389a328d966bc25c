/**
 * Mirror: `open(entry)` gives a BlobSource of the same shape whether the blob is on disk (hit),
 * being fetched by another request (joined) or fetched now (miss), so routes never branch on it
 * (the decorator of distribution's proxy blob store).
 *
 * However many requests ask for a blob at once, one Fill runs; every reader streams from the disk
 * at its own pace, so a slow client never slows the fill or the others.
 *
 * Resources (test-plan S7, T26, T28): at most `maxConcurrentFills` fills run at once, further
 * misses wait in a FIFO queue (joinable like a running fill; their clients wait as for a slow
 * upstream) and past `maxQueuedFills` a miss is refused at once (503 Overloaded). Before a fill is
 * admitted, the disk must hold it: free space, less `minFreeBytes`, less what admitted fills still
 * have to write (507 InsufficientStorage otherwise). Joiners, hits and bypasses are never limited.
 */
import { PassThrough, Readable, pipeline } from 'node:stream';
import type { ByteSpan } from '../http/byte-range.js';
import { MirrorError } from '../errors.js';
import type { FileEntry } from '../hub/file-resolver.js';
import { fileUrlPath } from '../hub/repo-ref.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import type { CacheIndex } from '../storage/cache-index.js';
import { discardBody, type HubClient } from '../upstream/hub-client.js';
import { DiskSpace, formatBytes } from '../storage/disk-space.js';
import { Fill } from './fill.js';
import { FillLimiter } from './fill-limiter.js';
import { fromNetworkError, fromUpstreamStatus, headerValue } from '../upstream/upstream-errors.js';
import { bufferReader, readableReader, type BlobReader } from './blob-reader.js';
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
  /** A new reader of bytes [start, end] (inclusive). The caller owns it and closes it. */
  createReader(start: number, end: number): BlobReader;
}

/** Files up to this size are verified before their response starts (bounded by the route's wait). */
const SMALL_FILE_BYTES = 1024 * 1024;
/** Upstream range requests one bypassed request runs at once (a multipart answer has up to 64 parts). */
const BYPASS_CONCURRENCY = 4;

export interface MirrorOptions {
  store: BlobStore;
  index: CacheIndex;
  hub: HubClient;
  maxResumes: number;
  /**
   * Ranges of at most this many bytes together, on a blob that is neither cached nor being filled,
   * are fetched upstream as those ranges alone (size probes, file-header reads), instead of starting
   * a fill of the whole file. 0 disables it.
   */
  rangeBypassMaxBytes: number;
  /** Fills running at once (default 16); more wait in a FIFO queue. */
  maxConcurrentFills?: number;
  /** Misses waiting for a fill slot (default 1000); past it a miss is refused with 503 Overloaded. */
  maxQueuedFills?: number;
  /** Free-space guard of the data dir; omitted: no check. */
  diskSpace?: DiskSpace;
  onFillEvent?: (event: 'started' | 'committed' | 'failed' | 'resumed', key: BlobKey, error?: MirrorError) => void;
}

/**
 * A fill admitted by the limiter: queued until a slot is free, then running. It is what the
 * flights map holds, so requests for the same blob join it whether it runs yet or not.
 */
interface FillFlight {
  readonly size: number;
  /** The Fill, once it has a slot. */
  readonly fill: Fill | undefined;
  /** Resolves with the Fill when it starts; rejects if it never does (shutdown). */
  readonly running: Promise<Fill>;
  /** Settles with the fill: resolves when committed, rejects when failed (or never started). */
  readonly done: Promise<void>;
}

export class Mirror {
  readonly #store: BlobStore;
  readonly #index: CacheIndex;
  readonly #hub: HubClient;
  readonly #maxResumes: number;
  readonly #fills = new Flights<FillFlight>((flight) => flight.done);
  readonly #limiter: FillLimiter;
  readonly #diskSpace: DiskSpace | undefined;
  readonly #slices = new PromiseFlights<Buffer | null>();
  readonly #rangeBypassMaxBytes: number;
  readonly #onFillEvent: MirrorOptions['onFillEvent'];

  constructor(opts: MirrorOptions) {
    this.#rangeBypassMaxBytes = opts.rangeBypassMaxBytes;
    this.#store = opts.store;
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#maxResumes = opts.maxResumes;
    this.#onFillEvent = opts.onFillEvent;
    this.#limiter = new FillLimiter(opts.maxConcurrentFills ?? 16, opts.maxQueuedFills ?? 1000);
    this.#diskSpace = opts.diskSpace;
  }

  /** Whether the blob is verified and on disk (for HEAD's cache status; no I/O beyond the index). */
  isCached(key: BlobKey): boolean {
    return this.#index.getBlob(key) !== undefined;
  }

  /**
   * @param spans the bytes the caller will read, when it is a Range request (one span, or the
   *   parts of a multipart answer, pairwise disjoint): on a cold blob, parts that add up to at
   *   most `rangeBypassMaxBytes` are fetched upstream as ranges instead of starting a fill.
   * @param auth credentials already granted by upstream for this file (used for the upstream GET).
   */
  async open(entry: FileEntry, auth: string | undefined, spans?: readonly ByteSpan[]): Promise<BlobSource> {
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
    if (!running && spans && spans.length > 0) {
      const wanted = spans.reduce((n, s) => n + s.end - s.start + 1, 0);
      if (wanted <= this.#rangeBypassMaxBytes && wanted < entry.size) {
        const bypass = await this.#bypass(entry, auth, spans);
        // Upstream ignored Range for bytes far into the file: fetch the whole file the usual way.
        return bypass ?? this.open(entry, auth);
      }
    }
    // A new fill must fit on the disk (joining one needs nothing more). The check awaits statfs:
    // whoever started this blob's fill meanwhile is joined below instead.
    if (!this.#fills.get(key)) await this.#checkSpace(entry);
    const { value: flight, joined } = this.#fills.run(key, () => this.#admit(entry, auth));
    if (flight.fill?.state === 'committed') return this.#hit(key, entry.size);
    if (entry.size === 0) await flight.done; // nothing to hold back: wait for the verification
    return {
      size: entry.size,
      cacheStatus: joined ? 'joined' : 'miss',
      // Small files are worth waiting for whole: a bad body then becomes a clean error response.
      ready: entry.size <= SMALL_FILE_BYTES ? flight.done : flight.running.then((fill) => fill.started),
      createReader: (start, end) => readableReader(flight.fill ? new GrowingFileReader(flight.fill, start, end) : deferredReader(flight.running, start, end)),
    };
  }

  /**
   * Refuses (507) a fill the disk cannot hold: the bytes it needs, plus what admitted fills still
   * have to write, plus `minFreeBytes`, must be available. When free space cannot be read, the
   * fill goes ahead (ENOSPC would still fail it cleanly).
   */
  async #checkSpace(entry: FileEntry): Promise<void> {
    if (!this.#diskSpace) return;
    let available: number;
    try {
      available = await this.#diskSpace.available();
    } catch {
      return;
    }
    if (this.#fills.get(entry.blobKey)) return; // started meanwhile: joining costs no space
    const reserved = this.reservedBytes;
    const minFree = this.#diskSpace.minFreeBytes;
    if (entry.size + reserved + minFree > available) {
      throw new MirrorError(
        'InsufficientStorage',
        `Not enough free space in the mirror's cache for ${entry.request.path} (${formatBytes(entry.size)}): ` +
          `${formatBytes(available)} free, ${formatBytes(reserved)} promised to downloads in progress, ${formatBytes(minFree)} kept free (minFreeBytes)`,
      );
    }
  }

  /** Starts the fill now if a slot is free, else queues it (throws Overloaded when the queue is full). */
  #admit(entry: FileEntry, auth: string | undefined): FillFlight {
    const key = entry.blobKey;
    let started: Fill | undefined;
    const start = (): Fill => {
      this.#onFillEvent?.('started', key);
      const fill = Fill.start(
        { key, size: entry.size, upstreamPath: fileUrlPath({ ...entry.request, revision: entry.commit }), auth },
        {
          store: this.#store,
          index: this.#index,
          hub: this.#hub,
          maxResumes: this.#maxResumes,
          onEvent: (event, f, error) => this.#onFillEvent?.(event, f.key, error),
        },
      );
      started = fill;
      const release = (): void => this.#limiter.release();
      fill.done.then(release, release);
      return fill;
    };
    // A free slot starts the fill now; else `start` runs when a slot is handed over.
    const running = this.#limiter.tryAcquire() ? Promise.resolve(start()) : this.#limiter.wait().then(start);
    const done = running.then((fill) => fill.done);
    running.catch(() => undefined);
    done.catch(() => undefined);
    return {
      size: entry.size,
      get fill() {
        return started;
      },
      running,
      done,
    };
  }

  /** Bytes that admitted fills (running or queued) still have to write. */
  get reservedBytes(): number {
    let n = 0;
    for (const f of this.#fills.values()) n += f.size - (f.fill?.bytesWritten ?? 0);
    return n;
  }

  /**
   * The spans fetched upstream as ranges, at most BYPASS_CONCURRENCY at once, and kept in memory
   * only; one upstream GET per (blob, span) however many requests ask at once. Resolves once every
   * span arrived (so a failure is still a clean error response), or with `null` when upstream
   * ignored Range for a span too far into the file to read from the start of the body.
   */
  async #bypass(entry: FileEntry, auth: string | undefined, spans: readonly ByteSpan[]): Promise<BlobSource | null> {
    const slices = await fetchAll(spans, BYPASS_CONCURRENCY, (span) =>
      this.#slices.run(`${entry.blobKey}:${span.start}-${span.end}`, () => this.#fetchSlice(entry, auth, span)),
    );
    if (!slices) return null;
    return {
      size: entry.size,
      cacheStatus: 'bypass',
      ready: Promise.resolve(),
      createReader: (start, end) => {
        const i = spans.findIndex((s) => s.start <= start && end <= s.end);
        const slice = slices[i];
        const span = spans[i];
        if (!slice || !span) throw new Error(`bytes ${start}-${end} were not fetched`);
        return bufferReader(slice.subarray(start - span.start, end - span.start + 1));
      },
    };
  }

  /**
   * One span of the blob, asked upstream as `Range: bytes=start-end`. A 206 must name exactly that
   * span of a file of the expected size and carry exactly its bytes, else the request fails (502),
   * never a wrong byte. A 200 (upstream ignored Range) is the whole file: the span is read off its
   * start when it ends within `rangeBypassMaxBytes`, else `null` (the caller fills instead; a
   * `bytes=-1` of 50 GB must not stream 50 GB through memory).
   */
  async #fetchSlice(entry: FileEntry, auth: string | undefined, span: ByteSpan): Promise<Buffer | null> {
    const path = fileUrlPath({ ...entry.request, revision: entry.commit });
    const asked = `bytes=${span.start}-${span.end}`;
    const res = await this.#hub.openBody(path, auth, { range: asked });
    const want = span.end - span.start + 1;
    const contentRange = headerValue(res.headers, 'content-range');
    const contentLength = headerValue(res.headers, 'content-length');
    const fail = (message: string): never => {
      discardBody(res.body);
      throw new MirrorError('UpstreamError', `Upstream answered ${asked} of ${entry.request.path} with ${message}`);
    };
    if (res.statusCode >= 400) {
      discardBody(res.body);
      throw fromUpstreamStatus(res.statusCode, res.headers, `range of ${entry.blobKey}`);
    }
    if (res.statusCode === 200) {
      if (contentLength !== undefined && Number(contentLength) !== entry.size) fail(`a 200 of ${contentLength} bytes, expected ${entry.size}`);
      if (span.end + 1 > this.#rangeBypassMaxBytes) {
        discardBody(res.body);
        return null;
      }
      const head = await readBody(res.body, span.end + 1, false, `the start of ${entry.request.path}`);
      return head.subarray(span.start);
    }
    if (res.statusCode !== 206) fail(`status ${res.statusCode}`);
    if (contentRange !== `bytes ${span.start}-${span.end}/${entry.size}`) fail(`Content-Range ${contentRange ?? '(none)'}`);
    if (contentLength !== undefined && Number(contentLength) !== want) fail(`Content-Length ${contentLength}`);
    return readBody(res.body, want, true, `${asked} of ${entry.request.path}`);
  }

  #hit(key: BlobKey, size: number): BlobSource {
    return {
      size,
      cacheStatus: 'hit',
      ready: Promise.resolve(),
      createReader: (start, end) => readableReader(this.#store.openRead(key, start, end)),
    };
  }

  /** Fills admitted: running or queued (for health and metrics). */
  get activeFills(): number {
    return this.#fills.size;
  }

  /** Fills waiting for a slot. */
  get queuedFills(): number {
    return this.#limiter.queued;
  }

  /** Cancels queued and running fills and waits for them to settle (shutdown). */
  async close(): Promise<void> {
    // Queued fills first: a cancelled fill hands its slot on, and nothing may start now.
    this.#limiter.close(new MirrorError('UpstreamUnavailable', 'mirror shutting down'));
    const flights = [...this.#fills.values()];
    for (const f of flights) f.fill?.cancel();
    await Promise.allSettled(flights.map((f) => f.done));
  }
}

/**
 * A reader of a fill still waiting for its slot: headers may already be sent (fillStartWaitMs),
 * bytes flow once the fill runs. Destroying it (client gone) before then costs nothing.
 */
function deferredReader(running: Promise<Fill>, start: number, end: number): Readable {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  // A reader may be created at any moment of a fill's life: it waits for the bytes itself.
  running.then(
    (fill) => {
      if (out.destroyed) return;
      pipeline(new GrowingFileReader(fill, start, end), out, () => undefined);
    },
    (err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return out;
}

/**
 * `task` over every item, at most `limit` at once; results in the items' order. Stops starting
 * new tasks once one failed (rethrown) or gave `null` (then the result is `null`).
 */
async function fetchAll<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R | null>): Promise<R[] | null> {
  const out: R[] = [];
  let next = 0;
  let stop = false;
  let gaveNull = false;
  const worker = async (): Promise<void> => {
    while (!stop && next < items.length) {
      const i = next++;
      try {
        const r = await task(items[i]!);
        if (r === null) {
          gaveNull = stop = true;
          return;
        }
        out[i] = r;
      } catch (err) {
        stop = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return gaveNull ? null : out;
}

/**
 * Reads exactly `length` bytes of an upstream body, then drops the connection if more is coming.
 * `exact`: the body must end there (a longer or shorter body fails); otherwise only the first
 * `length` bytes are wanted and the rest is never read.
 */
async function readBody(body: Readable, length: number, exact: boolean, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  try {
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      if (!exact && got + buf.length >= length) {
        chunks.push(buf.subarray(0, length - got));
        got = length;
        break;
      }
      got += buf.length;
      if (got > length) break;
      chunks.push(buf);
    }
  } catch (err) {
    throw fromNetworkError(err, what);
  } finally {
    discardBody(body);
  }
  if (got !== length) throw new MirrorError('UpstreamError', `Upstream sent ${got > length ? 'more than' : got} bytes for ${what}, expected ${length}`);
  return Buffer.concat(chunks);
}
