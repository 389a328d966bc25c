/**
 * A fill holding a fill lease (its CommitFence, fill-ownership.ts): progress is published as
 * bytes land, the fence is confirmed before the index write, finished after it, released when the
 * fill fails; a fence refused at the commit (the lease was taken over) still gives the verified
 * bytes to the fill's readers but records nothing. A real Fill, FsBlobStore and SqliteCacheIndex;
 * upstream is a body fed from memory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Fill, type FillEvent } from '../../src/mirror/fill.js';
import { fillReader } from '../../src/mirror/fill-reader.js';
import type { CommitFence } from '../../src/mirror/fill-ownership.js';
import { UpstreamFillSource } from '../../src/mirror/fill-source.js';
import { ReadBuffers } from '../../src/mirror/read-buffers.js';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import { FsBlobStore } from '../../src/storage/blob-store.js';
import { SqliteCacheIndex } from '../../src/storage/sqlite-cache-index.js';
import type { HubClient, UpstreamBody } from '../../src/upstream/hub-client.js';
import { UpstreamSet } from '../../src/upstream/upstream-set.js';
import { makeContent, sha256Hex } from '../support/content.js';

let dir: string;
let store: FsBlobStore;
let index: SqliteCacheIndex;
beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-fill-fence-'));
  store = new FsBlobStore(new BlobLayout(dir));
  await store.init();
  index = SqliteCacheIndex.open(path.join(dir, 'index.sqlite'));
});
afterEach(async () => {
  await index.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const SIZE = 2 * 1024 * 1024 + 5;
let seed = 900;

/** A fence that answers `confirmed` and records what the fill did with it. */
function fence(confirmed: boolean) {
  const calls = { progress: [] as number[], confirm: 0, finish: 0, release: 0 };
  const f: CommitFence = {
    progress: (n) => calls.progress.push(n),
    confirm: () => {
      calls.confirm++;
      return Promise.resolve(confirmed);
    },
    finish: () => {
      calls.finish++;
      return Promise.resolve();
    },
    release: () => {
      calls.release++;
      return Promise.resolve();
    },
  };
  return { fence: f, calls };
}

/** A fill of `content` (sent as `sent`) from an upstream that answers every GET from memory. */
function startFill(key: BlobKey, sent: Buffer, fenceOf: CommitFence, events: FillEvent[]): Fill {
  const client = {
    bodySpeedFloor: undefined,
    openBody: (): Promise<UpstreamBody> => {
      const body = new PassThrough();
      body.end(sent);
      return Promise.resolve({ statusCode: 200, headers: { 'content-length': String(sent.length), etag: '"v1"' }, body, url: new URL('http://cdn.invalid/w.bin') });
    },
  } as unknown as HubClient;
  const upstreams = new UpstreamSet([{ base: 'http://hub.invalid', client }]);
  const source = new UpstreamFillSource({ upstreams, path: '/org/r/resolve/main/w.bin', auth: undefined, size: sent.length, sameBlob: () => Promise.resolve(false) });
  return Fill.start({ key, size: sent.length }, { store, index, source, maxResumes: 0, ownership: { fence: fenceOf }, onEvent: (e) => events.push(e) });
}

async function readAll(fill: Fill): Promise<Buffer> {
  const reader = fillReader(fill, 0, fill.size - 1, new ReadBuffers());
  const parts: Buffer[] = [];
  try {
    for (let chunk = await reader.next(); chunk !== null; chunk = await reader.next()) {
      parts.push(Buffer.from(chunk));
      reader.release(chunk);
    }
  } finally {
    reader.close();
  }
  return Buffer.concat(parts);
}

describe('a fill under a fill lease', () => {
  it('publishes its progress, confirms the fence before recording the blob, then finishes the lease', async () => {
    const content = makeContent(SIZE, seed++);
    const key = blobKey('sha256', sha256Hex(content))!;
    const { fence: f, calls } = fence(true);
    const events: FillEvent[] = [];
    const fill = startFill(key, content, f, events);
    expect(sha256Hex(await readAll(fill))).toBe(sha256Hex(content));
    await fill.done;
    expect((await index.getBlob(key))?.size).toBe(SIZE);
    expect([calls.confirm, calls.finish, calls.release]).toEqual([1, 1, 0]);
    expect(calls.progress.at(-1)).toBe(SIZE);
    expect(calls.progress).toEqual([...calls.progress].sort((a, b) => a - b));
    expect(events).toContain('committed');
  });

  it('a fence refused at the commit: its readers still get the verified bytes, the index records nothing, the lease is neither finished nor released', async () => {
    const content = makeContent(SIZE, seed++);
    const key = blobKey('sha256', sha256Hex(content))!;
    const { fence: f, calls } = fence(false);
    const events: FillEvent[] = [];
    const fill = startFill(key, content, f, events);
    expect(sha256Hex(await readAll(fill))).toBe(sha256Hex(content));
    await fill.done;
    expect(fill.state).toBe('committed');
    expect(await index.getBlob(key)).toBeUndefined();
    expect([calls.confirm, calls.finish, calls.release]).toEqual([1, 0, 0]);
    expect(events).toEqual(expect.arrayContaining(['fenced', 'committed']));
  });

  it('a fill that fails (wrong bytes) releases the lease and records nothing', async () => {
    const content = makeContent(SIZE, seed++);
    const key = blobKey('sha256', sha256Hex(content))!;
    const wrong = Buffer.from(content);
    wrong[SIZE - 10] = wrong[SIZE - 10]! ^ 0xff;
    const { fence: f, calls } = fence(true);
    const fill = startFill(key, wrong, f, []);
    await expect(fill.done).rejects.toThrow();
    expect(await index.getBlob(key)).toBeUndefined();
    expect([calls.confirm, calls.finish]).toEqual([0, 0]);
    await expect.poll(() => calls.release).toBe(1);
  });
});
