/**
 * The warm path (cached files, answered from memory: the resolution memo, the in-memory blob
 * table, one open fd per response) still notices what happens behind the mirror's back: a blob
 * file removed or cut short on disk is fetched again rather than served short or answered 500
 * (a file cut short while it is being read fails that reader: see test/unit/hit-reader.test.ts),
 * and warm GETs and HEADs ask upstream nothing.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

/** A new repo with one LFS file, fetched once through the mirror (cached, memo warm). */
async function cachedFile(size: number): Promise<{ url: string; content: Buffer; blob: string }> {
  const id = `org/warm-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'w.safetensors': content } });
  const url = `${mirror.url}/${id}/resolve/main/w.safetensors`;
  const first = await download(url, { keepBody: false });
  expect([first.status, header(first, 'x-mirror-cache'), first.sha256]).toEqual([200, 'miss', sha256Hex(content)]);
  const blob = new BlobLayout(mirror.dataDir).blobPath(blobKey('sha256', sha256Hex(content))!);
  expect(fs.statSync(blob).size).toBe(size);
  return { url, content, blob };
}

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
