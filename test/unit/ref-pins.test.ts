import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RefPins } from '../../src/hub/ref-pins.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';

const C1 = '1'.repeat(40);
const C2 = '2'.repeat(40);
const repo = { type: 'model' as const, id: 'org/name' };

let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function openIndex(): CacheIndex {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-pins-'));
  return CacheIndex.open(path.join(dir, 'index.sqlite'));
}

describe('RefPins', () => {
  it('a pin is fresh for the TTL, the first pin wins within it, and the last pin stays the offline answer', async () => {
    const index = openIndex();
    let now = 1_000;
    const pins = new RefPins(index, 60_000, { now: () => now, monotonic: () => now });
    expect(await pins.fresh(repo, 'main')).toBeUndefined();
    expect(await pins.pin(repo, 'main', C1)).toBe(C1);
    now += 30_000;
    expect(await pins.pin(repo, 'main', C2)).toBe(C1); // upstream moved, but C1 was handed out already
    expect(await pins.fresh(repo, 'main')).toBe(C1);
    now += 30_001;
    expect(await pins.fresh(repo, 'main')).toBeUndefined();
    expect(await pins.last(repo, 'main')).toBe(C1);
    expect(await pins.pin(repo, 'main', C2)).toBe(C2);
    expect(await pins.fresh({ type: 'dataset', id: 'org/name' }, 'main')).toBeUndefined();
    await index.close();
  });

  it('ages pins on the monotonic clock: a wall clock stepped back or forward a day changes nothing', async () => {
    const index = openIndex();
    let wall = Date.UTC(2025, 5, 1);
    let mono = 5_000;
    const pins = new RefPins(index, 60_000, { now: () => wall, monotonic: () => mono });
    expect(await pins.pin(repo, 'main', C1)).toBe(C1);
    wall -= 86_400_000; // stepped back a day: with wall-clock ages the pin would live for a day
    mono += 30_000;
    expect(await pins.fresh(repo, 'main')).toBe(C1);
    mono += 30_001;
    expect(await pins.fresh(repo, 'main')).toBeUndefined();
    expect(await pins.pin(repo, 'main', C2)).toBe(C2);
    wall += 2 * 86_400_000; // stepped forward a day: still fresh, the snapshot stays on C2
    mono += 1_000;
    expect(await pins.fresh(repo, 'main')).toBe(C2);
    expect(await pins.pin(repo, 'main', C1)).toBe(C2);
    await index.close();
  });

  it('judges a pin written by an earlier process by its wall-clock age once; a time in the future is stale', async () => {
    const index = openIndex();
    const wall = Date.UTC(2025, 5, 1);
    await index.putRef(repo, 'recent', C1, wall - 10_000);
    await index.putRef(repo, 'future', C1, wall + 86_400_000);
    await index.putRef(repo, 'old', C1, wall - 60_000);
    let mono = 0;
    const pins = new RefPins(index, 60_000, { now: () => wall, monotonic: () => mono });
    expect(await pins.fresh(repo, 'recent')).toBe(C1);
    expect(await pins.fresh(repo, 'future')).toBeUndefined();
    expect(await pins.fresh(repo, 'old')).toBeUndefined();
    mono += 49_999; // 10 s old when first seen: 50 s left, counted monotonically
    expect(await pins.fresh(repo, 'recent')).toBe(C1);
    mono += 1;
    expect(await pins.fresh(repo, 'recent')).toBeUndefined();
    expect(await pins.pin(repo, 'future', C2)).toBe(C2);
    await index.close();
  });

  it('stores API answers per repo, commit and question; migrations apply to an existing index', async () => {
    const index = openIndex();
    await index.putApiResponse(repo, C1, 'q', { status: 200, headers: { 'content-type': 'application/json' }, nextPage: '/api/next?cursor=x', body: Buffer.from('[]'), storedAt: 5, scope: 'anonymous' });
    await index.close();
    const again = CacheIndex.open(path.join(dir!, 'index.sqlite'));
    expect(await again.getApiResponse(repo, C1, 'q')).toEqual({ status: 200, headers: { 'content-type': 'application/json' }, nextPage: '/api/next?cursor=x', body: Buffer.from('[]'), storedAt: 5, scope: 'anonymous' });
    expect(await again.getApiResponse(repo, C2, 'q')).toBeUndefined();
    await again.close();
  });
});
