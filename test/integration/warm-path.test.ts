/**
 * The warm path (cached files, answered from memory: the resolution memo, the in-memory blob
 * table, one open fd per response) still notices what happens behind the mirror's back: a blob
 * file removed or cut short on disk is fetched again rather than served short or answered 500
 * (a file cut short while it is being read fails that reader: see test/unit/hit-reader.test.ts),
 * and warm GETs and HEADs ask upstream nothing and run no SQLite statement (access times are
 * written in batches).
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import { BlobLayout, blobKey } from '../../src/storage/blob-layout.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let mirror: TestMirror;
let seed = 5150;

beforeAll(async () => {
  hub = await startFakeHub();
  mirror = await startMirror(hub.url);
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** A new repo with one LFS file, fetched once through the mirror (cached, memo warm). */
async function cachedFile(size: number, through: TestMirror = mirror): Promise<{ url: string; content: Buffer; blob: string; key: string }> {
  const id = `org/warm-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'w.safetensors': content } });
  const url = `${through.url}/${id}/resolve/main/w.safetensors`;
  const first = await download(url, { keepBody: false });
  expect([first.status, header(first, 'x-mirror-cache'), first.sha256]).toEqual([200, 'miss', sha256Hex(content)]);
  const key = blobKey('sha256', sha256Hex(content))!;
  const blob = new BlobLayout(through.dataDir).blobPath(key);
  expect(fs.statSync(blob).size).toBe(size);
  return { url, content, blob, key };
}

/**
 * The SQL of every better-sqlite3 statement executed from now on on a database file under `dir`,
 * in order, with its arguments (other mirrors of this test process flush their own access times).
 */
function recordStatements(dir: string): () => { sql: string; args: unknown[] }[] {
  const probe = new Database(':memory:');
  const proto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<'run' | 'get' | 'all' | 'iterate', (...args: unknown[]) => unknown>;
  probe.close();
  const spies = (['run', 'get', 'all', 'iterate'] as const).map((m) => vi.spyOn(proto, m));
  return () =>
    spies
      .flatMap((s) => s.mock.contexts.map((ctx, i) => ({ order: s.mock.invocationCallOrder[i]!, ctx: ctx as { source: string; database: { name: string } }, args: s.mock.calls[i]! })))
      .filter(({ ctx }) => ctx.database.name.startsWith(dir))
      .map(({ order, ctx, args }) => ({ order, sql: ctx.source, args }))
      .sort((a, b) => a.order - b.order)
      .map(({ sql, args }) => ({ sql, args }));
}
const isTouch = (sql: string): boolean => /^UPDATE blobs SET last_accessed_at/.test(sql);
const isTransaction = (sql: string): boolean => /^(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b/.test(sql);

const cdnGets = (): number => hub.count({ server: 'cdn', method: 'GET' });

describe('warm GETs and HEADs', () => {
  it('ask upstream nothing', async () => {
    const f = await cachedFile(3 * MiB);
    const before = hub.count();
    for (let i = 0; i < 5; i++) {
      const head = await download(f.url, { method: 'HEAD' });
      expect([head.status, header(head, 'x-mirror-cache'), header(head, 'content-length')]).toEqual([200, 'hit', String(3 * MiB)]);
      const get = await download(f.url, { keepBody: false });
      expect([get.status, header(get, 'x-mirror-cache'), get.sha256]).toEqual([200, 'hit', sha256Hex(f.content)]);
      const range = await download(f.url, { headers: { range: 'bytes=1000-2000999' } });
      expect([range.status, range.body.equals(f.content.subarray(1000, 2001000))]).toEqual([206, true]);
    }
    expect(hub.count()).toBe(before);
  });

  it('run no SQLite statement: the resolution, the blob row and the access time stay in memory; access times land in one batched write', async () => {
    const own = await startMirror(hub.url);
    try {
      const f = await cachedFile(MiB, own);
      const commitUrl = f.url.replace('/resolve/main/', `/resolve/${header(await download(f.url, { method: 'HEAD' }), 'x-repo-commit')}/`);
      await download(commitUrl, { method: 'HEAD' }); // the commit-pinned question is asked once
      const before = hub.count();
      const flushes = vi.spyOn(CacheIndex.prototype, 'flushTouches');
      const statements = recordStatements(own.dataDir);
      for (let i = 0; i < 20; i++) {
        for (const url of [f.url, commitUrl]) {
          expect(header(await download(url, { method: 'HEAD' }), 'x-mirror-cache')).toBe('hit');
          const get = await download(url, { keepBody: false });
          expect([header(get, 'x-mirror-cache'), get.sha256]).toEqual(['hit', sha256Hex(f.content)]);
          const range = await download(url, { headers: { range: 'bytes=10-99' } });
          expect([range.status, range.body.equals(f.content.subarray(10, 100))]).toEqual([206, true]);
        }
      }
      expect(hub.count()).toBe(before);
      // Only the periodic flush of access times may have run meanwhile: one row per flush.
      const during = statements();
      expect(during.filter((s) => !isTouch(s.sql) && !isTransaction(s.sql))).toEqual([]);
      expect(during.filter((s) => isTouch(s.sql)).length).toBeLessThanOrEqual(flushes.mock.calls.length);

      await own.close(); // closing flushes what is pending: 80 reads of one blob, one row written per flush
      const touches = statements().filter((s) => isTouch(s.sql));
      expect(touches.length).toBeGreaterThanOrEqual(1);
      expect(touches.length).toBeLessThanOrEqual(flushes.mock.calls.length);
      expect(touches.every((t) => t.args[2] === f.key)).toBe(true); // (at, hits, key)
    } finally {
      await own.destroy();
    }
  });

  it('a blob removed behind the mirror’s back is fetched again on the next GET, although the memo and the blob table said cached', async () => {
    const f = await cachedFile(2 * MiB);
    expect(header(await download(f.url, { method: 'HEAD' }), 'x-mirror-cache')).toBe('hit');
    expect(header(await download(f.url, { keepBody: false }), 'x-mirror-cache')).toBe('hit');

    fs.rmSync(f.blob);
    const gets = cdnGets();
    const refetched = await download(f.url, { keepBody: false });
    expect([refetched.status, header(refetched, 'x-mirror-cache'), refetched.complete, refetched.sha256]).toEqual([200, 'miss', true, sha256Hex(f.content)]);
    expect(cdnGets()).toBe(gets + 1);
    // Cached again: served from disk, upstream not asked.
    const hit = await download(f.url, { keepBody: false });
    expect([header(hit, 'x-mirror-cache'), hit.sha256]).toEqual(['hit', sha256Hex(f.content)]);
    expect(header(await download(f.url, { method: 'HEAD' }), 'x-mirror-cache')).toBe('hit');
    expect(cdnGets()).toBe(gets + 1);
  });

  it('a blob cut short behind the mirror’s back is fetched again on the next GET (never a complete short body)', async () => {
    const f = await cachedFile(3 * MiB);
    fs.truncateSync(f.blob, MiB);
    const gets = cdnGets();
    const refetched = await download(f.url, { keepBody: false });
    expect([refetched.status, header(refetched, 'x-mirror-cache'), refetched.complete, refetched.sha256]).toEqual([200, 'miss', true, sha256Hex(f.content)]);
    expect(cdnGets()).toBe(gets + 1);
    expect(fs.statSync(f.blob).size).toBe(3 * MiB);
  });
});
