import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import { FsBlobStore } from '../../src/storage/blob-store.js';

let dir: string;
let store: FsBlobStore;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-store-'));
  store = new FsBlobStore(new BlobLayout(dir));
  await store.init();
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const sha256Key = (b: Buffer): BlobKey => blobKey('sha256', createHash('sha256').update(b).digest('hex'))!;
const gitKey = (b: Buffer): BlobKey => blobKey('gitsha1', createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex'))!;
const stagingFiles = () => fs.readdirSync(path.join(dir, 'staging'));

describe('FsBlobStore', () => {
  it('commits a verified sha256 blob into the content-addressed layout', async () => {
    const data = Buffer.from('hello world, this is an LFS file');
    const key = sha256Key(data);
    const w = await store.createWriter(key, data.length);
    await w.write([data.subarray(0, 5)]);
    expect(await store.stat(key)).toBeNull(); // nothing visible before commit
    await w.write([data.subarray(5)]);
    const final = await w.commit();
    expect(final).toBe(path.join(dir, 'blobs-v1', 'sha256', key.slice(7, 9), key.slice(9, 11), key.slice(7)));
    expect(fs.readFileSync(final)).toEqual(data);
    expect(await store.stat(key)).toEqual({ size: data.length });
    expect(stagingFiles()).toEqual([]);
  });

  it('verifies git blob ids for regular files', async () => {
    const data = Buffer.from('{"model_type": "gpt2"}\n');
    const key = gitKey(data);
    const w = await store.createWriter(key, data.length);
    await w.write([data]);
    await w.commit();
    expect(await store.stat(key)).toEqual({ size: data.length });
  });

  it('refuses wrong bytes of the right size and leaves nothing behind', async () => {
    const data = Buffer.from('the real content');
    const key = sha256Key(data);
    const w = await store.createWriter(key, data.length);
    await w.write([Buffer.from('the fake content')]);
    await expect(w.commit()).rejects.toMatchObject({ code: 'IntegrityError' });
    expect(await store.stat(key)).toBeNull();
    expect(stagingFiles()).toEqual([]);
  });

  it('refuses short and long bodies', async () => {
    const data = Buffer.from('0123456789');
    const key = sha256Key(data);
    const short = await store.createWriter(key, data.length);
    await short.write([data.subarray(0, 9)]);
    await expect(short.commit()).rejects.toMatchObject({ code: 'IntegrityError' });
    const long = await store.createWriter(key, data.length);
    await long.write([data]);
    await expect(long.write([Buffer.from('x')])).rejects.toMatchObject({ code: 'IntegrityError' });
    await long.abort();
    expect(await store.stat(key)).toBeNull();
    expect(stagingFiles()).toEqual([]);
  });

  it('removes staging leftovers of an earlier process at init', async () => {
    fs.writeFileSync(path.join(dir, 'staging', 'leftover.part'), 'partial');
    await store.init();
    expect(stagingFiles()).toEqual([]);
  });

  it('reads ranges of committed blobs', async () => {
    const data = Buffer.from('abcdefghij');
    const key = sha256Key(data);
    const w = await store.createWriter(key, data.length);
    await w.write([data]);
    await w.commit();
    const chunks: Buffer[] = [];
    for await (const c of store.openRead(key, 2, 5)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('cdef');
  });
});
