/**
 * A Readable over bytes [start, end] of a file that may still be growing.
 *
 * It reads with its own file descriptor up to what the source says is readable, then waits for
 * the next progress notification: byte-granular, no polling, no buffering beyond one read. The fd
 * stays valid when the staging file is renamed into place. Destroying the reader (client gone)
 * only closes this fd and unsubscribes; the source (a Fill) is not affected.
 *
 * A reader may be created at any moment of the source's life (before its file exists, while it
 * grows, as it is renamed into place or removed after a failure): it opens the file on its first
 * read and waits for the source's next change whenever there is nothing to open yet, so it ends
 * with the right bytes or the source's failure, never with a missing file.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';

export interface GrowingSource {
  /** Offsets below this may be read now. Equals the size once the content is final. */
  readableLimit(): number;
  /** Set when the source failed: readers are destroyed with it. */
  readonly failure: Error | undefined;
  /** True once nothing changes any more (committed or failed). */
  readonly settled: boolean;
  /**
   * Path to open: the staging file while growing (`fallback`: where it is renamed to), the final
   * path once committed; `undefined` while there is no file yet (the next change announces it).
   */
  paths(): { current: string; fallback: string } | undefined;
  /** Calls `listener` on the next change (file created, bytes added, committed or failed). Returns an unsubscribe. */
  onChange(listener: () => void): () => void;
}

const READ_CHUNK = 512 * 1024;

export class GrowingFileReader extends Readable {
  readonly #source: GrowingSource;
  #pos: number;
  readonly #end: number;
  #fd: number | null = null;
  #unsubscribe: (() => void) | null = null;

  /** @param end inclusive; `end < start` means an empty stream. */
  constructor(source: GrowingSource, start: number, end: number) {
    super({ highWaterMark: READ_CHUNK });
    this.#source = source;
    this.#pos = start;
    this.#end = end;
  }

  override _read(size: number): void {
    this.#pump(size);
  }

  #pump(size: number): void {
    if (this.destroyed) return;
    const failure = this.#source.failure;
    if (failure) {
      this.destroy(failure);
      return;
    }
    if (this.#pos > this.#end) {
      this.push(null);
      return;
    }
    const fd = this.#fd;
    if (fd === null) {
      this.#open(size);
      return;
    }
    const limit = this.#source.readableLimit();
    if (this.#pos >= limit) {
      this.#waitForChange(() => this.#pump(size));
      return;
    }
    const len = Math.min(Math.max(size, READ_CHUNK), limit - this.#pos, this.#end + 1 - this.#pos);
    const buf = Buffer.allocUnsafe(len);
    fs.read(fd, buf, 0, len, this.#pos, (err, n) => {
      if (err) {
        this.destroy(err);
        return;
      }
      if (n === 0) {
        // The source promised bytes the file does not have: never hand out a short body silently.
        this.destroy(this.#source.failure ?? new Error('source file shorter than its readable limit'));
        return;
      }
      this.#pos += n;
      this.push(n === len ? buf : buf.subarray(0, n));
    });
  }

  #waitForChange(then: () => void): void {
    this.#unsubscribe = this.#source.onChange(() => {
      this.#unsubscribe = null;
      then();
    });
  }

  /**
   * Opens the staging file, or the final file when it was renamed into place meanwhile. No file
   * yet, or neither path there while the source is unsettled (a failure removed the staging file
   * and is about to be announced): wait for the next change and try again.
   */
  #open(size: number): void {
    const paths = this.#source.paths();
    if (!paths) {
      this.#waitForChange(() => this.#pump(size));
      return;
    }
    openEither(paths.current, paths.fallback, (err, fd) => {
      if (fd !== undefined) {
        if (this.destroyed) fs.close(fd, () => undefined);
        else {
          this.#fd = fd;
          this.#pump(size);
        }
        return;
      }
      if (this.destroyed) return;
      if (this.#source.failure) this.destroy(this.#source.failure);
      else if (err?.code === 'ENOENT' && !this.#source.settled) this.#waitForChange(() => this.#pump(size));
      else this.destroy(err ?? new Error('cannot open the source file'));
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    const fd = this.#fd;
    this.#fd = null;
    if (fd === null) callback(error);
    else fs.close(fd, () => callback(error));
  }
}

/** Opens `current`, or `fallback` when `current` is gone (renamed into place meanwhile). */
function openEither(current: string, fallback: string, callback: (err: NodeJS.ErrnoException | null, fd?: number) => void): void {
  fs.open(current, 'r', (err, fd) => {
    if (!err) return callback(null, fd);
    if (err.code !== 'ENOENT' || current === fallback) return callback(err);
    fs.open(fallback, 'r', (err2, fd2) => (err2 ? callback(err2) : callback(null, fd2)));
  });
}
