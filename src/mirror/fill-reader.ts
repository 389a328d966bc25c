/**
 * FillReader: a BlobReader of bytes [start, end] of a blob whose fill may still be running (or
 * still queued for a slot, or already committed). See blob-reader.ts for the contract.
 *
 * - Bytes still in the fill's in-memory window (just written) are handed out as zero-copy views:
 *   one copy in memory, however many readers at the head of the fill.
 * - Bytes no longer in memory (the reader fell behind, or joined late) are read from the staging
 *   file through the fill's own descriptor, in reads of up to 1 MiB (what is readable), into
 *   buffers reused once the caller released them; after the commit, from the final file.
 * - Bytes not there yet: the reader waits for them, which tells the fill where it is wanted
 *   (demand first), and wakes when they are written. It never gets a byte whose write has not
 *   completed, nor the blob's last byte before the fill is verified and committed.
 * A reader may be created at any moment of a fill's life; it ends with the right bytes or the
 * fill's failure, never with a missing file.
 */
import fsp from 'node:fs/promises';
import type { BlobReader } from './blob-reader.js';
import type { FillView } from './fill.js';

const READ_BYTES = 1024 * 1024;
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
/**
 * Read buffers released by callers, shared by every fill reader (fresh memory is slow to touch
 * the first time on VMs; reuse avoids it and the garbage). The free list is capped; a reader never
 * waits for a buffer (a stalled client holding one must not block anyone else).
 */
const FREE_BUFFERS = 64;
const freeBuffers: Buffer[] = [];

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
  readonly #lent = new Set<ArrayBufferLike>();

  constructor(fill: FillView | Promise<FillView>, start: number, end: number) {
    this.#running = Promise.resolve(fill);
    this.#pos = start;
    this.#stop = end + 1;
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
        const buf = this.#buffer();
        const len = Math.min(buf.length, avail - this.#pos);
        let n: number;
        try {
          n = await fill.read(buf, this.#pos, len);
        } catch {
          // The staging file was closed: the fill just failed or committed. Look again once it settled.
          this.#giveBack(buf);
          await this.#interruptible(fill.done.catch(() => undefined));
          continue;
        }
        if (n === 0) {
          this.#giveBack(buf);
          // The fill promised bytes the file does not have: never hand out a short body silently.
          throw fill.failure ?? new Error('staging file shorter than its readable bytes');
        }
        await pace(n);
        this.#pos += n;
        return buf.subarray(0, n);
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
    if (!this.#lent.delete(chunk.buffer)) return;
    if (freeBuffers.length < FREE_BUFFERS) freeBuffers.push(Buffer.from(chunk.buffer, 0, READ_BYTES));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelWait?.();
    this.#interrupt?.();
    // Buffers still lent stay the caller's (a socket may still hold them): never reused.
    this.#lent.clear();
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

  #buffer(): Buffer {
    const buf = freeBuffers.pop() ?? Buffer.allocUnsafeSlow(READ_BYTES);
    this.#lent.add(buf.buffer);
    return buf;
  }

  #giveBack(buf: Buffer): void {
    this.#lent.delete(buf.buffer);
    if (freeBuffers.length < FREE_BUFFERS) freeBuffers.push(buf);
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
    const buf = this.#buffer();
    const len = Math.min(buf.length, this.#stop - this.#pos);
    const { bytesRead } = await this.#final.read(buf, 0, len, this.#pos);
    if (bytesRead === 0) {
      this.#giveBack(buf);
      throw new Error(`blob file ends at ${this.#pos}, before ${this.#stop}`);
    }
    await pace(bytesRead);
    this.#pos += bytesRead;
    return buf.subarray(0, bytesRead);
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
export function fillReader(fill: FillView | Promise<FillView>, start: number, end: number): BlobReader {
  return new FillReader(fill, start, end);
}
