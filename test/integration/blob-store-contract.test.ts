/**
 * The BlobStore conformance suite (src/storage/blob-store-contract.ts), run against every driver:
 * the filesystem store over a temp data dir, and the S3 store over a real S3-compatible server
 * (OpenStack Swift with s3api, one per file). Ranges, concurrent readers, a crash between stage
 * and commit, a commit of the wrong digest, idempotent removal, listing; then what only a remote
 * store has: reads when the local copy is gone, multipart uploads, a second store on the same
 * bucket, parts uploaded while the blob is written, the abandoned-upload rule, and a store that is
 * down or hangs.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListPartsCommand, PutObjectCommand, UploadPartCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import type { BlobStore } from '../../src/storage/blob-store-contract.js';
import { BlobFile, FsBlobStore, RemoteBlob } from '../../src/storage/blob-store.js';
import { S3BlobStore, type S3BlobStoreOptions } from '../../src/storage/s3-blob-store.js';
import { makeContent } from '../support/content.js';
import { deadEndpoint } from '../support/dead-endpoint.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-contract-'));
  tmpDirs.push(d);
  return d;
}

const sha256Key = (b: Buffer): BlobKey => blobKey('sha256', createHash('sha256').update(b).digest('hex'))!;
const gitKey = (b: Buffer): BlobKey => blobKey('gitsha1', createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex'))!;

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Stores whose local copies are dropped after each commit: every read is a ranged GET of the object. */
const remoteOnly = new WeakSet<BlobStore>();

async function put(store: BlobStore, data: Buffer, key: BlobKey = sha256Key(data)): Promise<BlobKey> {
  const w = await store.stage(key, data.length);
  for (let i = 0; i < data.length; i += 256 * 1024) await w.write(i, [data.subarray(i, i + 256 * 1024)]);
  await w.commit();
  w.dispose();
  if (remoteOnly.has(store)) await store.dropLocal(key);
  return key;
}

async function listed(store: BlobStore): Promise<Array<[BlobKey, number]>> {
  const out: Array<[BlobKey, number]> = [];
  for await (const b of store.list()) out.push([b.key, b.size]);
  return out.sort((a, b) => a[0].localeCompare(b[0]));
}

/** A failure's code (MirrorError) or message. */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: string }).code ?? (err as Error).message;
  }
  throw new Error('expected a failure');
}

interface Driver {
  name: string;
  skip?: string | undefined;
  /** A fresh, initialised store over a fresh data dir (and a fresh bucket). */
  open(opts?: { dataDir?: string; bucket?: string }): Promise<BlobStore & { bucket?: string }>;
  /** A stray object that no store wrote, next to the blobs (must not be listed). */
  addStray(store: BlobStore & { bucket?: string }): Promise<void>;
}

let swift: SwiftS3 | undefined;
let s3: S3Client | undefined;
const s3Skip = swiftS3SkipReason;

function s3Options(bucket: string, extra: Partial<S3BlobStoreOptions> = {}): S3BlobStoreOptions {
  return { endpoint: swift!.endpoint, bucket, region: swift!.region, prefix: 'mirror/', forcePathStyle: true, credentials: { accessKeyId: swift!.accessKeyId, secretAccessKey: swift!.secretAccessKey }, timeoutMs: 20_000, partSize: 5 * MiB, ...extra };
}

const drivers: Driver[] = [
  {
    name: 'filesystem',
    open: async ({ dataDir } = {}) => {
      const store = new FsBlobStore(new BlobLayout(dataDir ?? tempDir()));
      await store.init();
      return store;
    },
    addStray: async (store) => {
      const stray = path.join(store.layout.blobsDir, 'sha256', 'ab', 'cd', 'not-a-digest');
      fs.mkdirSync(path.dirname(stray), { recursive: true });
      fs.writeFileSync(stray, 'stray');
    },
  },
  {
    name: 's3',
    skip: s3Skip,
    open: async ({ dataDir, bucket } = {}) => {
      const name = bucket ?? (await swift!.bucket('contract'));
      const store = Object.assign(new S3BlobStore(new BlobLayout(dataDir ?? tempDir()), s3Options(name)), { bucket: name });
      await store.init();
      return store;
    },
    addStray: addS3Stray,
  },
  {
    name: 's3 without local copies',
    skip: s3Skip,
    open: async ({ dataDir, bucket } = {}) => {
      const name = bucket ?? (await swift!.bucket('remote-only'));
      const store = Object.assign(new S3BlobStore(new BlobLayout(dataDir ?? tempDir()), s3Options(name, { cacheReads: false })), { bucket: name });
      await store.init();
      remoteOnly.add(store);
      return store;
    },
    addStray: addS3Stray,
  },
];

async function addS3Stray(store: BlobStore & { bucket?: string }): Promise<void> {
  await s3!.send(new PutObjectCommand({ Bucket: store.bucket, Key: 'mirror/blobs-v1/sha256/not-a-digest', Body: Buffer.from('stray') }));
  await s3!.send(new PutObjectCommand({ Bucket: store.bucket, Key: 'mirror/blobs-v1/sha256/' + 'A'.repeat(64), Body: Buffer.from('not canonical') }));
  await s3!.send(new PutObjectCommand({ Bucket: store.bucket, Key: 'elsewhere/blobs-v1/sha256/' + 'a'.repeat(64), Body: Buffer.from('other prefix') }));
}

beforeAll(async () => {
  if (s3Skip) return;
  swift = await startSwiftS3();
  s3 = swift.client();
}, 120_000);
afterAll(async () => {
  s3?.destroy();
  await swift?.stop();
});

describe.each(drivers)('BlobStore contract: $name driver', (driver) => {
  const test = driver.skip ? it.skip : it;

  test('a committed blob is visible with its size and reads back whole and in ranges', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(300 * 1024 + 7, 1);
      const key = await put(store, data);
      expect(await store.stat(key)).toEqual({ size: data.length });
      expect((await collect(store.openRead(key, 0, data.length - 1))).equals(data)).toBe(true);
      for (const [start, end] of [[0, 0], [1, 1000], [data.length - 1, data.length - 1], [65_535, 200_001]] as const) {
        expect((await collect(store.openRead(key, start, end))).equals(data.subarray(start, end + 1))).toBe(true);
      }
      const config = Buffer.from('{"model_type": "bert"}\n');
      const git = await put(store, config, gitKey(config));
      expect((await collect(store.openRead(git, 0, config.length - 1))).toString()).toBe(config.toString());
      const empty = await put(store, Buffer.alloc(0));
      expect(await store.stat(empty)).toEqual({ size: 0 });
    } finally {
      await store.close();
    }
  });

  test('concurrent readers of one blob each get their own bytes', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(2 * MiB + 3, 2);
      const key = await put(store, data);
      const spans = Array.from({ length: 12 }, (_, i) => [i * 150_000, Math.min(data.length - 1, i * 150_000 + 400_000)] as const);
      const got = await Promise.all([...spans.map(([s, e]) => collect(store.openRead(key, s, e))), collect(store.openRead(key, 0, data.length - 1))]);
      spans.forEach(([s, e], i) => expect(got[i]!.equals(data.subarray(s, e + 1)), `span ${s}-${e}`).toBe(true));
      expect(got[spans.length]!.equals(data)).toBe(true);
    } finally {
      await store.close();
    }
  });

  test('a crash between stage and commit leaves nothing visible, and the next process clears staging', async () => {
    const dataDir = tempDir();
    const store = await driver.open({ dataDir });
    const data = makeContent(64 * 1024, 3);
    const key = sha256Key(data);
    const w = await store.stage(key, data.length);
    await w.write(0, [data]); // every byte staged and right, never committed
    expect(await store.stat(key)).toBeNull();
    expect(await listed(store)).toEqual([]);
    await store.close();
    // The next process on the same data dir (and bucket).
    const next = await driver.open({ dataDir, bucket: (store as { bucket?: string }).bucket });
    try {
      expect(fs.readdirSync(next.layout.stagingDir)).toEqual([]);
      expect(await next.stat(key)).toBeNull();
      expect(await listed(next)).toEqual([]);
    } finally {
      await next.close();
      await w.abort(); // the crashed process's fd (its file is already gone)
    }
  });

  test('a commit of the wrong digest or size is refused and leaves nothing behind', async () => {
    const store = await driver.open();
    try {
      const data = Buffer.from('the real content');
      const key = sha256Key(data);
      // Wrong bytes through the writer.
      const w = await store.stage(key, data.length);
      await w.write(0, [Buffer.from('the fake content')]);
      expect(await failure(w.commit())).toBe('IntegrityError');
      // A direct commit whose verified digest is not the key's.
      const staged = path.join(store.layout.stagingDir, 'direct.part');
      fs.writeFileSync(staged, data);
      expect(await failure(store.commit(key, staged, { size: data.length, digest: createHash('sha256').update('other').digest('hex') }))).toBe('IntegrityError');
      expect(fs.existsSync(staged)).toBe(false);
      // The right digest, but the staged file is not the size that was hashed.
      fs.writeFileSync(staged, Buffer.concat([data, Buffer.from('!')]));
      expect(await failure(store.commit(key, staged, { size: data.length, digest: key.slice(7) }))).toBe('IntegrityError');
      expect(fs.existsSync(staged)).toBe(false);
      expect(await store.stat(key)).toBeNull();
      expect(await listed(store)).toEqual([]);
      expect(fs.readdirSync(store.layout.stagingDir)).toEqual([]);
      // A direct commit with the right digest and size works.
      fs.writeFileSync(staged, data);
      await store.commit(key, staged, { size: data.length, digest: key.slice(7) });
      if (remoteOnly.has(store)) fs.rmSync(store.pathOf(key));
      expect((await collect(store.openRead(key, 0, data.length - 1))).equals(data)).toBe(true);
    } finally {
      await store.close();
    }
  });

  test('remove is idempotent and hides the blob', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(10_000, 4);
      const key = await put(store, data);
      const other = await put(store, makeContent(5_000, 5));
      await store.remove(key);
      await store.remove(key);
      await store.remove(sha256Key(Buffer.from('never stored')));
      expect(await store.stat(key)).toBeNull();
      expect(await listed(store)).toEqual([[other, 5_000]]);
      await expect(collect(store.openRead(key, 0, 9))).rejects.toThrow();
      // Committing it again brings it back.
      await put(store, data);
      expect(await store.stat(key)).toEqual({ size: data.length });
    } finally {
      await store.close();
    }
  });

  test('openBlob gives the bytes of a blob of that size (a local fd, or a remote reader), null for any other size or key', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(700_000, 13);
      const key = await put(store, data);
      const opened = await store.openBlob(key, data.length);
      expect(opened).not.toBeNull();
      try {
        const read = async (start: number, end: number): Promise<Buffer> => {
          if (opened instanceof BlobFile) {
            const buf = Buffer.alloc(end - start + 1);
            fs.readSync(opened.fd, buf, 0, buf.length, start);
            return buf;
          }
          return collect(opened!.openRead(start, end));
        };
        // Without local copies every read is remote; with them the local fd is the fast path.
        expect(opened instanceof BlobFile).toBe(!remoteOnly.has(store));
        expect((await read(0, data.length - 1)).equals(data)).toBe(true);
        expect((await read(123_456, 654_321)).equals(data.subarray(123_456, 654_322))).toBe(true);
      } finally {
        opened!.release();
      }
      expect(await store.openBlob(key, data.length + 1)).toBeNull();
      expect(await store.openBlob(sha256Key(Buffer.from('never stored')), 12)).toBeNull();
    } finally {
      await store.close();
    }
  });

  test('dropLocal removes the local copy: with fs the blob is gone, with an object store it stays stored and readable', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(50_000, 14);
      const key = await put(store, data);
      await store.dropLocal(key);
      await store.dropLocal(key);
      expect(fs.existsSync(store.pathOf(key))).toBe(false);
      if (store.localCopiesAreCache) {
        expect(await store.stat(key)).toEqual({ size: data.length });
        expect(await listed(store)).toEqual([[key, data.length]]);
        const opened = await store.openBlob(key, data.length);
        if (!(opened instanceof RemoteBlob)) throw new Error(`expected a remote reader, got ${opened === null ? "null" : "a local file"}`);
        expect((await collect(opened.openRead(0, data.length - 1))).equals(data)).toBe(true);
      } else {
        expect(await store.stat(key)).toBeNull();
        expect(await listed(store)).toEqual([]);
        expect(await store.openBlob(key, data.length)).toBeNull();
      }
    } finally {
      await store.close();
    }
  });

  test('list yields every committed blob once with its size, and nothing else', async () => {
    const store = await driver.open();
    try {
      const blobs = [makeContent(1_000, 6), makeContent(2_000, 7), Buffer.from('regular file\n')];
      const keys = [await put(store, blobs[0]!), await put(store, blobs[1]!), await put(store, blobs[2]!, gitKey(blobs[2]!))];
      await put(store, blobs[0]!); // committing the same blob again: still one entry
      await driver.addStray(store);
      const staging = await store.stage(sha256Key(Buffer.from('staged only')), 11);
      await staging.write(0, [Buffer.from('staged only')]);
      expect(await listed(store)).toEqual(keys.map((k, i) => [k, blobs[i]!.length] as [BlobKey, number]).sort((a, b) => a[0].localeCompare(b[0])));
      await staging.abort();
    } finally {
      await store.close();
    }
  });

  test('localCopies is there exactly when local copies are a cache, and counts the copies on this disk, also after a restart', async () => {
    const dataDir = tempDir();
    const store = await driver.open({ dataDir });
    expect(store.localCopies !== undefined).toBe(store.localCopiesAreCache);
    const copies = store.localCopies;
    if (!copies) {
      await store.close();
      return; // the filesystem store: its blobs are the local files (the index counts them)
    }
    const local = !remoteOnly.has(store);
    let next: BlobStore | undefined;
    try {
      const ka = await put(store, makeContent(100_000, 11));
      const kb = await put(store, makeContent(50_000, 12));
      expect([copies.has(ka), copies.has(kb), copies.bytes()]).toEqual(local ? [true, true, 150_000] : [false, false, 0]);
      await store.dropLocal(kb);
      expect([copies.has(kb), copies.bytes()]).toEqual([false, local ? 100_000 : 0]);
      expect(await store.stat(kb)).toEqual({ size: 50_000 }); // still stored
      await store.close();
      next = await driver.open({ dataDir, bucket: (store as { bucket?: string }).bucket });
      expect([next.localCopies?.has(ka), next.localCopies?.has(kb), next.localCopies?.bytes()]).toEqual(local ? [true, false, 100_000] : [false, false, 0]);
      await next.remove(ka);
      expect([next.localCopies?.has(ka), next.localCopies?.bytes()]).toEqual([false, 0]);
    } finally {
      await (next ?? store).close();
    }
  });

  test('a blob bigger than several upload parts round-trips byte for byte', async () => {
    const store = await driver.open();
    try {
      const data = makeContent(12 * MiB + 5, 8);
      const key = await put(store, data);
      expect(await store.stat(key)).toEqual({ size: data.length });
      const across = 5 * MiB - 10;
      expect((await collect(store.openRead(key, across, across + 20))).equals(data.subarray(across, across + 21))).toBe(true);
      expect(createHash('sha256').update(await collect(store.openRead(key, 0, data.length - 1))).digest('hex')).toBe(key.slice(7));
    } finally {
      await store.close();
    }
  });
});

describe.skipIf(s3Skip !== undefined)('S3 driver: the object store behind the local copies', () => {
  it('reads from the store when the local copy is gone, then caches it locally, verified', async () => {
    const bucket = await swift!.bucket('remote');
    const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
    await store.init();
    try {
      const data = makeContent(11 * MiB + 1, 9);
      const key = await put(store, data);
      expect(fs.readFileSync(store.pathOf(key)).equals(data)).toBe(true); // the local copy is the staged file
      fs.rmSync(store.pathOf(key));
      expect(await store.stat(key)).toEqual({ size: data.length });
      const start = 5 * MiB - 3;
      expect((await collect(store.openRead(key, start, start + 9))).equals(data.subarray(start, start + 10))).toBe(true);
      await store.settled();
      expect(createHash('sha256').update(fs.readFileSync(store.pathOf(key))).digest('hex')).toBe(key.slice(7));
      expect(fs.readdirSync(store.layout.stagingDir)).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('a second store on the same bucket sees committed blobs; an unfinished multipart upload is invisible', async () => {
    const bucket = await swift!.bucket('shared');
    const a = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
    const b = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket, { cacheReads: false }));
    await a.init();
    await b.init();
    try {
      const data = makeContent(6 * MiB, 10);
      const key = await put(a, data);
      expect(await b.stat(key)).toEqual({ size: data.length });
      expect((await collect(b.openRead(key, 0, data.length - 1))).equals(data)).toBe(true);
      expect(fs.existsSync(b.pathOf(key))).toBe(false); // cacheReads off
      // A process killed during its upload: parts uploaded, never completed.
      const partial = makeContent(6 * MiB, 11);
      const partialKey = sha256Key(partial);
      const { UploadId } = await s3!.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: a.objectKey(partialKey), ContentType: 'application/octet-stream' }));
      await s3!.send(new UploadPartCommand({ Bucket: bucket, Key: a.objectKey(partialKey), UploadId, PartNumber: 1, Body: partial.subarray(0, 5 * MiB) }));
      expect(await b.stat(partialKey)).toBeNull();
      expect(await listed(b)).toEqual([[key, data.length]]);
      // Its commit in another process completes an upload of its own.
      await put(b, partial);
      expect((await collect(a.openRead(partialKey, 0, partial.length - 1))).equals(partial)).toBe(true);
      const uploads = await s3!.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
      expect((uploads.Uploads ?? []).map((u) => u.UploadId)).toEqual([UploadId]); // only the abandoned one
    } finally {
      await a.close();
      await b.close();
    }
  });

  /** The multipart uploads in progress under `prefix`: key, id and part numbers (one aborted between the two listings is gone). */
  async function uploads(bucket: string, prefix = ''): Promise<Array<{ key: string; id: string; parts: number[] }>> {
    const { Uploads = [] } = await s3!.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    const found = await Promise.all(
      Uploads.map(async (u) => {
        const listed = await s3!.send(new ListPartsCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })).catch((err: unknown) => {
          if ((err as { name?: string }).name === 'NoSuchUpload') return null;
          throw err;
        });
        return listed && { key: u.Key!, id: u.UploadId!, parts: (listed.Parts ?? []).map((p) => p.PartNumber!) };
      }),
    );
    return found.filter((u) => u !== null);
  }

  it('parts are uploaded as the contiguous written prefix covers them; the object appears only at commit', async () => {
    const bucket = await swift!.bucket('streamed');
    const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
    await store.init();
    try {
      const data = makeContent(17 * MiB + 9, 15); // parts of 5 MiB: 4
      const key = sha256Key(data);
      const w = await store.stage(key, data.length);
      // Written out of order (as a segmented fill does): bytes 10-17 MiB first, then 0-6 MiB.
      await w.write(10 * MiB, [data.subarray(10 * MiB)]);
      await w.write(0, [data.subarray(0, 6 * MiB)]);
      // Only part 1 lies in the contiguous prefix (0-6 MiB); part 2 (5-10 MiB) waits for its gap.
      const first = await waitFor(async () => {
        const u = await uploads(bucket);
        return u.length === 1 && u[0]!.parts.length === 1 ? u[0] : null;
      }, { what: 'part 1 uploaded' });
      expect(first).toMatchObject({ key: store.objectKey(key), parts: [1] });
      await w.write(6 * MiB, [data.subarray(6 * MiB, 10 * MiB)]);
      await waitFor(async () => (await uploads(bucket))[0]?.parts.length === 4, { what: 'every part uploaded' });
      expect(await store.stat(key)).toBeNull(); // not before the commit
      await w.commit();
      w.dispose();
      expect(await uploads(bucket)).toEqual([]);
      await store.dropLocal(key);
      expect(createHash('sha256').update(await collect(store.openRead(key, 0, data.length - 1))).digest('hex')).toBe(key.slice(7));
    } finally {
      await store.close();
    }
  });

  it('commit uploads the parts the background uploads did not get to', async () => {
    const bucket = await swift!.bucket('leftover');
    // One part at a time in the background: written in one go and committed at once, most parts are left to the commit.
    const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket, { uploadConcurrency: 1 }));
    await store.init();
    try {
      const data = makeContent(21 * MiB + 1, 18); // 5 parts
      const key = sha256Key(data);
      const w = await store.stage(key, data.length);
      await w.write(0, [data]);
      await w.commit();
      w.dispose();
      expect(await uploads(bucket)).toEqual([]);
      await store.dropLocal(key);
      expect(await store.stat(key)).toEqual({ size: data.length });
      expect(createHash('sha256').update(await collect(store.openRead(key, 0, data.length - 1))).digest('hex')).toBe(key.slice(7));
    } finally {
      await store.close();
    }
  });

  it('a staged blob aborted (its fill failed) or refused (wrong digest) aborts its multipart upload; one already stored by another store is not uploaded again', async () => {
    const bucket = await swift!.bucket('streamed-abort');
    const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
    const other = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
    await store.init();
    await other.init();
    try {
      const data = makeContent(11 * MiB, 16);
      const key = sha256Key(data);
      const partUploaded = async (): Promise<boolean> => (await uploads(bucket)).some((u) => u.parts.length > 0);
      // A fill that fails after its first part went up.
      const failed = await store.stage(key, data.length);
      await failed.write(0, [data.subarray(0, 6 * MiB)]);
      await waitFor(partUploaded, { what: 'a part of the failing fill' });
      await failed.abort();
      await waitFor(async () => (await uploads(bucket)).length === 0, { what: 'the upload of the failed fill aborted' });
      // Wrong bytes: refused at commit, the upload aborted.
      const wrong = await store.stage(key, data.length);
      const bad = Buffer.from(data);
      bad[bad.length - 1]! ^= 1;
      await wrong.write(0, [bad]);
      await waitFor(partUploaded, { what: 'a part of the wrong bytes' });
      expect(await failure(wrong.commit())).toBe('IntegrityError');
      await waitFor(async () => (await uploads(bucket)).length === 0, { what: 'the upload of the wrong bytes aborted' });
      expect(await store.stat(key)).toBeNull();
      // Another mirror commits the blob while ours is being written: ours is dropped, the commit succeeds.
      const late = await store.stage(key, data.length);
      await late.write(0, [data]);
      await waitFor(partUploaded, { what: 'parts of the second writer' });
      await put(other, data);
      await late.commit();
      late.dispose();
      expect(await uploads(bucket)).toEqual([]);
      expect(await listed(store)).toEqual([[key, data.length]]);
      expect(fs.readFileSync(store.pathOf(key)).equals(data)).toBe(true);
    } finally {
      await store.close();
      await other.close();
    }
  });

  it('at init, multipart uploads under its prefix older than the age rule are aborted; younger ones and other prefixes are left alone', async () => {
    const bucket = await swift!.bucket('abandoned');
    const HOUR = 3600 * 1000;
    const start = async (Key: string): Promise<string> => (await s3!.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }))).UploadId!;
    const ours = await start(`mirror/blobs-v1/sha256/${'b'.repeat(64)}`);
    const notBlobs = await start(`mirror/elsewhere/${'b'.repeat(64)}`);
    const otherPrefix = await start(`other/blobs-v1/sha256/${'b'.repeat(64)}`);
    const ids = async (): Promise<string[]> => (await uploads(bucket)).map((u) => u.id).sort();
    const reports: unknown[] = [];
    const startAt = async (offsetMs: number, extra: Partial<S3BlobStoreOptions> = {}): Promise<void> => {
      const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket, { now: () => Date.now() + offsetMs, onAbandonedUploads: (r) => reports.push(r), ...extra }));
      await store.init();
      await store.close();
    };
    // Now, and 23 hours on: younger than the default 24 hours (another mirror may be uploading).
    await startAt(0);
    await startAt(23 * HOUR);
    expect(await ids()).toEqual([ours, notBlobs, otherPrefix].sort());
    // A rule of 30 hours, 25 hours on: still young.
    await startAt(25 * HOUR, { abandonedUploadMs: 30 * HOUR });
    expect(await ids()).toEqual([ours, notBlobs, otherPrefix].sort());
    // 25 hours on with the default rule: ours is abandoned; the others are not ours to touch.
    await startAt(25 * HOUR);
    expect(await ids()).toEqual([notBlobs, otherPrefix].sort());
    expect(reports).toEqual([
      { aborted: 0, failed: 0, olderThanMs: 24 * HOUR },
      { aborted: 0, failed: 0, olderThanMs: 24 * HOUR },
      { aborted: 0, failed: 0, olderThanMs: 30 * HOUR },
      { aborted: 1, failed: 0, olderThanMs: 24 * HOUR },
    ]);
  });

  it('a failed upload (refused credentials) fails the commit, removes the staged file and leaves nothing visible', async () => {
    const bucket = await swift!.bucket('refused');
    const store = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket, { credentials: { accessKeyId: swift!.accessKeyId, secretAccessKey: 'wrong' } }));
    await expect(store.init()).rejects.toThrow(/access denied/);
    try {
      const data = makeContent(7 * MiB, 12);
      const w = await store.stage(sha256Key(data), data.length);
      await w.write(0, [data]);
      expect(await failure(w.commit())).toBe('StorageUnavailable');
      expect(fs.readdirSync(store.layout.stagingDir)).toEqual([]);
      expect(fs.existsSync(store.pathOf(sha256Key(data)))).toBe(false);
      const good = new S3BlobStore(new BlobLayout(tempDir()), s3Options(bucket));
      expect(await good.stat(sha256Key(data))).toBeNull();
      await good.close();
    } finally {
      await store.close();
    }
  });
});

describe('S3 driver: a store that is down or hangs', () => {
  it.each(['hangs', 'refuses connections'])('when it %s: lookups, reads, listings and commits fail with StorageUnavailable; local copies are still read', async (mode) => {
    const hole = await deadEndpoint(mode === 'hangs' ? 'hangs' : 'refuses');
    const endpoint = hole.endpoint;
    const layout = new BlobLayout(tempDir());
    const store = new S3BlobStore(layout, { endpoint, bucket: 'down', region: 'us-east-1', prefix: '', forcePathStyle: true, credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, timeoutMs: 300, partSize: 5 * MiB });
    try {
      await store.init(); // unreachable is not a startup error
      const remote = sha256Key(Buffer.from('only in the store'));
      expect(await failure(store.stat(remote))).toBe('StorageUnavailable');
      expect(await failure(collect(store.openRead(remote, 0, 3)))).toBe('StorageUnavailable');
      expect(await failure(listed(store))).toBe('StorageUnavailable');
      const data = Buffer.from('a new blob');
      const w = await store.stage(sha256Key(data), data.length);
      await w.write(0, [data]);
      expect(await failure(w.commit())).toBe('StorageUnavailable');
      expect(fs.readdirSync(layout.stagingDir)).toEqual([]);
      // A blob of several parts: its writes never wait for the store (the parts would go up while
      // it is written); its commit fails like any other.
      const big = makeContent(12 * MiB, 17);
      const wb = await store.stage(sha256Key(big), big.length);
      for (let i = 0; i < big.length; i += MiB) await wb.write(i, [big.subarray(i, i + MiB)]);
      expect(await failure(wb.commit())).toBe('StorageUnavailable');
      expect(fs.readdirSync(layout.stagingDir)).toEqual([]);
      // A local copy (committed while the store was up) is served without asking the store.
      const local = Buffer.from('cached locally');
      const localKey = sha256Key(local);
      fs.mkdirSync(path.dirname(layout.blobPath(localKey)), { recursive: true });
      fs.writeFileSync(layout.blobPath(localKey), local);
      expect(await store.stat(localKey)).toEqual({ size: local.length });
      expect((await collect(store.openRead(localKey, 0, local.length - 1))).equals(local)).toBe(true);
    } finally {
      await store.close();
      await hole.close();
    }
  });
});
