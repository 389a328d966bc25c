/**
 * StagedBlob: a blob being written to a local staging file, at any offsets, by one or more
 * writers at once (the `stage()` step of the BlobStore contract: a store keeping blobs elsewhere
 * still stages them here, then uploads on commit).
 *
 * Contract:
 * - `write(offset, chunks)` writes one run (vectored, through the WriteGate); when it resolves the
 *   bytes are in the file, readable by any fd, and in `coverage`. Runs never overlap.
 * - `read(buf, offset)` reads written bytes through the blob's own fd, which stays open (even
 *   across the rename into place) until `dispose()` or `abort()` and never closes under a read in
 *   flight (no fd-number reuse can hand a reader another file's bytes).
 * - The contiguous written prefix is hashed as it grows (in a HashPool worker that reads the file
 *   itself; small blobs inline), so `commit()` only waits for the last step: it checks that every
 *   byte is there and the digest equals the key, then fsyncs and hands the file to the store's
 *   commit (`commitStaged`: the filesystem store renames it into place and fsyncs the directory;
 *   a remote store uploads it, or what of it is not uploaded yet, first). Only then is the blob visible. A mismatch throws
 *   `IntegrityError`, stores nothing. The fd stays valid across that rename.
 * - `abort()` removes the staging file (once no write or read is in flight); idempotent.
 * - A `StageListener` (optional) is told each time the contiguous written prefix grows, and of an
 *   abort without commit: a remote store uploads parts of the file while it is being written.
 * - The file is preallocated to its final size before the first write lands (see preallocate.ts).
 * A full disk (ENOSPC, EDQUOT) surfaces as `InsufficientStorage`, whatever step hit it.
 */
import { createHash, type Hash } from 'node:crypto';
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';
import { SpanSet, type ReadonlySpanSet } from '../model/span-set.js';
import { parseBlobKey, type BlobKey } from './blob-layout.js';
import type { VerifiedBlob } from './blob-store-contract.js';
import { crashPoint } from './crash-points.js';
import { diskFullError } from './disk-space.js';
import type { HashJob, HashPool } from './hash-pool.js';
import type { Preallocator } from './preallocate.js';
import type { WriteGate } from './write-gate.js';

/** Blobs up to this size are hashed on the event loop, from the written buffers (no worker round trip). */
export const INLINE_HASH_MAX_BYTES = 1024 * 1024;

/**
 * The step after a staged file is verified (size and digest): `BlobStore.commit`. It takes the
 * file over: on success it is the blob (or its local copy), on failure it is removed.
 */
export type CommitStaged = (key: BlobKey, stagedPath: string, verified: VerifiedBlob) => Promise<void>;

/**
 * Told how a staged blob progresses (a store that uploads while the fill runs: s3-upload.ts).
 * Called synchronously from `write` and `abort`: it must not throw and must not block.
 */
export interface StageListener {
  /** The contiguous written prefix reached `to` bytes: those bytes are in the file and never change again. */
  written(to: number): void;
  /** The blob was aborted without being committed (the fill failed, or its commit was refused). */
  aborted(): void;
}

export interface StageDeps {
  gate: WriteGate;
  hashPool: HashPool;
  preallocator: Preallocator;
  commitStaged: CommitStaged;
  listener?: StageListener | undefined;
}

export class StagedBlob {
  readonly key: BlobKey;
  readonly size: number;
  readonly stagingPath: string;
  readonly #finalPath: string;
  readonly #deps: StageDeps;
  readonly #coverage = new SpanSet();
  #handle: fsp.FileHandle | null;
  /** Writes and reads in flight: the fd is closed only when this is 0. */
  #busy = 0;
  #idle: Array<() => void> = [];
  #closing = false;
  #settled = false;
  #preallocated = false;
  readonly #ready: Promise<void>;
  #failure: Error | null = null;
  /** Hashing: bytes handed to the hasher so far (always a prefix of the file). */
  #hashedTo = 0;
  /** The contiguous written prefix as last told to the listener. */
  #announced = 0;
  #job: HashJob | null = null;
  #inline: Hash | null = null;

  private constructor(key: BlobKey, size: number, stagingPath: string, finalPath: string, handle: fsp.FileHandle, deps: StageDeps) {
    this.key = key;
    this.size = size;
    this.stagingPath = stagingPath;
    this.#finalPath = finalPath;
    this.#handle = handle;
    this.#deps = deps;
    const { algorithm } = parseBlobKey(key);
    if (size <= INLINE_HASH_MAX_BYTES) {
      this.#inline = createHash(algorithm === 'sha256' ? 'sha256' : 'sha1');
      if (algorithm === 'gitsha1') this.#inline.update(`blob ${size}\0`);
    } else {
      this.#job = deps.hashPool.open(stagingPath, algorithm, size);
    }
    this.#ready = deps.preallocator.preallocate(stagingPath, size).then(
      (done) => {
        this.#preallocated = done;
      },
      (err: unknown) => {
        const e = diskFullError(err, key);
        this.#failure = e instanceof Error ? e : new Error(String(e));
      },
    );
  }

  /** Creates the staging file (exclusively) and starts its preallocation. */
  static async create(key: BlobKey, size: number, stagingPath: string, finalPath: string, deps: StageDeps): Promise<StagedBlob> {
    const handle = await fsp.open(stagingPath, 'wx+', 0o644).catch((err: unknown) => {
      throw diskFullError(err, key);
    });
    return new StagedBlob(key, size, stagingPath, finalPath, handle, deps);
  }

  /** Bytes written so far (a set of ranges, not necessarily a prefix). */
  get coverage(): ReadonlySpanSet {
    return this.#coverage;
  }

  /** Whether the file's blocks were reserved up front (then its free-space cost is already paid). */
  get preallocated(): boolean {
    return this.#preallocated;
  }

  /** Writes `chunks` at `offset`; resolves once they are in the file (and in `coverage`). */
  async write(offset: number, chunks: readonly Buffer[]): Promise<void> {
    const total = chunks.reduce((n, c) => n + c.length, 0);
    if (total === 0) return;
    if (offset + total > this.size) throw new MirrorError('IntegrityError', `upstream sent more than the expected ${this.size} bytes`);
    await this.#ready;
    if (this.#failure) throw this.#failure;
    const handle = this.#enter();
    try {
      await this.#deps.gate.run(async () => {
        let done = 0;
        let rest: readonly Buffer[] = chunks;
        while (done < total) {
          const { bytesWritten } = await handle.writev(rest as Buffer[], offset + done);
          done += bytesWritten;
          if (done < total) rest = remainder(chunks, done); // short write (rare on regular files)
        }
      });
    } catch (err) {
      throw diskFullError(err, this.key);
    } finally {
      this.#leave();
    }
    this.#coverage.add(offset, offset + total);
    this.#advanceHash(offset, chunks);
  }

  /** Reads written bytes at `offset` into `buf` (through the staging fd); resolves with the count. */
  async read(buf: Buffer, offset: number, length = buf.length): Promise<number> {
    const handle = this.#enter();
    try {
      const { bytesRead } = await handle.read(buf, 0, length, offset);
      return bytesRead;
    } finally {
      this.#leave();
    }
  }

  /** Verifies size and digest, fsyncs, then commits through the store (see above). Returns the final path. */
  async commit(): Promise<string> {
    if (this.#settled || !this.#handle) throw new Error('commit after commit/abort');
    try {
      if (!this.#coverage.covers(0, this.size)) {
        throw new MirrorError('IntegrityError', `size mismatch: got ${this.#coverage.size} bytes, expected ${this.size}`);
      }
      await this.#ready;
      const digest = await this.#digest();
      const { hex } = parseBlobKey(this.key);
      if (digest !== hex) throw new MirrorError('IntegrityError', `digest mismatch for ${this.key}: content hashes to ${digest}`);
      await this.#handle.sync();
      crashPoint('after-staging-fsync');
      await this.#deps.commitStaged(this.key, this.stagingPath, { size: this.size, digest });
      this.#settled = true;
      return this.#finalPath;
    } catch (err) {
      await this.abort();
      throw diskFullError(err, this.key);
    }
  }

  /** After a commit: closes the fd once no read is in flight. */
  dispose(): void {
    void this.#close();
  }

  /** Removes the staging file (after in-flight writes and reads). Idempotent; a no-op after commit. */
  async abort(): Promise<void> {
    this.#job?.close();
    this.#job = null;
    if (this.#settled) {
      await this.#close();
      return;
    }
    this.#settled = true;
    this.#deps.listener?.aborted();
    await this.#close();
    await fsp.rm(this.stagingPath, { force: true });
  }

  #enter(): fsp.FileHandle {
    if (!this.#handle || this.#closing) throw new MirrorError('UpstreamUnavailable', 'staging file closed');
    this.#busy++;
    return this.#handle;
  }

  #leave(): void {
    if (--this.#busy === 0) for (const wake of this.#idle.splice(0)) wake();
  }

  async #close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    while (this.#busy > 0) await new Promise<void>((resolve) => this.#idle.push(resolve));
    const handle = this.#handle;
    this.#handle = null;
    await handle?.close().catch(() => undefined);
  }

  /** Feeds the hasher whatever the contiguous written prefix gained. */
  #advanceHash(offset: number, chunks: readonly Buffer[]): void {
    const prefix = this.#coverage.coveredEnd(0);
    if (prefix > this.#announced) {
      this.#announced = prefix;
      this.#deps.listener?.written(prefix);
    }
    if (prefix <= this.#hashedTo) return;
    if (this.#job) {
      this.#job.advance(prefix);
      this.#hashedTo = prefix;
      return;
    }
    // Inline: the run just written is usually exactly the next bytes. Anything else (a run that
    // closed a gap) is read back from the file when the digest is asked for.
    if (offset === this.#hashedTo && this.#inline) {
      for (const c of chunks) this.#inline.update(c);
      this.#hashedTo += chunks.reduce((n, c) => n + c.length, 0);
    }
  }

  async #digest(): Promise<string> {
    if (this.#job) {
      const job = this.#job;
      this.#job = null;
      return job.digest();
    }
    const h = this.#inline!;
    const buf = Buffer.allocUnsafe(Math.min(INLINE_HASH_MAX_BYTES, Math.max(1, this.size - this.#hashedTo)));
    while (this.#hashedTo < this.size) {
      const n = await this.read(buf, this.#hashedTo, Math.min(buf.length, this.size - this.#hashedTo));
      if (n === 0) throw new MirrorError('IntegrityError', `staging file ends at ${this.#hashedTo}`);
      h.update(buf.subarray(0, n));
      this.#hashedTo += n;
    }
    return h.digest('hex');
  }
}

/** The part of `chunks` after the first `skip` bytes. */
function remainder(chunks: readonly Buffer[], skip: number): Buffer[] {
  const out: Buffer[] = [];
  let left = skip;
  for (const c of chunks) {
    if (left >= c.length) left -= c.length;
    else {
      out.push(left > 0 ? c.subarray(left) : c);
      left = 0;
    }
  }
  return out;
}
