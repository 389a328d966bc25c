import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobLayout, blobKey, type BlobKey } from '../../src/storage/blob-layout.js';
import { FsBlobStore } from '../../src/storage/blob-store.js';
import { HashPool } from '../../src/storage/hash-pool.js';
import { PREALLOCATE_MIN_BYTES } from '../../src/storage/preallocate.js';
import { makeContent } from '../support/content.js';

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
    const w = await store.stage(key, data.length);
    await w.write(0, [data.subarray(0, 5)]);
    expect(await store.stat(key)).toBeNull(); // nothing visible before commit
    await w.write(5, [data.subarray(5)]);
    const final = await w.commit();
    w.dispose(); // the staging fd stays open for readers until then (the StagedBlob contract)
    expect(final).toBe(path.join(dir, 'blobs-v1', 'sha256', key.slice(7, 9), key.slice(9, 11), key.slice(7)));
    expect(fs.readFileSync(final)).toEqual(data);
    expect(await store.stat(key)).toEqual({ size: data.length });
    expect(stagingFiles()).toEqual([]);
  });

  it('verifies git blob ids for regular files', async () => {
    const data = Buffer.from('{"model_type": "gpt2"}\n');
    const key = gitKey(data);
    const w = await store.stage(key, data.length);
    await w.write(0, [data]);
    await w.commit();
    w.dispose();
    expect(await store.stat(key)).toEqual({ size: data.length });
  });

  it('refuses wrong bytes of the right size and leaves nothing behind', async () => {
    const data = Buffer.from('the real content');
    const key = sha256Key(data);
    const w = await store.stage(key, data.length);
    await w.write(0, [Buffer.from('the fake content')]);
    await expect(w.commit()).rejects.toMatchObject({ code: 'IntegrityError' });
    expect(await store.stat(key)).toBeNull();
    expect(stagingFiles()).toEqual([]);
  });

  it('refuses short and long bodies', async () => {
    const data = Buffer.from('0123456789');
    const key = sha256Key(data);
    const short = await store.stage(key, data.length);
    await short.write(0, [data.subarray(0, 9)]);
    await expect(short.commit()).rejects.toMatchObject({ code: 'IntegrityError' });
    const long = await store.stage(key, data.length);
    await long.write(0, [data]);
    await expect(long.write(10, [Buffer.from('x')])).rejects.toMatchObject({ code: 'IntegrityError' });
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
    const w = await store.stage(key, data.length);
    await w.write(0, [data]);
    await w.commit();
    w.dispose();
    const chunks: Buffer[] = [];
    for await (const c of store.openRead(key, 2, 5)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('cdef');
  });

  it('a big blob written out of order, by runs landing at several offsets at once, is hashed in a worker and committed', async () => {
    const data = makeContent(6 * 1024 * 1024 + 123, 77);
    for (const key of [sha256Key(data), gitKey(data)]) {
      const w = await store.stage(key, data.length);
      const cut = [0, 1_000_000, 2_500_000, 4_000_000, data.length];
      // Runs in the order 3, 1, 0, 2 (0 and 2 at once): the prefix grows only when the gap closes.
      await w.write(cut[3]!, [data.subarray(cut[3], cut[4])]);
      await w.write(cut[1]!, [data.subarray(cut[1], cut[2])]);
      expect(w.coverage.coveredEnd(0)).toBe(0);
      await Promise.all([w.write(cut[0]!, [data.subarray(cut[0], cut[1])]), w.write(cut[2]!, [data.subarray(cut[2], 3_000_000), data.subarray(3_000_000, cut[3])])]);
      expect(w.coverage.coveredEnd(0)).toBe(data.length);
      const back = Buffer.alloc(100);
      expect(await w.read(back, 2_499_950)).toBe(100);
      expect(back.equals(data.subarray(2_499_950, 2_500_050))).toBe(true);
      const final = await w.commit();
      w.dispose();
      expect(fs.readFileSync(final).equals(data)).toBe(true);
    }
    expect(stagingFiles()).toEqual([]);
  });

  it('refuses a big blob whose bytes do not hash to its key (worker hash)', async () => {
    const data = makeContent(3 * 1024 * 1024, 78);
    const key = sha256Key(data);
    const w = await store.stage(key, data.length);
    const wrong = Buffer.from(data);
    wrong[2_000_000] = (wrong[2_000_000] ?? 0) ^ 1;
    await w.write(0, [wrong]);
    await expect(w.commit()).rejects.toMatchObject({ code: 'IntegrityError' });
    expect(await store.stat(key)).toBeNull();
    expect(stagingFiles()).toEqual([]);
  });

  it('preallocates a big staging file to its final size before its first byte lands (where the filesystem can)', async () => {
    const size = PREALLOCATE_MIN_BYTES + 4096 * 3;
    const data = makeContent(size, 79);
    const reasons: string[] = [];
    const s = new FsBlobStore(new BlobLayout(dir), { onPreallocateUnsupported: (r) => reasons.push(r) });
    const w = await s.stage(sha256Key(data), size);
    await w.write(0, [data.subarray(0, 4096)]); // a write waits for the preallocation
    const st = fs.statSync(w.stagingPath);
    if (w.preallocated) {
      expect(st.size).toBe(size);
      expect(st.blocks * 512).toBeGreaterThanOrEqual(size);
    } else {
      // Not supported here: said once, and the file is simply written.
      expect(reasons).toHaveLength(1);
    }
    await w.write(4096, [data.subarray(4096)]);
    await w.commit();
    w.dispose();
    expect(await s.stat(sha256Key(data))).toEqual({ size });
  });

  it('abort waits for a read in flight, then removes the file; later reads fail cleanly', async () => {
    const data = makeContent(2 * 1024 * 1024, 80);
    const w = await store.stage(sha256Key(data), data.length);
    await w.write(0, [data]);
    const buf = Buffer.alloc(data.length);
    const reading = w.read(buf, 0);
    const aborting = w.abort();
    expect(await reading).toBe(data.length);
    expect(buf.equals(data)).toBe(true);
    await aborting;
    expect(stagingFiles()).toEqual([]);
    await expect(w.read(Buffer.alloc(10), 0)).rejects.toThrow(/closed/);
  });
});

describe('HashPool', () => {
  it('hashes a file as its prefix grows, several jobs at once, in a pool of one worker', async () => {
    const pool = new HashPool(1);
    try {
      const files = [makeContent(5_000_000, 81), makeContent(3_000_001, 82)];
      const jobs = files.map((content, i) => {
        const file = path.join(dir, `f${i}`);
        fs.writeFileSync(file, content);
        return { content, job: pool.open(file, 'sha256', content.length) };
      });
      for (const { content, job } of jobs) {
        job.advance(1_000_000);
        job.advance(content.length);
      }
      for (const { content, job } of jobs) expect(await job.digest()).toBe(createHash('sha256').update(content).digest('hex'));
    } finally {
      await pool.close();
    }
  });
});
