/**
 * The one LISTEN connection of a process for fill-lease notifications: a dedicated client (not
 * one per waiter, not a pool client), reconnected whenever it drops. Subscribers are keyed by blob
 * key. Notifications sent while the connection was down are lost for good, so every time LISTEN
 * succeeds again each subscriber is told `reconnected` and must re-check the database itself;
 * a subscriber registered while the connection is down gets that same call once it is back.
 */
import type pg from 'pg';
import type { Logger } from '../observability/logger.js';

/** The channel every fill-lease notification goes to (payload: {@link LeaseNotification} as JSON). */
export const FILL_LEASE_CHANNEL = 'hubcache_fill_leases';

/** What ended an owner's hold on a blob: released (no commit), finished (committed), taken over by another. */
export type LeaseOutcome = 'released' | 'finished' | 'taken';

export interface LeaseNotification {
  blobKey: string;
  outcome: LeaseOutcome;
  /** The token the outcome is about: the ended lease's, or for `taken` the new owner's. */
  token: bigint;
}

export type ListenerEvent = LeaseNotification | 'reconnected';

const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;

export class LeaseListener {
  readonly #connect: () => pg.Client;
  readonly #log: Pick<Logger, 'warn' | 'info'> | undefined;
  readonly #subscribers = new Map<string, Set<(event: ListenerEvent) => void>>();
  #client: pg.Client | undefined;
  #listening = false;
  #closed = false;
  #retryMs = RECONNECT_FIRST_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #connecting: Promise<void> | undefined;

  /** @param connect makes a new, unconnected client (called at start and at every reconnect). */
  constructor(connect: () => pg.Client, log?: Pick<Logger, 'warn' | 'info'>) {
    this.#connect = connect;
    this.#log = log;
  }

  /** Connects and LISTENs; rejects when the first attempt fails (later drops are retried forever). */
  async start(): Promise<void> {
    await this.#attempt(true);
  }

  /** True while LISTEN is in effect on a live connection. */
  get listening(): boolean {
    return this.#listening;
  }

  /** Calls `fn` for each notification about `blobKey` and at each reconnect, until the returned function is called. */
  subscribe(blobKey: string, fn: (event: ListenerEvent) => void): () => void {
    let set = this.#subscribers.get(blobKey);
    if (!set) this.#subscribers.set(blobKey, (set = new Set()));
    set.add(fn);
    return () => {
      const s = this.#subscribers.get(blobKey);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) this.#subscribers.delete(blobKey);
    };
  }

  /** Stops listening for good. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    await this.#connecting?.catch(() => {});
    const client = this.#client;
    this.#client = undefined;
    this.#listening = false;
    await client?.end().catch(() => {});
  }

  #attempt(first: boolean): Promise<void> {
    const run = async (): Promise<void> => {
      const client = this.#connect();
      // Attached before connect: an error event without a listener would crash the process.
      client.on('error', (err) => this.#lost(client, err));
      client.on('end', () => this.#lost(client, undefined));
      client.on('notification', (n) => this.#notified(n));
      try {
        await client.connect();
        await client.query(`LISTEN ${FILL_LEASE_CHANNEL}`);
      } catch (err) {
        await client.end().catch(() => {});
        throw err;
      }
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#client = client;
      this.#listening = true;
      this.#retryMs = RECONNECT_FIRST_MS;
      if (!first) this.#log?.info({ event: 'fill_lease_listener_reconnected' }, 'fill-lease listener reconnected');
      // Whatever was notified while nobody listened is lost: everyone re-checks.
      for (const set of [...this.#subscribers.values()]) for (const fn of [...set]) fn('reconnected');
    };
    const p = run();
    this.#connecting = p;
    return p.finally(() => {
      if (this.#connecting === p) this.#connecting = undefined;
    });
  }

  #lost(client: pg.Client, err: Error | undefined): void {
    if (client !== this.#client || this.#closed) return;
    this.#client = undefined;
    this.#listening = false;
    client.end().catch(() => {});
    this.#log?.warn({ event: 'fill_lease_listener_lost', err: err?.message }, 'fill-lease listener connection lost; reconnecting');
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#closed) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, RECONNECT_MAX_MS);
    this.#retryTimer = setTimeout(() => {
      this.#attempt(false).catch((err: Error) => {
        this.#log?.warn({ event: 'fill_lease_listener_retry_failed', err: err.message }, 'fill-lease listener reconnect failed');
        this.#scheduleRetry();
      });
    }, delay);
    this.#retryTimer.unref();
  }

  #notified(n: pg.Notification): void {
    if (n.channel !== FILL_LEASE_CHANNEL || !n.payload) return;
    const event = parseNotification(n.payload);
    if (!event) return;
    const set = this.#subscribers.get(event.blobKey);
    if (set) for (const fn of [...set]) fn(event);
  }
}

/** The payload the SQL side builds (`{"key":…,"outcome":…,"token":"…"}`), or undefined when malformed. */
export function parseNotification(payload: string): LeaseNotification | undefined {
  try {
    const v = JSON.parse(payload) as { key?: unknown; outcome?: unknown; token?: unknown };
    if (typeof v.key !== 'string' || typeof v.token !== 'string' || !/^\d+$/.test(v.token)) return undefined;
    if (v.outcome !== 'released' && v.outcome !== 'finished' && v.outcome !== 'taken') return undefined;
    return { blobKey: v.key, outcome: v.outcome, token: BigInt(v.token) };
  } catch {
    return undefined;
  }
}
