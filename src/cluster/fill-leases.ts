/**
 * Fill leases in PostgreSQL: one fill per blob across mirror replicas. A replica about to fetch a
 * blob from upstream first takes the blob's lease; whoever finds it held streams the in-flight
 * bytes from the owner's peer URL instead, and waits for the owner to finish, give up, or die.
 *
 * The state is one row per blob in `fill_leases` (tables and migrations: fill-lease-schema.ts):
 * owner replica id, owner peer URL, fencing token, expiry and published progress. Every time is
 * the database's (`now()`), never a replica's: replicas' clocks may be skewed. Tokens come from a
 * sequence; a takeover draws its token while holding the row's lock, so on a blob the tokens of
 * successive takeovers strictly increase, and a token is never reused. The fencing check is
 * "the row still holds my token": a stale owner's late renewal or commit is refused.
 *
 * How the mirror uses it (the caller owns the pool and closes it after {@link FillLeases.close}):
 *
 *   const leases = await FillLeases.open({ pool, replicaId, peerUrl, leaseTtlMs });
 *   for (;;) {
 *     const claim = await leases.acquire(key, { signal });
 *     if (claim.owned) {
 *       // fill; claim.lease.signal aborts the fill when the lease is lost;
 *       // claim.lease.progress(bytesDurable) publishes progress with the next renewal.
 *       // Commit: inside the index transaction, `await claim.lease.finish(tx)` must be true,
 *       // else roll back (a newer owner exists). On failure: `await claim.lease.release()`.
 *       break;
 *     }
 *     // claim.holder.url / .token / .bytesDurable: stream from the owner while waiting;
 *     const why = await claim.changed;  // 'finished' → serve from the shared store;
 *     // 'released' | 'taken' | 'expired' | 'reconnected' → loop: acquire again (maybe own it now).
 *   }
 *
 * Waiters are woken by NOTIFY (released, finished, taken over) through the process's one
 * listening connection (lease-listener.ts), and, since an owner killed with -9 notifies nothing,
 * by a timer at the lease's expiry as the database reported it (`expired`). A waiter is registered
 * before its acquire is sent, so a release in between is not missed. A replica never waits on a
 * lease it holds itself: its own concurrent requests for one blob share one fill in-process
 * (mirror/flights.ts); a second acquire of a blob it holds reports itself as the holder.
 *
 * {@link FillLeases.sweep} removes rows expired long ago (dead owners of blobs nobody asked for
 * since); a swept lease's stale owner is refused like any other.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import type { Logger } from '../observability/logger.js';
import { parsePeerUrl } from './peer-protocol.js';
import { Lease, type LeaseOps, type LeaseTerm, type Queryable } from './fill-lease.js';
import { migrateFillLeases } from './fill-lease-schema.js';
import { FILL_LEASE_CHANNEL, LeaseListener, type LeaseOutcome, type ListenerEvent } from './lease-listener.js';

export { Lease, LeaseLostError, type LeaseLossReason, type Queryable } from './fill-lease.js';
export type { LeaseOutcome } from './lease-listener.js';

export const DEFAULT_LEASE_TTL_MS = 15_000;

export interface FillLeasesOptions {
  /** The caller's pool (not ended here). */
  pool: pg.Pool;
  /** This replica's id, unique in the cluster (shown to others as the owner). */
  replicaId: string;
  /** Base URL other replicas stream this replica's in-flight fills from. Stored in the database: no credentials. */
  peerUrl: string;
  /** How long a lease lives without renewal (default 15 s): a dead owner's fill is taken over after at most this. */
  leaseTtlMs?: number;
  /** How often an owned lease is renewed (default a third of the TTL). */
  renewIntervalMs?: number;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** Makes the listening connection (default: a pg.Client with the pool's settings). */
  listenerClient?: () => pg.Client;
}

/** Who holds a blob's lease, as the database said when asked. */
export interface Holder {
  ownerId: string;
  /** The owner's peer URL: where the in-flight bytes can be streamed from. */
  url: string;
  token: bigint;
  /** Expiry on the database's clock. */
  expiresAt: Date;
  /** Time left before expiry when the database answered (its clock); never negative. */
  remainingMs: number;
  /** Bytes the owner last published as durable, or undefined. */
  bytesDurable: number | undefined;
}

/** Why a waiter woke: an outcome notified by the holder's side, the expiry timer, or a listener reconnect. */
export type WakeReason = LeaseOutcome | 'expired' | 'reconnected';

export type Claim =
  | { owned: true; lease: Lease }
  | {
      owned: false;
      holder: Holder;
      /**
       * Resolves once the lease may have changed (never before: a spurious wake is possible,
       * a missed one is not); rejects with the signal's reason when the acquire's signal aborts.
       */
      changed: Promise<WakeReason>;
      /** Stops waiting (frees the timer and subscription); `changed` then never settles. */
      cancel(): void;
    };

interface LeaseRow {
  owned: boolean;
  owner_id: string;
  owner_url: string;
  token: string;
  bytes_durable: string | null;
  expires_at: Date;
  remaining_ms: number;
}

const ROW_COLUMNS = `owner_id, owner_url, token::text AS token, bytes_durable::text AS bytes_durable, expires_at,
  GREATEST(0, extract(epoch FROM expires_at - now()) * 1000)::float8 AS remaining_ms`;

/** The row may be taken: expired, or held by the token the caller found unable to serve ($6). */
const EXPIRED = '(l.expires_at <= now() OR l.token = $6::bigint)';

/**
 * One round trip, race-free between any number of replicas: insert the lease, or on conflict
 * take the row over if it expired, else leave it as it is. The update always happens (a no-op
 * write when the lease is live) so that RETURNING yields the row either way, from its latest
 * version under the row lock; the nonce says whether this call won. A takeover notifies `taken`.
 */
const ACQUIRE_SQL = `
WITH a AS (
  INSERT INTO fill_leases AS l (blob_key, owner_id, owner_url, token, nonce, previous_token, acquired_at, expires_at, bytes_durable)
  VALUES ($1, $2, $3, nextval('fill_lease_tokens'), $4::uuid, NULL, now(), now() + $5::float8 * interval '1 millisecond', NULL)
  ON CONFLICT (blob_key) DO UPDATE SET
    owner_id       = CASE WHEN ${EXPIRED} THEN EXCLUDED.owner_id ELSE l.owner_id END,
    owner_url      = CASE WHEN ${EXPIRED} THEN EXCLUDED.owner_url ELSE l.owner_url END,
    token          = CASE WHEN ${EXPIRED} THEN nextval('fill_lease_tokens') ELSE l.token END,
    nonce          = CASE WHEN ${EXPIRED} THEN EXCLUDED.nonce ELSE l.nonce END,
    previous_token = CASE WHEN ${EXPIRED} THEN l.token ELSE l.previous_token END,
    acquired_at    = CASE WHEN ${EXPIRED} THEN EXCLUDED.acquired_at ELSE l.acquired_at END,
    expires_at     = CASE WHEN ${EXPIRED} THEN EXCLUDED.expires_at ELSE l.expires_at END,
    bytes_durable  = CASE WHEN ${EXPIRED} THEN NULL ELSE l.bytes_durable END
  RETURNING l.*
)
SELECT a.nonce = $4::uuid AS owned, ${ROW_COLUMNS},
  CASE WHEN a.nonce = $4::uuid AND a.previous_token IS NOT NULL
    THEN pg_notify('${FILL_LEASE_CHANNEL}', json_build_object('key', a.blob_key, 'outcome', 'taken', 'token', a.token::text)::text)
  END AS notified
FROM a`;

/** Extends the expiry only while the token is current (also after expiry, if nobody took over). */
const RENEW_SQL = `
UPDATE fill_leases SET expires_at = now() + $3::float8 * interval '1 millisecond', bytes_durable = COALESCE($4::bigint, bytes_durable)
WHERE blob_key = $1 AND token = $2::bigint
RETURNING expires_at, GREATEST(0, extract(epoch FROM expires_at - now()) * 1000)::float8 AS remaining_ms`;

/** Ends the lease if the token is current, notifying the outcome ($3) at commit. */
const END_SQL = `
WITH d AS (DELETE FROM fill_leases WHERE blob_key = $1 AND token = $2::bigint RETURNING blob_key, token)
SELECT pg_notify('${FILL_LEASE_CHANNEL}', json_build_object('key', d.blob_key, 'outcome', $3::text, 'token', d.token::text)::text) FROM d`;

export class FillLeases implements LeaseOps {
  readonly replicaId: string;
  readonly peerUrl: string;
  readonly leaseTtlMs: number;
  readonly renewIntervalMs: number;
  /** The listening connection's application_name (to find it in pg_stat_activity). */
  readonly listenerName: string;
  readonly #pool: pg.Pool;
  readonly #listener: LeaseListener;
  readonly #log: Pick<Logger, 'warn' | 'info'> | undefined;

  private constructor(opts: FillLeasesOptions, ttl: number, renewInterval: number) {
    this.#pool = opts.pool;
    this.replicaId = opts.replicaId;
    this.peerUrl = opts.peerUrl;
    this.leaseTtlMs = ttl;
    this.renewIntervalMs = renewInterval;
    this.#log = opts.logger;
    this.listenerName = `hubcache-leases ${opts.replicaId}`.slice(0, 63);
    const name = this.listenerName;
    const make = opts.listenerClient ?? (() => new pg.Client({ ...(opts.pool.options as pg.ClientConfig), application_name: name }));
    this.#listener = new LeaseListener(make, opts.logger);
  }

  /** Migrates the lease tables (idempotent) and starts listening. Rejects when the database cannot be reached. */
  static async open(opts: FillLeasesOptions): Promise<FillLeases> {
    const ttl = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    if (!Number.isInteger(ttl) || ttl < 10) throw new RangeError(`leaseTtlMs must be an integer of at least 10 ms, got ${ttl}`);
    const renewInterval = opts.renewIntervalMs ?? Math.max(1, Math.floor(ttl / 3));
    if (!Number.isInteger(renewInterval) || renewInterval < 1 || renewInterval >= ttl) {
      throw new RangeError(`renewIntervalMs must be an integer from 1 to below leaseTtlMs (${ttl}), got ${renewInterval}`);
    }
    if (!opts.replicaId) throw new RangeError('replicaId must not be empty');
    try {
      parsePeerUrl(opts.peerUrl);
    } catch (err) {
      throw new RangeError(`peerUrl: ${(err as Error).message} (it is stored in the database for other replicas to read)`);
    }
    await migrateFillLeases(opts.pool);
    const leases = new FillLeases(opts, ttl, renewInterval);
    await leases.#listener.start();
    return leases;
  }

  /** True while the listening connection is up (notifications arrive). */
  get listening(): boolean {
    return this.#listener.listening;
  }

  /**
   * Takes the blob's lease if nobody holds it or its holder's expired, else says who holds it and
   * gives a promise of the next change. With `signal`, the waiting part stops when it aborts.
   * `supersede`: the token of a holder the caller found unable to serve the fill (its peer
   * endpoint refused, answered 404 or stalled, or it is this replica's own row from before a
   * restart): that lease is taken over at once, without waiting for its expiry. Of several
   * replicas superseding the same token, one wins (the others see it as the holder). A holder
   * superseded while still alive loses its lease at its next renewal and its commit is refused;
   * the cost is a duplicate download, never a wrong blob (every fill verifies its bytes).
   */
  async acquire(blobKey: string, opts: { signal?: AbortSignal; supersede?: bigint } = {}): Promise<Claim> {
    opts.signal?.throwIfAborted();
    const waiter = new Waiter(this.#listener, blobKey, opts.signal);
    const nonce = crypto.randomUUID();
    const sentAt = performance.now();
    let row: LeaseRow | undefined;
    try {
      const r = await this.#pool.query<LeaseRow>(ACQUIRE_SQL, [blobKey, this.replicaId, this.peerUrl, nonce, this.leaseTtlMs, opts.supersede?.toString() ?? null]);
      row = r.rows[0];
      if (!row) throw new Error('fill lease acquire returned no row');
    } catch (err) {
      waiter.cancel();
      throw err;
    }
    if (row.owned) {
      waiter.cancel();
      const term: LeaseTerm = { expiresAt: row.expires_at, remainingMs: row.remaining_ms };
      const lease = new Lease(this, blobKey, BigInt(row.token), term, { renewIntervalMs: this.renewIntervalMs, retryMs: Math.max(1, Math.floor(this.renewIntervalMs / 4)) }, sentAt, this.#log);
      return { owned: true, lease };
    }
    const holder = toHolder(row);
    waiter.expireIn(holder.remainingMs);
    return { owned: false, holder, changed: waiter.changed, cancel: () => waiter.cancel() };
  }

  /** The blob's current lease, or undefined (expired leases are reported too: see remainingMs). */
  async peek(blobKey: string): Promise<Holder | undefined> {
    const r = await this.#pool.query<LeaseRow>(`SELECT false AS owned, ${ROW_COLUMNS} FROM fill_leases WHERE blob_key = $1`, [blobKey]);
    return r.rows[0] ? toHolder(r.rows[0]) : undefined;
  }

  /** Extends the lease by the TTL if `token` is still current; undefined when it is not (lost). */
  async renew(blobKey: string, token: bigint, bytesDurable?: number): Promise<LeaseTerm | undefined> {
    const r = await this.#pool.query<{ expires_at: Date; remaining_ms: number }>(RENEW_SQL, [blobKey, token.toString(), this.leaseTtlMs, bytesDurable ?? null]);
    const row = r.rows[0];
    return row ? { expiresAt: row.expires_at, remainingMs: row.remaining_ms } : undefined;
  }

  /** Ends the lease without a commit if `token` is current (waiters: `released`). */
  async release(blobKey: string, token: bigint): Promise<boolean> {
    const r = await this.#pool.query(END_SQL, [blobKey, token.toString(), 'released' satisfies LeaseOutcome]);
    return r.rowCount === 1;
  }

  /**
   * The commit's fencing check: deletes the lease if `token` is still current and tells waiters
   * `finished`. Run it on the committer's transaction client (`db`) so the commit and the check
   * are one: the row lock it takes holds off a takeover until that transaction ends, and a
   * rollback restores the lease. False: refused, a newer owner exists; do not commit.
   */
  async finish(blobKey: string, token: bigint, db?: Queryable): Promise<boolean> {
    const r = await (db ?? this.#pool).query(END_SQL, [blobKey, token.toString(), 'finished' satisfies LeaseOutcome]);
    return r.rowCount === 1;
  }

  /**
   * A fencing check that keeps the lease: true if `token` is current, and then (inside `db`'s
   * transaction) the row stays locked, so no takeover can happen before that transaction ends.
   */
  async confirm(blobKey: string, token: bigint, db?: Queryable): Promise<boolean> {
    const r = await (db ?? this.#pool).query('SELECT 1 FROM fill_leases WHERE blob_key = $1 AND token = $2::bigint FOR UPDATE', [blobKey, token.toString()]);
    return r.rowCount === 1;
  }

  /** Deletes leases expired for more than `olderThanMs` (default 10 TTLs); returns how many. */
  async sweep(olderThanMs = 10 * this.leaseTtlMs): Promise<number> {
    const r = await this.#pool.query(`DELETE FROM fill_leases WHERE expires_at < now() - $1::float8 * interval '1 millisecond'`, [olderThanMs]);
    return r.rowCount ?? 0;
  }

  subscribe(blobKey: string, fn: (event: ListenerEvent) => void): () => void {
    return this.#listener.subscribe(blobKey, fn);
  }

  /**
   * Stops listening. Owned leases are not released here (release or finish them first): left
   * alone, they stop being renewed only when lost, so release them before ending the pool.
   */
  async close(): Promise<void> {
    await this.#listener.close();
  }
}

function toHolder(row: LeaseRow): Holder {
  return {
    ownerId: row.owner_id,
    url: row.owner_url,
    token: BigInt(row.token),
    expiresAt: row.expires_at,
    remainingMs: row.remaining_ms,
    bytesDurable: row.bytes_durable === null ? undefined : Number(row.bytes_durable),
  };
}

/** One waiter: subscribed before the acquire is sent; wakes on a notification, a reconnect, or the expiry timer. */
class Waiter {
  readonly changed: Promise<WakeReason>;
  #resolve!: (why: WakeReason) => void;
  #reject!: (err: unknown) => void;
  #done = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #unsubscribe: () => void;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => {
    const reason: unknown = this.#signal?.reason;
    this.#settle(() => this.#reject(reason));
  };

  constructor(listener: LeaseListener, blobKey: string, signal: AbortSignal | undefined) {
    this.changed = new Promise<WakeReason>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Never an unhandled rejection when the caller owns the lease and drops `changed`.
    this.changed.catch(() => {});
    this.#signal = signal;
    signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#unsubscribe = listener.subscribe(blobKey, (event) => this.#settle(() => this.#resolve(event === 'reconnected' ? event : event.outcome)));
    // Registered while the listener is down: whatever happens before it is back would be missed,
    // so it counts as a reconnect (the listener calls every subscriber once LISTEN is back).
  }

  /** Arms the expiry timer: the holder's lease ends then unless renewed (the caller acquires again). */
  expireIn(remainingMs: number): void {
    if (this.#done) return;
    this.#timer = setTimeout(() => this.#settle(() => this.#resolve('expired')), remainingMs);
  }

  cancel(): void {
    this.#settle(() => {});
  }

  #settle(then: () => void): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#unsubscribe();
    this.#signal?.removeEventListener('abort', this.#onAbort);
    then();
  }
}
