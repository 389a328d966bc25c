/**
 * FillLimiter: a global cap on fills running at once. Coalescing cannot help
 * thousands of distinct misses; without a cap each would open an upstream connection, a staging
 * file and its own buffers at the same moment.
 *
 * A fill takes a slot if one is free, else waits in a FIFO queue; past `maxQueued` waiters the
 * miss is refused at once with `Overloaded` (503 + Retry-After), which clients retry. Only fills
 * are limited: joiners of a fill, hits and range bypasses never come here.
 */
import { MirrorError } from '../errors.js';

/** Retry-After (seconds) sent with a refusal. */
const RETRY_AFTER_SECONDS = 5;

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class FillLimiter {
  readonly maxActive: number;
  readonly maxQueued: number;
  #active = 0;
  /** FIFO; `#head` avoids O(n) shifts when the queue is long. */
  #queue: Waiter[] = [];
  #head = 0;
  #closed: MirrorError | null = null;

  constructor(maxActive: number, maxQueued: number) {
    this.maxActive = Math.max(1, maxActive);
    this.maxQueued = Math.max(0, maxQueued);
  }

  get active(): number {
    return this.#active;
  }

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /** Takes a free slot now (true) or none (false). */
  tryAcquire(): boolean {
    if (this.#closed || this.#active >= this.maxActive) return false;
    this.#active++;
    return true;
  }

  /**
   * A place in the queue: resolves when a slot is handed over (call `release()` once done).
   * Throws `Overloaded` at once when the queue is full.
   */
  wait(): Promise<void> {
    if (this.#closed) throw this.#closed;
    if (this.queued >= this.maxQueued) {
      throw new MirrorError(
        'Overloaded',
        `The mirror is busy: ${this.#active} downloads running and ${this.queued} waiting (maxConcurrentFills ${this.maxActive}, maxQueuedFills ${this.maxQueued}); retry in a few seconds`,
        { headers: { 'Retry-After': String(RETRY_AFTER_SECONDS) } },
      );
    }
    return new Promise<void>((resolve, reject) => this.#queue.push({ resolve, reject }));
  }

  /** Gives a slot back: the first waiter gets it, else it becomes free. */
  release(): void {
    const next = this.#shift();
    if (next && !this.#closed) next.resolve();
    else this.#active = Math.max(0, this.#active - 1);
  }

  /** Refuses everything from now on and rejects every waiter with `reason` (shutdown). */
  close(reason: MirrorError): void {
    this.#closed = reason;
    for (let w = this.#shift(); w; w = this.#shift()) w.reject(reason);
  }

  #shift(): Waiter | undefined {
    if (this.#head >= this.#queue.length) return undefined;
    const w = this.#queue[this.#head++];
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return w;
  }
}
