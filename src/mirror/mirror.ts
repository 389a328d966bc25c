/**
 * Mirror: `open(entry)` gives a BlobSource of the same shape whether the blob is on disk (hit),
 * being fetched by another request (joined) or fetched now (miss), so routes never branch on it
 * (the decorator of distribution's proxy blob store).
 *
 * However many requests ask for a blob at once, one Fill runs (one stream, or several ranged
 * connections for a big file); every reader goes at its own pace, from the fill's recent bytes in
 * memory or from the staging file, so a slow client never slows the fill or the others. Upstream
 * connections of all fills together are capped (ConnLimiter, `maxUpstreamConnections`), beyond
 * each running fill's first.
 *
 * Resources: at most `maxConcurrentFills` fills run at once, further
 * misses wait in a FIFO queue (joinable like a running fill; their clients wait as for a slow
 * upstream) and past `maxQueuedFills` a miss is refused at once (503 Overloaded). Before a fill is
 * admitted, the disk must hold it: free space, less `minFreeBytes`, less what admitted fills still
 * have to write (507 InsufficientStorage otherwise). Joiners, hits and bypasses are never limited.
 *
 * Replicas: a miss may be filled from another replica instead of upstream (`peerFor`, with
 * `peers`: PeerFillSource, falling back to upstream), and `peerSource` gives other replicas what
 * this one holds or is filling (the internal endpoint), never starting a fill for them.
 */
import type { Readable } from 'node:stream';
import type { ByteSpan } from '../http/byte-range.js';
import { MirrorError, isMirrorError } from '../errors.js';
import { fileUrlPath } from '../hub/repo-ref.js';
import type { BlobKey } from '../storage/blob-layout.js';
import { BlobFile, type RemoteBlob } from '../storage/blob-store.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import { orMiss, type CacheIndex } from '../storage/cache-index-contract.js';
import { discardBody, type HubClient } from '../upstream/hub-client.js';
import type { UpstreamSet } from '../upstream/upstream-set.js';
import { toEntry, type FileEntry } from '../hub/file-resolver.js';
import { DiskSpace, formatBytes } from '../storage/disk-space.js';
import { ConnLimiter } from './conn-limiter.js';
import { Fill, type FillEvent } from './fill.js';
import { FillLimiter } from './fill-limiter.js';
import { fillReader } from './fill-reader.js';
import { UpstreamFillSource } from './fill-source.js';
import { PeerFillSource } from './peer-fill-source.js';
import { ClaimingFallback } from './claiming-fallback.js';
import type { FillClaim, FillCoordinator, FillOwnership } from './fill-ownership.js';
import type { PeerClient } from '../cluster/peer-client.js';
import type { PeerSourceKind } from '../cluster/peer-protocol.js';
import { fromNetworkError, fromUpstreamStatus, headerValue } from '../upstream/upstream-errors.js';
import { bufferReader, readableReader, type BlobReader } from './blob-reader.js';
import { FileSpanReader } from './file-span-reader.js';
import { Flights, PromiseFlights } from './flights.js';
import { ReadBuffers } from './read-buffers.js';
import type { Evictor, Lease } from './eviction.js';

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
  /**
   * The caller is done with the source: what the source itself holds (a hit's open file) is let
   * go, and the blob's lease ends (it may be evicted once no reader is open either). Readers keep
   * what they use until they are closed. Idempotent; every caller of `open()` calls it once it has
   * created the readers it needs.
   */
  release(): void;
}

/**
 * Another replica that has a blob or fills it now (the owner of its fill): a miss reads from it
 * instead of upstream. `url`: the replica's base URL (its internal endpoint is below it).
 */
export interface PeerRef {
  url: URL;
}

/** What this replica can give another one of a blob (see peerSource). */
export interface PeerBlob {
  source: BlobSource;
  from: PeerSourceKind;
}

/** A fill as the dashboard shows it. */
export interface FillProgress {
  blobKey: BlobKey;
  repo: FileEntry['request']['repo'];
  path: string;
  size: number;
  /** Bytes on disk so far. */
  bytes: number;
  state: 'queued' | 'running';
  /** Readers open on it: the clients waiting for its bytes. */
  readers: number;
  admittedAt: number;
}

/** Files up to this size are verified before their response starts (bounded by the route's wait). */
const SMALL_FILE_BYTES = 1024 * 1024;
/** Upstream range requests one bypassed request runs at once (a multipart answer has up to 64 parts). */
const BYPASS_CONCURRENCY = 4;

export interface MirrorOptions {
  store: BlobStore;
  index: CacheIndex;
  /** The upstreams (one or several, in order): metadata from the first healthy, fills fail over. */
  hub: UpstreamSet;
  maxResumes: number;
  /** A connection silent this long (ms) while a reader waits at its position is replaced (see Fill); 0 or omitted: never. */
  stallMs?: number;
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
  /** Files at least this big are fetched with several ranged GETs at once (default 64 MiB). */
  segmentMinBytes?: number;
  /** Upstream connections of one segmented fill (default 8). */
  upstreamConnections?: number;
  /** Upstream body connections of all fills together, beyond each running fill's first (default 32). */
  maxUpstreamConnections?: number;
  /** `pulledBytes` (committed): what the fill took from upstream, not from another replica. */
  onFillEvent?: (event: 'started' | 'unclaimed' | FillEvent, key: BlobKey, error?: MirrorError, pulledBytes?: number) => void;
  /** A fill moved to another upstream (`to`), or a switch to `refused` was refused (why). */
  onFailover?: (key: BlobKey, detail: { to: string } | { refused: string; reason: string }) => void;
  /** The buffers readers of cached blobs read into (default: a pool with the default budget). */
  readBuffers?: ReadBuffers;
  /** The cache budget and its leases; omitted: no budget, nothing is evicted. */
  evictor?: Evictor;
  /** The pool that reads other replicas' internal endpoint (with the cluster secret); omitted: no peer fills. */
  peers?: PeerClient;
  /**
   * Asked on a miss (no local copy, no fill running here) whether another replica should be read
   * instead of upstream: the replica that owns this blob's fill. Undefined: upstream, as always.
   * Consulted only with `peers`. The caller has already checked the client's access upstream
   * (FileResolver): a peer serves any blob it has to whoever holds the cluster secret.
   */
  peerFor?: (entry: FileEntry) => PeerRef | undefined | Promise<PeerRef | undefined>;
  /**
   * The fill leases shared by the replicas (with `peers`): who fetches a blob, the fence of its
   * commit, and who takes a dead owner's fill over. Takes precedence over `peerFor`.
   */
  coordinator?: FillCoordinator;
}

/**
 * A fill admitted by the limiter: queued until a slot is free, then running. It is what the
 * flights map holds, so requests for the same blob join it whether it runs yet or not.
 */
interface FillFlight {
  readonly size: number;
  readonly entry: FileEntry;
  /** Wall-clock ms when the fill was admitted (for the dashboard). */
  readonly admittedAt: number;
  /** Readers of this fill open now: the clients waiting on it. */
  readers: number;
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
  readonly #hub: UpstreamSet;
  readonly #maxResumes: number;
  readonly #stallMs: number;
  readonly #fills = new Flights<FillFlight>((flight) => flight.done);
  readonly #limiter: FillLimiter;
  readonly #diskSpace: DiskSpace | undefined;
  readonly #slices = new PromiseFlights<Buffer | null>();
  readonly #rangeBypassMaxBytes: number;
  readonly #onFillEvent: MirrorOptions['onFillEvent'];
  readonly #onFailover: MirrorOptions['onFailover'];
  readonly #conns: ConnLimiter;
  readonly #segmentMinBytes: number;
  readonly #upstreamConnections: number;
  readonly #readBuffers: ReadBuffers;
  /** Fills running now, and the bytes received by fills that ended (for metrics). */
  readonly #running = new Set<Fill>();
  #settledFillBytes = 0;
  #settledWrittenBytes = 0;
  #bypassBytes = 0;
  readonly #evictor: Evictor | undefined;
  readonly #peers: PeerClient | undefined;
  readonly #peerFor: MirrorOptions['peerFor'];
  readonly #coordinator: FillCoordinator | undefined;

  constructor(opts: MirrorOptions) {
    this.#rangeBypassMaxBytes = opts.rangeBypassMaxBytes;
    this.#store = opts.store;
    this.#index = opts.index;
    this.#hub = opts.hub;
    this.#maxResumes = opts.maxResumes;
    this.#stallMs = opts.stallMs ?? 0;
    this.#onFillEvent = opts.onFillEvent;
    this.#onFailover = opts.onFailover;
    this.#limiter = new FillLimiter(opts.maxConcurrentFills ?? 16, opts.maxQueuedFills ?? 1000);
    this.#diskSpace = opts.diskSpace;
    this.#conns = new ConnLimiter(opts.maxUpstreamConnections ?? 32);
    this.#segmentMinBytes = opts.segmentMinBytes ?? 64 * 1024 * 1024;
    this.#upstreamConnections = opts.upstreamConnections ?? 8;
    this.#readBuffers = opts.readBuffers ?? new ReadBuffers();
    this.#evictor = opts.evictor;
    this.#peers = opts.peers;
    this.#peerFor = opts.peerFor;
    this.#coordinator = opts.coordinator;
    this.#evictor?.attach({ isFilling: (key) => this.#fills.get(key) !== undefined, reservedBytes: () => this.#unstoredBytes() });
  }

  /** Whether the blob is verified and on disk (for HEAD's cache status; no I/O beyond the index). */
  async isCached(key: BlobKey): Promise<boolean> {
    return (await orMiss(() => this.#index.getBlob(key))) !== undefined;
  }

  /**
   * @param spans the bytes the caller will read, when it is a Range request (one span, or the
   *   parts of a multipart answer, pairwise disjoint): on a cold blob, parts that add up to at
   *   most `rangeBypassMaxBytes` are fetched upstream as ranges instead of starting a fill.
   * @param auth credentials already granted by upstream for this file (used for the upstream GET).
   */
  async open(entry: FileEntry, auth: string | undefined, spans?: readonly ByteSpan[]): Promise<BlobSource> {
    return this.#leased(entry.blobKey, () => this.#open(entry, auth, spans, false));
  }

  /**
   * What `open` finds, under the blob's eviction lease: taken (once any eviction of the blob is
   * over) before the index is asked, held until the caller releases the source and while any of
   * its readers is open, so a blob found on disk stays there until read. Nothing found (null): the
   * lease ends at once. Without an evictor: `open()` alone.
   */
  async #leased<S extends BlobSource | null>(key: BlobKey, open: () => Promise<S>): Promise<S> {
    const evictor = this.#evictor;
    if (!evictor) return open();
    for (let p = evictor.evicting(key); p; p = evictor.evicting(key)) await p;
    const lease = evictor.lease(key);
    let source: S;
    try {
      source = await open();
    } catch (err) {
      lease.release();
      throw err;
    }
    if (source === null) {
      lease.release();
      return source;
    }
    const found: BlobSource = source;
    return {
      size: found.size,
      cacheStatus: found.cacheStatus,
      ready: found.ready,
      createReader: (start, end) => leasedReader(found.createReader(start, end), evictor.lease(key)),
      release: () => {
        found.release();
        lease.release();
      },
    } as S;
  }

  /** `rangesIgnored`: upstream just answered a Range of this file with the whole body (the fill asks for none). */
  async #open(entry: FileEntry, auth: string | undefined, spans: readonly ByteSpan[] | undefined, rangesIgnored: boolean): Promise<BlobSource> {
    const key = entry.blobKey;
    const running = this.#fills.get(key);
    if (!running) {
      const hit = await this.#openHit(entry);
      if (hit) return hit;
    }
    if (!running && spans && spans.length > 0) {
      const wanted = spans.reduce((n, s) => n + s.end - s.start + 1, 0);
      if (wanted <= this.#rangeBypassMaxBytes && wanted < entry.size) {
        const bypass = await this.#bypass(entry, auth, spans);
        // Upstream ignored Range for bytes far into the file: fetch the whole file the usual way.
        return bypass ?? this.#open(entry, auth, undefined, true);
      }
    }
    // A new fill must fit on the disk (joining one needs nothing more). The check awaits statfs:
    // whoever started this blob's fill meanwhile is joined below instead.
    if (!this.#fills.get(key) && (this.#diskSpace || this.#evictor)) {
      let available = await this.#checkSpace(entry);
      // Admission below is synchronous with this last check: misses admitted while this one
      // awaited its check count now, so two never share the same room.
      while (!this.#fills.get(key) && this.#deficit(entry, available) > 0) available = await this.#checkSpace(entry);
    }
    const { value: flight, joined } = this.#fills.run(key, () => this.#admit(entry, auth, rangesIgnored));
    if (flight.fill?.state === 'committed') {
      const file = await this.#store.openBlob(key, entry.size);
      if (file) return this.#hit(key, entry.size, file);
    }
    if (entry.size === 0) await flight.done; // nothing to hold back: wait for the verification
    // Small files are worth waiting for whole: a bad body then becomes a clean error response.
    return this.#fillSource(flight, joined ? 'joined' : 'miss', entry.size <= SMALL_FILE_BYTES ? flight.done : flight.running.then((fill) => fill.started));
  }

  /** Readers of `flight`'s bytes as they become durable (the last one after the verification). */
  #fillSource(flight: FillFlight, cacheStatus: CacheStatus, ready: Promise<void>): BlobSource {
    return {
      size: flight.size,
      cacheStatus,
      ready,
      createReader: (start, end) => counted(flight, fillReader(flight.fill ?? flight.running, start, end, this.#readBuffers)),
      release: () => undefined,
    };
  }

  /**
   * Admits a new fill only when it fits: within the cache budget (stored bytes, plus what admitted
   * fills still have to write, plus this fill) and on the disk (the same, plus `minFreeBytes`,
   * must be free). What does not fit is made room for by evicting blobs nobody uses (leases: see
   * eviction.ts); 507 only when nothing evictable is left. When free space cannot be read, the disk
   * part is skipped (ENOSPC would still fail the fill cleanly).
   */
  async #checkSpace(entry: FileEntry): Promise<number> {
    for (;;) {
      let available = Infinity;
      if (this.#diskSpace) {
        try {
          available = await this.#diskSpace.available();
        } catch {
          // unknown: only the budget is checked
        }
      }
      if (this.#fills.get(entry.blobKey)) return available; // started meanwhile: joining costs no space
      const reserved = this.reservedBytes;
      const minFree = this.#diskSpace?.minFreeBytes ?? 0;
      const overDisk = entry.size + reserved + minFree - available;
      const overBudget = this.#evictor ? entry.size - this.#evictor.headroom() : -Infinity;
      const deficit = this.#deficit(entry, available);
      if (deficit <= 0) return available;
      // Freed bytes may not show as free space (a hard-linked blob): then the loop evicts more.
      if (this.#evictor && (await this.#evictor.evict(deficit)) > 0) continue;
      if (this.#fills.get(entry.blobKey)) return available;
      const what = `${entry.request.path} (${formatBytes(entry.size)})`;
      if (overBudget >= overDisk && this.#evictor) {
        throw new MirrorError(
          'InsufficientStorage',
          `The mirror's cache is full for ${what}: ${formatBytes(this.#evictor.budgetBytes)} budget (maxCacheBytes), ${formatBytes(this.#evictor.usedBytes())} stored, ` +
            `${formatBytes(reserved)} promised to downloads in progress, and every stored file is in use`,
        );
      }
      throw new MirrorError(
        'InsufficientStorage',
        `Not enough free space in the mirror's cache for ${what}: ` +
          `${formatBytes(available)} free, ${formatBytes(reserved)} promised to downloads in progress, ${formatBytes(minFree)} kept free (minFreeBytes)${this.#evictor ? ', and nothing left to evict' : ''}`,
      );
    }
  }

  /** Bytes a new fill of `entry` lacks, on the disk (`available` free) or in the budget; <= 0: it fits. */
  #deficit(entry: FileEntry, available: number): number {
    const overDisk = entry.size + this.reservedBytes + (this.#diskSpace?.minFreeBytes ?? 0) - available;
    const overBudget = this.#evictor ? entry.size - this.#evictor.headroom() : -Infinity;
    return Math.max(overDisk, overBudget);
  }

  /**
   * Who fetches a blob no fill here has: with replicas, the fill leases (coordinator) or the
   * test hook `peerFor`; else this replica, from upstream. The claim is made inside the flight,
   * so every request of this process for the blob shares it, and another replica asking this one
   * for the blob meanwhile finds the flight (and waits for its bytes) instead of a 404.
   */
  async #claim(entry: FileEntry): Promise<FillClaim | undefined> {
    if (!this.#peers) return undefined;
    if (this.#coordinator) {
      try {
        return await this.#coordinator.claim(entry.blobKey);
      } catch (err) {
        // Leases unreadable (database down): fetch it here, without a lease; at worst another
        // replica fetches it too. Serving beats waiting for the database.
        this.#onFillEvent?.('unclaimed', entry.blobKey, isMirrorError(err) ? err : new MirrorError('UpstreamUnavailable', (err as Error).message));
        return undefined;
      }
    }
    const peer = this.#peerFor ? await this.#peerFor(entry) : undefined;
    return peer ? { owner: 'peer', url: peer.url, token: undefined } : undefined;
  }

  /** Starts the fill now if a slot is free, else queues it (throws Overloaded when the queue is full). */
  #admit(entry: FileEntry, auth: string | undefined, rangesIgnored: boolean): FillFlight {
    const key = entry.blobKey;
    let started: Fill | undefined;
    const start = (claim: FillClaim | undefined): Fill => {
      this.#onFillEvent?.('started', key);
      const upstreamPath = fileUrlPath({ ...entry.request, revision: entry.commit });
      const onRefused = (upstream: string, reason: string): void => this.#onFailover?.(key, { refused: upstream, reason });
      const upstream = (): UpstreamFillSource =>
        new UpstreamFillSource({ upstreams: this.#hub, path: upstreamPath, auth, size: entry.size, sameBlob: (client) => sameBlob(client, entry, auth), onRefused });
      const peers = this.#peers;
      const ownership: FillOwnership = { fence: claim?.owner === 'self' ? claim.fence : undefined };
      const coordinator = this.#coordinator;
      const fromPeer = (url: URL, token: bigint | undefined): PeerFillSource =>
        new PeerFillSource({
          client: peers!,
          peer: url,
          key,
          size: entry.size,
          onRefused,
          // With leases, a dead peer's fill is claimed again (one replica takes it over); else upstream.
          fallback: coordinator ? () => new ClaimingFallback({ coordinator, key, failedToken: token, ownership, upstream, peer: fromPeer }) : upstream,
        });
      const peer = claim?.owner === 'peer' && peers ? claim : undefined;
      const fill = Fill.start(
        { key, size: entry.size },
        {
          store: this.#store,
          index: this.#index,
          ownership,
          peerCopy: peer !== undefined,
          source: peer ? fromPeer(peer.url, peer.token) : upstream(),
          maxResumes: this.#maxResumes,
          stallMs: this.#stallMs,
          speedFloor: this.#hub.bodySpeedFloor,
          conns: this.#conns,
          upstreamConnections: this.#upstreamConnections,
          // From a peer: one stream (plus demand ranges), never segments. The owner's fill already
          // decides how upstream is fetched; segments asked of it would become demand on its fill,
          // i.e. upstream connections it did not plan.
          segmentMinBytes: peer && peers ? Number.POSITIVE_INFINITY : this.#segmentMinBytes,
          rangesIgnored,
          onEvent: (event, f, error) => {
            if (event === 'failover') this.#onFailover?.(f.key, { to: f.upstream });
            this.#onFillEvent?.(event, f.key, error, event === 'committed' ? f.upstreamBytes : undefined);
          },
        },
      );
      started = fill;
      this.#running.add(fill);
      const release = (): void => {
        this.#running.delete(fill);
        this.#settledFillBytes += fill.upstreamBytes;
        this.#settledWrittenBytes += fill.bytesWritten;
        this.#limiter.release();
      };
      fill.done.then(release, release);
      // A stored blob may have crossed the high-water mark.
      if (this.#evictor) fill.done.then(() => this.#evictor?.check(), () => undefined);
      return fill;
    };
    // A free slot starts the fill now; else `start` runs when a slot is handed over. With replicas
    // the lease is claimed first (with the slot held: a fill whose turn came is the one claiming).
    const claimThenStart = (): Fill | Promise<Fill> => (this.#peers ? this.#claim(entry).then(start) : start(undefined));
    const running = this.#limiter.tryAcquire() ? Promise.resolve(claimThenStart()) : this.#limiter.wait().then(claimThenStart);
    const done = running.then((fill) => fill.done);
    running.catch(() => undefined);
    done.catch(() => undefined);
    return {
      size: entry.size,
      entry,
      admittedAt: Date.now(),
      readers: 0,
      get fill() {
        return started;
      },
      running,
      done,
    };
  }

  /**
   * Free space admitted fills (running or queued) will still take: what they have left to write,
   * nothing for a fill whose staging file is preallocated (statfs already counts it).
   */
  get reservedBytes(): number {
    let n = 0;
    for (const f of this.#fills.values()) n += f.fill ? f.fill.reservedBytes : f.size;
    return n;
  }

  /** Upstream body connections of fills open now. */
  get upstreamConnections(): number {
    return this.#conns.active;
  }

  /**
   * Bytes admitted fills (running or queued) will add to the stored blobs: the whole size of each
   * until its blob is recorded (the written bytes are on disk too, in the staging file or already
   * renamed into place).
   */
  #unstoredBytes(): number {
    let n = 0;
    for (const f of this.#fills.values()) if (f.fill?.state !== 'committed') n += f.size;
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
      release: () => undefined,
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
      this.#bypassBytes += head.length;
      return head.subarray(span.start);
    }
    if (res.statusCode !== 206) fail(`status ${res.statusCode}`);
    if (contentRange !== `bytes ${span.start}-${span.end}/${entry.size}`) fail(`Content-Range ${contentRange ?? '(none)'}`);
    if (contentLength !== undefined && Number(contentLength) !== want) fail(`Content-Length ${contentLength}`);
    const bytes = await readBody(res.body, want, true, `${asked} of ${entry.request.path}`);
    this.#bypassBytes += bytes.length;
    return bytes;
  }

  /**
   * The cached blob, opened, or `null` when the index has none. A file the disk lost or that has
   * another size (removed or cut short behind the mirror's back), or a row of another size, is
   * forgotten and `null` returned, so this request fetches it again.
   */
  async #openHit(entry: FileEntry): Promise<BlobSource | null> {
    const key = entry.blobKey;
    const row = await orMiss(() => this.#index.getBlob(key));
    if (!row) return null;
    const file = row.size === entry.size ? await this.#store.openBlob(key, entry.size) : null;
    if (!file) {
      await this.#index.forgetBlob(key);
      return null;
    }
    this.#index.touchBlob(key);
    return this.#hit(key, entry.size, file);
  }

  #hit(key: BlobKey, size: number, file: BlobFile | RemoteBlob): BlobSource {
    let closed = false;
    return {
      size,
      cacheStatus: 'hit',
      ready: Promise.resolve(),
      // A local file (always with fs): positional reads in recycled buffers. A file shorter than
      // recorded was truncated behind our back: forget it (the next request refetches). Without a
      // local copy (s3): ranged reads from the object store.
      createReader: (start, end) =>
        file instanceof BlobFile ? new FileSpanReader(file, start, end, this.#readBuffers, () => void this.#index.forgetBlob(key).catch(() => undefined)) : readableReader(file.openRead(start, end)),
      release: () => {
        if (closed) return;
        closed = true;
        file.release();
      },
    };
  }

  /**
   * What this replica can give another replica of a blob, by key alone: the stored blob, else
   * the fill of it admitted here (running, or queued for a slot: its readers wait as clients do,
   * and get its bytes as they become durable, the last one only after the verification), else
   * `null`. Never starts a fill, never asks upstream: the asking replica must not wait on a
   * replica that does not have the blob. The access check is the asking replica's (it resolved
   * the file for its client upstream); this serves any blob to whoever the route let in.
   * The caller releases the source once it has created its readers, as with open().
   */
  async peerSource(key: BlobKey): Promise<PeerBlob | null> {
    let from: PeerSourceKind = 'stored';
    const source = await this.#leased(key, async () => {
      const found = await this.#peerSource(key);
      if (found) from = found.from;
      return found?.source ?? null;
    });
    return source ? { source, from } : null;
  }

  async #peerSource(key: BlobKey): Promise<PeerBlob | null> {
    const flight = this.#fills.get(key);
    if (flight) {
      // Nothing to hold back in an empty blob: it is given once verified.
      if (flight.size === 0) await flight.done.catch(() => undefined);
      if (flight.fill?.state === 'committed') {
        const file = await this.#store.openBlob(key, flight.size);
        if (file) return { from: 'stored', source: this.#hit(key, flight.size, file) };
      }
      if (flight.fill?.state === 'failed' || (flight.size === 0 && flight.fill?.state !== 'committed')) return null;
      const ready = flight.running.then((fill) => fill.started);
      ready.catch(() => undefined); // the readers report a failure; a caller need not wait for this
      return { from: 'filling', source: this.#fillSource(flight, 'joined', ready) };
    }
    const row = await orMiss(() => this.#index.getBlob(key));
    if (!row) return null;
    const file = await this.#store.openBlob(key, row.size);
    return file ? { from: 'stored', source: this.#hit(key, row.size, file) } : null;
  }

  /** The hit readers' buffer pool (for metrics and tests). */
  get readBuffers(): ReadBuffers {
    return this.#readBuffers;
  }

  /** Fills admitted: running or queued (for health and metrics). */
  get activeFills(): number {
    return this.#fills.size;
  }

  /** Fills waiting for a slot. */
  get queuedFills(): number {
    return this.#limiter.queued;
  }

  /** Fills running now (admitted fills that have a slot). */
  get runningFills(): number {
    return this.#running.size;
  }

  /**
   * Body bytes received from upstream since start: by fills (running ones up to now; on disk, so
   * a resume never counts a byte twice) and by range bypasses; and `written`, what fills wrote to
   * the cache, bytes streamed from another replica included.
   */
  get upstreamFileBytes(): { fill: number; bypass: number; written: number } {
    let fill = this.#settledFillBytes;
    let written = this.#settledWrittenBytes;
    for (const f of this.#running) {
      fill += f.upstreamBytes;
      written += f.bytesWritten;
    }
    return { fill, bypass: this.#bypassBytes, written };
  }

  /** Every admitted fill, running or queued, in admission order (for the dashboard). */
  fillProgress(): FillProgress[] {
    return [...this.#fills.values()].map((f) => ({
      blobKey: f.entry.blobKey,
      repo: f.entry.request.repo,
      path: f.entry.request.path,
      size: f.size,
      bytes: f.fill?.bytesWritten ?? 0,
      state: f.fill ? 'running' : 'queued',
      readers: f.readers,
      admittedAt: f.admittedAt,
    }));
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

/** Whether `client` names the same blob (digest and size) for the entry's file at its commit. */
async function sameBlob(client: HubClient, entry: FileEntry, auth: string | undefined): Promise<boolean> {
  const req = { ...entry.request, revision: entry.commit };
  const other = toEntry(req, await client.headFile(req, auth));
  return other.blobKey === entry.blobKey && other.size === entry.size;
}

/** `reader`, counted among the fill's readers while it is open. */
function counted(flight: FillFlight, reader: BlobReader): BlobReader {
  flight.readers++;
  let open = true;
  return {
    next: () => reader.next(),
    release: (chunk) => reader.release(chunk),
    close: () => {
      if (open) {
        open = false;
        flight.readers--;
      }
      reader.close();
    },
  };
}

/** A reader that holds a lease on its blob until it is closed. */
function leasedReader(reader: BlobReader, lease: Lease): BlobReader {
  return {
    next: () => reader.next(),
    release: (chunk) => reader.release(chunk),
    close: () => {
      reader.close();
      lease.release();
    },
  };
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
