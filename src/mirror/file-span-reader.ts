/**
 * FileSpanReader: a BlobReader over bytes [start, end] of a committed blob file, the hit path.
 *
 * - Reads into buffers recycled through the shared ReadBuffers (sized for the current number of
 *   readers, see read-buffers.ts), never more than two at once: the chunk the socket is writing
 *   and the next one, read ahead meanwhile so the disk read overlaps the socket write.
 * - Shares its response's open file (BlobFile, one fd per response however many ranges it
 *   serves); positional reads, so readers never disturb each other.
 * - A file shorter than the span (truncated behind the mirror's back) fails the reader (the
 *   connection is cut: never a short body passed off as complete) and calls `onShort`, so the
 *   blob can be forgotten and fetched again.
 * BlobReader contract (blob-reader.ts): a chunk's memory is reused only after `release(chunk)`;
 * `close()` may come before chunks still with the socket are released: their buffers return to
 * the pool when they are.
 */
import fs from 'node:fs';
import { MirrorError } from '../errors.js';
import type { BlobFile } from '../storage/blob-store.js';
import type { BlobReader } from './blob-reader.js';
import type { ReadBuffer, ReadBuffers } from './read-buffers.js';

interface Read extends ReadBuffer {
  /** Resolves with the chunk (a view of `buf`); rejects on a read error or a short file. */
  done: Promise<Buffer>;
}

export class FileSpanReader implements BlobReader {
  readonly #file: BlobFile;
  readonly #buffers: ReadBuffers;
  readonly #onShort: (() => void) | undefined;
  #pos: number;
  readonly #stop: number;
  /** The read in flight or finished, not yet returned by `next()`. */
  #ahead: Read | null = null;
  /** Chunks returned and not yet released, with the buffer each is a view of. */
  readonly #lent = new Map<Buffer, Read>();
  /** `next()` waiting for a buffer to be released. */
  #wake: (() => void) | null = null;
  #closed = false;
  #left = false;
  /** Once a read failed, every later `next()` fails with it. */
  #failure: Error | undefined = undefined;

  /** @param end inclusive; `end < start` is an empty span. */
  constructor(file: BlobFile, start: number, end: number, buffers: ReadBuffers, onShort?: () => void) {
    this.#file = file.retain();
    this.#buffers = buffers;
    this.#onShort = onShort;
    this.#pos = start;
    this.#stop = end + 1;
    buffers.join();
  }

  async next(): Promise<Buffer | null> {
    if (this.#closed) return null;
    if (this.#failure !== undefined) throw this.#failure;
    if (!this.#ahead) {
      if (this.#pos >= this.#stop) return null;
      while (this.#lent.size >= 2 && !this.#closed) await new Promise<void>((resolve) => (this.#wake = resolve));
      if (this.#closed) return null;
      this.#readAhead();
    }
    const read = this.#ahead!;
    let chunk: Buffer;
    try {
      chunk = await read.done;
    } catch (err) {
      if (!this.#closed) {
        this.#ahead = null;
        this.#failure = err instanceof Error ? err : new Error(String(err));
        this.#buffers.giveBack(read);
      }
      throw err;
    }
    if (this.#closed) return null; // close() gives the buffer back
    this.#ahead = null;
    this.#lent.set(chunk, read);
    if (this.#lent.size < 2) this.#readAhead();
    return chunk;
  }

  release(chunk: Buffer): void {
    const read = this.#lent.get(chunk);
    if (!read) return;
    this.#lent.delete(chunk);
    this.#buffers.giveBack(read);
    if (this.#closed) {
      this.#maybeLeave();
      return;
    }
    if (this.#failure !== undefined) return;
    const wake = this.#wake;
    this.#wake = null;
    if (wake) wake();
    else if (!this.#ahead && this.#lent.size < 2) this.#readAhead();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
    const ahead = this.#ahead;
    if (!ahead) {
      this.#file.release();
      this.#maybeLeave();
      return;
    }
    // The read in flight still uses the fd and its buffer: both go back once it settles.
    const settle = (): void => {
      this.#ahead = null;
      this.#buffers.giveBack(ahead);
      this.#file.release();
      this.#maybeLeave();
    };
    ahead.done.then(settle, settle);
  }

  #maybeLeave(): void {
    if (this.#left || this.#ahead || this.#lent.size > 0) return;
    this.#left = true;
    this.#buffers.leave();
  }

  #readAhead(): void {
    if (this.#ahead || this.#pos >= this.#stop) return;
    const remaining = this.#stop - this.#pos;
    const { buf, pooled } = this.#buffers.forRead(remaining);
    const length = Math.min(buf.length, remaining);
    const position = this.#pos;
    this.#pos += length;
    const done = readFully(this.#file.fd, buf, length, position).then(
      () => (length === buf.length ? buf : buf.subarray(0, length)),
      (err: unknown) => {
        if (err instanceof ShortFile) this.#onShort?.();
        throw err instanceof ShortFile ? new MirrorError('Internal', `the cached blob is shorter than recorded (${err.got} of ${length} bytes at ${position})`) : err;
      },
    );
    // Nobody may be waiting when it fails (closed meanwhile): the failure is next()'s to report.
    done.catch(() => undefined);
    this.#ahead = { buf, pooled, done };
  }
}

class ShortFile extends Error {
  constructor(readonly got: number) {
    super('short file');
  }
}

/** Reads exactly `length` bytes at `position` into `buf` (a file ending earlier is a ShortFile). */
function readFully(fd: number, buf: Buffer, length: number, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const step = (): void => {
      fs.read(fd, buf, got, length - got, position + got, (err, n) => {
        if (err) return reject(err);
        if (n === 0) return reject(new ShortFile(got));
        got += n;
        if (got === length) resolve();
        else step();
      });
    };
    step();
  });
}
