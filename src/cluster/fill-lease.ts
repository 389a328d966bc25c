/**
 * One owned fill lease while its fill runs: renews itself on a timer (every `renewIntervalMs`, a
 * fraction of the TTL), publishes the progress the fill reports, and says when the lease is lost
 * through {@link Lease.signal} (aborted with a {@link LeaseLostError}):
 *
 * - `taken-over`: a renewal or the commit found another token in the row (or none), or a
 *   notification named a later token on the blob (another replica took it over);
 * - `unreachable`: no renewal succeeded before the expiry the database last reported. The
 *   deadline is kept on this process's monotonic clock, started when the renewal was sent, so it
 *   falls at or before the database's expiry whatever the clocks of the machines say.
 *
 * Lost is final: the fill must stop (another replica may be filling), and its commit will be
 * refused anyway by the fencing token ({@link Lease.finish}). Releasing or finishing stops the
 * timers and does not abort the signal.
 */
import type { Logger } from '../observability/logger.js';
import type { ListenerEvent } from './lease-listener.js';

export type LeaseLossReason = 'taken-over' | 'unreachable';

export class LeaseLostError extends Error {
  override readonly name = 'LeaseLostError';
  constructor(
    readonly blobKey: string,
    readonly token: bigint,
    readonly reason: LeaseLossReason,
  ) {
    super(reason === 'taken-over' ? `fill lease on ${blobKey} (token ${token}) was taken over by another replica` : `fill lease on ${blobKey} (token ${token}) expired: the database was unreachable`);
  }
}

/** What the database says after a successful renewal (or acquire). */
export interface LeaseTerm {
  /** Expiry on the database's clock (for display; decisions use remainingMs). */
  expiresAt: Date;
  /** expires_at minus the database's now() when it answered. */
  remainingMs: number;
}

/** A queryable a committer passes to run the fencing check inside its own transaction. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rowCount: number | null; rows: unknown[] }>;
}

/** The statements a Lease needs (implemented by FillLeases). */
export interface LeaseOps {
  renew(blobKey: string, token: bigint, bytesDurable?: number): Promise<LeaseTerm | undefined>;
  release(blobKey: string, token: bigint): Promise<boolean>;
  finish(blobKey: string, token: bigint, db?: Queryable): Promise<boolean>;
  subscribe(blobKey: string, fn: (event: ListenerEvent) => void): () => void;
}

export interface LeaseTiming {
  renewIntervalMs: number;
  /** Pause before retrying a renewal that failed with an error (not a refusal). */
  retryMs: number;
}

export class Lease {
  readonly blobKey: string;
  readonly token: bigint;
  readonly #ops: LeaseOps;
  readonly #timing: LeaseTiming;
  readonly #log: Pick<Logger, 'warn'> | undefined;
  readonly #abort = new AbortController();
  readonly #unsubscribe: () => void;
  #expiresAt: Date;
  #bytesDurable: number | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(ops: LeaseOps, blobKey: string, token: bigint, term: LeaseTerm, timing: LeaseTiming, sentAt: number, log?: Pick<Logger, 'warn'>) {
    this.#ops = ops;
    this.blobKey = blobKey;
    this.token = token;
    this.#timing = timing;
    this.#log = log;
    this.#expiresAt = term.expiresAt;
    this.#armDeadline(sentAt, term.remainingMs);
    this.#unsubscribe = ops.subscribe(blobKey, (event) => {
      if (event === 'reconnected') {
        // Notifications may have been missed while the listener was down: ask the row.
        this.#renewNow();
      } else if (event.token > this.token) {
        // A later token on this blob: another replica took it over (tokens of a takeover are
        // drawn under the row lock, after ours). An older one is a past lease's late news.
        this.#lose('taken-over');
      }
    });
    this.#schedule(timing.renewIntervalMs);
  }

  /** Aborted (reason: a LeaseLostError) when the lease is lost; never on release or finish. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** True once lost. */
  get lost(): boolean {
    return this.#abort.signal.aborted;
  }

  /** The expiry the database reported last (its clock). */
  get expiresAt(): Date {
    return this.#expiresAt;
  }

  /** Bytes of the blob durable so far (staged and synced, or uploaded): published with the next renewal. */
  progress(bytesDurable: number): void {
    this.#bytesDurable = bytesDurable;
  }

  /** Renews now. False when the lease is lost (refused now or earlier); rejects on a database error. */
  async renew(): Promise<boolean> {
    if (this.lost) return false;
    const sentAt = performance.now();
    const term = await this.#ops.renew(this.blobKey, this.token, this.#bytesDurable);
    if (this.#stopped) return term !== undefined;
    if (!term) {
      this.#lose('taken-over');
      return false;
    }
    if (this.lost) return false;
    this.#expiresAt = term.expiresAt;
    this.#armDeadline(sentAt, term.remainingMs);
    return true;
  }

  /**
   * The fencing check of the commit: deletes the lease if this token is still the blob's, inside
   * `db`'s transaction when given (then it takes effect at that commit; if that transaction rolls
   * back, call {@link release}). False when refused: another replica holds the blob, and this
   * fill must not commit. Stops renewing either way.
   */
  async finish(db?: Queryable): Promise<boolean> {
    this.#stop();
    const ok = await this.#ops.finish(this.blobKey, this.token, db);
    if (!ok) this.#lose('taken-over');
    return ok;
  }

  /** Gives the blob up without a commit (waiters are told `released`). False when it was no longer ours. */
  async release(): Promise<boolean> {
    this.#stop();
    return this.#ops.release(this.blobKey, this.token);
  }

  #stop(): void {
    this.#stopped = true;
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#deadlineTimer);
    this.#unsubscribe();
  }

  #lose(reason: LeaseLossReason): void {
    if (this.lost) return;
    this.#stop();
    this.#abort.abort(new LeaseLostError(this.blobKey, this.token, reason));
  }

  #armDeadline(sentAt: number, remainingMs: number): void {
    clearTimeout(this.#deadlineTimer);
    const delay = Math.max(0, sentAt + remainingMs - performance.now());
    this.#deadlineTimer = setTimeout(() => this.#lose('unreachable'), delay);
    this.#deadlineTimer.unref();
  }

  #schedule(delay: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#renewTimer);
    this.#renewTimer = setTimeout(() => this.#renewNow(), delay);
    this.#renewTimer.unref();
  }

  #renewNow(): void {
    if (this.#stopped) return;
    clearTimeout(this.#renewTimer);
    this.renew().then(
      (ok) => {
        if (ok) this.#schedule(this.#timing.renewIntervalMs);
      },
      (err: Error) => {
        this.#log?.warn({ event: 'fill_lease_renew_failed', blobKey: this.blobKey, err: err.message }, 'fill lease renewal failed; retrying');
        this.#schedule(this.#timing.retryMs);
      },
    );
  }
}
