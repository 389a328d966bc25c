/**
 * The index under a lock it does not own: another connection holds
 * `BEGIN IMMEDIATE`; writes are deferred (in order, visible to reads) instead of throwing or
 * blocking the event loop for long, and land once the lock is gone.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { blobKey } from '../../src/storage/blob-layout.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import { waitFor } from '../support/wait-for.js';

const repo = { type: 'model' as const, id: 'org/name' };
const C1 = '1'.repeat(40);
let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('CacheIndex when another connection holds the write lock', () => {
  it('defers writes, shows them to reads, and lands them in order after the lock is released', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-busy-'));
    const file = path.join(dir, 'index.sqlite');
    const events: string[] = [];
    const index = CacheIndex.open(file, { busyTimeoutMs: 50, onWriteProblem: (e) => events.push(e) });
    const a = blobKey('sha256', 'a'.repeat(64))!;
    const b = blobKey('sha256', 'b'.repeat(64))!;
    await index.recordBlob(b, 7);

    const other = new Database(file);
    other.exec('BEGIN IMMEDIATE');
    await index.recordBlob(a, 5);
    await index.putRef(repo, 'main', C1, 1234);
    await index.forgetBlob(b);
    index.touchBlob(a);
    await index.flushTouches();
    // One write met the lock (one busy wait, one 'deferred'); the others queued behind it without
    // touching SQLite, so they did not wait at all.
    expect(events).toEqual(['deferred']);
    expect(index.pendingWrites).toBe(3);
    expect((await index.getBlob(a))?.size).toBe(5);
    expect(await index.getBlob(b)).toBeUndefined();
    expect(await index.getRef(repo, 'main')).toEqual({ commit: C1, checkedAt: 1234, scope: 'anonymous' });
    // Nothing reached the file yet.
    expect(other.prepare('SELECT count(*) AS n FROM blobs').get()).toEqual({ n: 1 });

    other.exec('COMMIT');
    await waitFor(() => index.pendingWrites === 0, { what: 'the deferred writes to land (retried every second)', timeoutMs: 4_000 });
    expect(events).toEqual(['deferred', 'caught-up']);
    expect(other.prepare('SELECT blob_key FROM blobs').all()).toEqual([{ blob_key: a }]);
    expect(other.prepare('SELECT commit_sha FROM refs').all()).toEqual([{ commit_sha: C1 }]);
    other.close();
    await index.close();
    const again = CacheIndex.open(file);
    expect((await again.getBlob(a))?.size).toBe(5);
    await again.close();
  });
});
