/**
 * Readers of a fill created at every moment of its life get the right bytes or the fill's own
 * error, never a missing file: before the staging file exists, while it grows, between the rename
 * into place and the commit being announced, after the commit, between the staging file's removal
 * and the failure being announced, after the failure, and (through the Mirror) while the fill is
 * still queued for a slot. A real Fill, FsBlobStore and CacheIndex; upstream is a hand-fed body and
 * the store's steps are held by gates, so each moment is reached by events, not by timing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileEntry } from '../../src/hub/file-resolver.js';
import { Fill } from '../../src/mirror/fill.js';
import type { BlobReader } from '../../src/mirror/blob-reader.js';
import { fillReader } from '../../src/mirror/fill-reader.js';
import { UpstreamFillSource } from '../../src/mirror/fill-source.js';
import { Mirror } from '../../src/mirror/mirror.js';
import { ReadBuffers } from '../../src/mirror/read-buffers.js';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import { FsBlobStore } from '../../src/storage/blob-store.js';
import type { StagedBlob } from '../../src/storage/staged-blob.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import type { HubClient, UpstreamBody } from '../../src/upstream/hub-client.js';
import { UpstreamSet } from '../../src/upstream/upstream-set.js';
import { MirrorError } from '../../src/errors.js';
import { makeContent, sha256Hex } from '../support/content.js';

interface Gate {
  wait: Promise<void>;
  open(): void;
}
function gate(): Gate {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/** The real store, with optional holds: before a staging file exists, after its commit renamed, after its abort removed. */
class GatedStore extends FsBlobStore {
  beforeWriter: Gate | undefined;
  afterCommit: Gate | undefined;
  afterAbort: Gate | undefined;
  /** Fails stage() (after `beforeWriter`) with this error. */
  writerError: Error | undefined;
  /** Resolves when a hold was reached. */
  readonly reached = { commit: gate(), abort: gate() };

  override async stage(key: BlobKey, size: number): Promise<StagedBlob> {
    await this.beforeWriter?.wait;
    if (this.writerError) throw this.writerError;
    const staged = await super.stage(key, size);
    const { reached } = this;
    const holds = { commit: () => this.afterCommit?.wait, abort: () => this.afterAbort?.wait };
    const commit = staged.commit.bind(staged);
    const abort = staged.abort.bind(staged);
    staged.commit = async () => {
      const final = await commit();
      reached.commit.open();
      await holds.commit();
      return final;
    };
    staged.abort = async () => {
      await abort();
      reached.abort.open();
      await holds.abort();
    };
    return staged;
  }
}

/** Upstream: every GET gets a fresh body the test feeds by hand. */
class FedHub {
  readonly bodies: PassThrough[] = [];
  #asked: Array<() => void> = [];
  constructor(readonly size: number) {}
  /** Resolves with the body of the `n`-th GET (0-based) once it was asked for. */
  async body(n = 0): Promise<PassThrough> {
    while (this.bodies.length <= n) await new Promise<void>((resolve) => this.#asked.push(resolve));
    return this.bodies[n]!;
  }
  readonly client = {
    bodySpeedFloor: undefined,
    openBody: async (): Promise<UpstreamBody> => {
      const body = new PassThrough();
      this.bodies.push(body);
      for (const wake of this.#asked.splice(0)) wake();
      return { statusCode: 200, headers: { 'content-length': String(this.size), etag: '"v1"' }, body, url: new URL('http://cdn.invalid/w.bin') };
    },
  } as unknown as HubClient;
}

let dir: string;
let store: GatedStore;
let index: CacheIndex;
let buffers: ReadBuffers;
beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-fill-readers-'));
  store = new GatedStore(new BlobLayout(dir));
  await store.init();
  index = CacheIndex.open(path.join(dir, 'index.sqlite'));
  buffers = new ReadBuffers();
});
afterEach(async () => {
  await index.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const SIZE = 3 * 1024 * 1024 + 17;
let seed = 700;
function blob(size = SIZE): { content: Buffer; key: BlobKey } {
  const content = makeContent(size, seed++);
  return { content, key: blobKey('sha256', sha256Hex(content))! };
}

function startFill(key: BlobKey, hub: FedHub): Fill {
  const upstreams = new UpstreamSet([{ base: 'http://hub.invalid', client: hub.client }]);
  const source = new UpstreamFillSource({ upstreams, path: '/org/r/resolve/main/w.bin', auth: undefined, size: hub.size, sameBlob: () => Promise.resolve(false) });
  return Fill.start({ key, size: hub.size }, { store, index, source, maxResumes: 0 });
}

/** Resolves when a reader first waits for the fill (it has nothing to read yet). */
function waiting(fill: Fill): Promise<void> {
  const subscribed = gate();
  const wait = fill.wait.bind(fill);
  fill.wait = (pos) => {
    subscribed.open();
    fill.wait = wait;
    return wait(pos);
  };
  return subscribed.wait;
}

/** Everything the reader gives, or its error. */
function collect(reader: BlobReader): Promise<Buffer> {
  return drain(reader);
}

async function drain(reader: BlobReader): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for (let c = await reader.next(); c !== null; c = await reader.next()) {
      chunks.push(Buffer.from(c));
      reader.release(c);
    }
    return Buffer.concat(chunks);
  } finally {
    reader.close();
  }
}

/** The reader's first event: waiting for the fill, or a failure (how a reader that gave up ends). */
function firstOf(wait: Promise<void>, read: Promise<Buffer>): Promise<unknown> {
  return Promise.race([wait, read.then(() => undefined)]);
}

describe('a reader created at any moment of a fill', () => {
  it('before the staging file exists: waits for it, then gets the bytes', async () => {
    const { content, key } = blob();
    const hub = new FedHub(SIZE);
    store.beforeWriter = gate();
    const fill = startFill(key, hub);
    const waited = waiting(fill);
    const read = collect(fillReader(fill, 0, SIZE - 1, buffers));
    await firstOf(waited, read);
    store.beforeWriter.open();
    (await hub.body()).end(content);
    expect((await read).equals(content)).toBe(true);
    await fill.done;
  });

  it('before the staging file exists, and the fill then fails to create it: gets that error', async () => {
    const { key } = blob();
    const hub = new FedHub(SIZE);
    store.beforeWriter = gate();
    store.writerError = new MirrorError('InsufficientStorage', 'disk full (test)');
    const fill = startFill(key, hub);
    const waited = waiting(fill);
    const read = collect(fillReader(fill, 10, 20, buffers));
    await firstOf(waited, read);
    store.beforeWriter.open();
    await expect(read).rejects.toBe(store.writerError);
    await expect(fill.done).rejects.toBe(store.writerError);
  });

  it('while the file grows: a span already there and one still to come', async () => {
    const { content, key } = blob();
    const hub = new FedHub(SIZE);
    const fill = startFill(key, hub);
    const body = await hub.body();
    body.write(content.subarray(0, 1024 * 1024));
    const early = collect(fillReader(fill, 1000, 1999, buffers));
    expect((await early).equals(content.subarray(1000, 2000))).toBe(true);
    const late = collect(fillReader(fill, SIZE - 100, SIZE - 1, buffers));
    body.end(content.subarray(1024 * 1024));
    expect((await late).equals(content.subarray(SIZE - 100))).toBe(true);
    await fill.done;
  });

  it('after the rename into place, before the commit is announced: opens the final file', async () => {
    const { content, key } = blob();
    const hub = new FedHub(SIZE);
    store.afterCommit = gate();
    const fill = startFill(key, hub);
    (await hub.body()).end(content);
    await store.reached.commit.wait;
    expect(fill.state).toBe('verifying');
    const read = collect(fillReader(fill, 0, SIZE - 1, buffers));
    store.afterCommit.open();
    expect((await read).equals(content)).toBe(true);
    await fill.done;
  });

  it('after the commit: reads the final file', async () => {
    const { content, key } = blob();
    const hub = new FedHub(SIZE);
    const fill = startFill(key, hub);
    (await hub.body()).end(content);
    await fill.done;
    expect((await collect(fillReader(fill, 5, SIZE - 1, buffers))).equals(content.subarray(5))).toBe(true);
  });

  it('after a failure removed the staging file, before it is announced: gets the fill’s error', async () => {
    const { content, key } = blob();
    const hub = new FedHub(SIZE);
    store.afterAbort = gate();
    const fill = startFill(key, hub);
    const body = await hub.body();
    body.write(content.subarray(0, 1000));
    await expect(collect(fillReader(fill, 0, 99, buffers))).resolves.toEqual(content.subarray(0, 100));
    body.destroy(new Error('connection reset (test)'));
    await store.reached.abort.wait;
    expect(fill.state).toBe('filling');
    const waited = waiting(fill);
    const read = collect(fillReader(fill, 0, 99, buffers));
    await firstOf(waited, read);
    store.afterAbort.open();
    await expect(fill.done).rejects.toBeInstanceOf(MirrorError);
    await expect(read).rejects.toBe(fill.failure);
  });

  it('after the failure: gets the fill’s error', async () => {
    const { key } = blob();
    const hub = new FedHub(SIZE);
    const fill = startFill(key, hub);
    (await hub.body()).destroy(new Error('connection reset (test)'));
    await expect(fill.done).rejects.toBeInstanceOf(MirrorError);
    await expect(collect(fillReader(fill, 0, 99, buffers))).rejects.toBe(fill.failure);
  });
});

describe('the buffers readers read into', () => {
  const MiB = 1024 * 1024;

  async function committed(size: number): Promise<{ fill: Fill; content: Buffer }> {
    const { content, key } = blob(size);
    const hub = new FedHub(size);
    const fill = startFill(key, hub);
    (await hub.body()).end(content);
    await fill.done;
    return { fill, content };
  }

  it('come from the shared ReadBuffers, within its bound for the readers there are, and all go back', async () => {
    const { fill, content } = await committed(6 * MiB + 5);
    const shared = new ReadBuffers({ budget: 2 * MiB, minChunk: 256 * 1024, maxChunk: 1024 * 1024 });
    const readers = Array.from({ length: 6 }, (_, i) => fillReader(fill, i * 1000, content.length - 1, shared));
    const got = await Promise.all(readers.map((r) => drain(r)));
    got.forEach((bytes, i) => expect(bytes.equals(content.subarray(i * 1000))).toBe(true));
    const stats = shared.stats();
    expect([stats.readers, stats.inUse, stats.peakReaders]).toEqual([0, 0, 6]);
    expect(stats.peakInUse).toBeLessThanOrEqual(shared.budget + 2 * shared.minChunk * 6);
    expect(stats.allocations).toBeLessThan(stats.takes); // recycled, not one fresh buffer per read
  });

  it('a reader holds at most two chunks: the next read waits for a release', async () => {
    const { fill, content } = await committed(4 * MiB);
    const shared = new ReadBuffers({ budget: 4 * MiB, minChunk: 256 * 1024, maxChunk: 1024 * 1024 });
    const reader = fillReader(fill, 0, content.length - 1, shared);
    const first = (await reader.next())!;
    const second = (await reader.next())!;
    const third = reader.next();
    // A reader that did not wait would have taken its third buffer once these microtasks ran.
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(shared.stats().inUse).toBe(first.length + second.length);
    const held = [Buffer.from(first), Buffer.from(second)];
    reader.release(first);
    const chunk = (await third)!;
    held.push(Buffer.from(chunk));
    reader.release(second);
    reader.release(chunk);
    const rest = await drain(reader);
    expect(Buffer.concat([...held, rest]).equals(content)).toBe(true);
    expect([shared.stats().readers, shared.stats().inUse]).toEqual([0, 0]);
  });

  it('closed with chunks still lent: they go back when released, and the reader stops counting', async () => {
    const { fill, content } = await committed(4 * MiB);
    const shared = new ReadBuffers({ budget: 4 * MiB, minChunk: 256 * 1024, maxChunk: 1024 * 1024 });
    const reader = fillReader(fill, 0, content.length - 1, shared);
    const chunk = (await reader.next())!;
    reader.close();
    expect(shared.stats().readers).toBe(1); // the socket still has the chunk
    expect(chunk.equals(content.subarray(0, chunk.length))).toBe(true);
    reader.release(chunk);
    expect([shared.stats().readers, shared.stats().inUse]).toEqual([0, 0]);
  });
});

describe('a reader of a fill still queued for a slot', () => {
  it('gets its bytes once the fill runs', async () => {
    const first = blob();
    const second = blob();
    const hub = new FedHub(SIZE);
    const mirror = new Mirror({ store, index, hub: new UpstreamSet([{ base: 'http://hub.invalid', client: hub.client }]), maxResumes: 0, rangeBypassMaxBytes: 0, maxConcurrentFills: 1, maxQueuedFills: 1 });
    const entry = (key: BlobKey, name: string): FileEntry => ({
      request: { repo: { type: 'model', id: 'org/r' }, view: 'resolve', revision: 'main', path: name },
      commit: 'c'.repeat(40),
      blobKey: key,
      size: SIZE,
      etag: key.slice('sha256:'.length),
      isLfs: true,
      contentType: 'application/octet-stream',
      source: 'upstream',
    });
    const a = await mirror.open(entry(first.key, 'a.bin'), undefined);
    const b = await mirror.open(entry(second.key, 'b.bin'), undefined);
    expect(mirror.queuedFills).toBe(1);
    const readB = collect(b.createReader(0, SIZE - 1));
    const readA = collect(a.createReader(0, SIZE - 1));
    (await hub.body(0)).end(first.content);
    expect((await readA).equals(first.content)).toBe(true);
    (await hub.body(1)).end(second.content);
    expect((await readB).equals(second.content)).toBe(true);
    await mirror.close();
  });
});
