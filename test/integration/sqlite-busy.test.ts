/**
 * T29 / F8: another connection holds the index's write lock (`BEGIN IMMEDIATE`) for seconds while
 * clients keep coming. better-sqlite3 is synchronous, so every blocked write would stall the whole
 * event loop for the busy timeout: the index keeps that short and defers writes instead.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let mirror: TestMirror;

beforeAll(async () => {
  hub = await startFakeHub();
  mirror = await startMirror(hub.url);
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

describe('T29: the index locked by another connection', () => {
  it('hits keep flowing, misses complete, writes wait without blocking, and every deferred write lands after the release', async () => {
    const id = 'org/busy';
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) files[`hot-${i}.safetensors`] = makeContent(2 * MiB, 7000 + i);
    for (let i = 0; i < 6; i++) files[`cold-${i}.safetensors`] = makeContent(3 * MiB, 7100 + i);
    hub.addRepo({ id, files });
    const url = (name: string) => `${mirror.url}/${id}/resolve/main/${name}`;
    const sha = (name: string) => hub.fileInfo({ id }, name).sha256;
    for (let i = 0; i < 3; i++) expect((await download(url(`hot-${i}.safetensors`), { keepBody: false })).sha256).toBe(sha(`hot-${i}.safetensors`));

    const indexPath = path.join(mirror.dataDir, 'index.sqlite');
    const other = new Database(indexPath);
    const deferredLines = () => mirror.logs.filter((l) => l.includes('writes deferred')).length;
    const deferredBefore = deferredLines();
    try {
      // Held until everything below is done: all of it happens under the lock, whatever the speed.
      other.exec('BEGIN IMMEDIATE');
      // Misses while the lock is held: each one's resolution, fill and blob record is a write.
      const misses = Promise.all(Array.from({ length: 6 }, (_, i) => `cold-${i}.safetensors`).map(async (name) => ({ name, r: await download(url(name), { keepBody: false }) })));
      const metadata = download(`${mirror.url}/api/models/${id}/revision/main`);
      // Hits all along, by three clients.
      const hitters = Array.from({ length: 3 }, async (_, c) => {
        for (let n = 0; n < 30; n++) {
          const name = `hot-${c}.safetensors`;
          const r = await download(url(name), { keepBody: false });
          expect(r.status).toBe(200);
          expect(r.sha256).toBe(sha(name));
        }
      });
      await Promise.all(hitters);
      for (const { name, r } of await misses) {
        expect(r.status, name).toBe(200);
        expect(r.complete, name).toBe(true);
        expect(r.sha256, name).toBe(sha(name));
      }
      expect((await metadata).status).toBe(200);
      expect(other.inTransaction).toBe(true); // everything above happened under the lock
      // One write met the lock and waited the (short) busy timeout; every later one was queued
      // behind it without touching SQLite, so none of them blocked the event loop again.
      expect(deferredLines() - deferredBefore).toBe(1);
      // Nothing of it reached the file yet.
      const recordedNow = other.prepare(`SELECT count(*) AS n FROM blobs WHERE blob_key LIKE 'sha256:%'`).get() as { n: number };
      expect(recordedNow.n).toBe(3);
    } finally {
      if (other.inTransaction) other.exec('COMMIT');
    }

    // After the release the deferred writes land (retried every second): the misses are hits now,
    // recorded in the index file itself.
    const recorded = (): number => (other.prepare(`SELECT count(*) AS n FROM blobs WHERE blob_key IN (${Array.from({ length: 6 }, () => '?').join(',')})`).get(...Array.from({ length: 6 }, (_, i) => `sha256:${sha(`cold-${i}.safetensors`)}`)) as { n: number }).n;
    await waitFor(() => recorded() === 6, { what: 'the deferred blob records to land' });
    expect(mirror.logs.some((l) => l.includes('deferred writes landed'))).toBe(true);
    const before = hub.requests.length;
    for (let i = 0; i < 6; i++) {
      const r = await download(url(`cold-${i}.safetensors`), { keepBody: false });
      expect(header(r, 'x-mirror-cache')).toBe('hit');
      expect(r.sha256).toBe(sha(`cold-${i}.safetensors`));
    }
    expect(hub.requests.length).toBe(before);
    expect(other.pragma('integrity_check', { simple: true })).toBe('ok');
    other.close();
  });
});
