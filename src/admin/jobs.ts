/**
 * Jobs: the operator's background work (prefetch, import, verify), persisted in the index
 * (storage/job-table.ts) so that a job interrupted by a restart or a crash resumes.
 *
 * - States: queued → running → done | failed | cancelled. At most MAX_RUNNING jobs run at once,
 *   the others wait in submission order.
 * - Each finished item (a file, a blob) is recorded with its outcome. A resumed job gets the
 *   items that already succeeded (`ctx.succeeded`) and skips them; its counters start from them.
 * - A job ends `failed` when its runner throws or when any item failed, `done` otherwise.
 * - Cancel: a queued job at once; a running one is told through `ctx.signal` and ends
 *   `cancelled` when its runner returns.
 * - Secrets (a prefetch's Hub token) are held in memory only, never in the job row. A job that
 *   needs one and lost it in a restart waits, queued, until the same request is submitted again
 *   with its secret (a submission with the key of an unfinished job joins that job).
 * - Shutdown aborts running jobs without changing their recorded state: they resume at the next
 *   start.
 * The in-memory job is the truth while this process runs it; a write the database refuses (busy,
 * full) is logged and the next write carries the state (at worst a resumed job redoes an item).
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { MirrorError } from '../errors.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { FINISHED_STATES, type JobItem, type JobKind, type JobRow } from '../storage/cache-index-contract.js';

/** Jobs running at once; more wait, queued. */
const MAX_RUNNING = 2;
/** Finished jobs kept in the index (older ones are forgotten with their items). */
const KEEP_FINISHED = 200;

export interface JobContext {
  /** The job as it runs (read-only: change it through the methods below). */
  readonly job: Readonly<JobRow>;
  /** Aborted on cancel and on shutdown. */
  readonly signal: AbortSignal;
  /** The secret given with the submission (in memory only), if any. */
  readonly secret: string | undefined;
  /** Items that succeeded in an earlier run of this job, with their bytes: skip them. */
  readonly succeeded: ReadonlyMap<string, number>;
  /** Sets what the job will handle, once known (bytes: null when unknown). */
  setTotals(items: number, bytes: number | null): void;
  /** Records derived parameters (e.g. the commit a branch resolved to) with the job. */
  setParams(patch: Record<string, unknown>): void;
  /** Starts an item: bytes it moves count in the progress until it finishes. */
  item(name: string): ItemTracker;
  /** Counts a finished item without recording it (verify's many good blobs). */
  tally(ok: boolean, bytes: number): void;
}

export interface ItemTracker {
  /** `n` more bytes moved for this item. */
  add: (n: number) => void;
  /** The item's outcome; on success its bytes replace what it moved. Once only. */
  finish: (outcome: string, ok: boolean, bytes: number, message?: string) => void;
}

export interface JobRunner {
  run(ctx: JobContext): Promise<void>;
  /** Whether a job with these params cannot run without a secret (none is kept across restarts). */
  needsSecret?(params: Readonly<Record<string, unknown>>): boolean;
}

export interface SubmitOptions {
  /** Joins the unfinished job of this kind with the same key instead of starting another. */
  key?: string;
  secret?: string;
}

interface LiveJob {
  row: JobRow;
  secret: string | undefined;
  controller: AbortController | undefined;
  settled: Promise<void> | undefined;
  cancelRequested: boolean;
}

export interface JobsOptions {
  index: CacheIndex;
  runners: Readonly<Record<JobKind, JobRunner>>;
  log: Logger;
  clock?: Clock;
}

export class Jobs {
  readonly #index: CacheIndex;
  readonly #runners: Readonly<Record<JobKind, JobRunner>>;
  readonly #log: Logger;
  readonly #clock: Clock;
  /** Unfinished jobs of this process (queued or running), in submission order. */
  readonly #live = new Map<string, LiveJob>();
  /** The index writes of jobs, in the order they were made (reads wait for them: read-your-writes). */
  #writes: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(opts: JobsOptions) {
    this.#index = opts.index;
    this.#runners = opts.runners;
    this.#log = opts.log;
    this.#clock = opts.clock ?? systemClock;
  }

  /** Takes up the jobs the last process left queued or running. */
  async resume(): Promise<void> {
    let unfinished: JobRow[];
    try {
      unfinished = await this.#index.jobs.unfinished();
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'index: could not read the unfinished jobs (they resume at the next start)');
      return;
    }
    for (const row of unfinished) {
      if (this.#closed || this.#live.has(row.id)) continue;
      if (!(row.kind in this.#runners)) {
        this.#save({ ...row, state: 'failed', message: `unknown job kind ${JSON.stringify(row.kind)}`, finishedAt: this.#clock.now() });
        continue;
      }
      const live: LiveJob = { row: { ...row, state: 'queued', message: null }, secret: undefined, controller: undefined, settled: undefined, cancelRequested: false };
      if (this.#waitsForSecret(live)) live.row.message = 'waiting for its token (not kept across restarts): run the same request again with its token to resume';
      this.#live.set(row.id, live);
      this.#save(live.row);
      this.#log.info({ job: row.id, kind: row.kind, waiting: live.row.message !== null }, 'job resumed after a restart');
    }
    this.#pump();
  }

  submit(kind: JobKind, params: Record<string, unknown>, opts: SubmitOptions = {}): JobRow {
    if (this.#closed) throw new MirrorError('UpstreamUnavailable', 'the mirror is shutting down');
    if (opts.key !== undefined) {
      for (const live of this.#live.values()) {
        if (live.row.kind !== kind || live.row.params.key !== opts.key || live.cancelRequested) continue;
        if (opts.secret !== undefined && live.secret === undefined) {
          live.secret = opts.secret;
          live.row.message = null;
          this.#save(live.row);
          this.#pump();
        }
        return this.#view(live.row);
      }
    }
    const now = this.#clock.now();
    const row: JobRow = {
      id: randomBytes(6).toString('hex'),
      kind,
      state: 'queued',
      params: opts.key === undefined ? params : { ...params, key: opts.key },
      progress: { itemsTotal: null, itemsDone: 0, itemsFailed: 0, bytesTotal: null, bytesDone: 0 },
      message: null,
      createdAt: now,
      startedAt: null,
      finishedAt: null,
    };
    const inserted = { ...row, params: { ...row.params }, progress: { ...row.progress } };
    this.#persist('record a job', async () => {
      await this.#index.jobs.insert(inserted);
      await this.#index.jobs.prune(KEEP_FINISHED);
    });
    this.#live.set(row.id, { row, secret: opts.secret, controller: undefined, settled: undefined, cancelRequested: false });
    this.#log.info({ job: row.id, kind }, 'job queued');
    this.#pump();
    return this.#view(row);
  }

  async get(id: string): Promise<JobRow | undefined> {
    const live = this.#live.get(id);
    if (live) return this.#view(live.row);
    await this.#writes;
    return this.#live.has(id) ? this.get(id) : this.#index.jobs.get(id);
  }

  /** The newest jobs first. */
  async list(limit = 100): Promise<JobRow[]> {
    await this.#writes;
    return (await this.#index.jobs.list(limit)).map((row) => {
      const live = this.#live.get(row.id);
      return live ? this.#view(live.row) : row;
    });
  }

  async items(id: string, afterSeq: number, limit: number): Promise<JobItem[]> {
    await this.#writes;
    return this.#index.jobs.items(id, afterSeq, limit);
  }

  /** Cancels a queued or running job; a finished one is a 409. */
  async cancel(id: string): Promise<JobRow> {
    const live = this.#live.get(id);
    if (!live) {
      await this.#writes;
      if (this.#live.has(id)) return this.cancel(id);
      const row = await this.#index.jobs.get(id);
      if (!row) throw new MirrorError('NotFound', `No job ${id}`);
      throw new MirrorError('Conflict', `Job ${id} has already finished (${row.state})`);
    }
    live.cancelRequested = true;
    if (live.controller) live.controller.abort(new MirrorError('Conflict', 'cancelled by the operator'));
    else this.#finish(live, 'cancelled', 'cancelled before it started');
    return this.#view(live.row);
  }

  /** Aborts running jobs (their recorded state stays: they resume at the next start) and waits for them. */
  async close(): Promise<void> {
    this.#closed = true;
    const running = [...this.#live.values()].filter((l) => l.controller);
    for (const l of running) l.controller?.abort(new MirrorError('UpstreamUnavailable', 'the mirror is shutting down'));
    await Promise.allSettled(running.map((l) => l.settled ?? Promise.resolve()));
    await this.#writes;
  }

  /** Starts queued jobs while slots are free, oldest first. */
  #pump(): void {
    if (this.#closed) return;
    let running = [...this.#live.values()].filter((l) => l.controller).length;
    for (const live of this.#live.values()) {
      if (running >= MAX_RUNNING) return;
      if (live.controller || live.cancelRequested || this.#waitsForSecret(live)) continue;
      running++;
      this.#start(live);
    }
  }

  #waitsForSecret(live: LiveJob): boolean {
    return live.secret === undefined && (this.#runners[live.row.kind].needsSecret?.(live.row.params) ?? false);
  }

  /** Marks the job running at once (what submit and the API answer show), then runs it. */
  #start(live: LiveJob): void {
    const controller = new AbortController();
    live.controller = controller;
    live.row.state = 'running';
    live.row.startedAt = this.#clock.now();
    live.row.message = null;
    live.settled = this.#run(live, controller);
  }

  async #run(live: LiveJob, controller: AbortController): Promise<void> {
    const row = live.row;
    await this.#writes;
    let succeeded = new Map<string, number>();
    try {
      succeeded = await this.#index.jobs.succeededItems(row.id);
    } catch (err) {
      this.#log.warn({ err: { message: (err as Error).message } }, 'index: could not read finished items (the job starts over)');
    }
    row.progress = { itemsTotal: row.progress.itemsTotal, itemsDone: succeeded.size, itemsFailed: 0, bytesTotal: row.progress.bytesTotal, bytesDone: [...succeeded.values()].reduce((a, b) => a + b, 0) };
    this.#save(row);
    this.#log.info({ job: row.id, kind: row.kind, resumedItems: succeeded.size }, 'job started');
    const ctx = this.#context(live, controller.signal, succeeded);
    await this.#runners[row.kind].run(ctx).then(
      () => {
        if (controller.signal.aborted) this.#aborted(live);
        else if (row.progress.itemsFailed > 0) this.#finish(live, 'failed', `${row.progress.itemsFailed} of ${row.progress.itemsTotal ?? row.progress.itemsDone} items failed`);
        else this.#finish(live, 'done', null);
      },
      (err: unknown) => {
        if (controller.signal.aborted) this.#aborted(live);
        else this.#finish(live, 'failed', (err as Error).message);
      },
    );
  }

  #context(live: LiveJob, signal: AbortSignal, succeeded: ReadonlyMap<string, number>): JobContext {
    const row = live.row;
    return {
      job: row,
      signal,
      secret: live.secret,
      succeeded,
      setTotals: (items, bytes) => {
        row.progress.itemsTotal = items;
        row.progress.bytesTotal = bytes;
        this.#save(row);
      },
      setParams: (patch) => {
        row.params = { ...row.params, ...patch };
        this.#save(row);
      },
      tally: (ok, bytes) => {
        row.progress.itemsDone++;
        if (ok) row.progress.bytesDone += bytes;
        else row.progress.itemsFailed++;
        if (row.progress.itemsDone % 100 === 0) this.#save(row);
      },
      item: (name) => {
        let moved = 0;
        let finished = false;
        return {
          add: (n) => {
            if (finished) return;
            moved += n;
            row.progress.bytesDone += n;
          },
          finish: (outcome, ok, bytes, message) => {
            if (finished) return;
            finished = true;
            row.progress.bytesDone += (ok ? bytes : 0) - moved;
            row.progress.itemsDone++;
            if (!ok) row.progress.itemsFailed++;
            const done = { item: name, outcome, ok, bytes, message: message ?? null };
            this.#persist('record a job item', () => this.#index.jobs.addItem(row.id, done));
            this.#save(row);
          },
        };
      },
    };
  }

  /** A running job was aborted: by its cancel, or by shutdown (then its state stays recorded as it was). */
  #aborted(live: LiveJob): void {
    if (live.cancelRequested) this.#finish(live, 'cancelled', 'cancelled by the operator');
    else this.#log.info({ job: live.row.id }, 'job interrupted by shutdown: resumes at the next start');
  }

  #finish(live: LiveJob, state: 'done' | 'failed' | 'cancelled', message: string | null): void {
    const row = live.row;
    row.state = state;
    row.message = message;
    row.finishedAt = this.#clock.now();
    this.#save(row);
    this.#live.delete(row.id);
    this.#log.info({ job: row.id, kind: row.kind, state, items: row.progress.itemsDone, failed: row.progress.itemsFailed }, 'job finished');
    this.#pump();
  }

  #save(row: JobRow): void {
    const saved = this.#view(row);
    this.#persist('save a job', () => this.#index.jobs.save(saved));
  }

  /** Queues an index write after the earlier ones; a failure is logged (the state stays in memory). */
  #persist(what: string, op: () => Promise<unknown>): void {
    this.#writes = this.#writes.then(op).then(
      () => undefined,
      (err: unknown) => this.#log.warn({ err: { message: (err as Error).message } }, `index: could not ${what} (kept in memory)`),
    );
  }

  /** A copy, so callers never see later changes half-made. */
  #view(row: JobRow): JobRow {
    return { ...row, params: { ...row.params }, progress: { ...row.progress } };
  }
}

/** Whether a job has reached an end state. */
export function isFinished(row: JobRow): boolean {
  return FINISHED_STATES.includes(row.state);
}
