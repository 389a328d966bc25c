/**
 * WriteGate (config `diskWriters`): how many writes to staging files run at once on the data
 * dir. Each write is one large sequential run (a fill writes batches of ≥ 4 MiB), so with 1 the
 * disk sees one sequential stream at a time (HDDs); SSDs like a few in parallel (default 4).
 * Writers beyond the limit wait in FIFO order; meanwhile their fills keep what upstream sends in
 * their bounded buffers and then stop reading (TCP backpressure), so memory stays bounded.
 * `waited` counts writes that found every slot taken (metrics: a disk that keeps writes waiting
 * is the fills' bottleneck).
 */
export class WriteGate {
  readonly limit: number;
  #active = 0;
  #queue: Array<() => void> = [];
  #waited = 0;

  constructor(limit: number) {
    this.limit = Math.max(1, limit);
  }

  get active(): number {
    return this.#active;
  }

  get waiting(): number {
    return this.#queue.length;
  }

  /** Writes so far that had to wait for a slot. */
  get waited(): number {
    return this.#waited;
  }

  /** Runs `fn` once a slot is free; the slot is given back when it settles. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) {
      this.#waited++;
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else this.#active++;
    try {
      return await fn();
    } finally {
      const next = this.#queue.shift();
      if (next) next();
      else this.#active--;
    }
  }
}
