/**
 * A Readable over bytes [start, end] of a file that may still be growing.
 *
 * It reads with its own file descriptor up to what the source says is readable, then waits for
 * the next progress notification: byte-granular, no polling, no buffering beyond one read. The file
 * is opened when the first bytes are readable, not before: a reader may be created for a fill
 * that has no staging file yet (just admitted, or waiting for upstream), and nothing can be read
 * before then anyway. The fd stays valid when the staging file is renamed into place. Destroying
 * the reader (client gone) only closes this fd and unsubscribes; the source (a Fill) is not
 * affected.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';

export interface GrowingSource {
  /** Offsets below this may be read now. Equals the size once the content is final. */
  readableLimit(): number;
  /** Set when the source failed: readers are destroyed with it. */
  readonly failure: Error | undefined;
  /**
   * Path to open: the staging file while growing, the final path after commit. Asked only once
   * `readableLimit()` is above the reader's position (the file then exists at one of the two).
   */
  paths(): { current: string; fallback: string };
  /** Calls `listener` on the next change (bytes added, committed or failed). Returns an unsubscribe. */
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
    const limit = this.#source.readableLimit();
    if (this.#pos >= limit) {
      this.#unsubscribe = this.#source.onChange(() => {
        this.#unsubscribe?.();
        this.#unsubscribe = null;
        this.#pump(size);
      });
      return;
    }
    const fd = this.#fd;
    if (fd === null) {
      this.#open(() => this.#pump(size));
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

  /** Opens the source's file (the final path if it was renamed into place meanwhile), then `next`. */
  #open(next: () => void): void {
    const { current, fallback } = this.#source.paths();
    const opened = (err: NodeJS.ErrnoException | null, fd: number): void => {
      if (err) {
        this.destroy(this.#source.failure ?? err);
      } else if (this.destroyed) {
        fs.close(fd, () => undefined);
      } else {
        this.#fd = fd;
        next();
      }
    };
    fs.open(current, 'r', (err, fd) => {
      // Renamed into place (committed) between the path lookup and the open.
      if (err?.code === 'ENOENT' && current !== fallback) fs.open(fallback, 'r', opened);
      else opened(err, fd);
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
