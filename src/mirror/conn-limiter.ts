/**
 * ConnLimiter (config `maxUpstreamConnections`): a global cap on upstream body connections of
 * fills, so 16 fills × 8 segments never open 128 connections to the Hub at once.
 *
 * Every running fill holds one connection that is not subject to the cap (`base`), taken with its
 * fill slot, so an admitted fill always makes progress whatever the others hold; the cap bounds
 * the extra connections segmented fills add. A fill waits for an extra connection in a queue in
 * which demand (a client waiting for bytes no connection is about to fetch) goes first, then
 * first come, first served. A fill queues at most one request at a time and asks again once it
 * got it, so connections spread over fills round-robin.
 */
export interface ConnGrant {
  /** Gives the connection back (idempotent). */
  release(): void;
}

interface Waiter {
  demand: boolean;
  resolve: (grant: ConnGrant) => void;
  cancelled: boolean;
}

export class ConnLimiter {
  readonly max: number;
  #active = 0;
  #queue: Waiter[] = [];

  constructor(max: number) {
    this.max = Math.max(1, max);
  }

  /** Connections open now (base ones included). */
  get active(): number {
    return this.#active;
  }

  /** A fill's own first connection: always granted, counted against the cap for the others. */
  base(): ConnGrant {
    this.#active++;
    return this.#grant();
  }

  /** An extra connection now, if the cap allows; else null. */
  tryAcquire(): ConnGrant | null {
    if (this.#active >= this.max) return null;
    this.#active++;
    return this.#grant();
  }

  /**
   * An extra connection once one is free (demand first). `cancel()` withdraws the request; a grant
   * that arrives after it is released at once.
   */
  acquire(demand: boolean): { granted: Promise<ConnGrant>; cancel: () => void } {
    const now = this.tryAcquire();
    if (now) return { granted: Promise.resolve(now), cancel: () => undefined };
    let waiter!: Waiter;
    const granted = new Promise<ConnGrant>((resolve) => {
      waiter = { demand, resolve, cancelled: false };
    });
    if (demand) {
      const firstPlain = this.#queue.findIndex((w) => !w.demand);
      this.#queue.splice(firstPlain < 0 ? this.#queue.length : firstPlain, 0, waiter);
    } else this.#queue.push(waiter);
    return {
      granted,
      cancel: () => {
        waiter.cancelled = true;
        const i = this.#queue.indexOf(waiter);
        if (i >= 0) this.#queue.splice(i, 1);
      },
    };
  }

  #grant(): ConnGrant {
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.#active--;
        this.#handOver();
      },
    };
  }

  #handOver(): void {
    while (this.#active < this.max && this.#queue.length > 0) {
      const w = this.#queue.shift()!;
      if (w.cancelled) continue;
      this.#active++;
      w.resolve(this.#grant());
    }
  }
}
