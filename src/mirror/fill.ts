/**
 * Fill: the one upstream download of a blob, shared by every client that wants it.
 *
 * Lifecycle: planning → filling → verifying → committed | failed. The fill belongs to no client:
 * it has its own AbortController and timeouts, and runs to the end even when every reader has
 * gone, so the next request is a hit.
 *
 * Connections. A file of at least `segmentMinBytes` whose upstream honours ranges and names its
 * version with a strong ETag is fetched by up to `upstreamConnections` ranged GETs at once, into
 * one staging file (SegmentPlan decides who fetches what); anything else is one stream, exactly
 * as a plain GET. The first request (`Range: bytes=0-(segment-1)` for a big file, no Range
 * otherwise) follows the redirect and fixes the CDN URL, the validator and the mode; later
 * requests carry `Range` + `If-Range` and must be answered with a 206 of exactly the bytes asked
 * for and the same ETag, else the fill fails (never a splice of two versions). Every connection
 * beyond the fill's first takes a slot of the global ConnLimiter. A reader waiting for bytes no
 * connection is about to fetch gets them fetched next (demand first; up to DEMAND_CONNECTIONS
 * beyond `upstreamConnections` for such readers), in single-stream fills too when ranges work.
 *
 * Resumes. A connection that drops, stalls (no byte for the idle timeout) or trickles (below
 * `upstreamMinBytesPerSecond` over that window) is resumed at its own offset with `Range` +
 * `If-Range`, at most `maxResumes` times per connection; then the fill fails cleanly. 429/5xx
 * answers are retried by the HubClient (Retry-After, backoff with jitter). Sooner than the idle
 * timeout, a connection silent for `stallMs` while a reader waits at its position is taken over:
 * a new ranged request fetches the rest of its span and the silent one is closed.
 *
 * Writes. Each connection keeps the chunks it receives as they are (no copy) and writes them as one
 * vectored write at its offset once 4 MiB are pending or 20 ms after the first pending byte (and at
 * the end of its span); past its share of the fill's buffer budget it stops reading (backpressure).
 * After a write completes, its chunks join the fill's in-memory window, readers whose position is
 * now readable are woken in one pass, and the staged blob's hash advances over the contiguous
 * prefix (in a worker thread).
 *
 * Invariants:
 * - Readers get only bytes whose write completed, and never the last byte before the digest is
 *   verified: a full-body reader cannot complete on wrong bytes (it is cut short instead).
 * - Upstream sends each byte about once: spans never overlap; a split or a demand jump only
 *   wastes what upstream had already sent past the point where a connection stops.
 * - On failure the staging file is removed before anyone learns of it, and nothing reaches the
 *   index.
 */
import { setMaxListeners } from 'node:events';
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { MirrorError, isMirrorError } from '../errors.js';
import type { Interval } from '../model/span-set.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { crashPoint } from '../storage/crash-points.js';
import type { StagedBlob } from '../storage/staged-blob.js';
import { discardBody, type BodySpeedFloor, type UpstreamBody } from '../upstream/hub-client.js';
import { fromNetworkError, fromUpstreamStatus, headerValue, isUnhealthy } from '../upstream/upstream-errors.js';
import type { ConnGrant, ConnLimiter } from './conn-limiter.js';
import type { FillSource } from './fill-source.js';
import type { FillOwnership } from './fill-ownership.js';
import { SegmentPlan, segmentSize, type Claim, type Work } from './segment-plan.js';

export type FillState = 'planning' | 'filling' | 'verifying' | 'committed' | 'failed';
export type FillEvent = 'committed' | 'failed' | 'resumed' | 'split' | 'takeover' | 'failover' | 'fenced';

const MiB = 1024 * 1024;
/** A connection writes once this much is pending... */
const BATCH_BYTES = 4 * MiB;
/** ...or this long after the first pending byte. */
const BATCH_MS = 20;
/** Memory a fill's connections may hold unwritten, together (each at least one batch). */
const FILL_BUFFER_BYTES = 32 * MiB;
/** Recently written chunks kept for readers at the head (one copy in memory, many sockets). */
const WINDOW_BYTES = 16 * MiB;
/**
 * Connections a fill may open beyond its mode's (`upstreamConnections`, or 1) for readers waiting
 * where no connection will be soon. More than one: a demand connection fetches a whole span (up to
 * a segment) and keeps it after its reader is gone, so with a single extra one a second reader
 * (a suffix read beside a resume at 60 %) waited until some connection finished its span: 3.5 s of
 * silence at 16 MiB/s per connection, measured by the bench. Each waiting position gets at most one
 * (once a claim holds it, the plan says wait), and the global cap still applies.
 */
const DEMAND_CONNECTIONS = 4;
/** How often each connection's rate is sampled (demand decisions). */
const RATE_SAMPLE_MS = 250;

export interface FillRequest {
  key: BlobKey;
  size: number;
}

export interface FillDeps {
  store: BlobStore;
  index: CacheIndex;
  source: FillSource;
  /** Resumes allowed per connection before the fill fails. */
  maxResumes: number;
  /** Slowest body accepted before it counts as stalled, if any. */
  speedFloor?: BodySpeedFloor | undefined;
  /**
   * A connection silent this long (ms; 0 or omitted: never) while a reader waits at its position
   * is replaced by a new ranged request from where it stopped (see SegmentPlan.demandFor), rather
   * than leaving the reader silent until the idle timeout.
   */
  stallMs?: number;
  /** Global cap on upstream connections; omitted: no cap beyond the fill's own. */
  conns?: ConnLimiter | undefined;
  /** Connections of a segmented fill (default 8). */
  upstreamConnections?: number;
  /** Files at least this big are fetched in segments (default 64 MiB). */
  segmentMinBytes?: number;
  /** Upstream is known to ignore Range for this file: one plain stream, no demand requests. */
  rangesIgnored?: boolean;
  /**
   * With replicas sharing the index: the fill's lease (fill-ownership.ts), when it holds one. Its
   * progress is published as bytes land; it is confirmed before the index write (a fill whose
   * lease was taken over still hands its verified bytes to its readers, but records nothing:
   * the new owner does), finished after it, released on failure.
   */
  ownership?: FillOwnership;
  /** The source is another replica storing the same blob in the shared store (see StageOptions). */
  peerCopy?: boolean;
  onEvent?: (event: FillEvent, fill: Fill, error?: MirrorError) => void;
}

/** What a reader needs from a fill (see fill-reader.ts). */
export interface FillView {
  readonly size: number;
  readonly state: FillState;
  readonly failure: MirrorError | undefined;
  readonly finalPath: string;
  /** Settles when the fill is committed (resolves) or failed (rejects). */
  readonly done: Promise<void>;
  /** End (exclusive) of the bytes readable now from `pos` on (`pos` itself when none are). */
  readableEnd(pos: number): number;
  /** A zero-copy view of readable bytes at `pos` (at most up to `limit`), if they are in memory. */
  slice(pos: number, limit: number): Buffer | null;
  /** Reads readable bytes from the staging file; rejects once it is closed (committed or failed). */
  read(buf: Buffer, pos: number, length: number): Promise<number>;
  /** Resolves at the next change that may concern `pos` (bytes landed, commit, failure). */
  wait(pos: number): { changed: Promise<void>; cancel: () => void };
}

interface Waiter {
  pos: number;
  token: number;
  wake: () => void;
}

interface WindowEntry {
  offset: number;
  buf: Buffer;
}

/** An error that means "this answer cannot be used" without saying anything about the file. */
class RangesUnsupported extends Error {}

export class Fill implements FillView {
  readonly key: BlobKey;
  readonly size: number;
  readonly finalPath: string;
  readonly #deps: FillDeps;
  readonly #plan: SegmentPlan;
  readonly #connections: number;
  readonly #bufferPerConnection: number;
  #state: FillState = 'planning';
  /** Bytes written that came from another replica (see FillSource.fromPeer). */
  #peerBytes = 0;
  #failure: MirrorError | undefined;
  /** The first fatal error, before it is announced (the staging file is removed first). */
  #fatal: MirrorError | undefined;
  #staged: StagedBlob | null = null;
  #validator: string | undefined;
  /** Upstream switches so far: an answer opened before the last switch came from the previous upstream. */
  #epoch = 0;
  /** Just switched upstream: the next answer of the new one names its validator. */
  #adoptValidator = false;
  #switching: Promise<boolean> | null = null;
  readonly #abort = new AbortController();
  readonly #workers = new Set<Connection>();
  #base: ConnGrant | null = null;
  #baseInUse = false;
  #spare: ConnGrant[] = [];
  #pendingConn: { cancel: () => void } | null = null;
  readonly #waiters = new Set<Waiter>();
  #window: WindowEntry[] = [];
  #windowBytes = 0;
  #settleWorkers: Array<() => void> = [];
  #complete: (() => void) | null = null;
  /** Resolves when upstream has answered with the body (2xx); rejects if the fill fails first. */
  readonly started: Promise<void>;
  #done: Promise<void> = Promise.resolve();
  #resolveStarted!: () => void;
  #rejectStarted!: (err: MirrorError) => void;

  private constructor(req: FillRequest, deps: FillDeps) {
    this.key = req.key;
    this.size = req.size;
    this.finalPath = deps.store.pathOf(req.key);
    this.#deps = deps;
    this.#connections = Math.max(1, deps.upstreamConnections ?? 8);
    this.#bufferPerConnection = Math.max(BATCH_BYTES, Math.floor(FILL_BUFFER_BYTES / this.#connections));
    // Every upstream request of the fill (and its backoff pause) listens on this one signal, plus
    // the fill itself: past Node's default of 10, a fill of 8 connections with demand GETs printed
    // a "possible memory leak" warning. The bound is what the fill can have open at once.
    setMaxListeners(this.#connections + DEMAND_CONNECTIONS + 2, this.#abort.signal);
    this.#plan = new SegmentPlan({ size: req.size, connections: this.#connections, segmentBytes: segmentSize(req.size, this.#connections), maxTakeovers: deps.maxResumes });
    this.started = new Promise<void>((resolve, reject) => {
      this.#resolveStarted = resolve;
      this.#rejectStarted = reject;
    });
    // Callers may never look at these; keep unhandled-rejection noise away.
    this.started.catch(() => undefined);
  }

  /** Starts a fill; it runs on its own until committed or failed. */
  static start(req: FillRequest, deps: FillDeps): Fill {
    const fill = new Fill(req, deps);
    fill.#done = fill.#run();
    fill.#done.catch(() => undefined);
    return fill;
  }

  /** Settles when the fill is committed (resolves) or failed (rejects). */
  get done(): Promise<void> {
    return this.#done;
  }

  get state(): FillState {
    return this.#state;
  }

  get failure(): MirrorError | undefined {
    return this.#failure;
  }

  /** Bytes written to the staging file so far. */
  get bytesWritten(): number {
    return this.#plan.covered.size;
  }

  /** Of those, the bytes that came from upstream (not from another replica). */
  get upstreamBytes(): number {
    return this.#plan.covered.size - this.#peerBytes;
  }

  /** Free space this fill will still take (nothing once its file is preallocated). */
  get reservedBytes(): number {
    if (this.#state === 'committed' || this.#state === 'failed') return 0;
    return this.#staged?.preallocated ? 0 : this.size - this.bytesWritten;
  }

  /** Upstream connections open now. */
  get connections(): number {
    return this.#workers.size;
  }

  /** Stops the fill (shutdown); readers get the error. */
  cancel(reason = 'mirror shutting down'): void {
    this.#fatalError(new MirrorError('UpstreamUnavailable', reason));
  }

  // ------------------------------------------------------------------ reader side (FillView)

  readableEnd(pos: number): number {
    if (this.#state === 'committed') return this.size;
    // Failing (even before it is announced): no byte goes out any more.
    if (this.#state === 'failed' || this.#fatal || !this.#staged) return pos;
    // Hold back the last byte until the digest is verified.
    return Math.min(this.#plan.covered.coveredEnd(pos), this.size - 1);
  }

  slice(pos: number, limit: number): Buffer | null {
    if (this.#fatal) return null;
    for (const e of this.#window) {
      if (e.offset <= pos && pos < e.offset + e.buf.length) {
        return e.buf.subarray(pos - e.offset, Math.min(e.buf.length, limit - e.offset));
      }
    }
    return null;
  }

  #clearWindow(): void {
    this.#window = [];
    this.#windowBytes = 0;
  }

  read(buf: Buffer, pos: number, length: number): Promise<number> {
    if (!this.#staged) return Promise.reject(new Error('no staging file yet'));
    return this.#staged.read(buf, pos, length);
  }

  wait(pos: number): { changed: Promise<void>; cancel: () => void } {
    let resolve!: () => void;
    const changed = new Promise<void>((r) => (resolve = r));
    const cancel = (): void => {
      if (this.#waiters.delete(waiter)) this.#plan.forget(waiter.token);
    };
    const waiter: Waiter = {
      pos,
      token: 0,
      wake: () => {
        cancel();
        resolve();
      },
    };
    if (this.#state === 'committed' || this.#state === 'failed' || this.readableEnd(pos) > pos) {
      resolve();
      return { changed, cancel };
    }
    waiter.token = this.#plan.want(pos);
    this.#waiters.add(waiter);
    // Only a reader no connection is about to serve changes the schedule.
    if (this.#state === 'filling' && typeof this.#plan.demandFor(pos) !== 'string') this.#schedule();
    return { changed, cancel };
  }

  /** Wakes waiters whose position became readable (`all`: every one, the state changed). */
  #wake(all: boolean): void {
    for (const w of [...this.#waiters]) if (all || this.readableEnd(w.pos) > w.pos) w.wake();
  }

  // ------------------------------------------------------------------ lifecycle

  async #run(): Promise<void> {
    try {
      if (this.#deps.conns) this.#base = this.#deps.conns.base();
      this.#staged = await this.#deps.store.stage(this.key, this.size, this.#deps.peerCopy ? { peerCopy: true } : {});
      this.#throwIfFatal();
      this.#state = 'filling';
      this.#wake(true); // readers created before the staging file existed can open it now
      const complete = new Promise<void>((resolve) => (this.#complete = resolve));
      const failed = new Promise<never>((_, reject) => this.#abort.signal.addEventListener('abort', () => reject(this.#fatal ?? new Error('fill aborted')), { once: true }));
      failed.catch(() => undefined);
      this.#startFirst();
      await Promise.race([complete, failed]);
      await this.#workersSettled();
      this.#throwIfFatal();
      this.#state = 'verifying';
      await this.#staged.commit();
      const fence = this.#deps.ownership?.fence;
      // A database that cannot answer the fence counts as "still ours": the blob is verified
      // either way, and the index write waits with the other deferred writes.
      if (!fence || (await fence.confirm().catch(() => true))) {
        await this.#deps.index.recordBlob(this.key, this.size);
        crashPoint('after-index-commit');
        await fence?.finish().catch(() => undefined); // an unfinished lease expires: waiters then find the row
      } else {
        this.#deps.onEvent?.('fenced', this);
      }
      this.#state = 'committed';
      this.#resolveStarted();
      this.#deps.onEvent?.('committed', this);
      this.#wake(true);
      this.#staged.dispose();
      this.#clearWindow();
    } catch (err) {
      const failure = this.#fatal ?? (isMirrorError(err) ? err : fromNetworkError(err, `blob ${this.key}`));
      this.#fatalError(failure);
      await this.#workersSettled();
      // Remove the staging file before anyone can observe the failure.
      await this.#staged?.abort();
      this.#clearWindow();
      this.#failure = failure;
      this.#state = 'failed';
      void this.#deps.ownership?.fence?.release().catch(() => undefined);
      this.#rejectStarted(failure);
      this.#deps.onEvent?.('failed', this, failure);
      this.#wake(true);
      throw failure;
    } finally {
      this.#pendingConn?.cancel();
      this.#pendingConn = null;
      for (const g of this.#spare.splice(0)) g.release();
      this.#base?.release();
      this.#base = null;
    }
  }

  #throwIfFatal(): void {
    if (this.#fatal) throw this.#fatal;
  }

  /** Records the first fatal error and stops every connection. */
  #fatalError(err: MirrorError): void {
    if (this.#fatal) return;
    this.#fatal = err;
    this.#abort.abort(err);
  }

  #workersSettled(): Promise<void> {
    if (this.#workers.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#settleWorkers.push(resolve));
  }

  // ------------------------------------------------------------------ scheduling

  /** The first request: it decides between one stream and segments. */
  #startFirst(): void {
    const segmented = this.size >= (this.#deps.segmentMinBytes ?? 64 * MiB) && this.#connections > 1 && !this.#deps.rangesIgnored;
    const first = segmented ? segmentSize(this.size, this.#connections) : this.size;
    const claim = this.#plan.claim(0, Math.min(first, this.size));
    this.#baseInUse = true;
    this.#launch(claim, { release: () => (this.#baseInUse = false) }, segmented ? 'segment' : 'whole');
  }

  /**
   * Starts connections for whatever work the plan has, within the fill's limit (the mode's
   * connections, plus DEMAND_CONNECTIONS for demand work) and the global cap. Called whenever
   * something changed.
   */
  #schedule(): void {
    if (this.#state !== 'filling' || this.#fatal) return;
    for (;;) {
      if (this.#plan.complete) break;
      const work = this.#plan.next();
      if (!work) break;
      const limit = (this.#plan.segmented ? this.#connections : 1) + (work.demand ? DEMAND_CONNECTIONS : 0);
      if (this.#workers.size >= limit) break;
      const grant = this.#grant(work.demand);
      if (!grant) break;
      const claim = this.#plan.take(work);
      if (!claim) {
        this.#spare.push(grant);
        continue;
      }
      if (work.victim) this.#deps.onEvent?.(work.victim.stalled ? 'takeover' : 'split', this);
      this.#launch(claim, grant, 'range');
    }
    const more = this.#plan.complete ? null : this.#plan.next();
    // Connections granted but not needed go back.
    if (more === null) for (const g of this.#spare.splice(0)) g.release();
    this.#checkProgress(more);
  }

  /** A connection for new work: the fill's own if idle, a spare, a free global slot, or null (one is asked for). */
  #grant(demand: boolean): ConnGrant | null {
    if (this.#base && !this.#baseInUse) {
      this.#baseInUse = true;
      return { release: () => (this.#baseInUse = false) };
    }
    if (!this.#deps.conns) {
      if (!this.#base) return { release: () => undefined };
      return null;
    }
    const spare = this.#spare.pop();
    if (spare) return spare;
    const now = this.#deps.conns.tryAcquire();
    if (now) return now;
    if (!this.#pendingConn) {
      const req = this.#deps.conns.acquire(demand);
      this.#pendingConn = req;
      void req.granted.then((grant) => {
        if (this.#pendingConn === req) this.#pendingConn = null;
        if (this.#state !== 'filling' || this.#fatal) grant.release();
        else {
          this.#spare.push(grant);
          this.#schedule();
        }
      });
    }
    return null;
  }

  /** Done when every byte is written; failed when nothing runs and nothing can fetch what is left. */
  #checkProgress(next: Work | null): void {
    if (this.#plan.complete) {
      if (this.#workers.size === 0) this.#complete?.();
      return;
    }
    if (this.#workers.size === 0 && !this.#pendingConn && next === null) {
      this.#fatalError(new MirrorError('UpstreamError', `Upstream stopped answering ranges of ${this.key} before the fill was complete`));
    }
  }

  #launch(claim: Claim, grant: ConnGrant, kind: 'whole' | 'segment' | 'range'): void {
    const conn = new Connection(this, claim);
    this.#workers.add(conn);
    void this.#fetch(conn, kind)
      .then(
        () => this.#plan.release(claim),
        (err: unknown) => {
          if (err instanceof RangesUnsupported && !this.#fatal) {
            // This answer ignored Range: stop asking for ranges; what the connection had is given back.
            this.#plan.ranged = false;
            this.#plan.release(claim);
            return;
          }
          this.#fatalError(isMirrorError(err) ? err : fromNetworkError(err, `blob ${this.key}`));
        },
      )
      .finally(() => {
        conn.dispose();
        this.#workers.delete(conn);
        grant.release();
        if (this.#workers.size === 0) for (const settle of this.#settleWorkers.splice(0)) settle();
        this.#schedule();
      });
  }

  // ------------------------------------------------------------------ one connection

  /** Fetches a claim to its (possibly moving) end, resuming after drops. */
  async #fetch(conn: Connection, kind: 'whole' | 'segment' | 'range'): Promise<void> {
    const claim = conn.claim;
    let resumes = 0;
    let first = kind !== 'range';
    for (;;) {
      if (claim.pos >= claim.end && !first) return;
      const span = { start: claim.pos, end: claim.end };
      let res: UpstreamBody;
      const epoch = this.#epoch;
      try {
        res = first ? await this.#deps.source.openFirst(kind === 'segment' ? span : undefined, this.#abort.signal) : await this.#openRange(span);
      } catch (err) {
        // The upstream cannot be reached (or timed out, or kept answering 5xx): the next one, if any.
        if (isUnhealthy(err) && (await this.#failover(err, epoch))) continue;
        // A resume that cannot connect, or whose headers never come, is one more resume attempt.
        // The first request's failures are final: nothing was received, the client gets a clean error.
        if (first || !isNetworkFailure(err) || this.#abort.signal.aborted || resumes >= this.#deps.maxResumes) throw this.#fatal ?? err;
        resumes++;
        await this.#pause(resumes);
        continue;
      }
      let bodyStarted = false;
      try {
        if (first) {
          const mode = this.#acceptFirst(res, claim, kind);
          if (mode === 'restart') {
            // A 206 without a strong ETag: segments need one. One plain stream instead.
            discardBody(res.body);
            kind = 'whole';
            continue;
          }
          kind = mode;
          first = false;
          claim.reach = kind === 'whole' ? this.size : span.end;
        } else {
          this.#acceptRange(res, span, kind === 'range' && claim.pos === claim.start && resumes === 0, epoch);
          claim.reach = span.end;
          if (resumes > 0) this.#deps.onEvent?.('resumed', this);
        }
        bodyStarted = true;
        await conn.stream(res.body, res.statusCode === 200);
        return;
      } catch (err) {
        discardBody(res.body);
        await conn.settle();
        if (err instanceof RangesUnsupported || this.#fatal) throw this.#fatal ?? err;
        // A 5xx answer, or a body that stalled or trickled: the upstream is failing, the next one
        // continues at this offset. A plain drop is resumed on the same upstream first.
        const failure = bodyStarted && !isMirrorError(err) ? fromNetworkError(err, `blob ${this.key}`) : err;
        const failing = bodyStarted ? isMirrorError(failure) && failure.code === 'UpstreamTimeout' : isUnhealthy(failure);
        if (failing && (await this.#failover(failure, epoch))) {
          if (claim.pos === 0) first = true;
          continue;
        }
        // A body that broke, stalled or trickled: resume where it stopped (Range + If-Range), or
        // start over when nothing had landed yet. Anything upstream *said* (a MirrorError) stands.
        const resumable = claim.pos > 0 ? this.#validator !== undefined || this.#adoptValidator : bodyStarted;
        if (isMirrorError(err) || this.#abort.signal.aborted || !resumable || resumes >= this.#deps.maxResumes) throw this.#fatal ?? err;
        resumes++;
        if (claim.pos === 0) first = true; // nothing landed: ask the way the fill started
      }
    }
  }

  /**
   * Moves the fill to the next upstream after `err` on a connection opened at `epoch`. One switch
   * for all connections: those that failed on the old upstream meanwhile just ask the new one.
   * Resolves false when no other upstream has the blob (the caller's usual rules then apply).
   */
  async #failover(err: unknown, epoch: number): Promise<boolean> {
    if (this.#abort.signal.aborted) return false;
    if (epoch !== this.#epoch) return true;
    this.#switching ??= this.#deps.source.failover(err instanceof Error ? err.message : String(err)).then((moved) => {
      this.#switching = null;
      if (moved) {
        this.#epoch++;
        this.#validator = undefined;
        this.#adoptValidator = true;
        this.#deps.onEvent?.('failover', this);
      }
      return moved;
    });
    const moved = await this.#switching;
    return moved && !this.#abort.signal.aborted;
  }

  /** Where the fill's bytes come from now (its configured base URL). */
  get upstream(): string {
    return this.#deps.source.upstream;
  }

  #openRange(span: Interval): Promise<UpstreamBody> {
    if (this.#adoptValidator) return this.#deps.source.open(span, undefined, this.#abort.signal);
    if (!this.#validator) throw new MirrorError('UpstreamError', 'Upstream connection dropped and the body has no strong ETag to resume with');
    return this.#deps.source.open(span, this.#validator, this.#abort.signal);
  }

  /**
   * Judges the fill's first answer and fixes the mode: a 206 of exactly the first segment with a
   * strong ETag → segments; a 200 → one stream of the whole body (ranges for demand and resumes
   * only if it named a strong ETag). Returns how the rest of this connection's claim is fetched.
   */
  #acceptFirst(res: UpstreamBody, claim: Claim, kind: 'whole' | 'segment' | 'range'): 'whole' | 'segment' | 'restart' {
    const etag = headerValue(res.headers, 'etag');
    const strong = etag && /^"[^"]*"$/.test(etag) ? etag : undefined;
    if (res.statusCode === 206 && kind === 'segment') {
      const want = `bytes 0-${claim.end - 1}/${this.size}`;
      const got = headerValue(res.headers, 'content-range');
      if (got !== want) throw new MirrorError('UpstreamError', `Upstream answered bytes=0-${claim.end - 1} with Content-Range ${got ?? '(none)'}`);
      if (!strong) {
        // Segments need a strong validator (no splice of two versions): one plain stream instead.
        claim.end = this.size;
        return 'restart';
      }
      this.#validator = strong;
      this.#plan.ranged = true;
      this.#plan.segmented = true;
      this.#resolveStarted();
      this.#schedule();
      return 'segment';
    }
    if (res.statusCode !== 200) throw fromUpstreamStatus(res.statusCode, res.headers, `blob ${this.key}`);
    const length = headerValue(res.headers, 'content-length');
    if (length !== undefined && Number(length) !== this.size) {
      throw new MirrorError('IntegrityError', `Upstream body length ${length} differs from the expected ${this.size}`);
    }
    // The whole body (also when a Range was ignored).
    claim.end = this.size;
    this.#validator = strong;
    this.#plan.ranged = kind === 'whole' && strong !== undefined && !this.#deps.rangesIgnored;
    this.#resolveStarted();
    this.#schedule();
    return 'whole';
  }

  /**
   * A ranged answer must be a 206 of exactly `span`, of a file of our size, of the same version:
   * anything else would splice two versions together. A 200 carrying our validator means upstream
   * ignored Range (RangesUnsupported, for a demand request: the fill just stops asking); any other
   * answer fails the fill.
   */
  #acceptRange(res: UpstreamBody, span: Interval, mayBeUnsupported: boolean, epoch: number): void {
    const etag = headerValue(res.headers, 'etag');
    // After a switch, the new upstream's first answer names its validator; an answer opened before
    // the switch comes from the old upstream (same blob: the commit verifies the whole content).
    const adopting = this.#adoptValidator && epoch === this.#epoch;
    const sameVersion = epoch !== this.#epoch || adopting || etag === undefined || etag === this.#validator;
    if (res.statusCode === 200 && mayBeUnsupported && sameVersion && etag !== undefined) throw new RangesUnsupported();
    const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headerValue(res.headers, 'content-range') ?? '');
    const wantEnd = span.end >= this.size ? this.size - 1 : span.end - 1;
    if (res.statusCode !== 206 || !m || Number(m[1]) !== span.start || Number(m[2]) !== wantEnd || Number(m[3]) !== this.size || !sameVersion) {
      if (res.statusCode >= 400 && res.statusCode !== 416) throw fromUpstreamStatus(res.statusCode, res.headers, `blob ${this.key}`);
      throw new MirrorError('UpstreamError', `Upstream file changed while resuming (status ${res.statusCode}); fill abandoned`);
    }
    if (adopting) {
      if (!etag || !/^"[^"]*"$/.test(etag)) throw new MirrorError('UpstreamError', `Upstream ${this.#deps.source.upstream} names no strong ETag for ${this.key}: the fill cannot continue there`);
      this.#validator = etag;
      this.#adoptValidator = false;
    }
  }

  /** Backoff before asking again after a resume request failed to connect (0.25 s, 0.5 s, … ≤ 5 s). */
  async #pause(attempt: number): Promise<void> {
    const ms = Math.min(5_000, 250 * 2 ** (attempt - 1));
    try {
      await delay(ms * (0.5 + 0.5 * Math.random()), undefined, { signal: this.#abort.signal });
    } catch {
      throw this.#fatal ?? new MirrorError('UpstreamUnavailable', 'fill cancelled');
    }
  }

  // ------------------------------------------------------------------ writes (called by connections)

  /** Writes one run of a connection; on completion the bytes become readable. */
  async write(offset: number, views: Buffer[]): Promise<void> {
    const staged = this.#staged;
    if (!staged) throw new Error('no staging file');
    await staged.write(offset, views);
    const length = views.reduce((n, v) => n + v.length, 0);
    if (this.#deps.source.fromPeer === true) this.#peerBytes += length;
    this.#plan.written(offset, offset + length);
    this.#deps.ownership?.fence?.progress(this.#plan.covered.coveredEnd(0));
    let at = offset;
    if (this.#state === 'filling' && !this.#fatal) {
      for (const buf of views) {
        this.#window.push({ offset: at, buf });
        this.#windowBytes += buf.length;
        at += buf.length;
      }
    }
    while (this.#windowBytes > WINDOW_BYTES && this.#window.length > 0) {
      const old = this.#window.shift()!;
      this.#windowBytes -= old.buf.length;
    }
    this.#wake(false);
    if (this.#plan.complete) this.#checkProgress(null);
  }

  get bufferPerConnection(): number {
    return this.#bufferPerConnection;
  }

  get speedFloor(): BodySpeedFloor | undefined {
    return this.#deps.speedFloor;
  }

  /** Consecutive silent rate samples after which a connection counts as stalled (0: never). */
  get stallSamples(): number {
    const ms = this.#deps.stallMs ?? 0;
    return ms > 0 ? Math.max(2, Math.ceil(ms / RATE_SAMPLE_MS)) : 0;
  }

  /**
   * A connection's rate changed: it may be worth a demand-first GET for a waiting reader, or (a
   * segmented fill) have become a straggler whose rest a free connection should take.
   */
  reschedule(): void {
    if (this.#waiters.size > 0 || this.#plan.segmented) this.#schedule();
  }
}

/**
 * One upstream connection of a fill: reads a body in chunks, writes them in batches at its
 * claim's position, stops at the claim's end (which may move down while it runs), keeps its rate.
 */
class Connection {
  readonly #fill: Fill;
  readonly claim: Claim;
  /** Received, not yet handed to a write. */
  #chunks: Buffer[] = [];
  /** Offset of the first byte not yet handed to a write. */
  #flushAt: number;
  #pending = 0;
  #inWrite = 0;
  #writing: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** The pending bytes' time is up (their timer fired while a write was in flight). */
  #due = false;
  #writeError: Error | null = null;
  #onWritten: (() => void) | null = null;

  constructor(fill: Fill, claim: Claim) {
    this.#fill = fill;
    this.claim = claim;
    this.#flushAt = claim.pos;
  }

  /**
   * Reads `body` until the claim's end (closing the body early when the end moved down) or the
   * body's end. `exact`: the body is the whole rest of the file, so a byte past the file's size is
   * an error, not a reason to stop. Whatever arrived is written before this settles.
   */
  stream(body: Readable, exact: boolean): Promise<void> {
    const claim = this.claim;
    const floor = this.#fill.speedFloor;
    const stallSamples = this.#fill.stallSamples;
    this.#flushAt = claim.pos;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let windowBytes = 0;
      let heldBack = false;
      let heldBackInWindow = false;
      let rateBytes = 0;
      let rateAt = performance.now();
      // Rate samples in a row without a byte while the body was not held back by us. Samples, not
      // milliseconds: an event loop blocked for seconds costs one sample, not a false stall.
      let silentSamples = 0;
      const finish = (err: Error | null): void => {
        if (settled) return;
        settled = true;
        clearInterval(speedCheck);
        clearInterval(rateTimer);
        body.off('data', onData);
        body.off('end', onEnd);
        body.off('error', onError);
        claim.reach = claim.pos;
        claim.rate = 0;
        claim.stalled = false;
        // A connection done before its first sample still tells the fill what rate it got.
        if (Number.isNaN(claim.measured) && rateBytes > 0) claim.measured = (rateBytes * 1000) / Math.max(1, performance.now() - rateAt);
        this.#flush(true);
        this.settle().then(
          () => (err ? reject(err) : this.#writeError ? reject(this.#writeError) : resolve()),
          reject,
        );
      };
      const onData = (chunk: Buffer): void => {
        const room = claim.end - claim.pos;
        let buf = chunk;
        if (buf.length > room) {
          if (exact && claim.end === claim.reach) {
            finish(new MirrorError('IntegrityError', `upstream sent more than the expected ${claim.end} bytes`));
            return;
          }
          buf = buf.subarray(0, room);
        }
        windowBytes += buf.length;
        rateBytes += buf.length;
        claim.stalled = false;
        if (buf.length > 0) this.#append(buf);
        if (this.#writeError) {
          finish(this.#writeError);
          return;
        }
        if (claim.pos >= claim.end) {
          // Done, or the end moved down under us: stop reading (the rest goes to other connections).
          if (!body.readableEnded) discardBody(body);
          finish(null);
          return;
        }
        if (this.#pending + this.#inWrite >= this.#fill.bufferPerConnection) {
          heldBack = heldBackInWindow = true;
          body.pause();
          this.#onWritten = () => {
            if (settled || this.#pending + this.#inWrite >= this.#fill.bufferPerConnection) return;
            this.#onWritten = null;
            heldBack = false;
            body.resume();
          };
        }
      };
      const onEnd = (): void => {
        if (claim.pos < claim.end) {
          const err = new Error(`upstream body ended at ${claim.pos} of ${claim.end} bytes`);
          (err as NodeJS.ErrnoException).code = 'UPSTREAM_SHORT_BODY';
          finish(err);
        } else finish(null);
      };
      const onError = (err: Error): void => finish(err);
      // A trickle never trips the idle timeout: check the rate once per window and drop the
      // connection (resumed like any other drop) when fewer bytes came than the floor asks for.
      // A window in which we held the body back ourselves (disk slower than upstream) is not judged.
      const speedCheck = floor
        ? setInterval(() => {
            const minimum = (floor.bytesPerSecond * floor.windowMs) / 1000;
            if (windowBytes < minimum && !heldBackInWindow) {
              const err = new Error(`upstream body too slow: ${windowBytes} bytes in ${floor.windowMs} ms (minimum ${floor.bytesPerSecond} B/s)`);
              (err as NodeJS.ErrnoException).code = 'UPSTREAM_TOO_SLOW';
              err.name = 'TimeoutError'; // a failed fill reports it as UpstreamTimeout (504)
              body.destroy(err);
            }
            windowBytes = 0;
            heldBackInWindow = heldBack;
          }, floor.windowMs)
        : undefined;
      speedCheck?.unref();
      const rateTimer = setInterval(() => {
        const now = performance.now();
        // The last sample only: a connection that stalled stops counting as "about to get there" at once.
        claim.rate = (rateBytes * 1000) / Math.max(1, now - rateAt);
        claim.measured = Number.isNaN(claim.measured) ? claim.rate : (claim.measured + claim.rate) / 2;
        silentSamples = rateBytes > 0 || heldBack ? 0 : silentSamples + 1;
        if (stallSamples > 0 && silentSamples >= stallSamples) claim.stalled = true;
        rateBytes = 0;
        rateAt = now;
        this.#fill.reschedule();
        // Taken over while silent (the end was moved down to where it stopped): no byte will come
        // to notice that by, so close the body now.
        if (!settled && claim.pos >= claim.end) {
          discardBody(body);
          finish(null);
        }
      }, RATE_SAMPLE_MS);
      rateTimer.unref();
      body.on('data', onData);
      body.on('end', onEnd);
      body.on('error', onError);
      if (claim.pos >= claim.end) {
        discardBody(body);
        finish(null);
      }
    });
  }

  /** Writes whatever is pending; resolves once every write has completed. */
  async settle(): Promise<void> {
    for (;;) {
      if (this.#writing) await this.#writing.catch(() => undefined);
      else if (this.#pending > 0 && !this.#writeError) this.#flush(true);
      else break;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** The connection is done. */
  dispose(): void {
    this.#chunks = [];
  }

  #append(buf: Buffer): void {
    // Zero-copy: the chunk itself is written, kept in the window and handed to readers.
    this.#chunks.push(buf);
    this.claim.pos += buf.length;
    this.#pending += buf.length;
    if (this.#pending >= BATCH_BYTES) this.#flush(false);
    else this.#timer ??= setTimeout(() => {
      this.#timer = null;
      this.#due = true;
      this.#flush(true);
    }, BATCH_MS);
  }

  /** Hands what is pending to one write (one at a time per connection; `now`: even if small). */
  #flush(now: boolean): void {
    if (this.#writing || this.#pending === 0 || (!now && this.#pending < BATCH_BYTES)) return;
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#due = false;
    const views = this.#chunks;
    this.#chunks = [];
    const offset = this.#flushAt;
    const length = this.#pending;
    this.#flushAt += length;
    this.#pending = 0;
    this.#inWrite = length;
    this.#writing = this.#fill.write(offset, views).then(
      () => {
        this.#inWrite = 0;
        this.#writing = null;
        this.#onWritten?.();
        // Whatever arrived meanwhile: a full batch, or one whose time is up, now; else on its timer.
        if (this.#pending > 0) this.#flush(this.#due);
      },
      (err: unknown) => {
        this.#inWrite = 0;
        this.#writing = null;
        this.#writeError ??= err instanceof Error ? err : new Error(String(err));
        this.#onWritten?.();
      },
    );
  }
}

/** A failure to reach upstream (refused, reset, timed out) rather than something upstream said. */
function isNetworkFailure(err: unknown): boolean {
  return isMirrorError(err) && (err.code === 'UpstreamUnavailable' || err.code === 'UpstreamTimeout') && err.cause !== undefined;
}

export type { Work };
