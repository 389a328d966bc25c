import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RefPins } from '../../src/hub/ref-pins.js';
import { CacheIndex } from '../../src/storage/cache-index.js';

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
  it('a pin is fresh for the TTL, the first pin wins within it, and the last pin stays the offline answer', () => {
    const index = openIndex();
    let now = 1_000;
    const pins = new RefPins(index, 60_000, () => now);
    expect(pins.fresh(repo, 'main')).toBeUndefined();
    expect(pins.pin(repo, 'main', C1)).toBe(C1);
    now += 30_000;
    expect(pins.pin(repo, 'main', C2)).toBe(C1); // upstream moved, but C1 was handed out already
    expect(pins.fresh(repo, 'main')).toBe(C1);
    now += 30_001;
    expect(pins.fresh(repo, 'main')).toBeUndefined();
    expect(pins.last(repo, 'main')).toBe(C1);
    expect(pins.pin(repo, 'main', C2)).toBe(C2);
    expect(pins.fresh({ type: 'dataset', id: 'org/name' }, 'main')).toBeUndefined();
    index.close();
  });

  it('stores API answers per repo, commit and question; migrations apply to an existing index', () => {
    const index = openIndex();
    index.putApiResponse(repo, C1, 'q', { status: 200, headers: { 'content-type': 'application/json' }, nextPage: '/api/next?cursor=x', body: Buffer.from('[]'), storedAt: 5 });
    index.close();
    const again = CacheIndex.open(path.join(dir!, 'index.sqlite'));
    expect(again.getApiResponse(repo, C1, 'q')).toEqual({ status: 200, headers: { 'content-type': 'application/json' }, nextPage: '/api/next?cursor=x', body: Buffer.from('[]'), storedAt: 5 });
    expect(again.getApiResponse(repo, C2, 'q')).toBeUndefined();
    again.close();
  });
});
