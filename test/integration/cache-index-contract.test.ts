/**
 * The CacheIndex contract (src/storage/cache-index-contract.ts), one suite run against both
 * engines: SqliteCacheIndex in a temporary directory and PostgresCacheIndex on a real PostgreSQL
 * (a throwaway cluster, one database for this file, emptied before each case). Then what only a
 * shared engine has: two replicas on one database, migrations from several processes at once,
 * writes deferred while the server is unreachable (cut deterministically by a TCP relay in front
 * of it), and the URL's password kept out of every error.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import type { ApiResponseRow, CacheIndex, FileRow, JobRow } from '../../src/storage/cache-index-contract.js';
import { POSTGRES_MIGRATIONS } from '../../src/storage/postgres-migrations.js';
import { PostgresCacheIndex } from '../../src/storage/postgres-cache-index.js';
import { SqliteCacheIndex } from '../../src/storage/sqlite-cache-index.js';
import { postgresSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { startTcpRelay } from '../support/tcp-relay.js';
import { waitFor } from '../support/wait-for.js';

const repo = { type: 'model' as const, id: 'org/name' };
const other = { type: 'dataset' as const, id: 'org/data' };
const C1 = '1'.repeat(40);
const C2 = '2'.repeat(40);
const sha = (n: number): BlobKey => blobKey('sha256', crypto.createHash('sha256').update(String(n)).digest('hex'))!;
const git = (n: number): BlobKey => blobKey('gitsha1', crypto.createHash('sha1').update(String(n)).digest('hex'))!;

const file = (p: string, key: BlobKey, extra: Partial<FileRow> = {}): FileRow => ({
  repo,
  commit: C1,
  view: 'resolve',
  path: p,
  blobKey: key,
  size: 10,
  etag: key.split(':')[1]!,
  isLfs: key.startsWith('sha256'),
  contentType: 'application/octet-stream',
  scope: 'anonymous',
  checkedAt: 1_000,
  ...extra,
});

const job = (id: string, createdAt: number, state: JobRow['state'] = 'queued'): JobRow => ({
  id,
  kind: 'prefetch',
  state,
  params: { repo: 'org/name', include: ['*.json'], nested: { deep: true } },
  progress: { itemsTotal: null, itemsDone: 0, itemsFailed: 0, bytesTotal: null, bytesDone: 0 },
  message: null,
  createdAt,
  startedAt: null,
  finishedAt: null,
});

/** An engine under test: `fresh` starts empty state, `open` opens an index on the current state. */
interface Engine {
  name: string;
  skip: string | undefined;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  fresh(): Promise<void>;
  open(): Promise<CacheIndex>;
}

let server: TestPostgres | undefined;
/** The PostgreSQL cluster, started once for this file (both the suite and the Postgres-only cases). */
async function postgres(): Promise<TestPostgres> {
  server ??= await startPostgres();
  return server;
}

/** Pools re-emit an idle client's error (a server shutting down, a relay cut): the owner listens. */
function quietPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {});
  return pool;
}

function sqliteEngine(): Engine {
  const dirs: string[] = [];
  let file = '';
  return {
    name: 'SqliteCacheIndex',
    skip: undefined,
    setup: async () => {},
    teardown: async () => {
      for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    },
    fresh: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-contract-'));
      dirs.push(dir);
      file = path.join(dir, 'index.sqlite');
    },
    open: async () => SqliteCacheIndex.open(file),
  };
}

function postgresEngine(): Engine {
  let url = '';
  let admin: pg.Pool | undefined;
  return {
    name: 'PostgresCacheIndex',
    skip: postgresSkipReason,
    setup: async () => {
      url = await (await postgres()).createDatabase('contract');
      // Creates the tables, so that `fresh` can empty them.
      await (await PostgresCacheIndex.open({ url })).close();
      admin = quietPool(url);
    },
    teardown: async () => {
      await admin?.end();
    },
    fresh: async () => {
      await admin!.query('TRUNCATE refs, files, blobs, api_responses, counters, jobs, job_items');
    },
    open: async () => PostgresCacheIndex.open({ url }),
  };
}

const engines = [sqliteEngine(), postgresEngine()];

describe.each(engines)('CacheIndex contract: $name', (engine) => {
  const opened: CacheIndex[] = [];
  async function open(): Promise<CacheIndex> {
    const index = await engine.open();
    opened.push(index);
    return index;
  }
  /** Closes `index` and opens the same state again (what a restart sees: no memo, no overlay). */
  async function reopen(index: CacheIndex): Promise<CacheIndex> {
    await index.close();
    return open();
  }

  beforeAll(async () => {
    if (!engine.skip) await engine.setup();
  }, 120_000);
  afterAll(async () => {
    for (const i of opened) await i.close().catch(() => undefined);
    await engine.teardown();
  });
  beforeEach(async () => {
    if (!engine.skip) await engine.fresh();
  });

  describe.skipIf(engine.skip !== undefined)(engine.skip ? `(skipped: ${engine.skip})` : 'cases', () => {
    it('round-trips refs, files and API answers, across a reopen', async () => {
      let index = await open();
      expect(await index.getRef(repo, 'main')).toBeUndefined();
      await index.putRef(repo, 'main', C1, 1_234);
      expect(await index.getRef(repo, 'main')).toEqual({ commit: C1, checkedAt: 1_234, scope: 'anonymous' });
      await index.putRef(repo, 'main', C2, 2_000, 'service:x');
      await index.putRef(repo, 'v1', C1, 3_000);

      const lfs = file('model.safetensors', sha(1), { size: 5_000_000_000, checkedAt: 1_700_000_000_123 });
      const small = file('config.json', git(1), { view: 'raw', contentType: 'application/json', scope: null });
      await index.putFile(lfs);
      await index.putFile(small);
      expect(await index.getFile(repo, C1, 'resolve', 'config.json')).toBeUndefined();

      const answer: ApiResponseRow = {
        status: 200,
        headers: { 'content-type': 'application/json; charset=utf-8', 'x-error-code': 'None' },
        nextPage: '/api/models/org/name/tree/main?cursor=abc',
        body: Buffer.from([0x00, 0xff, 0x7b, 0x7d, 0x0a, 0x80]),
        storedAt: 42,
        scope: 'anonymous',
      };
      await index.putApiResponse(repo, C1, 'tree?recursive=1', answer);
      await index.putApiResponse(repo, C1, 'info', { ...answer, nextPage: undefined, status: 404, headers: {} });

      index = await reopen(index);
      expect(await index.getRef(repo, 'main')).toEqual({ commit: C2, checkedAt: 2_000, scope: 'service:x' });
      expect(await index.getRef(repo, 'v1')).toEqual({ commit: C1, checkedAt: 3_000, scope: 'anonymous' });
      expect(await index.getRef(other, 'main')).toBeUndefined();
      expect(await index.getFile(repo, C1, 'resolve', 'model.safetensors')).toEqual(lfs);
      expect(await index.getFile(repo, C1, 'raw', 'config.json')).toEqual(small);
      expect(await index.getApiResponse(repo, C1, 'tree?recursive=1')).toEqual(answer);
      expect(await index.getApiResponse(repo, C1, 'info')).toEqual({ ...answer, nextPage: undefined, status: 404, headers: {} });
      expect(await index.getApiResponse(repo, C2, 'info')).toBeUndefined();
    });

    it('public is sticky; a service scope survives a token answer and is replaced by another service', async () => {
      const index = await open();
      const scopeAfter = async (p: string, writes: Array<string | null>): Promise<string | null | undefined> => {
        for (const s of writes) await index.putFile(file(p, git(2), { scope: s }));
        return (await index.getFile(repo, C1, 'resolve', p))?.scope;
      };
      expect(await scopeAfter('a', ['anonymous', 'service:x', null])).toBe('anonymous');
      expect(await scopeAfter('b', ['service:x', null])).toBe('service:x');
      expect(await scopeAfter('c', ['service:x', 'service:y'])).toBe('service:y');
      expect(await scopeAfter('d', [null, 'service:x', 'anonymous'])).toBe('anonymous');
      const api = (scope: string): ApiResponseRow => ({ status: 200, headers: {}, nextPage: undefined, body: Buffer.from('[]'), storedAt: 1, scope });
      await index.putApiResponse(repo, C1, 'q1', api('anonymous'));
      await index.putApiResponse(repo, C1, 'q1', api('service:x'));
      await index.putApiResponse(repo, C1, 'q2', api('service:x'));
      await index.putApiResponse(repo, C1, 'q2', api('anonymous'));
      expect([(await index.getApiResponse(repo, C1, 'q1'))?.scope, (await index.getApiResponse(repo, C1, 'q2'))?.scope]).toEqual(['anonymous', 'anonymous']);
    });

    it('records, finds, forgets and evicts blobs; eviction takes the file rows naming the blob', async () => {
      let index = await open();
      const [a, b, c] = [sha(10), sha(11), git(12)];
      expect(index.knownBlob(a)).toBeUndefined();
      expect(await index.getBlob(a)).toBeUndefined();
      // An absent blob is never reported known-present; `false` only where negatives cannot go stale.
      expect(index.knownBlob(a) || undefined).toBeUndefined();

      await index.recordBlob(a, 100, 5_000);
      await index.recordBlob(b, 200, 6_000);
      await index.recordBlob(c, 300, 7_000);
      expect(index.knownBlob(a)).toEqual({ blobKey: a, size: 100, storedAt: 5_000, lastAccessedAt: 5_000 });
      expect(await index.getBlob(b)).toEqual({ blobKey: b, size: 200, storedAt: 6_000, lastAccessedAt: 6_000 });
      // Recorded again (the same blob stored again): upserted.
      await index.recordBlob(a, 150, 8_000);
      await index.putFile(file('a.bin', a));
      await index.putFile(file('b.bin', b));
      await index.putFile(file('b-again.bin', b, { commit: C2 }));
      await index.putFile(file('c.txt', c));

      await index.forgetBlob(c);
      await index.evictBlob(b);
      expect(await index.getBlob(c)).toBeUndefined();
      expect(await index.getBlob(b)).toBeUndefined();
      expect(index.knownBlob(b) || undefined).toBeUndefined();

      index = await reopen(index);
      expect(await index.getBlob(a)).toEqual({ blobKey: a, size: 150, storedAt: 8_000, lastAccessedAt: 5_000 });
      expect(await index.getBlob(b)).toBeUndefined();
      expect(await index.getBlob(c)).toBeUndefined();
      // Eviction removed b's file rows (every commit); forgetting c left its file row.
      expect(await index.getFile(repo, C1, 'resolve', 'b.bin')).toBeUndefined();
      expect(await index.getFile(repo, C2, 'resolve', 'b-again.bin')).toBeUndefined();
      expect((await index.getFile(repo, C1, 'resolve', 'c.txt'))?.blobKey).toBe(c);
      expect((await index.getFile(repo, C1, 'resolve', 'a.bin'))?.blobKey).toBe(a);
    });

    it('lists every blob ordered by key', async () => {
      const index = await open();
      const keys = [sha(20), git(21), sha(22), git(23), sha(24)];
      for (const [i, k] of keys.entries()) await index.recordBlob(k, i + 1, 1_000 + i);
      const listed = await index.allBlobs();
      expect(listed.map((r) => r.blobKey)).toEqual([...keys].sort());
      expect(listed.find((r) => r.blobKey === keys[2])).toEqual({ blobKey: keys[2], size: 3, storedAt: 1_002, lastAccessedAt: 1_002 });
    });

    it('batches hits in memory; a flush writes them with the counters, in one transaction', async () => {
      let index = await open();
      const [a, b] = [sha(30), sha(31)];
      await index.recordBlob(a, 10, 1_000);
      await index.recordBlob(b, 20, 1_000);
      await index.putFile(file('a.bin', a));
      await index.putFile(file('b.bin', b));
      index.touchBlob(a, 5_000);
      index.touchBlob(a, 3_000);
      index.touchBlob(a, 6_000);
      index.touchBlob(b, 2_000);
      // In memory only: the memo has the access time, the engine nothing yet.
      expect((index.knownBlob(a) || undefined)?.lastAccessedAt).toBe(6_000);
      const before = await open();
      expect((await before.getBlob(a))?.lastAccessedAt).toBe(1_000);
      await before.close();

      // A counter the engine refuses (not a number) fails the whole flush: no hit lands either,
      // and the hits are kept for the next flush.
      await expect(index.flushTouches({ deltas: { broken: Number.NaN } })).rejects.toThrow();
      const during = await open();
      expect((await during.inventory.files(repo)).map((f) => f.hits)).toEqual([0, 0]);
      expect(await during.inventory.counters()).toEqual({});
      await during.close();

      index.touchBlob(b, 2_500);
      expect(await index.flushTouches({ deltas: { served: 4, zero: 0 }, initial: { since: 77, served: 100 } })).toBe(true);
      index = await reopen(index);
      expect((await index.getBlob(a))?.lastAccessedAt).toBe(6_000);
      expect((await index.getBlob(b))?.lastAccessedAt).toBe(2_500);
      expect((await index.inventory.files(repo)).map((f) => [f.path, f.hits, f.lastAccessAt])).toEqual([
        ['a.bin', 3, 6_000],
        ['b.bin', 2, 2_500],
      ]);
      expect(await index.inventory.counters()).toEqual({ since: 77, served: 104 });
      // An older touch never moves the access time back; nothing to flush is a success.
      index.touchBlob(a, 100);
      expect(await index.flushTouches()).toBe(true);
      expect(await index.flushTouches()).toBe(true);
      index = await reopen(index);
      expect((await index.getBlob(a))?.lastAccessedAt).toBe(6_000);
      expect((await index.inventory.files(repo))[0]?.hits).toBe(4);
    });

    it('keeps storedBytes and stats', async () => {
      let index = await open();
      expect(index.storedBytes).toBe(0);
      expect(await index.stats()).toEqual({ rows: { refs: 0, files: 0, blobs: 0, api_responses: 0 }, blobBytes: 0 });
      const [a, b, c] = [sha(40), sha(41), sha(42)];
      await index.recordBlob(a, 1_000);
      await index.recordBlob(b, 2_000);
      await index.recordBlob(c, 4_000);
      expect(index.storedBytes).toBe(7_000);
      await index.recordBlob(a, 1_500);
      expect(index.storedBytes).toBe(7_500);
      await index.forgetBlob(b);
      await index.evictBlob(c);
      expect(index.storedBytes).toBe(1_500);
      await index.putRef(repo, 'main', C1, 1);
      await index.putFile(file('a.bin', a));
      await index.putApiResponse(repo, C1, 'q', { status: 200, headers: {}, nextPage: undefined, body: Buffer.from('{}'), storedAt: 1, scope: 'anonymous' });
      expect(await index.stats()).toEqual({ rows: { refs: 1, files: 1, blobs: 1, api_responses: 1 }, blobBytes: 1_500 });
      index = await reopen(index);
      expect(index.storedBytes).toBe(1_500);
      expect(await index.ping()).toBe(true);
    });

    it('a write the engine refuses rejects and is not deferred', async () => {
      const index = await open();
      await expect(index.putFile(file('bad.bin', sha(50), { size: Number.NaN }))).rejects.toThrow();
      expect(index.pendingWrites).toBe(0);
      expect(await index.getFile(repo, C1, 'resolve', 'bad.bin')).toBeUndefined();
    });

    it('keeps jobs and their items', async () => {
      let index = await open();
      await index.jobs.insert(job('j1', 1_000, 'done'));
      await index.jobs.insert(job('j2', 2_000, 'running'));
      await index.jobs.insert(job('j3', 3_000, 'failed'));
      await index.jobs.insert(job('j4', 4_000));
      await expect(index.jobs.insert(job('j1', 5_000))).rejects.toThrow();

      const saved: JobRow = {
        ...job('j2', 2_000, 'running'),
        progress: { itemsTotal: 3, itemsDone: 2, itemsFailed: 1, bytesTotal: 6_000_000_000, bytesDone: 5_000_000_000 },
        message: 'waiting for a slot',
        startedAt: 2_100,
        params: { repo: 'org/name', revision: 'main' },
      };
      await index.jobs.save(saved);
      expect(await index.jobs.get('j2')).toEqual(saved);
      expect(await index.jobs.get('nope')).toBeUndefined();
      expect((await index.jobs.list(2)).map((j) => j.id)).toEqual(['j4', 'j3']);
      expect((await index.jobs.unfinished()).map((j) => j.id)).toEqual(['j2', 'j4']);

      expect(await index.jobs.addItem('j2', { item: 'a.bin', outcome: 'filled', ok: true, bytes: 10, message: null })).toBe(1);
      expect(await index.jobs.addItem('j2', { item: 'b.bin', outcome: 'failed', ok: false, bytes: 0, message: 'upstream 500' })).toBe(2);
      // Items finishing at once are numbered without a gap or a repeat.
      const seqs = await Promise.all(Array.from({ length: 8 }, (_, i) => index.jobs.addItem('j2', { item: `c${i}.bin`, outcome: 'cached', ok: true, bytes: i, message: null })));
      expect([...seqs].sort((x, y) => x - y)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
      await index.jobs.addItem('j1', { item: 'x.bin', outcome: 'filled', ok: true, bytes: 1, message: null });

      index = await reopen(index);
      expect(await index.jobs.items('j2', 0, 2)).toEqual([
        { seq: 1, item: 'a.bin', outcome: 'filled', ok: true, bytes: 10, message: null },
        { seq: 2, item: 'b.bin', outcome: 'failed', ok: false, bytes: 0, message: 'upstream 500' },
      ]);
      expect((await index.jobs.items('j2', 8, 100)).map((i) => i.seq)).toEqual([9, 10]);
      const ok = await index.jobs.succeededItems('j2');
      expect(ok.size).toBe(9);
      expect(ok.get('a.bin')).toBe(10);
      expect(ok.has('b.bin')).toBe(false);

      // The newest finished job stays, with the unfinished ones; the others go with their items.
      await index.jobs.prune(1);
      expect((await index.jobs.list(10)).map((j) => j.id)).toEqual(['j4', 'j3', 'j2']);
      expect(await index.jobs.items('j1', 0, 10)).toEqual([]);
      expect(await index.jobs.get('j1')).toBeUndefined();
    });

    it('answers the inventory: repos, files, blob totals and counters', async () => {
      let index = await open();
      const [a, b, shared] = [sha(60), sha(61), git(62)];
      await index.recordBlob(a, 100, 1_000);
      await index.recordBlob(shared, 7, 2_000);
      await index.putFile(file('model.bin', a));
      await index.putFile(file('model.bin', a, { commit: C2 }));
      await index.putFile(file('missing.bin', b, { scope: 'service:abc' }));
      await index.putFile(file('README.md', shared, { scope: null }));
      await index.putFile(file('README.md', shared, { repo: other }));
      await index.putRef(repo, 'main', C2, 1);
      await index.putRef(repo, 'v1', C1, 1);
      index.touchBlob(a, 9_000);
      index.touchBlob(a, 8_000);
      index.touchBlob(shared, 3_000);
      await index.flushTouches();

      index = await reopen(index);
      expect(await index.inventory.repos()).toEqual([
        { repo: other, commits: 1, files: 1, cachedFiles: 1, cachedBytes: 7, lastAccessAt: 3_000, hits: 1, refs: {} },
        { repo, commits: 2, files: 4, cachedFiles: 3, cachedBytes: 107, lastAccessAt: 9_000, hits: 3, refs: { main: C2, v1: C1 } },
      ]);
      expect(await index.inventory.files(repo)).toEqual([
        { commit: C1, view: 'resolve', path: 'README.md', size: 10, blobKey: shared, isLfs: false, visibility: 'token', cached: true, storedAt: 2_000, lastAccessAt: 3_000, hits: 1 },
        { commit: C1, view: 'resolve', path: 'missing.bin', size: 10, blobKey: b, isLfs: true, visibility: 'service', cached: false, storedAt: null, lastAccessAt: null, hits: 0 },
        { commit: C1, view: 'resolve', path: 'model.bin', size: 10, blobKey: a, isLfs: true, visibility: 'public', cached: true, storedAt: 1_000, lastAccessAt: 9_000, hits: 2 },
        { commit: C2, view: 'resolve', path: 'model.bin', size: 10, blobKey: a, isLfs: true, visibility: 'public', cached: true, storedAt: 1_000, lastAccessAt: 9_000, hits: 2 },
      ]);
      expect(await index.inventory.blobTotals()).toEqual({ blobs: 2, bytes: 107 });

      expect(await index.inventory.counters()).toEqual({});
      await index.inventory.addCounters({ a: 1, b: 0 }, { a: 100, c: 5 });
      await index.inventory.addCounters({ a: 1, c: 2 }, { a: 0 });
      index = await reopen(index);
      expect(await index.inventory.counters()).toEqual({ a: 102, c: 7 });
    });

    it('pages eviction candidates in both policies and selects by repo, commit and last use', async () => {
      const index = await open();
      // Access times and sizes with ties, broken by the key.
      const blobs: Array<[BlobKey, number, number]> = [
        [sha(70), 500, 3_000],
        [sha(71), 100, 1_000],
        [sha(72), 500, 1_000],
        [git(73), 900, 2_000],
        [sha(74), 50, 4_000],
      ];
      for (const [k, size, at] of blobs) await index.recordBlob(k, size, at);
      const pages = async (policy: 'lru' | 'largest-first'): Promise<BlobKey[][]> => {
        const out: BlobKey[][] = [];
        let cursor = null;
        for (;;) {
          const page = await index.eviction.candidates(policy, cursor, 2);
          if (page.rows.length === 0) return out;
          out.push(page.rows.map((r) => r.blobKey));
          cursor = page.cursor;
        }
      };
      const byKey = (x: [BlobKey, number, number], y: [BlobKey, number, number]) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0);
      const lru = [...blobs].sort((x, y) => x[2] - y[2] || byKey(x, y)).map((b) => b[0]);
      const largest = [...blobs].sort((x, y) => y[1] - x[1] || -byKey(x, y)).map((b) => b[0]);
      expect(await pages('lru')).toEqual([lru.slice(0, 2), lru.slice(2, 4), lru.slice(4)]);
      expect(await pages('largest-first')).toEqual([largest.slice(0, 2), largest.slice(2, 4), largest.slice(4)]);
      const first = await index.eviction.candidates('lru', null, 1);
      expect(first.rows).toEqual([{ blobKey: lru[0], size: blobs.find((b) => b[0] === lru[0])![1], lastAccessedAt: 1_000 }]);

      // sha(70) only in repo@C1, sha(71) in repo@C1 and repo@C2, sha(72) in repo and other, git(73) in other only.
      await index.putFile(file('a', sha(70)));
      await index.putFile(file('b', sha(71)));
      await index.putFile(file('b', sha(71), { commit: C2 }));
      await index.putFile(file('c', sha(72)));
      await index.putFile(file('c', sha(72), { repo: other }));
      await index.putFile(file('d', git(73), { repo: other }));
      const keys = async (sel: Parameters<CacheIndex['eviction']['selection']>[0], policy: 'lru' | 'largest-first' = 'lru') => (await index.eviction.selection(sel, policy)).map((r) => r.blobKey);
      expect(await keys({ repo })).toEqual([sha(71), sha(70)]);
      expect(await keys({ repo }, 'largest-first')).toEqual([sha(70), sha(71)]);
      expect(await keys({ repo, commit: C1 })).toEqual([sha(70)]);
      expect(await keys({ repo, commit: C2 })).toEqual([]);
      expect(await keys({ usedBefore: 2_000 })).toEqual(lru.slice(0, 2));
      expect(await keys({ repo: other, usedBefore: 3_000 })).toEqual([git(73)]);
      expect(await keys({})).toEqual(lru);
    });

    it('measures and prunes metadata, oldest first', async () => {
      const index = await open();
      expect(await index.eviction.metadataBytes()).toBe(0);
      const body = Buffer.alloc(1_000, 0x61);
      for (let i = 0; i < 5; i++) await index.putApiResponse(repo, C1, `q${i}`, { status: 200, headers: { 'content-type': 'application/json' }, nextPage: undefined, body, storedAt: 100 + i, scope: 'anonymous' });
      for (let i = 0; i < 3; i++) await index.putRef(repo, `branch-${i}`, C1, 50 + i * 100);
      const bytes = await index.eviction.metadataBytes();
      // Five answers of 1,000 bytes of body and more: more than 5,000, less than 7,000 with the refs.
      expect(bytes).toBeGreaterThan(5_000);
      expect(bytes).toBeLessThan(7_000);
      expect(await index.eviction.pruneMetadata(bytes)).toEqual({ apiResponses: 0, refs: 0 });
      // Down to nothing: every row goes, and each kind is counted.
      expect(await index.eviction.pruneMetadata(0)).toEqual({ apiResponses: 5, refs: 3 });
      expect(await index.eviction.metadataBytes()).toBe(0);
      expect(await index.getRef(repo, 'branch-0')).toBeUndefined();
    });
  });
});

describe.skipIf(postgresSkipReason !== undefined)(`PostgresCacheIndex, shared${postgresSkipReason ? ` (skipped: ${postgresSkipReason})` : ''}`, () => {
  const opened: CacheIndex[] = [];
  const pools: pg.Pool[] = [];
  async function open(url: string, opts: Partial<Parameters<typeof PostgresCacheIndex.open>[0]> = {}): Promise<PostgresCacheIndex> {
    const index = await PostgresCacheIndex.open({ url, ...opts });
    opened.push(index);
    return index;
  }
  afterAll(async () => {
    for (const i of opened) await i.close().catch(() => undefined);
    for (const p of pools) await p.end();
    await server?.stop();
  });

  it('two replicas on one database see each other’s blobs: no stale negative answer', async () => {
    const url = await (await postgres()).createDatabase('replicas');
    const [a, b] = [await open(url), await open(url)];
    const key = sha(80);
    expect(await b.getBlob(key)).toBeUndefined();
    expect(b.knownBlob(key)).toBeUndefined();
    await a.recordBlob(key, 1_234, 9_000);
    // B asked before A recorded it, and still finds it now.
    expect(b.knownBlob(key)).toBeUndefined();
    expect(await b.getBlob(key)).toEqual({ blobKey: key, size: 1_234, storedAt: 9_000, lastAccessedAt: 9_000 });
    expect(b.knownBlob(key)).toEqual({ blobKey: key, size: 1_234, storedAt: 9_000, lastAccessedAt: 9_000 });
    // B's stored bytes follow A's writes at its next flush; hits of both replicas add up.
    expect(b.storedBytes).toBe(0);
    a.touchBlob(key, 10_000);
    b.touchBlob(key, 11_000);
    expect(await a.flushTouches()).toBe(true);
    expect(await b.flushTouches()).toBe(true);
    expect(b.storedBytes).toBe(1_234);
    await a.putFile(file('x.bin', key));
    expect((await b.inventory.files(repo)).map((f) => [f.hits, f.lastAccessAt])).toEqual([[2, 11_000]]);
    // A forgets it: B's next question of the engine says so (its own memo is its own).
    await a.forgetBlob(key);
    expect(await a.getBlob(key)).toBeUndefined();
    expect((await b.allBlobs()).length).toBe(0);
    expect((await b.stats()).blobBytes).toBe(0);
    expect(b.storedBytes).toBe(0);
  });

  it('three replicas opening a new database at once migrate it once', async () => {
    const url = await (await postgres()).createDatabase('migrate');
    const three = await Promise.all([open(url), open(url), open(url)]);
    const pool = quietPool(url);
    pools.push(pool);
    const rows = await pool.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version');
    expect(rows.rows.map((r) => r.version)).toEqual(POSTGRES_MIGRATIONS.map((_, i) => i + 1));
    // Each works, on the same tables.
    await three[0].putRef(repo, 'main', C1, 1);
    expect((await three[2].getRef(repo, 'main'))?.commit).toBe(C1);
    // Opening again applies nothing.
    await open(url);
    expect((await pool.query('SELECT count(*)::int AS n FROM schema_migrations')).rows).toEqual([{ n: POSTGRES_MIGRATIONS.length }]);
  });

  it('defers writes while the server is unreachable, shows them to reads meanwhile, and lands them once it is back', async () => {
    const pgServer = await postgres();
    const url = await pgServer.createDatabase('deferred');
    const gate = await startTcpRelay(Number(new URL(url).port));
    const viaRelay = new URL(url);
    viaRelay.port = String(gate.port);
    const events: string[] = [];
    const problems: string[] = [];
    const index = await open(viaRelay.toString(), { onWriteProblem: (e, d) => (events.push(e), d.error && problems.push(d.error)), log: { warn: () => {} } });
    const [kept, gone] = [sha(90), sha(91)];
    await index.recordBlob(gone, 50, 1_000);
    await index.putFile(file('kept.bin', kept));
    index.touchBlob(gone, 2_000);

    gate.cut();
    // Resolved though nothing landed: deferred, in order.
    await index.putRef(repo, 'main', C2, 5_000);
    await index.recordBlob(kept, 700, 6_000);
    await index.forgetBlob(gone);
    await index.putApiResponse(repo, C2, 'info', { status: 200, headers: {}, nextPage: undefined, body: Buffer.from('{}'), storedAt: 7, scope: 'anonymous' });
    expect(index.pendingWrites).toBe(4);
    expect(events).toEqual(['deferred']);
    // Reads of refs and blobs see the waiting writes; other reads fail (callers take them as a miss).
    expect(await index.getRef(repo, 'main')).toEqual({ commit: C2, checkedAt: 5_000, scope: 'anonymous' });
    expect(index.knownBlob(kept)).toEqual({ blobKey: kept, size: 700, storedAt: 6_000, lastAccessedAt: 6_000 });
    expect(await index.getBlob(kept)).toEqual({ blobKey: kept, size: 700, storedAt: 6_000, lastAccessedAt: 6_000 });
    expect(await index.getBlob(gone)).toBeUndefined();
    expect(index.storedBytes).toBe(700);
    await expect(index.getFile(repo, C1, 'resolve', 'kept.bin')).rejects.toThrow();
    expect(await index.ping()).toBe(false);
    // A flush that cannot land keeps its hits.
    index.touchBlob(kept, 8_000);
    expect(await index.flushTouches()).toBe(false);

    gate.restore();
    await waitFor(() => events.includes('caught-up'), { what: 'the deferred writes to land' });
    expect(index.pendingWrites).toBe(0);
    expect(events).toEqual(['deferred', 'caught-up']);
    expect(problems.length).toBe(1);
    // Landed, in order: a second replica straight on the server sees them.
    const direct = await open(url);
    expect(await direct.getRef(repo, 'main')).toEqual({ commit: C2, checkedAt: 5_000, scope: 'anonymous' });
    expect(await direct.getBlob(kept)).toEqual({ blobKey: kept, size: 700, storedAt: 6_000, lastAccessedAt: 6_000 });
    expect(await direct.getBlob(gone)).toBeUndefined();
    expect((await direct.getApiResponse(repo, C2, 'info'))?.status).toBe(200);
    // The kept hit lands with the next flush.
    expect(await index.flushTouches()).toBe(true);
    expect((await direct.inventory.files(repo)).map((f) => [f.path, f.hits, f.lastAccessAt])).toEqual([['kept.bin', 1, 8_000]]);
    await index.close();
    await gate.close();
  });

  it('never shows the URL’s password in an error or an event', async () => {
    const pgServer = await postgres();
    const password = 'pw-Zq81-secret/with?odd#chars';
    const encoded = encodeURIComponent(password);
    // A port nobody listens on: the relay closed.
    const gate = await startTcpRelay(1);
    const deadPort = gate.port;
    await gate.close();
    const refused = await PostgresCacheIndex.open({ url: `postgres://hubcache:${encoded}@127.0.0.1:${deadPort}/nothing` }).then(
      () => new Error('opened'),
      (err: Error) => err,
    );
    expect(refused.message).toMatch(/^PostgreSQL index at postgres:\/\/hubcache:\*\*\*@127\.0\.0\.1:\d+\/nothing: /);
    for (const text of [refused.message, refused.stack ?? '']) {
      expect(text).not.toContain(encoded);
      expect(text).not.toContain('pw-Zq81');
    }
    // A server that answers, with a database that does not exist (trust auth ignores the password).
    const port = new URL(pgServer.adminUrl).port;
    const missing = await PostgresCacheIndex.open({ url: `postgresql://hubcache:${encoded}@127.0.0.1:${port}/no_such_db` }).then(
      () => new Error('opened'),
      (err: Error) => err,
    );
    expect(missing.message).toContain('no_such_db');
    expect(missing.message).not.toContain('pw-Zq81');
  });
});
