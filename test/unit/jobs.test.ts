/**
 * Jobs over a real index file: states, items, cancel, the running cap, and what a "restart" (a new
 * Jobs on the same index) resumes — with the secret a job needs held in memory only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Jobs, type JobContext, type JobRunner } from '../../src/admin/jobs.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import type { JobKind, JobRow } from '../../src/storage/cache-index-contract.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function indexFile(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-jobs-'));
  dirs.push(d);
  return path.join(d, 'index.sqlite');
}

/** A runner whose items are `params.items`; each item waits for `gate(item)` to be released. */
class ScriptedRunner implements JobRunner {
  readonly started: string[] = [];
  readonly secrets: Array<string | undefined> = [];
  readonly #gates = new Map<string, { promise: Promise<void>; open: () => void }>();
  readonly #failing: ReadonlySet<string>;
  readonly #needsSecret: boolean;

  constructor(opts: { failing?: string[]; needsSecret?: boolean } = {}) {
    this.#failing = new Set(opts.failing ?? []);
    this.#needsSecret = opts.needsSecret ?? false;
  }

  gate(item: string): { promise: Promise<void>; open: () => void } {
    let g = this.#gates.get(item);
    if (!g) {
      let open!: () => void;
      const promise = new Promise<void>((r) => (open = r));
      g = { promise, open };
      this.#gates.set(item, g);
    }
    return g;
  }

  needsSecret(): boolean {
    return this.#needsSecret;
  }

  async run(ctx: JobContext): Promise<void> {
    const items = ctx.job.params.items as string[];
    this.secrets.push(ctx.secret);
    ctx.setTotals(items.length, items.length * 10);
    for (const item of items) {
      if (ctx.signal.aborted) return;
      if (ctx.succeeded.has(item)) continue;
      this.started.push(item);
      const t = ctx.item(item);
      t.add(4);
      await Promise.race([this.gate(item).promise, new Promise((r) => ctx.signal.addEventListener('abort', r, { once: true }))]);
      if (ctx.signal.aborted) return;
      if (this.#failing.has(item)) t.finish('failed', false, 0, `${item} broke`);
      else t.finish('done', true, 10);
    }
  }
}

function jobsOver(index: CacheIndex, runner: JobRunner): Jobs {
  const runners = { prefetch: runner, import: runner, verify: runner } as Record<JobKind, JobRunner>;
  return new Jobs({ index, runners, log });
}

async function until(jobs: Jobs, id: string, accept: (j: JobRow) => boolean): Promise<JobRow> {
  for (let i = 0; i < 2000; i++) {
    const j = await jobs.get(id);
    if (j && accept(j)) return j;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`job ${id} never reached the state: ${JSON.stringify(await jobs.get(id))}`);
}

describe('Jobs', () => {
  it('runs a job to done, recording each item and the counters; a failed item makes it failed', async () => {
    const file = indexFile();
    const index = CacheIndex.open(file);
    const runner = new ScriptedRunner({ failing: ['b'] });
    const jobs = jobsOver(index, runner);
    const job = jobs.submit('prefetch', { items: ['a', 'b', 'c'] });
    expect(job.state).toBe('running');
    await until(jobs, job.id, (j) => j.progress.bytesDone === 4);
    runner.gate('a').open();
    runner.gate('b').open();
    runner.gate('c').open();
    const ended = await until(jobs, job.id, (j) => j.state !== 'running');
    expect(ended).toMatchObject({ state: 'failed', message: '1 of 3 items failed', progress: { itemsTotal: 3, itemsDone: 3, itemsFailed: 1, bytesTotal: 30, bytesDone: 20 } });
    expect((await jobs.items(job.id, 0, 10)).map((i) => [i.seq, i.item, i.outcome, i.ok, i.message])).toEqual([
      [1, 'a', 'done', true, null],
      [2, 'b', 'failed', false, 'b broke'],
      [3, 'c', 'done', true, null],
    ]);
    expect((await jobs.items(job.id, 2, 10)).map((i) => i.item)).toEqual(['c']);
    // The record outlives the process.
    await jobs.close();
    await index.close();
    const reopened = CacheIndex.open(file);
    expect(await reopened.jobs.get(job.id)).toMatchObject({ state: 'failed', progress: { itemsDone: 3 } });
    await reopened.close();
  });

  it('runs two at a time, the others queued in order; cancel ends a queued job at once and a running one through its signal', async () => {
    const index = CacheIndex.open(indexFile());
    const runner = new ScriptedRunner();
    const jobs = jobsOver(index, runner);
    const [j1, j2, j3, j4] = ['1', '2', '3', '4'].map((n) => jobs.submit('import', { items: [`x${n}`] }));
    expect([j1, j2, j3, j4].map((j) => j?.state)).toEqual(['running', 'running', 'queued', 'queued']);
    expect((await jobs.cancel(j3!.id)).state).toBe('cancelled');
    await until(jobs, j1!.id, () => runner.started.includes('x1')); // its runner has the signal
    expect((await jobs.cancel(j1!.id)).state).toBe('running');
    await until(jobs, j1!.id, (j) => j.state === 'cancelled');
    // j1's slot went to j4, not to the cancelled j3.
    await until(jobs, j4!.id, (j) => j.state === 'running');
    expect(runner.started).toEqual(['x1', 'x2', 'x4']);
    await expect(jobs.cancel(j3!.id)).rejects.toThrow(/already finished \(cancelled\)/);
    await expect(jobs.cancel('nope')).rejects.toThrow(/No job nope/);
    runner.gate('x2').open();
    runner.gate('x4').open();
    await until(jobs, j4!.id, (j) => j.state === 'done');
    expect((await jobs.list()).map((j) => j.state).sort()).toEqual(['cancelled', 'cancelled', 'done', 'done']);
    await index.close();
  });

  it('a restart resumes an interrupted job where it stopped: items that succeeded are skipped and counted', async () => {
    const file = indexFile();
    let index = CacheIndex.open(file);
    let runner = new ScriptedRunner();
    let jobs = jobsOver(index, runner);
    const job = jobs.submit('prefetch', { items: ['a', 'b', 'c'] });
    runner.gate('a').open();
    await until(jobs, job.id, (j) => j.progress.itemsDone === 1 && runner.started.includes('b'));
    await jobs.close(); // shutdown: the job stays recorded as running
    await index.close();

    index = CacheIndex.open(file);
    expect((await index.jobs.get(job.id))?.state).toBe('running');
    runner = new ScriptedRunner();
    jobs = jobsOver(index, runner);
    await jobs.resume();
    const resumed = await until(jobs, job.id, (j) => j.state === 'running' && runner.started.length > 0);
    expect(resumed.progress).toMatchObject({ itemsDone: 1, bytesDone: 10 + 4 });
    runner.gate('b').open();
    runner.gate('c').open();
    const done = await until(jobs, job.id, (j) => j.state === 'done');
    expect(runner.started).toEqual(['b', 'c']);
    expect(done.progress).toMatchObject({ itemsTotal: 3, itemsDone: 3, itemsFailed: 0, bytesDone: 30 });
    await index.close();
  });

  it('a job that needs a secret waits after a restart until the same request brings one; the secret is never stored', async () => {
    const file = indexFile();
    let index = CacheIndex.open(file);
    let runner = new ScriptedRunner({ needsSecret: true });
    let jobs = jobsOver(index, runner);
    const job = jobs.submit('prefetch', { items: ['a', 'b'] }, { key: 'same-request', secret: 'hf_secret_in_memory' });
    expect(jobs.submit('prefetch', { items: ['a', 'b'] }, { key: 'same-request' }).id).toBe(job.id);
    runner.gate('a').open();
    await until(jobs, job.id, (j) => j.progress.itemsDone === 1);
    await jobs.close();
    await index.close();
    expect(fs.readFileSync(file).includes('hf_secret_in_memory')).toBe(false);

    index = CacheIndex.open(file);
    runner = new ScriptedRunner({ needsSecret: true });
    jobs = jobsOver(index, runner);
    await jobs.resume();
    expect(await jobs.get(job.id)).toMatchObject({ state: 'queued', message: expect.stringMatching(/waiting for its token/) });
    expect(runner.started).toEqual([]);
    // Another request is another job; the same one joins and brings the secret.
    const other = jobs.submit('prefetch', { items: ['z'] }, { key: 'another-request', secret: 's2' });
    expect(other.id).not.toBe(job.id);
    expect(jobs.submit('prefetch', { items: ['a', 'b'] }, { key: 'same-request', secret: 'hf_secret_again' }).id).toBe(job.id);
    await until(jobs, job.id, (j) => j.state === 'running' && runner.started.includes('b'));
    expect(runner.secrets).toContain('hf_secret_again');
    runner.gate('b').open();
    runner.gate('z').open();
    await until(jobs, job.id, (j) => j.state === 'done');
    await jobs.close();
    await index.close();
    expect(fs.readFileSync(file).includes('hf_secret_again')).toBe(false);
  });
});
