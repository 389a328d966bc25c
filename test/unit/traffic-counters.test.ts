/**
 * Traffic counters and hits per blob, flushed together into the index: nothing lost or counted
 * twice when the index is locked by another connection, and they survive reopening.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { TrafficCounters } from '../../src/observability/traffic-counters.js';
import { blobKey } from '../../src/storage/blob-layout.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';

let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('TrafficCounters', () => {
  it('reports requests, bytes and ratios by source; bypassed ranges count as pulled', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-traffic-'));
    const index = CacheIndex.open(path.join(dir, 'index.sqlite'));
    const t = new TrafficCounters(() => 1_700_000_000_000);
    t.served('hit', 300);
    t.served('hit', 100);
    t.served('miss', 500);
    t.served('bypass', 100);
    t.pulled(500);
    expect(await t.report(index.inventory)).toEqual({
      since: null,
      requests: { hit: 2, miss: 1, joined: 0, bypass: 1, total: 4 },
      hitRatio: 0.5,
      bytesServed: { hit: 400, miss: 500, joined: 0, bypass: 100, total: 1000 },
      byteHitRatio: 0.4,
      bytesPulledFromUpstream: 600,
    });
    await t.flush((deltas, initial) => index.flushTouches({ deltas, initial }));
    expect(await t.report(index.inventory)).toMatchObject({ since: new Date(1_700_000_000_000).toISOString(), requests: { total: 4 }, bytesPulledFromUpstream: 600 });
    await index.close();
  });

  it('with the index locked, hits and counters wait in memory together and land once, after the lock', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-traffic-'));
    const file = path.join(dir, 'index.sqlite');
    const index = CacheIndex.open(file, { busyTimeoutMs: 20 });
    const key = blobKey('sha256', 'e'.repeat(64))!;
    await index.recordBlob(key, 10, 1000);
    const t = new TrafficCounters(() => 5000);
    const flush = () => t.flush((deltas, initial) => index.flushTouches({ deltas, initial }));
    const other = new Database(file);
    other.exec('BEGIN IMMEDIATE');
    index.touchBlob(key, 2000);
    t.served('hit', 10);
    await flush();
    index.touchBlob(key, 3000);
    t.served('hit', 10);
    await flush();
    // Nothing landed, nothing lost: the live report still sees both.
    expect((await t.report(index.inventory)).requests.hit).toBe(2);
    other.exec('COMMIT');
    other.close();
    await flush();
    await flush();
    expect((await t.report(index.inventory)).requests.hit).toBe(2);
    await index.close();

    const reopened = CacheIndex.open(file);
    expect(await reopened.inventory.counters()).toEqual({ since: 5000, 'requests.hit': 2, 'bytes_served.hit': 20 });
    const db = new Database(file, { readonly: true });
    expect(db.prepare('SELECT hits, last_accessed_at FROM blobs').get()).toEqual({ hits: 2, last_accessed_at: 3000 });
    db.close();
    await reopened.close();
  });
});
