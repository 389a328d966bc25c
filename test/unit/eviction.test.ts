import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Evictor, type EvictorOptions } from '../../src/mirror/eviction.js';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import { FsBlobStore } from '../../src/storage/blob-store.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import { parseCacheBudget } from '../../src/storage/disk-space.js';
import { parseDuration, parseSize } from '../../src/admin/evict.js';
import { validateConfig } from '../../src/config/config.js';

let dir: string;
let store: FsBlobStore;
let index: CacheIndex;
let now: number;
const clock = { now: () => now, monotonic: () => now };
const repo = { type: 'model' as const, id: 'org/unit' };

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-evictor-'));
  store = new FsBlobStore(new BlobLayout(dir));
  await store.init();
  index = CacheIndex.open(path.join(dir, 'index.sqlite'));
  now = 1_000_000;
});
afterEach(async () => {
  await index.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Stores a blob of `size` bytes, last used at `at`. */
async function put(size: number, seed: string, at: number, file = `${seed}.bin`): Promise<BlobKey> {
  const data = Buffer.alloc(size, seed);
  const key = blobKey('sha256', createHash('sha256').update(data).digest('hex'))!;
  const w = await store.stage(key, size);
  await w.write(0, [data]);
  await w.commit();
  w.dispose();
  await index.recordBlob(key, size, at);
  await index.putFile({ repo, commit: 'c'.repeat(40), view: 'resolve', path: file, blobKey: key, size, etag: key.slice(7), isLfs: true, contentType: 'application/octet-stream', scope: 'anonymous', checkedAt: at });
  return key;
}

function evictor(opts: Partial<EvictorOptions> = {}): Evictor {
  return new Evictor({ store, index, budgetBytes: 1000, policy: 'lru', graceMs: 0, clock, ...opts });
}

describe('Evictor', () => {
  it('lru evicts the least recently used first, largest-first the largest; rows and files go together', async () => {
    const old = await put(100, 'a', 10);
    const big = await put(300, 'b', 20);
    const recent = await put(200, 'c', 30);
    expect(index.storedBytes).toBe(600);
    expect(await evictor().evict(50)).toBe(100);
    expect(await index.getBlob(old)).toBeUndefined();
    expect(await store.stat(old)).toBeNull();
    expect(await index.getFile(repo, 'c'.repeat(40), 'resolve', 'a.bin')).toBeUndefined();
    expect(await evictor({ policy: 'largest-first' }).evict(50)).toBe(300);
    expect(await index.getBlob(big)).toBeUndefined();
    expect(await index.getBlob(recent)).toBeDefined();
    expect(index.storedBytes).toBe(200);
  });

  it('never evicts a leased blob, one being filled, or one used within the grace period', async () => {
    const leased = await put(100, 'a', 10);
    const filling = await put(100, 'b', 20);
    const recent = await put(100, 'c', now - 500);
    const e = evictor({ graceMs: 1000 });
    e.attach({ isFilling: (k) => k === filling, reservedBytes: () => 0 });
    const lease = e.lease(leased);
    expect(await e.evict(1000)).toBe(0);
    lease.release(); // released now: its last use is now, within the grace
    expect(await e.evict(1000)).toBe(0);
    now += 1000;
    expect(await e.evict(1000)).toBe(200); // the leased one and the recent one
    expect(await index.getBlob(recent)).toBeUndefined();
    expect(await index.getBlob(filling)).toBeDefined();
  });

  it('background: above the high-water mark, down to the low-water mark', async () => {
    for (let i = 0; i < 10; i++) await put(96, String.fromCharCode(97 + i), i);
    const e = evictor({ budgetBytes: 1000 });
    e.check();
    await e.close();
    expect(index.storedBytes).toBe(864); // 960 was above 95 %: the oldest went, down to 90 % or below
    await put(50, 'y', 100);
    e.check();
    await e.close();
    expect(index.storedBytes).toBe(914); // below the high-water mark: nothing goes
    await put(50, 'z', 101);
    e.check();
    await e.close();
    expect(index.storedBytes).toBe(964 - 96);
  });

  it('operator selection: dry run, a repo (shared blobs stay), unused for, bytes', async () => {
    const a = await put(100, 'a', 10);
    const shared = await put(50, 's', 20);
    await index.putFile({ repo: { type: 'model', id: 'org/other' }, commit: 'd'.repeat(40), view: 'resolve', path: 's.bin', blobKey: shared, size: 50, etag: 'x', isLfs: true, contentType: 'x', scope: 'anonymous', checkedAt: 1 });
    const e = evictor();
    expect(await e.evictSelection({ repo }, { dryRun: true })).toEqual({ dryRun: true, bytes: 100, blobs: [{ blob: a, size: 100, outcome: 'would-evict' }] });
    expect(await index.getBlob(a)).toBeDefined();
    expect((await e.evictSelection({ usedBefore: 15 }, { dryRun: false })).blobs).toEqual([{ blob: a, size: 100, outcome: 'evicted' }]);
    expect((await e.evictSelection({}, { bytes: 1, dryRun: false })).blobs.map((b) => b.blob)).toEqual([shared]);
  });

  it('prunes API answers and refs oldest first past the metadata bound', async () => {
    for (let i = 0; i < 300; i++) {
      await index.putApiResponse(repo, 'c'.repeat(40), `q${i}`, { status: 200, headers: {}, nextPage: undefined, body: Buffer.alloc(1000), storedAt: i, scope: 'anonymous' });
      await index.putRef(repo, `branch-${i}`, 'c'.repeat(40), 1000 + i);
    }
    const before = await index.eviction.metadataBytes();
    const pruned = await index.eviction.pruneMetadata(Math.floor(before / 2));
    expect(await index.eviction.metadataBytes()).toBeLessThanOrEqual(before / 2);
    expect(pruned.apiResponses).toBeGreaterThan(0);
    expect(await index.getApiResponse(repo, 'c'.repeat(40), 'q0')).toBeUndefined(); // the oldest went
    expect(await index.getApiResponse(repo, 'c'.repeat(40), 'q299')).toBeDefined();
    expect(await index.getRef(repo, 'branch-299')).toBeDefined();
  });
});

describe('sizes and durations', () => {
  it('parses budgets, sizes and durations, and config refuses bad budgets', () => {
    expect(parseCacheBudget('90%')).toEqual({ fraction: 0.9 });
    expect(parseCacheBudget('1048576')).toEqual({ bytes: 1048576 });
    expect(() => parseCacheBudget('0%')).toThrow(/above 0/);
    expect(() => parseCacheBudget('10GB')).toThrow(/percentage/);
    expect(parseSize('10G')).toBe(10 * 1024 ** 3);
    expect(parseSize('512KiB')).toBe(512 * 1024);
    expect(parseDuration('30d')).toBe(30 * 86_400);
    expect(() => parseDuration('soon')).toThrow();
    const ok = validateConfig([{ source: 'file', values: { maxCacheBytes: 5_000_000, evictionPolicy: 'largest-first' } }]);
    expect(ok.ok && ok.config.maxCacheBytes).toBe('5000000');
    const bad = validateConfig([{ source: 'file', values: { maxCacheBytes: '150%', evictionPolicy: 'fifo' } }]);
    expect(bad.ok ? [] : bad.errors).toEqual([expect.stringMatching(/^maxCacheBytes .*at most 100/), expect.stringMatching(/^evictionPolicy .*lru, largest-first/)]);
  });
});
