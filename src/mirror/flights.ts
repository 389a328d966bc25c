/**
 * Flights: a map of work in progress, keyed by what it produces. `run` returns the running value
 * for a key or starts one; the entry is removed as soon as the value settles, so a failure is never
 * cached and the next caller starts afresh (cacache's `moveOperations`).
 */
export class Flights<V> {
  readonly #inFlight = new Map<string, V>();
  readonly #settledOf: (value: V) => Promise<unknown>;

  /** @param settledOf the promise that settles when `value` is finished (for promises: themselves). */
  constructor(settledOf: (value: V) => Promise<unknown>) {
    this.#settledOf = settledOf;
  }

  /** The in-flight value for `key`, or a new one from `start()`. `joined` tells which. */
  run(key: string, start: () => V): { value: V; joined: boolean } {
    const existing = this.#inFlight.get(key);
    if (existing !== undefined) return { value: existing, joined: true };
    const value = start();
    this.#inFlight.set(key, value);
    const remove = (): void => {
      if (this.#inFlight.get(key) === value) this.#inFlight.delete(key);
    };
    this.#settledOf(value).then(remove, remove);
    return { value, joined: false };
  }

  get(key: string): V | undefined {
    return this.#inFlight.get(key);
  }

  get size(): number {
    return this.#inFlight.size;
  }

  values(): IterableIterator<V> {
    return this.#inFlight.values();
  }
}

/** Flights of promises: concurrent identical calls share one. */
export class PromiseFlights<T> {
  readonly #flights = new Flights<Promise<T>>((p) => p);

  run(key: string, start: () => Promise<T>): Promise<T> {
    return this.#flights.run(key, start).value;
  }

  get size(): number {
    return this.#flights.size;
  }
}
