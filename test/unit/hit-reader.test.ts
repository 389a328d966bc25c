/**
 * Readers of cached blobs (FileSpanReader over the shared ReadBuffers): every byte of every span,
 * whatever the number of readers and however slowly their "sockets" release chunks; buffers sized
 * by load and recycled; the buffer budget held (asserted on the pool's counters, never on time);
 * a file cut short behind the mirror's back fails the reader and is reported; closing at any
 * moment returns everything (fd, buffers, the reader's place in the pool).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { FileSpanReader } from '../../src/mirror/file-span-reader.js';
import { ReadBuffers } from '../../src/mirror/read-buffers.js';
import { BlobFile } from '../../src/storage/blob-store.js';
import { makeContent } from '../support/content.js';

const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;
let file: string;
const content = makeContent(3 * MiB + 12_345, 4242);

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-hit-'));
  file = path.join(dir, 'blob');
  fs.writeFileSync(file, content);
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const open = (): BlobFile => new BlobFile(fs.openSync(file, 'r'));
/** Waits for `cond` (a read in flight to settle), polling; gives up after a generous deadline. */
async function until(cond: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 10_000; !cond() && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
}
/** Resolves after `turns` macrotask turns: a socket that takes a while with a chunk. */
const later = (turns: number): Promise<void> => (turns <= 0 ? Promise.resolve() : new Promise((r) => setImmediate(() => void later(turns - 1).then(r))));

/**
 * Reads a span like the response writer does (each chunk released once "written"), holding each
 * chunk for `hold(i)` turns; returns the bytes and the chunk sizes. Chunks are copied on arrival
 * and checked again on release: a buffer reused too early would change them.
 */
async function drain(reader: FileSpanReader, hold: (i: number) => number = () => 0): Promise<{ bytes: Buffer; sizes: number[] }> {
  const parts: Buffer[] = [];
  const sizes: number[] = [];
  const releases: Promise<void>[] = [];
  try {
    for (let i = 0; ; i++) {
      const chunk = await reader.next();
      if (chunk === null) break;
      const copy = Buffer.from(chunk);
      parts.push(copy);
      sizes.push(chunk.length);
      releases.push(
        later(hold(i)).then(() => {
          expect(chunk.equals(copy)).toBe(true);
          reader.release(chunk);
        }),
      );
    }
  } finally {
    reader.close();
  }
  await Promise.all(releases);
  return { bytes: Buffer.concat(parts), sizes };
}

describe('a reader of a cached blob', () => {
  it('returns exactly its span, alone in big reads, and reuses its buffers for the next request', async () => {
    const pool = new ReadBuffers({ budget: 4 * MiB, minChunk: 64 * KiB, maxChunk: 512 * KiB });
    const f = open();
    const whole = await drain(new FileSpanReader(f, 0, content.length - 1, pool), (i) => i % 3);
    expect(whole.bytes.equals(content)).toBe(true);
    expect(Math.max(...whole.sizes)).toBe(512 * KiB);
    const allocated = pool.stats().allocations;
    expect(allocated).toBeLessThanOrEqual(3); // two at a time, plus the short last read's size

    const span = await drain(new FileSpanReader(f, 1000, 1000 + MiB + 7, pool));
    expect(span.bytes.equals(content.subarray(1000, 1000 + MiB + 8))).toBe(true);
    const tiny = await drain(new FileSpanReader(f, 5, 14, pool));
    expect(tiny.bytes.equals(content.subarray(5, 15))).toBe(true);
    const empty = await drain(new FileSpanReader(f, 10, 9, pool));
    expect(empty.bytes.length).toBe(0);
    expect(pool.stats().allocations).toBe(allocated);
    expect(pool.stats()).toMatchObject({ readers: 0, inUse: 0 });
    f.release();
    expect(f.open).toBe(false);
  });

  it('many readers at once: every byte right, smaller reads, buffers within the budget', async () => {
    const budget = 1 * MiB;
    const minChunk = 64 * KiB;
    const pool = new ReadBuffers({ budget, minChunk, maxChunk: 1 * MiB });
    const f = open();
    const n = 40;
    const spans = Array.from({ length: n }, (_, i) => {
      const start = (i * 77_777) % Math.floor(content.length / 2);
      return { start, end: i % 4 === 0 ? content.length - 1 : start + 200 * KiB + i };
    });
    const results = await Promise.all(spans.map((s, i) => drain(new FileSpanReader(f, s.start, s.end, pool), (k) => (i + k) % 5)));
    results.forEach((r, i) => expect(r.bytes.equals(content.subarray(spans[i]!.start, spans[i]!.end + 1))).toBe(true));
    const stats = pool.stats();
    expect(stats.peakReaders).toBe(n);
    // The budget, plus each reader's floor of two minimum-size buffers, is never exceeded.
    expect(stats.peakInUse).toBeLessThanOrEqual(budget + 2 * minChunk * stats.peakReaders);
    // With 40 readers the share is 1 MiB / 80: reads shrink to the floor.
    expect(Math.max(...results.flatMap((r) => r.sizes))).toBeLessThan(1 * MiB);
    expect(stats).toMatchObject({ readers: 0, inUse: 0 });
    expect(stats.allocations).toBeLessThan(stats.takes);
    f.release();
  });

  it('a reader that holds the budget (its client stalled) leaves the others their floor, and nothing more', async () => {
    const budget = 1 * MiB;
    const minChunk = 64 * KiB;
    const pool = new ReadBuffers({ budget, minChunk, maxChunk: 1 * MiB });
    const f = open();
    const stalled = new FileSpanReader(f, 0, content.length - 1, pool);
    const held = await stalled.next(); // never released while the other reads: a stalled socket
    expect(held?.length).toBe(512 * KiB); // alone: half the budget per buffer, one more read ahead
    await until(() => pool.stats().inUse >= budget);
    expect(pool.stats().inUse).toBe(budget);

    const other = await drain(new FileSpanReader(f, 100, 100 + 2 * MiB, pool), (i) => i % 2);
    expect(other.bytes.equals(content.subarray(100, 100 + 2 * MiB + 1))).toBe(true);
    expect(Math.max(...other.sizes)).toBe(minChunk);
    expect(pool.stats().peakInUse).toBeLessThanOrEqual(budget + 2 * minChunk * 2);

    const first = Buffer.from(held!);
    stalled.release(held!); // its memory may be reused from now on
    const rest = await drain(stalled);
    expect(Buffer.concat([first, rest.bytes]).equals(content)).toBe(true);
    expect(pool.stats()).toMatchObject({ readers: 0, inUse: 0 });
    f.release();
  });

  it('a file shorter than recorded (cut behind our back) fails the reader and is reported', async () => {
    const pool = new ReadBuffers({ budget: 4 * MiB, minChunk: 64 * KiB, maxChunk: 512 * KiB });
    fs.truncateSync(file, 2 * MiB);
    const f = open();
    let reported = 0;
    const reader = new FileSpanReader(f, 0, content.length - 1, pool, () => reported++);
    const got: Buffer[] = [];
    const failure = await (async () => {
      for (;;) {
        const chunk = await reader.next();
        if (chunk === null) return null;
        got.push(Buffer.from(chunk));
        reader.release(chunk);
      }
    })().catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(MirrorError);
    expect(reported).toBe(1);
    // What came before the failure is right, and it never reaches the recorded size.
    const bytes = Buffer.concat(got);
    expect(bytes.equals(content.subarray(0, bytes.length))).toBe(true);
    expect(bytes.length).toBeLessThan(content.length);
    await expect(reader.next()).rejects.toBe(failure);
    reader.close();
    f.release();
    await until(() => pool.stats().readers === 0);
    expect(pool.stats()).toMatchObject({ readers: 0, inUse: 0 });
  });

  it('closed early (client gone): chunks still with the socket return when released, the fd with the last holder', async () => {
    const pool = new ReadBuffers({ budget: 4 * MiB, minChunk: 64 * KiB, maxChunk: 512 * KiB });
    const f = open();
    const reader = new FileSpanReader(f, 0, content.length - 1, pool);
    const first = await reader.next(); // and the next read is under way
    expect(first?.equals(content.subarray(0, first.length))).toBe(true);
    f.release(); // the source lets go: the reader still holds the file
    expect(f.open).toBe(true);
    reader.close();
    expect(await reader.next()).toBeNull();
    // The read ahead settles and hands back its buffer and the fd; the socket's chunk is still out.
    await until(() => !f.open);
    expect(f.open).toBe(false);
    expect(pool.stats()).toMatchObject({ readers: 1, inUse: first!.length });
    reader.release(first!);
    expect(pool.stats()).toMatchObject({ readers: 0, inUse: 0 });
  });
});

describe('the read buffer pool', () => {
  it('sizes reads by the number of readers, within [minChunk, maxChunk]', () => {
    const pool = new ReadBuffers({ budget: 64 * MiB, minChunk: 256 * KiB, maxChunk: 4 * MiB });
    const sizeWith = (readers: number): number => {
      for (let i = 0; i < readers; i++) pool.join();
      const size = pool.chunkSize();
      for (let i = 0; i < readers; i++) pool.leave();
      return size;
    };
    expect([1, 8, 16, 64, 128, 1000].map(sizeWith)).toEqual([4 * MiB, 4 * MiB, 2 * MiB, 512 * KiB, 256 * KiB, 256 * KiB]);
  });

  it('hands out a smaller buffer than asked when the budget is spent, never less than the floor', () => {
    const pool = new ReadBuffers({ budget: 1 * MiB, minChunk: 64 * KiB, maxChunk: 1 * MiB });
    pool.join();
    const big = pool.take(1 * MiB);
    expect(big.length).toBe(1 * MiB);
    const next = pool.take(512 * KiB);
    expect(next.length).toBe(64 * KiB);
    pool.give(big);
    pool.give(next);
    expect(pool.take(512 * KiB).length).toBe(512 * KiB);
  });
});
