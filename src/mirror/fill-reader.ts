/**
 * FillReader: a BlobReader of bytes [start, end] of a blob whose fill may still be running (or
 * still queued for a slot, or already committed). See blob-reader.ts for the contract.
 *
 * - Bytes still in the fill's in-memory window (just written) are handed out as zero-copy views:
 *   one copy in memory, however many readers at the head of the fill.
 * - Bytes no longer in memory (the reader fell behind, or joined late) are read from the staging
 *   file through the fill's own descriptor, as much as is readable up to the shared ReadBuffers'
 *   chunk size (read-buffers.ts: 4 MiB for a few readers, 256 KiB for a hundred), into buffers
 *   recycled through those ReadBuffers, which also bound their memory; after the commit, from the
 *   final file, the same way. A herd behind the head therefore holds what the hit path would for
 *   as many readers, not a fixed buffer each.
 * - Bytes not there yet: the reader waits for them, which tells the fill where it is wanted
 *   (demand first), and wakes when they are written. It never gets a byte whose write has not
 *   completed, nor the blob's last byte before the fill is verified and committed.
 * A reader may be created at any moment of a fill's life; it ends with the right bytes or the
 * fill's failure, never with a missing file.
 */
import fsp from 'node:fs/promises';
import type { BlobReader } from './blob-reader.js';
import type { FillView } from './fill.js';
import type { ReadBuffer, ReadBuffers } from './read-buffers.js';
/** Most bytes handed out from memory per call. */
const WINDOW_SLICE_BYTES = 512 * 1024;
/**
 * Bytes all fill readers together hand out in one turn of the event loop; past it, readers wait
 * for the next turn (in the order they came). Each chunk handed out is copied into a socket at
 * once: a hundred readers at the head (window bytes need no I/O) or a hundred reads completed by
 * the thread pool together would otherwise copy a hundred megabytes in a single turn and stall
 * every other connection.
 */
const TURN_BUDGET_BYTES = 4 * 1024 * 1024;

class FillReader implements BlobReader {
  #fill: FillView | null = null;
  readonly #running: Promise<FillView>;
  #pos: number;
  /** Exclusive end. */
  readonly #stop: number;
  #closed = false;
  #cancelWait: (() => void) | null = null;
  #interrupt: (() => void) | null = null;
  #final: fsp.FileHandle | null = null;
  #opening: Promise<fsp.FileHandle> | null = null;
  readonly #buffers: ReadBuffers;
  /** Chunks read into a buffer of ours and returned, not yet released: chunk → its buffer (pooled or not). */
  readonly #lent = new Map<Buffer, ReadBuffer>();
  /** Buffers taken for a read still in flight. */
  #reading = 0;
  #left = false;
  /** `next()` waiting for a lent chunk to come back. */
  #wakeOnRelease: (() => void) | null = null;

  constructor(fill: FillView | Promise<FillView>, start: number, end: number, buffers: ReadBuffers) {
    this.#running = Promise.resolve(fill);
    this.#pos = start;
    this.#stop = end + 1;
    this.#buffers = buffers;
    buffers.join();
  }

  async next(): Promise<Buffer | null> {
    if (this.#closed || this.#pos >= this.#stop) return null;
    const fill = this.#fill ?? (await this.#interruptible(this.#running));
    if (fill) this.#fill = fill;
    for (;;) {
      if (this.#closed || !fill) return null;
      if (fill.failure) throw fill.failure;
      if (fill.state === 'committed') return this.#readFinal(fill);
      const avail = Math.min(fill.readableEnd(this.#pos), this.#stop);
      if (avail > this.#pos) {
        const view = fill.slice(this.#pos, Math.min(avail, this.#pos + WINDOW_SLICE_BYTES));
        if (view) {
          await pace(view.length);
          if (this.#closed) return null;
          this.#pos += view.length;
          return view;
        }
        if (!(await this.#room())) return null;
        const taken = this.#take(avail - this.#pos);
        const len = Math.min(taken.buf.length, avail - this.#pos);
        let n: number;
        try {
          n = await fill.read(taken.buf, this.#pos, len);
        } catch {
          // The staging file was closed: the fill just failed or committed. Look again once it settled.
          this.#giveBack(taken);
          await this.#interruptible(fill.done.catch(() => undefined));
          continue;
        }
        if (n === 0) {
          this.#giveBack(taken);
          // The fill promised bytes the file does not have: never hand out a short body silently.
          throw fill.failure ?? new Error('staging file shorter than its readable bytes');
        }
        await pace(n);
        if (this.#closed) {
          this.#giveBack(taken);
          return null;
        }
        this.#pos += n;
        return this.#lend(taken, n);
      }
      const { changed, cancel } = fill.wait(this.#pos);
      this.#cancelWait = cancel;
      try {
        await this.#interruptible(changed);
      } finally {
        this.#cancelWait = null;
        cancel();
      }
    }
  }

  release(chunk: Buffer): void {
    const taken = this.#lent.get(chunk);
    if (!taken) return; // a view of the fill's window, or not ours
    this.#lent.delete(chunk);
    this.#buffers.giveBack(taken);
    const wake = this.#wakeOnRelease;
    this.#wakeOnRelease = null;
    wake?.();
    this.#maybeLeave();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelWait?.();
    this.#interrupt?.();
    this.#wakeOnRelease?.();
    this.#wakeOnRelease = null;
    // Chunks still lent stay the caller's (a socket may still hold them) until it releases them.
    this.#maybeLeave();
    const final = this.#final;
    this.#final = null;
    if (final) void final.close().catch(() => undefined);
    else void this.#opening?.then((h) => h.close()).catch(() => undefined);
  }

  /** `p`, or undefined as soon as the reader is closed. */
  async #interruptible<T>(p: Promise<T>): Promise<T | undefined> {
    if (this.#closed) return undefined;
    let interrupt!: () => void;
    const closed = new Promise<undefined>((resolve) => (interrupt = () => resolve(undefined)));
    this.#interrupt = interrupt;
    try {
      return await Promise.race([p, closed]);
    } finally {
      this.#interrupt = null;
    }
  }

  /**
   * Waits until fewer than two chunks of ours are with the caller (the ReadBuffers contract: the
   * one the socket writes and the next one); false once the reader is closed.
   */
  async #room(): Promise<boolean> {
    while (this.#lent.size >= 2 && !this.#closed) await new Promise<void>((resolve) => (this.#wakeOnRelease = resolve));
    return !this.#closed;
  }

  /** A buffer for a read of up to `wanted` bytes: pooled (sized for the current readers), or a plain one for a small rest. */
  #take(wanted: number): ReadBuffer {
    this.#reading++;
    return this.#buffers.forRead(wanted);
  }

  /** The read into `taken` got `n` bytes: the chunk goes to the caller until it releases it. */
  #lend(taken: ReadBuffer, n: number): Buffer {
    this.#reading--;
    const chunk = n === taken.buf.length ? taken.buf : taken.buf.subarray(0, n);
    this.#lent.set(chunk, taken);
    return chunk;
  }

  /** A buffer whose read failed or came too late. */
  #giveBack(taken: ReadBuffer): void {
    this.#reading--;
    this.#buffers.giveBack(taken);
    this.#maybeLeave();
  }

  /** Once closed and every buffer is back, the reader no longer counts for the buffers' sizing. */
  #maybeLeave(): void {
    if (this.#left || !this.#closed || this.#reading > 0 || this.#lent.size > 0) return;
    this.#left = true;
    this.#buffers.leave();
  }

  /** After the commit: the final file, through the reader's own descriptor. */
  async #readFinal(fill: FillView): Promise<Buffer | null> {
    if (!this.#final) {
      this.#opening ??= fsp.open(fill.finalPath, 'r');
      const handle = await this.#opening;
      if (this.#closed) {
        await handle.close().catch(() => undefined);
        return null;
      }
      this.#final = handle;
    }
    if (!(await this.#room())) return null;
    const taken = this.#take(this.#stop - this.#pos);
    const len = Math.min(taken.buf.length, this.#stop - this.#pos);
    let bytesRead: number;
    try {
      ({ bytesRead } = await this.#final.read(taken.buf, 0, len, this.#pos));
    } catch (err) {
      this.#giveBack(taken);
      throw err;
    }
    if (bytesRead === 0) {
      this.#giveBack(taken);
      throw new Error(`blob file ends at ${this.#pos}, before ${this.#stop}`);
    }
    await pace(bytesRead);
    if (this.#closed) {
      this.#giveBack(taken);
      return null;
    }
    this.#pos += bytesRead;
    return this.#lend(taken, bytesRead);
  }
}

let turnBytes = 0;
let resetScheduled = false;
let nextTurn: Promise<void> | null = null;

/** Waits until `n` more bytes fit in this turn's budget (a single chunk always fits an empty turn). */
async function pace(n: number): Promise<void> {
  for (;;) {
    if (turnBytes === 0 || turnBytes + n <= TURN_BUDGET_BYTES) {
      turnBytes += n;
      if (!resetScheduled) {
        resetScheduled = true;
        setImmediate(() => {
          turnBytes = 0;
          resetScheduled = false;
        });
      }
      return;
    }
    nextTurn ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        nextTurn = null;
        resolve();
      }),
    );
    await nextTurn;
  }
}

/** A reader of bytes [start, end] (inclusive) of `fill`, or of a fill that will start later. */
export function fillReader(fill: FillView | Promise<FillView>, start: number, end: number, buffers: ReadBuffers): BlobReader {
  return new FillReader(fill, start, end, buffers);
}

