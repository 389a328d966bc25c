/**
 * Content-addressed blob storage on the local filesystem, with staged, verified writes.
 *
 * Contract (the Commit/Cancel model of distribution's BlobWriter):
 * - `createWriter(key, size)` opens a fresh staging file. `write()` appends and hashes.
 * - `commit()` checks the byte count and the digest against the key, fsyncs the file, renames it
 *   into place and fsyncs the directory. Only then is the blob visible to `stat`/`openRead`.
 *   On mismatch it throws `IntegrityError` and removes the staging file.
 * - `abort()` removes the staging file; it is idempotent and safe after a failed commit.
 * Blobs are immutable: committing a key that already exists just replaces it with identical bytes.
 * A full disk (ENOSPC, EDQUOT) surfaces as `InsufficientStorage`, whatever step hit it.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { MirrorError } from '../errors.js';
import { BlobLayout, parseBlobKey, type BlobKey } from './blob-layout.js';
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

export class FsBlobStore {
  readonly layout: BlobLayout;

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

  async createWriter(key: BlobKey, size: number): Promise<BlobWriter> {
    const stagingPath = this.layout.stagingPath(`${randomBytes(12).toString('hex')}.part`);
    const handle = await fsp.open(stagingPath, 'wx', 0o644).catch((err: unknown) => {
      throw diskFullError(err, key);
    });
    return new FsBlobWriter(key, size, stagingPath, handle, this.layout.blobPath(key));
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

class FsBlobWriter implements BlobWriter {
  readonly key: BlobKey;
  readonly size: number;
  readonly stagingPath: string;
  #handle: fsp.FileHandle | null;
  #hasher: Hash;
  #written = 0;
  #finalPath: string;
  #settled = false;

  constructor(key: BlobKey, size: number, stagingPath: string, handle: fsp.FileHandle, finalPath: string) {
    this.key = key;
    this.size = size;
    this.stagingPath = stagingPath;
    this.#handle = handle;
    this.#hasher = newHasher(key, size);
    this.#finalPath = finalPath;
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
      await fsp.mkdir(path.dirname(this.#finalPath), { recursive: true });
      await fsp.rename(this.stagingPath, this.#finalPath);
      await fsyncDir(path.dirname(this.#finalPath));
      crashPoint('after-rename');
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

async function fsyncDir(dir: string): Promise<void> {
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
