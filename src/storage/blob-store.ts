/**
 * Content-addressed blob storage on the local filesystem, with staged, verified writes.
 *
 * Contract (the Commit/Cancel model of distribution's BlobWriter):
 * - `stage(key, size)` opens a fresh staging file: a StagedBlob, written at any offsets (several
 *   connections of one fill at once), hashed as its contiguous prefix grows.
 * - `StagedBlob.commit()` checks every byte is there and the digest against the key, fsyncs the
 *   file, renames it into place and fsyncs the directory. Only then is the blob visible to
 *   `stat`/`openRead`. On mismatch it throws `IntegrityError` and removes the staging file.
 * - `StagedBlob.abort()` removes the staging file; it is idempotent and safe after a failed commit.
 * Blobs are immutable: committing a key that already exists just replaces it with identical bytes.
 * A full disk (ENOSPC, EDQUOT) surfaces as `InsufficientStorage`, whatever step hit it.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { BlobLayout, parseBlobKey, type BlobKey } from './blob-layout.js';
import { sharedHashPool, type HashPool } from './hash-pool.js';
import { Preallocator } from './preallocate.js';
import { StagedBlob } from './staged-blob.js';
import { WriteGate } from './write-gate.js';

export interface BlobStoreOptions {
  /** Writes to staging files at once (config `diskWriters`, default 4). */
  diskWriters?: number;
  /** Worker threads hashing staging files (default: the process's shared pool). */
  hashPool?: HashPool;
  /** Told once when staging files cannot be preallocated on this filesystem. */
  onPreallocateUnsupported?: (reason: string) => void;
}

export function newHasher(key: BlobKey, size: number): Hash {
  const { algorithm } = parseBlobKey(key);
  if (algorithm === 'sha256') return createHash('sha256');
  // git blob id: sha1 over a header then the content.
  return createHash('sha1').update(`blob ${size}\0`);
}

export class FsBlobStore {
  readonly layout: BlobLayout;
  readonly #gate: WriteGate;
  readonly #hashPool: HashPool | undefined;
  readonly #preallocator: Preallocator;

  constructor(layout: BlobLayout, opts: BlobStoreOptions = {}) {
    this.layout = layout;
    this.#gate = new WriteGate(opts.diskWriters ?? 4);
    this.#hashPool = opts.hashPool;
    this.#preallocator = new Preallocator(opts.onPreallocateUnsupported);
  }

  /** Creates the directory tree and removes staging leftovers from an earlier process. */
  async init(): Promise<void> {
    await fsp.mkdir(this.layout.blobsDir, { recursive: true });
    await fsp.rm(this.layout.stagingDir, { recursive: true, force: true });
    await fsp.mkdir(this.layout.stagingDir, { recursive: true });
  }

  pathOf(key: BlobKey): string {
    return this.layout.blobPath(key);
  }

  /** Size of a committed blob, or null if it is not on disk. */
  async stat(key: BlobKey): Promise<{ size: number } | null> {
    try {
      const st = await fsp.stat(this.layout.blobPath(key));
      return st.isFile() ? { size: st.size } : null;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** A stream of bytes [start, end] (inclusive) of a committed blob. */
  openRead(key: BlobKey, start: number, end: number): fs.ReadStream {
    return fs.createReadStream(this.layout.blobPath(key), { start, end, highWaterMark: 256 * 1024 });
  }

  /**
   * Opens a committed blob for positional reads, if its file is there with `size` bytes; `null`
   * when it is gone or has another size (removed or cut short behind the mirror's back: the caller
   * forgets it and fetches it again). The caller releases it.
   */
  openBlob(key: BlobKey, size: number): Promise<BlobFile | null> {
    return new Promise((resolve, reject) => {
      fs.open(this.layout.blobPath(key), 'r', (err, fd) => {
        if (err) {
          if (isNotFound(err)) resolve(null);
          else reject(err);
          return;
        }
        // An fstat of an open fd is a lookup in memory, cheaper than a wait for the thread pool.
        let actual: number;
        try {
          actual = fs.fstatSync(fd).size;
        } catch (e) {
          fs.close(fd, () => undefined);
          reject(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        if (actual === size) resolve(new BlobFile(fd));
        else {
          fs.close(fd, () => undefined);
          resolve(null);
        }
      });
    });
  }

  async delete(key: BlobKey): Promise<void> {
    await fsp.rm(this.layout.blobPath(key), { force: true });
  }

  /** A fresh staging file for `key`, preallocated to `size` where the filesystem allows. */
  stage(key: BlobKey, size: number): Promise<StagedBlob> {
    const stagingPath = this.layout.stagingPath(`${randomBytes(12).toString('hex')}.part`);
    return StagedBlob.create(key, size, stagingPath, this.layout.blobPath(key), {
      gate: this.#gate,
      hashPool: this.#hashPool ?? sharedHashPool(),
      preallocator: this.#preallocator,
    });
  }
}

/**
 * An open blob file shared by the readers of one response: each reader `retain`s it and
 * `release`s it when done; the fd is closed with the last release (the opener holds the first).
 */
export class BlobFile {
  readonly fd: number;
  #holders = 1;

  constructor(fd: number) {
    this.fd = fd;
  }

  retain(): this {
    if (this.#holders === 0) throw new Error('blob file already closed');
    this.#holders++;
    return this;
  }

  release(): void {
    if (this.#holders === 0) return;
    if (--this.#holders === 0) fs.close(this.fd, () => undefined);
  }

  /** Whether the fd is still open (some holder has not released it). */
  get open(): boolean {
    return this.#holders > 0;
  }
}

export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT';
}
