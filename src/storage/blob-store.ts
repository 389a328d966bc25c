/**
 * Content-addressed blob storage on the local filesystem, with staged, verified writes: the
 * filesystem driver of the BlobStore contract (blob-store-contract.ts), and the staging writer
 * every driver shares.
 *
 * Contract (the Commit/Cancel model of distribution's BlobWriter):
 * - `stage(key, size)` opens a fresh staging file: a StagedBlob, written at any offsets (several
 *   connections of one fill at once), hashed as its contiguous prefix grows.
 * - `StagedBlob.commit()` checks every byte is there and the digest against the key and fsyncs
 *   the file, then hands it to the store's `commit` (here: rename into place and fsync the
 *   directory). Only then is the blob visible to `stat`/`openRead`. On mismatch it throws
 *   `IntegrityError` and removes the staging file.
 * - `StagedBlob.abort()` removes the staging file; it is idempotent and safe after a failed commit.
 * Blobs are immutable: committing a key that already exists just replaces it with identical bytes.
 * A full disk (ENOSPC, EDQUOT) surfaces as `InsufficientStorage`, whatever step hit it.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { MirrorError } from '../errors.js';
import { BlobLayout, blobKey, parseBlobKey, type BlobKey, type DigestAlgorithm } from './blob-layout.js';
import type { BlobStore, StageOptions, StoredBlob, VerifiedBlob } from './blob-store-contract.js';
import { crashPoint } from './crash-points.js';
import { diskFullError } from './disk-space.js';
import { sharedHashPool, type HashPool } from './hash-pool.js';
import { Preallocator } from './preallocate.js';
import { StagedBlob, type CommitStaged, type StageListener } from './staged-blob.js';
import { WriteGate } from './write-gate.js';

export interface BlobStoreOptions {
  /** Writes to staging files at once (config `diskWriters`, default 4); ignored when `gate` is given. */
  diskWriters?: number;
  /** The data dir's write gate (its owner reads its counters); default: one of `diskWriters`. */
  gate?: WriteGate;
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

export class FsBlobStore implements BlobStore {
  readonly kind = 'fs';
  readonly layout: BlobLayout;
  readonly listedBlobsAreVerified = false;
  readonly localCopiesAreCache = false;
  readonly #gate: WriteGate;
  readonly #hashPool: HashPool | undefined;
  readonly #preallocator: Preallocator;

  constructor(layout: BlobLayout, opts: BlobStoreOptions = {}) {
    this.layout = layout;
    this.#gate = opts.gate ?? new WriteGate(opts.diskWriters ?? 4);
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

  remove(key: BlobKey): Promise<void> {
    return this.delete(key);
  }

  /** The local copy is the blob: the same as `remove`. */
  dropLocal(key: BlobKey): Promise<void> {
    return this.delete(key);
  }

  /**
   * A fresh staging file for `key`, preallocated to `size` where the filesystem allows. Its
   * verified file goes to `commitStaged` (default: this store's `commit`); a driver that keeps
   * its blobs elsewhere stages through this store and passes its own (and a `listener`, to upload
   * the file while it is written).
   */
  stage(key: BlobKey, size: number, _opts?: StageOptions): Promise<StagedBlob> {
    return this.stageWith(key, size);
  }

  /** stage(), with another commit step and write/abort hooks (for a store built on this one: S3). */
  stageWith(key: BlobKey, size: number, commitStaged?: CommitStaged, listener?: StageListener): Promise<StagedBlob> {
    const stagingPath = this.layout.stagingPath(`${randomBytes(12).toString('hex')}.part`);
    return StagedBlob.create(key, size, stagingPath, this.layout.blobPath(key), {
      gate: this.#gate,
      hashPool: this.#hashPool ?? sharedHashPool(),
      preallocator: this.#preallocator,
      commitStaged: commitStaged ?? ((k, staged, verified) => this.commit(k, staged, verified)),
      listener,
    });
  }

  /** Renames the verified staged file into place and fsyncs the directory. */
  async commit(key: BlobKey, stagedPath: string, verified: VerifiedBlob): Promise<void> {
    const finalPath = this.layout.blobPath(key);
    try {
      await checkStaged(key, stagedPath, verified);
      await fsp.mkdir(path.dirname(finalPath), { recursive: true });
      await fsp.rename(stagedPath, finalPath);
      await fsyncDir(path.dirname(finalPath));
      crashPoint('after-rename');
    } catch (err) {
      await fsp.rm(stagedPath, { force: true });
      throw diskFullError(err, key);
    }
  }

  /** Files under `blobs-v1/` whose path is a blob key's (stray names are not blobs). */
  async *list(): AsyncIterable<StoredBlob> {
    for (const { key, file } of await localBlobFiles(this.layout)) {
      try {
        yield { key, size: (await fsp.stat(file)).size };
      } catch (err) {
        if (!isNotFound(err)) throw err; // removed meanwhile: no longer stored
      }
    }
  }

  async close(): Promise<void> {}
}

/**
 * Every file under the local `blobs-v1/`: `key` set when its path is exactly the one of a blob
 * key (a candidate blob), null for stray names (which no store ever wrote).
 */
export async function localFiles(layout: BlobLayout): Promise<Array<{ file: string; key: BlobKey | null }>> {
  const root = layout.blobsDir;
  let entries: fs.Dirent[];
  try {
    entries = await fsp.readdir(root, { recursive: true, withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const out: Array<{ file: string; key: BlobKey | null }> = [];
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const rel = path.relative(root, file).split(path.sep);
    const algorithm = rel[0] as DigestAlgorithm;
    const key = rel.length === 4 && (algorithm === 'sha256' || algorithm === 'gitsha1') ? blobKey(algorithm, entry.name) : null;
    out.push({ file, key: key && layout.blobPath(key) === file ? key : null });
  }
  return out;
}

async function localBlobFiles(layout: BlobLayout): Promise<Array<{ file: string; key: BlobKey }>> {
  return (await localFiles(layout)).filter((f): f is { file: string; key: BlobKey } => f.key !== null);
}

/**
 * The check every driver's `commit` makes before anything becomes visible: the digest the caller
 * found is the key's, and the staged file has the size the caller hashed.
 */
export async function checkStaged(key: BlobKey, stagedPath: string, verified: VerifiedBlob): Promise<void> {
  const { hex } = parseBlobKey(key);
  if (verified.digest !== hex) {
    throw new MirrorError('IntegrityError', `digest mismatch for ${key}: content hashes to ${verified.digest}`);
  }
  const st = await fsp.stat(stagedPath);
  if (st.size !== verified.size) {
    throw new MirrorError('IntegrityError', `size mismatch for ${key}: the staged file has ${st.size} bytes, ${verified.size} were verified`);
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

/**
 * A committed blob that only a remote store holds (no local copy): read by ranged requests, so
 * nothing is held open and `release` has nothing to let go.
 */
export class RemoteBlob {
  readonly #open: (start: number, end: number) => Readable;

  constructor(open: (start: number, end: number) => Readable) {
    this.#open = open;
  }

  /** Bytes [start, end] (inclusive); errors (StorageUnavailable) surface on the stream. */
  openRead(start: number, end: number): Readable {
    return this.#open(start, end);
  }

  release(): void {}
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT';
}
