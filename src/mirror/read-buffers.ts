/**
 * ReadBuffers: the memory that readers of cached blobs read into, shared by every such reader.
 *
 * Why: a fresh buffer per read is costly (allocation, first touch of new pages, GC pressure from
 * external memory); on the machines measured it cost more than the read itself. Buffers are
 * recycled through a free list instead, and their size adapts to the load: big reads (fewer
 * syscalls and loop turns) when few responses stream, smaller ones when many do.
 *
 * Budget (contract):
 * - Each registered reader holds at most 2 buffers at once (one with the socket, one being read
 *   ahead); readers enforce that.
 * - `chunkSize()` is the power of two closest below `budget ÷ (2 × readers)`, clamped to
 *   [minChunk, maxChunk]: with the defaults (64 MiB, 256 KiB – 4 MiB) 1 to 8 readers read 4 MiB at
 *   a time, 64 readers 512 KiB, 128 and more 256 KiB.
 * - A buffer above `minChunk` is only handed out while the bytes in use stay within `budget`
 *   (otherwise a smaller one is), and a `minChunk` buffer is always handed out: a reader never
 *   waits for memory held by another reader's (possibly stalled) client. Hence, at all times,
 *   `inUse ≤ budget + 2 × minChunk × readers` (bounded like a Node read stream's own buffer per
 *   reader once the budget is spread thin), and `inUse ≤ budget` while `readers ≤ budget ÷ (2 ×
 *   minChunk)` and every reader was sized for the current count.
 * - A buffer given back is kept for reuse (a free list per size; one of half the size asked for
 *   is used rather than allocating) while buffers in use and free together stay within that same
 *   bound, `budget + 2 × minChunk × readers`; an allocation first drops free buffers of other
 *   sizes to stay within it. The free list is emptied after `idleTrimMs` without readers.
 */

export interface ReadBuffersOptions {
  /** Bytes of buffers above the per-reader floor, all readers together (default 64 MiB). */
  budget?: number;
  /** Smallest pooled buffer, the per-read floor (power of two; default 256 KiB). */
  minChunk?: number;
  /** Largest buffer (power of two; default 4 MiB). */
  maxChunk?: number;
  /** Free buffers are dropped after this long without any reader (default 60 s). */
  idleTrimMs?: number;
}

export interface ReadBuffersStats {
  readers: number;
  peakReaders: number;
  /** Bytes in buffers handed out and not yet given back. */
  inUse: number;
  peakInUse: number;
  /** Bytes in the free list. */
  free: number;
  /** Buffers allocated so far (the rest of the takes were recycled). */
  allocations: number;
  takes: number;
}

/** A buffer for one read: from the pool (`pooled`), or a plain allocation for a small rest. */
export interface ReadBuffer {
  buf: Buffer;
  pooled: boolean;
}

/** Reads of fewer bytes than this get a plain allocation (cheap at that size), not a pooled buffer. */
export const SMALL_READ = 64 * 1024;

export const DEFAULT_READ_BUDGET = 64 * 1024 * 1024;
export const DEFAULT_MIN_CHUNK = 256 * 1024;
export const DEFAULT_MAX_CHUNK = 4 * 1024 * 1024;

export class ReadBuffers {
  readonly budget: number;
  readonly minChunk: number;
  readonly maxChunk: number;
  readonly #idleTrimMs: number;
  /** Free buffers by size (powers of two from minChunk to maxChunk). */
  readonly #free = new Map<number, Buffer[]>();
  #freeBytes = 0;
  #readers = 0;
  #peakReaders = 0;
  #inUse = 0;
  #peakInUse = 0;
  #allocations = 0;
  #takes = 0;
  #trimTimer: NodeJS.Timeout | null = null;

  constructor(opts: ReadBuffersOptions = {}) {
    this.minChunk = opts.minChunk ?? DEFAULT_MIN_CHUNK;
    this.maxChunk = opts.maxChunk ?? DEFAULT_MAX_CHUNK;
    this.budget = opts.budget ?? DEFAULT_READ_BUDGET;
    this.#idleTrimMs = opts.idleTrimMs ?? 60_000;
    if (!isPowerOfTwo(this.minChunk) || !isPowerOfTwo(this.maxChunk) || this.maxChunk < this.minChunk) {
      throw new Error(`read buffers: chunk sizes must be powers of two with min ≤ max (got ${this.minChunk}, ${this.maxChunk})`);
    }
  }

  /** A reader starts: buffers are sized for one more. */
  join(): void {
    this.#readers++;
    if (this.#readers > this.#peakReaders) this.#peakReaders = this.#readers;
    if (this.#trimTimer) {
      clearTimeout(this.#trimTimer);
      this.#trimTimer = null;
    }
  }

  /** A reader is done and has given back every buffer it took. */
  leave(): void {
    this.#readers--;
    if (this.#readers === 0 && this.#freeBytes > 0 && !this.#trimTimer) {
      this.#trimTimer = setTimeout(() => this.#trim(), this.#idleTrimMs);
      this.#trimTimer.unref();
    }
  }

  /** The size a reader should read next, for the current number of readers. */
  chunkSize(): number {
    const share = Math.floor(this.budget / (2 * Math.max(1, this.#readers)));
    return Math.min(this.maxChunk, Math.max(this.minChunk, floorPowerOfTwo(share)));
  }

  /**
   * A buffer of `size` bytes (a power of two between minChunk and maxChunk), or a smaller one if
   * the budget does not allow it right now; never smaller than minChunk. Give it back with `give`.
   */
  take(size: number): Buffer {
    let s = Math.min(this.maxChunk, Math.max(this.minChunk, size));
    while (s > this.minChunk && this.#inUse + s > this.budget) s /= 2;
    this.#takes++;
    // A free buffer of that size, or of half that size (the reader reads a bit less at a time),
    // before allocating: fresh memory costs more than a smaller read, and the size asked for
    // shifts back and forth as readers come and go.
    let buf = this.#free.get(s)?.pop() ?? (s > this.minChunk ? this.#free.get(s / 2)?.pop() : undefined);
    if (buf) this.#freeBytes -= buf.length;
    else {
      // Make room by dropping free buffers of sizes not asked for now (a burst of big ones left
      // behind by fewer readers earlier), largest first.
      const bound = this.#bound();
      for (const c of [...this.#free.keys()].sort((a, b) => b - a)) {
        const list = this.#free.get(c)!;
        while (list.length > 0 && this.#freeBytes + this.#inUse + s > bound) {
          list.pop();
          this.#freeBytes -= c;
        }
      }
      buf = Buffer.allocUnsafeSlow(s);
      this.#allocations++;
    }
    this.#inUse += buf.length;
    if (this.#inUse > this.#peakInUse) this.#peakInUse = this.#inUse;
    return buf;
  }

  /**
   * A buffer for a read of the next `remaining` bytes of a span: a pooled one of the size readers
   * should read now (no bigger than the rest needs, rounded up to a power of two), or a plain
   * allocation below SMALL_READ. Give it back with `giveBack`.
   */
  forRead(remaining: number): ReadBuffer {
    if (remaining < SMALL_READ) return { buf: Buffer.allocUnsafe(remaining), pooled: false };
    return { buf: this.take(Math.min(this.chunkSize(), ceilPowerOfTwo(remaining))), pooled: true };
  }

  /** Gives back a buffer from `forRead` (a plain one is left to the GC). */
  giveBack(read: ReadBuffer): void {
    if (read.pooled) this.give(read.buf);
  }

  /** Gives back a buffer from `take` (the caller must no longer use it, nor anyone it lent it to). */
  give(buf: Buffer): void {
    this.#inUse -= buf.length;
    // Kept while buffers in use and free ones together stay within the bound of buffers in use
    // (budget plus the readers' floors); beyond it, memory would be held for load that has passed.
    if (this.#freeBytes + this.#inUse + buf.length > this.#bound()) return; // left to the GC
    let list = this.#free.get(buf.length);
    if (!list) this.#free.set(buf.length, (list = []));
    list.push(buf);
    this.#freeBytes += buf.length;
  }

  stats(): ReadBuffersStats {
    return {
      readers: this.#readers,
      peakReaders: this.#peakReaders,
      inUse: this.#inUse,
      peakInUse: this.#peakInUse,
      free: this.#freeBytes,
      allocations: this.#allocations,
      takes: this.#takes,
    };
  }

  /** Most bytes the pool holds, in use and free: the budget plus every reader's floor. */
  #bound(): number {
    return this.budget + 2 * this.minChunk * this.#readers;
  }

  #trim(): void {
    this.#trimTimer = null;
    if (this.#readers > 0) return;
    this.#free.clear();
    this.#freeBytes = 0;
  }
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function ceilPowerOfTwo(n: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(1, n)));
}

function floorPowerOfTwo(n: number): number {
  return n < 1 ? 0 : 2 ** Math.floor(Math.log2(n));
}
