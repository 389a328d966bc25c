/**
 * Content-addressed blob storage on the local filesystem, with staged, verified writes: the
 * filesystem driver of the BlobStore contract (blob-store-contract.ts), and the staging writer
 * every driver shares.
 *
 * Writer contract (the Commit/Cancel model of distribution's BlobWriter):
 * - `createWriter(key, size)` opens a fresh staging file. `write()` appends and hashes.
 * - `commit()` checks the byte count and the digest against the key and fsyncs the file, then
 *   hands it to the store's `commit` (here: rename into place and fsync the directory). Only then
 *   is the blob visible to `stat`/`openRead`. On mismatch it throws `IntegrityError` and removes
 *   the staging file.
 * - `abort()` removes the staging file; it is idempotent and safe after a failed commit.
 * Blobs are immutable: committing a key that already exists just replaces it with identical bytes.
 * A full disk (ENOSPC, EDQUOT) surfaces as `InsufficientStorage`, whatever step hit it.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { MirrorError } from '../errors.js';
import { BlobLayout, blobKey, parseBlobKey, type BlobKey, type DigestAlgorithm } from './blob-layout.js';
import type { BlobStore, StoredBlob, VerifiedBlob } from './blob-store-contract.js';
import { crashPoint } from './crash-points.js';
import { diskFullError } from './disk-space.js';

export interface BlobWriter {
  readonly key: BlobKey;
  readonly size: number;
  /** Path of the staging file; readers of an in-progress fill open it (their fd survives the rename). */
  readonly stagingPath: string;
  /** Bytes appended so far. */
  readonly bytesWritten: number;
  /**
   * Appends chunks, in order, with one vectored write; resolves when the bytes are in the file
   * (readable by other fds). Calls must not overlap.
   */
  write(chunks: readonly Uint8Array[]): Promise<void>;
  /** Verifies size and digest, fsyncs, renames into place. Returns the final path. */
  commit(): Promise<string>;
  /** Discards the staging file. Idempotent. */
  abort(): Promise<void>;
}

export function newHasher(key: BlobKey, size: number): Hash {
  const { algorithm } = parseBlobKey(key);
  if (algorithm === 'sha256') return createHash('sha256');
  // git blob id: sha1 over a header then the content.
  return createHash('sha1').update(`blob ${size}\0`);
}

/** The step after a staged file is verified: what `BlobStore.commit` does. */
export type CommitStaged = (key: BlobKey, stagedPath: string, verified: VerifiedBlob) => Promise<void>;

export class FsBlobStore implements BlobStore {
  readonly kind = 'fs';
  readonly layout: BlobLayout;
  readonly listedBlobsAreVerified = false;

  constructor(layout: BlobLayout) {
    this.layout = layout;
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

  async delete(key: BlobKey): Promise<void> {
    await fsp.rm(this.layout.blobPath(key), { force: true });
  }

  remove(key: BlobKey): Promise<void> {
    return this.delete(key);
  }

  createWriter(key: BlobKey, size: number): Promise<BlobWriter> {
    return createStagingWriter(this.layout, key, size, (k, staged, verified) => this.commit(k, staged, verified));
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

/** Opens a fresh staging file under the data dir; its writer's `commit()` verifies, then calls `commitStaged`. */
export async function createStagingWriter(layout: BlobLayout, key: BlobKey, size: number, commitStaged: CommitStaged): Promise<BlobWriter> {
  const stagingPath = layout.stagingPath(`${randomBytes(12).toString('hex')}.part`);
  const handle = await fsp.open(stagingPath, 'wx', 0o644).catch((err: unknown) => {
    throw diskFullError(err, key);
  });
  return new FsBlobWriter(key, size, stagingPath, handle, layout.blobPath(key), commitStaged);
}

class FsBlobWriter implements BlobWriter {
  readonly key: BlobKey;
  readonly size: number;
  readonly stagingPath: string;
  #handle: fsp.FileHandle | null;
  #hasher: Hash;
  #written = 0;
  #finalPath: string;
  #commitStaged: CommitStaged;
  #settled = false;

  constructor(key: BlobKey, size: number, stagingPath: string, handle: fsp.FileHandle, finalPath: string, commitStaged: CommitStaged) {
    this.key = key;
    this.size = size;
    this.stagingPath = stagingPath;
    this.#handle = handle;
    this.#hasher = newHasher(key, size);
    this.#finalPath = finalPath;
    this.#commitStaged = commitStaged;
  }

  get bytesWritten(): number {
    return this.#written;
  }

  async write(chunks: readonly Uint8Array[]): Promise<void> {
    if (!this.#handle || this.#settled) throw new Error('write after commit/abort');
    const total = chunks.reduce((n, c) => n + c.byteLength, 0);
    if (this.#written + total > this.size) {
      throw new MirrorError('IntegrityError', `upstream sent more than the expected ${this.size} bytes`);
    }
    let done = 0;
    let rest = chunks;
    try {
      while (done < total) {
        const { bytesWritten } = await this.#handle.writev(rest as Uint8Array[], this.#written + done);
        done += bytesWritten;
        if (done < total) rest = remainder(chunks, done); // short write (rare on regular files)
      }
    } catch (err) {
      throw diskFullError(err, this.key);
    }
    for (const c of chunks) this.#hasher.update(c);
    this.#written += total;
  }

  async commit(): Promise<string> {
    if (!this.#handle || this.#settled) throw new Error('commit after commit/abort');
    try {
      if (this.#written !== this.size) {
        throw new MirrorError('IntegrityError', `size mismatch: got ${this.#written} bytes, expected ${this.size}`);
      }
      const digest = this.#hasher.digest('hex');
      const { hex } = parseBlobKey(this.key);
      if (digest !== hex) {
        throw new MirrorError('IntegrityError', `digest mismatch for ${this.key}: content hashes to ${digest}`);
      }
      await this.#handle.sync();
      await this.#handle.close();
      this.#handle = null;
      crashPoint('after-staging-fsync');
      await this.#commitStaged(this.key, this.stagingPath, { size: this.#written, digest });
      this.#settled = true;
      return this.#finalPath;
    } catch (err) {
      await this.abort();
      throw diskFullError(err, this.key);
    }
  }

  async abort(): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    const handle = this.#handle;
    this.#handle = null;
    await handle?.close().catch(() => undefined);
    await fsp.rm(this.stagingPath, { force: true });
  }
}

/** The part of `chunks` after the first `skip` bytes. */
function remainder(chunks: readonly Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let left = skip;
  for (const c of chunks) {
    if (left >= c.byteLength) left -= c.byteLength;
    else {
      out.push(left > 0 ? c.subarray(left) : c);
      left = 0;
    }
  }
  return out;
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
