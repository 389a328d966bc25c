/**
 * Fill: the one upstream download of a blob, shared by every client that wants it.
 *
 * Lifecycle: filling → committed | failed. The fill streams the upstream body into a BlobWriter
 * (staging file) and notifies readers after each chunk lands. It belongs to no client: it has its
 * own AbortController and the upstream idle timeout, and it runs to the end even when every reader
 * has gone, so the next request is a hit.
 *
 * Invariants:
 * - Readers may read only bytes already written, and never the last byte before the digest is
 *   verified: a full-body reader cannot complete on wrong bytes (it is cut short instead).
 * - A dropped upstream connection is resumed from the current offset with `Range` and a strong
 *   `If-Range`; any answer that is not the continuation of the same bytes fails the fill (never a
 *   splice of two versions). The digest check at the end covers the whole blob anyway. A stalled
 *   body (no byte for the idle timeout) or a trickle (below `upstreamMinBytesPerSecond` over that
 *   window) counts as a drop. At most `maxResumes` resumes, then the fill fails cleanly.
 * - 429/5xx answers are retried by the HubClient (Retry-After, backoff with jitter), once for
 *   the blob however many readers wait.
 * - On failure the staging file is removed and nothing reaches the index.
 */
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { MirrorError, isMirrorError } from '../errors.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { BlobWriter } from '../storage/blob-store.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import { crashPoint } from '../storage/crash-points.js';
import type { CacheIndex } from '../storage/cache-index.js';
import { discardBody, type BodySpeedFloor, type HubClient, type UpstreamBody } from '../upstream/hub-client.js';
import { fromNetworkError, fromUpstreamStatus, headerValue } from '../upstream/upstream-errors.js';
import type { GrowingSource } from './growing-file-reader.js';

export type FillState = 'filling' | 'committed' | 'failed';

/** Readers are woken after this many new bytes, or PROGRESS_MS after the first unannounced one. */
const PROGRESS_BYTES = 512 * 1024;
const PROGRESS_MS = 5;
/** Upstream bytes received but not yet written before the body is paused. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

export interface FillRequest {
  key: BlobKey;
  size: number;
  /** Upstream path (below the upstream base) of the file, pinned to a commit. */
  upstreamPath: string;
  /** Credentials of the client that started the fill (upstream origin only). */
  auth: string | undefined;
}

export interface FillDeps {
  store: BlobStore;
  index: CacheIndex;
  hub: HubClient;
  /** How many times a dropped upstream body is resumed before the fill fails. */
  maxResumes: number;
  onEvent?: (event: 'committed' | 'failed' | 'resumed', fill: Fill, error?: MirrorError) => void;
}

export class Fill implements GrowingSource {
  readonly key: BlobKey;
  readonly size: number;
  #state: FillState = 'filling';
  #failure: MirrorError | undefined;
  #writer: BlobWriter | null = null;
  #finalPath: string;
  #listeners = new Set<() => void>();
  #notifiedAt = 0;
  #notifyTimer: NodeJS.Timeout | null = null;
  readonly #abort = new AbortController();
  /** Resolves when upstream has answered with the body (2xx); rejects if the fill fails first. */
  readonly started: Promise<void>;
  #done: Promise<void> = Promise.resolve();
  #resolveStarted!: () => void;
  #rejectStarted!: (err: MirrorError) => void;

  private constructor(req: FillRequest, finalPath: string) {
    this.key = req.key;
    this.size = req.size;
    this.#finalPath = finalPath;
    this.started = new Promise<void>((resolve, reject) => {
      this.#resolveStarted = resolve;
      this.#rejectStarted = reject;
    });
    // Callers may never look at these; keep unhandled-rejection noise away.
    this.started.catch(() => undefined);
  }

  /** Starts a fill; it runs on its own until committed or failed. */
  static start(req: FillRequest, deps: FillDeps): Fill {
    const fill = new Fill(req, deps.store.pathOf(req.key));
    fill.#done = fill.#run(req, deps);
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

  get bytesWritten(): number {
    return this.#writer?.bytesWritten ?? 0;
  }

  readableLimit(): number {
    if (this.#state === 'committed') return this.size;
    if (this.#state === 'failed') return 0;
    // Hold back the last byte until the digest is verified.
    return Math.min(this.bytesWritten, this.size - 1);
  }

  get settled(): boolean {
    return this.#state !== 'filling';
  }

  paths(): { current: string; fallback: string } | undefined {
    if (this.#state !== 'filling') return { current: this.#finalPath, fallback: this.#finalPath };
    const staging = this.#writer?.stagingPath;
    // No staging file yet: readers wait for the change that announces it (or the failure).
    return staging ? { current: staging, fallback: this.#finalPath } : undefined;
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops the fill (shutdown); readers get the error. */
  cancel(reason = 'mirror shutting down'): void {
    this.#abort.abort(new MirrorError('UpstreamUnavailable', reason));
  }

  #notify(): void {
    if (this.#notifyTimer) {
      clearTimeout(this.#notifyTimer);
      this.#notifyTimer = null;
    }
    this.#notifiedAt = this.bytesWritten;
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    for (const l of listeners) l();
  }

  /**
   * Progress after a write, coalesced: readers wake when PROGRESS_BYTES more are on disk or
   * PROGRESS_MS after the first unannounced byte, whichever comes first. Waking every reader for
   * every 64 KiB upstream chunk costs a read and a socket write each; at 100 readers that is the
   * mirror's whole CPU budget, while a few milliseconds of latency cost nothing.
   */
  #progress(): void {
    if (this.bytesWritten - this.#notifiedAt >= PROGRESS_BYTES) this.#notify();
    else this.#notifyTimer ??= setTimeout(() => this.#notify(), PROGRESS_MS);
  }

  async #run(req: FillRequest, deps: FillDeps): Promise<void> {
    try {
      this.#writer = await deps.store.createWriter(req.key, req.size);
      this.#notify(); // readers created before the staging file existed can open it now
      await this.#download(req, deps);
      await this.#writer.commit();
      deps.index.recordBlob(req.key, req.size);
      crashPoint('after-index-commit');
      this.#state = 'committed';
      this.#resolveStarted();
      deps.onEvent?.('committed', this);
      this.#notify();
    } catch (err) {
      const failure = isMirrorError(err) ? err : fromNetworkError(err, `blob ${req.key}`);
      // Remove the staging file before anyone can observe the failure.
      await this.#writer?.abort();
      this.#failure = failure;
      this.#state = 'failed';
      this.#rejectStarted(failure);
      deps.onEvent?.('failed', this, failure);
      this.#notify();
      throw failure;
    }
  }

  async #download(req: FillRequest, deps: FillDeps): Promise<void> {
    const writer = this.#writer;
    if (!writer) throw new Error('no writer');
    let validator: string | undefined;
    let resumes = 0;
    for (;;) {
      const offset = writer.bytesWritten;
      const extra: Record<string, string> = {};
      if (offset > 0) {
        if (!validator) throw new MirrorError('UpstreamError', 'Upstream connection dropped and the body has no strong ETag to resume with');
        extra.range = `bytes=${offset}-`;
        extra['if-range'] = validator;
      }
      // 429/5xx answers are retried inside openBody (Retry-After, backoff); what comes out is final.
      let res: UpstreamBody;
      try {
        res = await deps.hub.openBody(req.upstreamPath, req.auth, extra, this.#abort.signal);
      } catch (err) {
        // A resume that cannot connect, or whose headers never come, is one more resume attempt.
        // The first request's failures are final: nothing was received, the client gets a clean error.
        if (offset === 0 || !isNetworkFailure(err) || this.#abort.signal.aborted || resumes >= deps.maxResumes) throw err;
        resumes++;
        await this.#pause(resumes);
        continue;
      }
      let bodyStarted = false;
      try {
        if (offset === 0) {
          if (res.statusCode !== 200) throw fromUpstreamStatus(res.statusCode, res.headers, `blob ${req.key}`);
          const length = headerValue(res.headers, 'content-length');
          if (length !== undefined && Number(length) !== req.size) {
            throw new MirrorError('IntegrityError', `Upstream body length ${length} differs from the expected ${req.size}`);
          }
          const etag = headerValue(res.headers, 'etag');
          validator = etag && /^"[^"]*"$/.test(etag) ? etag : undefined;
          this.#resolveStarted();
        } else {
          checkContinuation(res.statusCode, headerValue(res.headers, 'content-range'), headerValue(res.headers, 'etag'), validator, offset, req.size);
          deps.onEvent?.('resumed', this);
        }
        bodyStarted = true;
        await this.#drain(res.body, writer, deps.hub.bodySpeedFloor);
        return;
      } catch (err) {
        discardBody(res.body);
        // A body that broke, stalled or trickled: resume where it stopped (Range + If-Range), or
        // start over when nothing had landed yet. Anything upstream *said* (a MirrorError) stands.
        const resumable = writer.bytesWritten > 0 ? validator !== undefined : bodyStarted;
        const retryable = !isMirrorError(err) && !this.#abort.signal.aborted && resumable;
        if (!retryable || resumes >= deps.maxResumes) throw err;
        resumes++;
      }
    }
  }

  /** Backoff before asking again after a resume request failed to connect (0.25 s, 0.5 s, … ≤ 5 s). */
  async #pause(attempt: number): Promise<void> {
    const ms = Math.min(5_000, 250 * 2 ** (attempt - 1));
    try {
      await delay(ms * (0.5 + 0.5 * Math.random()), undefined, { signal: this.#abort.signal });
    } catch {
      const reason: unknown = this.#abort.signal.reason;
      throw reason instanceof MirrorError ? reason : new MirrorError('UpstreamUnavailable', 'fill cancelled');
    }
  }

  /**
   * Copies the body into the staging file. Chunks that arrive while a write is in progress are
   * queued and written together by the next (vectored) write: few syscalls when upstream is fast,
   * no added latency when it is slow. Past MAX_QUEUED_BYTES the body is paused (backpressure).
   */
  async #drain(body: Readable, writer: BlobWriter, floor: BodySpeedFloor | undefined): Promise<void> {
    let queue: Buffer[] = [];
    let queued = 0;
    let flushing: Promise<void> | null = null;
    // An object, not a `let`: written inside `flush`, which TypeScript's narrowing cannot see.
    const failed: { error: Error | null } = { error: null };
    const flush = async (): Promise<void> => {
      try {
        while (queue.length > 0) {
          const batch = queue;
          queue = [];
          queued = 0;
          await writer.write(batch);
          this.#progress();
        }
      } catch (err) {
        failed.error = err instanceof Error ? err : new Error(String(err));
      } finally {
        flushing = null;
      }
    };
    // A trickle never trips the idle timeout: check the rate once per window and drop the
    // connection (resumed like any other drop) when fewer bytes came than the floor asks for.
    // A window in which we held the body back ourselves (disk slower than upstream) is not judged.
    let windowBytes = 0;
    let heldBack = false;
    let heldBackInWindow = false;
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
    try {
      for await (const chunk of body) {
        if (failed.error) throw failed.error;
        const buf = chunk as Buffer;
        windowBytes += buf.length;
        queue.push(buf);
        queued += buf.length;
        flushing ??= flush();
        if (queued >= MAX_QUEUED_BYTES) {
          heldBack = heldBackInWindow = true;
          await flushing;
          heldBack = false;
        }
      }
    } finally {
      if (speedCheck) clearInterval(speedCheck);
      // Whatever arrived before the body ended or broke is good data: land it, so a resume
      // starts exactly at bytesWritten and never overlaps a write still in flight.
      while (flushing) await flushing;
      if (queue.length > 0 && !failed.error) await flush();
    }
    if (failed.error) throw failed.error;
    if (writer.bytesWritten < writer.size) {
      const err = new Error(`upstream body ended at ${writer.bytesWritten} of ${writer.size} bytes`);
      (err as NodeJS.ErrnoException).code = 'UPSTREAM_SHORT_BODY';
      throw err;
    }
  }
}

/** A failure to reach upstream (refused, reset, timed out) rather than something upstream said. */
function isNetworkFailure(err: unknown): boolean {
  return isMirrorError(err) && (err.code === 'UpstreamUnavailable' || err.code === 'UpstreamTimeout') && err.cause !== undefined;
}

/**
 * A resumed answer must be a 206 of the same version (same strong ETag, when upstream sends one)
 * that starts exactly at `offset` of a file of the same size: anything else would splice two
 * versions together.
 */
function checkContinuation(status: number, contentRange: string | undefined, etag: string | undefined, validator: string | undefined, offset: number, size: number): void {
  const m = contentRange ? /^bytes (\d+)-(\d+)\/(\d+)$/.exec(contentRange) : null;
  const sameVersion = etag === undefined || validator === undefined || etag === validator;
  if (status !== 206 || !m || Number(m[1]) !== offset || Number(m[3]) !== size || !sameVersion) {
    throw new MirrorError('UpstreamError', `Upstream file changed while resuming (status ${status}); fill abandoned`);
  }
}
