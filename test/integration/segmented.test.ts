/**
 * Segmented fills: a big cold file is fetched with several ranged upstream GETs at once into one
 * staging file, each resumed on its own, verified whole before it becomes visible; a reader far
 * from every connection gets its bytes fetched next (demand first). Asserted on the fake hub's
 * counters (its throttle paces each connection on its own, like a CDN's per-connection limit) and
 * on the bytes and digests clients get; moments are reached with barriers, never with sleeps.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RecordedRequest } from '../support/fake-hub.js';
import { startMirrorProcess } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { MIN_SPLIT_BYTES } from '../../src/mirror/segment-plan.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
const SEGMENT_ALIGN = 64 * 1024;
let hub: FakeHub;
let mirror: TestMirror;
let seed = 9000;
const tmpDirs: string[] = [];

beforeAll(async () => {
  hub = await startFakeHub();
  // Barriers hold upstream bodies on purpose; a client waiting at a held connection would have it
  // replaced after upstreamStallSeconds (segmented.test.ts tests that), and these tests count the
  // requests and hold the moments: no stall takeovers here.
  mirror = await startMirror(hub.url, { upstreamStallSeconds: 0 });
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A fresh repo with one LFS file; its URL on `m`, its CDN GETs, upstream body bytes. */
function lfsFile(size: number, m: { url: string } = mirror) {
  const id = `org/seg-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'model.safetensors': content } });
  const info = hub.fileInfo({ id }, 'model.safetensors');
  const cdn = { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 };
  return {
    id,
    size,
    content,
    sha256: info.sha256,
    url: `${m.url}/${id}/resolve/main/model.safetensors`,
    cdn,
    gets: (): RecordedRequest[] => hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(info.sha256)),
    bytes: () => hub.bytesSent(cdn),
    resolves: () => hub.count({ server: 'hub', method: 'GET', pathIncludes: `${id}/resolve/` }),
  };
}

/**
 * Most upstream bytes a fill of `f` may cost: the file once, plus what upstream had already written
 * into a connection's socket when the fill cut that connection short (an end-game split, or a
 * demand-first GET taking over its bytes): a few MiB each on loopback, never a second copy. The
 * ratio itself (goal 1.01×) is measured by the bench, where socket buffers are not the whole story.
 */
function onceBound(f: { size: number; gets: () => RecordedRequest[] }): number {
  const cut = f.gets().filter((r) => {
    const [a, b] = r.headers.range === undefined ? [0, f.size - 1] : asked(r, f.size);
    return r.bytesSent < b - a + 1;
  }).length;
  return f.size + cut * 6 * MiB;
}

/** Most requests among `recs` whose [arrival, close] intervals overlap. */
/** The suffix read got the file's last 500 bytes, the full download the whole file, upstream about the file once. */
async function expectSuffixAndFill(f: ReturnType<typeof lfsFile>, suffix: ReturnType<typeof download>, full: ReturnType<typeof download>): Promise<void> {
  const s = await suffix;
  expect([s.status, s.complete, header(s, 'content-range')]).toEqual([206, true, `bytes ${f.size - 500}-${f.size - 1}/${f.size}`]);
  expect(s.body.equals(f.content.subarray(f.size - 500))).toBe(true);
  expect((await full).sha256).toBe(f.sha256);
  expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
}

function maxOverlap(recs: RecordedRequest[]): number {
  const events: Array<[number, number]> = [];
  for (const r of recs) events.push([r.startedAt, 1], [r.endedAt ?? Infinity, -1]);
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of events) max = Math.max(max, (now += d));
  return max;
}

/** `[start, end]` of a `bytes=a-b` / `bytes=a-` request header on a file of `size` bytes. */
function asked(r: RecordedRequest, size: number): [number, number] {
  const m = /^bytes=(\d+)-(\d*)$/.exec(String(r.headers.range));
  if (!m) throw new Error(`not a single range: ${String(r.headers.range)}`);
  return [Number(m[1]), m[2] === '' ? size - 1 : Number(m[2])];
}

/** Waits for `cond` (polled, bounded by wait-for's deadline). */
const until = (what: string, cond: () => boolean): Promise<true> => waitFor(() => cond() || undefined, { what });

const stagingFiles = (dataDir: string) => fs.readdirSync(path.join(dataDir, 'staging'));
const stored = (dataDir: string, sha256: string) => fs.existsSync(path.join(dataDir, 'blobs-v1', 'sha256', sha256.slice(0, 2), sha256.slice(2, 4), sha256));

describe('segmented fills', () => {
  it('a 128 MiB cold file is fetched with 8 ranged GETs at once, each byte once, one fill for a herd', async () => {
    // 8 segments of 16 MiB, one per connection.
    const f = lfsFile(128 * MiB);
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 20e6 });
    try {
      const all = await Promise.all(Array.from({ length: 5 }, () => download(f.url, { keepBody: false })));
      for (const r of all) expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
      expect(all.map((r) => header(r, 'x-mirror-cache')).sort()).toEqual(['joined', 'joined', 'joined', 'joined', 'miss']);
    } finally {
      throttle.remove();
    }
    const gets = f.gets();
    // One redirect resolved; the first GET asks for the first segment, the others go straight to
    // the CDN URL it answered from, each with If-Range: the strong ETag.
    expect(f.resolves()).toBe(1);
    expect(gets[0]?.headers.range).toBe(`bytes=0-${16 * MiB - 1}`);
    expect(gets[0]?.headers['if-range']).toBeUndefined();
    for (const r of gets.slice(1)) expect(r.headers['if-range']).toBe(`"${f.sha256}"`);
    expect(gets.every((r) => r.status === 206)).toBe(true);
    expect(maxOverlap(gets)).toBe(8);
    // The spans asked for cover the file; bytes cross about once.
    const spans = gets.map((r) => asked(r, f.size)).sort((a, b) => a[0] - b[0]);
    expect(spans[0]?.[0]).toBe(0);
    expect(Math.max(...spans.map((s) => s[1]))).toBe(f.size - 1);
    expect(f.bytes()).toBeGreaterThanOrEqual(f.size);
    expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
    expect(stored(mirror.dataDir, f.sha256)).toBe(true);
  });

  it('a straggler (one connection far slower than the others) has its rest split off to a free connection', async () => {
    // The third GET to reach the barrier is held after 1 MiB (rate 0: a straggler however loaded
    // the box is), the others run unthrottled. Once one of them is free, half of what the held one
    // has left goes to a new GET; then the held one is let go. Which GET is held depends on the
    // order the hub meets the barrier in, so every first GET must be splittable: with 256 MiB the
    // first 8 segments are 16 MiB each (shares shrink only once less than half the file is
    // unclaimed). With 128 MiB they shrank to 7 MiB, and holding one of those (less than 2 ×
    // MIN_SPLIT_BYTES left, so rightly never split) failed this test in 2 of about 15 CI runs.
    const f = lfsFile(256 * MiB);
    const hold = hub.setFault({ ...f.cdn }, { kind: 'barrier', atBytes: MiB, skip: 2, times: 1 });
    try {
      const r = download(f.url, { keepBody: false });
      let outcome = 'still running';
      r.then(
        (d) => (outcome = `${d.status}, complete ${d.complete}`),
        (err: unknown) => (outcome = `failed: ${String(err)}`),
      );
      const held = await hold.reached;
      const span = asked(held, f.size);
      expect(span[1] + 1 - span[0] - MiB).toBeGreaterThanOrEqual(2 * MIN_SPLIT_BYTES);
      await until('a GET inside the held span', () => f.gets().some((g) => g !== held && asked(g, f.size)[0] > span[0] && asked(g, f.size)[0] <= span[1])).catch((err: unknown) => {
        // What the fill did instead: every GET of the file, and how the download ended.
        const t0 = f.gets()[0]?.startedAt ?? 0;
        const gets = f.gets().map((g) => `${g === held ? 'HELD ' : ''}${String(g.headers.range)} ${g.status ?? '-'} sent ${g.bytesSent} at ${Math.round(g.startedAt - t0)}-${g.endedAt === undefined ? 'open' : Math.round(g.endedAt - t0)} ms`);
        throw new Error(`${String(err)}; held span ${span.join('-')}; download ${outcome}; GETs: ${gets.join('; ')}`);
      });
      hold.release();
      const done = await r;
      expect([done.status, done.complete, done.sha256]).toEqual([200, true, f.sha256]);
      // The held connection stopped where the split began: it sent less than its span.
      expect(held.bytesSent).toBeLessThan(span[1] - span[0] + 1);
    } finally {
      hold.remove();
    }
    expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
  });

  it('a drop in one segment resumes that segment only, at the offset it reached', async () => {
    const f = lfsFile(128 * MiB);
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 40e6 });
    const drop = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'drop', afterBytes: 3 * MiB, skip: 2, times: 1 });
    try {
      const r = await download(f.url, { keepBody: false });
      expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
    } finally {
      throttle.remove();
      drop.remove();
    }
    expect(drop.applied).toBe(1);
    const gets = f.gets();
    const dropped = gets.find((r) => r.bytesSent === 3 * MiB && asked(r, f.size)[1] - asked(r, f.size)[0] + 1 > 3 * MiB);
    expect(dropped).toBeDefined();
    const [a, b] = asked(dropped!, f.size);
    // Exactly one more request touches that segment: the resume, from where the bytes stopped to its end.
    const touching = gets.filter((r) => r !== dropped && asked(r, f.size)[0] <= b && asked(r, f.size)[1] >= a);
    expect(touching).toHaveLength(1);
    const [ra, rb] = asked(touching[0]!, f.size);
    expect(ra).toBeGreaterThan(a);
    expect(ra).toBeLessThanOrEqual(a + 3 * MiB);
    expect(rb).toBe(b);
    expect(touching[0]?.headers['if-range']).toBe(`"${f.sha256}"`);
    expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
  });

  it.each([
    ['a 200 (Range ignored)', { kind: 'ignoreRange' as const, skip: 1, times: 1 }],
    ['a 206 for other bytes than asked', { kind: 'wrongContentRange' as const, skip: 1, times: 1 }],
    ['another ETag (the file changed)', { kind: 'changedEtag' as const, skip: 1, times: 1 }],
  ])('a later segment answered with %s fails the fill cleanly: nothing stored, no complete 200, the next request fills', async (_what, fault) => {
    const f = lfsFile(96 * MiB);
    const handle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, fault);
    const bad = await download(f.url, { keepBody: false });
    expect(bad.status === 200 && bad.complete).toBe(false);
    expect(handle.applied).toBe(1);
    handle.remove();
    await until('the staging file to go', () => stagingFiles(mirror.dataDir).length === 0);
    expect(stored(mirror.dataDir, f.sha256)).toBe(false);
    expect(mirror.logs.some((l) => l.includes('fill failed') && l.includes(f.sha256))).toBe(true);
    const good = await download(f.url, { keepBody: false });
    expect([good.status, good.complete, good.sha256, header(good, 'x-mirror-cache')]).toEqual([200, true, f.sha256, 'miss']);
  });

  it('wrong bytes in one segment: the full-body reader never gets the last byte (cut connection), nothing is stored', async () => {
    const f = lfsFile(96 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'wrongBytes', skip: 1, times: 1 });
    const bad = await download(f.url);
    fault.remove();
    expect(fault.applied).toBe(1);
    expect(bad.complete).toBe(false);
    expect(bad.body.length).toBeLessThan(f.size);
    await until('the staging file to go', () => stagingFiles(mirror.dataDir).length === 0);
    expect(stored(mirror.dataDir, f.sha256)).toBe(false);
    const good = await download(f.url, { keepBody: false });
    expect([good.complete, good.sha256]).toEqual([true, f.sha256]);
  });

  it('an upstream without a strong ETag, or without Range support, gets one plain stream', async () => {
    const weak = lfsFile(80 * MiB);
    // Slow enough that the first (ranged) answer is cut long before its 16 MiB are sent.
    const slow = hub.setFault({ server: 'cdn', pathIncludes: weak.sha256 }, { kind: 'throttle', bytesPerSecond: 40e6 });
    const noEtag = hub.setFault({ server: 'cdn', pathIncludes: weak.sha256 }, { kind: 'weakEtag' });
    try {
      const r = await download(weak.url, { keepBody: false });
      expect([r.status, r.complete, r.sha256]).toEqual([200, true, weak.sha256]);
    } finally {
      slow.remove();
      noEtag.remove();
    }
    // The first (ranged) answer named no strong validator: dropped, then one plain GET, no If-Range.
    const gets = weak.gets();
    expect(gets.map((g) => [g.headers.range ?? '-', g.status])).toEqual([
      [`bytes=0-${16 * MiB - 1}`, 206],
      ['-', 200],
    ]);
    expect(gets.every((g) => g.headers['if-range'] === undefined)).toBe(true);
    expect(weak.bytes()).toBeLessThanOrEqual(onceBound(weak));

    const plain = lfsFile(80 * MiB);
    const ignore = hub.setFault({ server: 'cdn', pathIncludes: plain.sha256 }, { kind: 'ignoreRange' });
    try {
      const r = await download(plain.url, { keepBody: false });
      expect([r.status, r.complete, r.sha256]).toEqual([200, true, plain.sha256]);
    } finally {
      ignore.remove();
    }
    // The first GET's 200 is the whole body: read to the end, nothing else asked.
    expect(plain.gets().map((g) => g.status)).toEqual([200]);
    expect(plain.bytes()).toBe(plain.size);
  });

  it('bytes=-500 and bytes=<60 %>- of a filling file get their bytes while the first segment is held (demand first)', async () => {
    const f = lfsFile(256 * MiB);
    const from = Math.floor(f.size * 0.6);
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 10e6 });
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: MiB, times: 1 });
    try {
      const full = download(f.url, { keepBody: false });
      await barrier.reached;
      let suffixBytes = 0;
      let tailBytes = 0;
      const stopTail = new AbortController();
      const suffix = download(f.url, { headers: { range: 'bytes=-500' }, onProgress: (n) => (suffixBytes = n) });
      const tail = download(f.url, {
        headers: { range: `bytes=${from}-` },
        signal: stopTail.signal,
        onProgress: (n) => {
          tailBytes = n;
          if (n >= 256 * 1024) stopTail.abort();
        },
      });
      // Every byte but the file's last (held until the fill is verified) while segment 0 is held.
      await until('the suffix bytes', () => suffixBytes >= 499);
      await until('the tail bytes', () => tailBytes >= 256 * 1024);
      const t = await tail;
      expect(t.status).toBe(206);
      expect(header(t, 'content-range')).toBe(`bytes ${from}-${f.size - 1}/${f.size}`);
      expect(t.body.equals(f.content.subarray(from, from + t.body.length))).toBe(true);
      expect(f.gets()[0]?.endedAt).toBeUndefined(); // segment 0 is still held
      // Each was fetched by a GET starting at it (rounded down to 64 KiB), not by the work list.
      const starts = f.gets().map((r) => asked(r, f.size)[0]);
      expect(starts).toContain(f.size - SEGMENT_ALIGN);
      expect(starts).toContain(Math.floor(from / SEGMENT_ALIGN) * SEGMENT_ALIGN);
      barrier.release();
      throttle.remove();
      await expectSuffixAndFill(f, suffix, full);
    } finally {
      barrier.release();
      barrier.remove();
      throttle.remove();
    }
  });

  it('a second range reader ahead of the fill gets its own demand GET while the first one still runs', async () => {
    // Every GET of the file is held after its first MiB: the fill's connections all stay busy, and
    // so does the demand GET started for the first reader (at 60 %). The suffix read that comes
    // next must not wait for any of them to finish its span.
    const f = lfsFile(256 * MiB);
    const from = Math.floor(f.size * 0.6);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: MiB });
    try {
      const full = download(f.url, { keepBody: false });
      await barrier.reached;
      let tailBytes = 0;
      let suffixBytes = 0;
      const stopTail = new AbortController();
      const tail = download(f.url, { headers: { range: `bytes=${from}-` }, signal: stopTail.signal, onProgress: (n) => (tailBytes = n) });
      const tailStart = Math.floor(from / SEGMENT_ALIGN) * SEGMENT_ALIGN;
      await until('the demand GET for the 60 % reader', () => f.gets().some((g) => asked(g, f.size)[0] === tailStart));
      await until('the 60 % reader to get bytes', () => tailBytes > 0);
      const suffix = download(f.url, { headers: { range: 'bytes=-500' }, onProgress: (n) => (suffixBytes = n) });
      // Every byte but the file's last (held until the fill is verified), with every other GET held.
      await until('the suffix bytes', () => suffixBytes >= 499);
      expect(f.gets().filter((g) => g.endedAt === undefined).length).toBeGreaterThanOrEqual(9); // the fill's 8 and the 60 % one, all held
      stopTail.abort();
      await tail.catch(() => undefined);
      barrier.release();
      await expectSuffixAndFill(f, suffix, full);
    } finally {
      barrier.release();
      barrier.remove();
    }
  });

  it('the staging file has its final size and blocks before the body is complete (preallocated)', async () => {
    const f = lfsFile(96 * MiB);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 2 * MiB, times: 1 });
    try {
      const full = download(f.url, { keepBody: false });
      await barrier.reached;
      // The first bytes are readable: they were written, so the preallocation had finished.
      const early = await download(f.url, { headers: { range: 'bytes=0-99' } });
      expect([early.status, header(early, 'x-mirror-cache')]).toEqual([206, 'joined']);
      const [name] = stagingFiles(mirror.dataDir);
      expect(name).toBeDefined();
      const st = fs.statSync(path.join(mirror.dataDir, 'staging', name!));
      expect(st.size).toBe(f.size);
      expect(st.blocks * 512).toBeGreaterThanOrEqual(f.size);
      barrier.release();
      expect((await full).sha256).toBe(f.sha256);
    } finally {
      barrier.release();
      barrier.remove();
    }
  });
});

describe('a connection that goes silent while a client waits for its bytes', () => {
  // The idle timeout is out of reach (10 min): only the stall takeover (upstreamStallSeconds, 3 s by
  // default) can bring these downloads to their end within the test's time.
  let quiet: TestMirror;
  beforeAll(async () => {
    quiet = await startMirror(hub.url, { upstreamIdleTimeoutSeconds: 600, clientIdleTimeoutSeconds: 900 });
  });
  afterAll(async () => {
    await quiet?.destroy();
  });

  it.each([
    ['a segment of a segmented fill', 128 * MiB, 2 * MiB],
    ['the one stream of a fill below segmentMinBytes', 24 * MiB, 5 * MiB],
  ])('%s: a new ranged request takes over from where it stopped, the silent one is closed, the client gets every byte', async (_what, size, at) => {
    const f = lfsFile(size, quiet);
    const stall = hub.setFault(f.cdn, { kind: 'stall', afterBytes: at, times: 1 });
    try {
      const r = await download(f.url, { keepBody: false });
      expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
    } finally {
      stall.remove();
    }
    expect(stall.applied).toBe(1);
    const gets = f.gets();
    const silent = gets[0]!;
    expect(silent.bytesSent).toBe(at);
    // Closed by the mirror (no fill commits while one of its connections runs), not by a timeout.
    expect(silent.endedAt).toBeDefined();
    const takeover = gets.filter((g) => g.headers.range !== undefined && asked(g, size)[0] === at);
    expect(takeover).toHaveLength(1);
    expect(takeover[0]?.headers['if-range']).toBe(`"${f.sha256}"`);
    // Within what the silent one had asked for (an end-game split may have taken its far end first).
    const silentEnd = silent.headers.range === undefined ? size - 1 : asked(silent, size)[1];
    expect(asked(takeover[0]!, size)[1]).toBeLessThanOrEqual(silentEnd);
    expect(quiet.logs.some((l) => l.includes('fill takeover') && l.includes(f.sha256))).toBe(true);
    expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
  });
});

describe('shared limits', () => {
  it('diskWriters=1: three segmented fills at once all land correctly, their writes taking turns on the one writer', async () => {
    // The gate's own semantics (never two writes at once with a limit of 1) are unit-tested
    // (limits.test.ts); here, that the fills' writes go through the gate the config sets up: 24
    // connections writing at once through one writer must wait for it, as the metrics show.
    const m = await startMirror(hub.url, { diskWriters: 1 });
    try {
      const files = [lfsFile(72 * MiB, m), lfsFile(80 * MiB, m), lfsFile(88 * MiB, m)];
      const all = await Promise.all(files.map((f) => download(f.url, { keepBody: false })));
      all.forEach((r, i) => expect([r.status, r.complete, r.sha256]).toEqual([200, true, files[i]!.sha256]));
      for (const f of files) expect(f.bytes()).toBeLessThanOrEqual(onceBound(f));
      const metrics = (await download(`${m.url}/metrics`)).body.toString('utf8');
      const sample = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
      expect(sample('hubcache_disk_write_waits_total')).toBeGreaterThan(0);
      expect([sample('hubcache_disk_writes_in_progress'), sample('hubcache_disk_writes_waiting')]).toEqual([0, 0]);
    } finally {
      await m.destroy();
    }
  });

  it('maxUpstreamConnections caps the connections of all fills together (each keeps its first)', async () => {
    const m = await startMirror(hub.url, { maxUpstreamConnections: 4 });
    try {
      const files = [lfsFile(80 * MiB, m), lfsFile(80 * MiB, m), lfsFile(80 * MiB, m)];
      const throttles = files.map((f) => hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 20e6 }));
      try {
        const all = await Promise.all(files.map((f) => download(f.url, { keepBody: false })));
        all.forEach((r, i) => expect([r.complete, r.sha256]).toEqual([true, files[i]!.sha256]));
      } finally {
        for (const t of throttles) t.remove();
      }
      const gets = files.flatMap((f) => f.gets());
      expect(maxOverlap(gets)).toBeLessThanOrEqual(4);
      // Alone, each would have used 8.
      expect(maxOverlap(gets)).toBeGreaterThanOrEqual(3);
    } finally {
      await m.destroy();
    }
  });

  it('a fill of 12 connections at once warns of no listener leak (each request listens on the fill\'s one abort signal)', async () => {
    // Node warns (MaxListenersExceededWarning, on stderr) past 10 listeners on one AbortSignal:
    // an operator reads that as a leak. 12 connections plus the fill's own listener are 13.
    const m = await startMirror(hub.url, { upstreamConnections: 12, upstreamStallSeconds: 0 });
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      const f = lfsFile(192 * MiB, m); // 12 segments of 16 MiB
      const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 20e6 });
      try {
        const r = await download(f.url, { keepBody: false });
        expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
      } finally {
        throttle.remove();
      }
      expect(maxOverlap(f.gets())).toBe(12);
      // Warnings are emitted on the next tick.
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map((w) => w.message)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      await m.destroy();
    }
  });

  it('kill -9 in the middle of a segmented fill: the restart is consistent and the next request fills correctly', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-seg-crash-'));
    tmpDirs.push(dataDir);
    const doomed = await startMirrorProcess(hub.url, dataDir);
    const f = lfsFile(128 * MiB, doomed);
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 20e6 });
    try {
      const cut = download(f.url, { keepBody: false });
      await until('several segments in flight', () => f.gets().length >= 4 && f.bytes() >= 16 * MiB);
      await doomed.kill('SIGKILL');
      const r = await cut;
      expect(r.status === 200 && r.complete).toBe(false);
    } finally {
      throttle.remove();
    }
    const next = await startMirrorProcess(hub.url, dataDir);
    try {
      expect(stagingFiles(dataDir)).toEqual([]);
      expect(stored(dataDir, f.sha256)).toBe(false);
      const url = f.url.replace(doomed.url, next.url);
      const good = await download(url, { keepBody: false });
      expect([good.status, good.complete, good.sha256, header(good, 'x-mirror-cache')]).toEqual([200, true, f.sha256, 'miss']);
      expect(stored(dataDir, f.sha256)).toBe(true);
      expect(sha256Hex(fs.readFileSync(path.join(dataDir, 'blobs-v1', 'sha256', f.sha256.slice(0, 2), f.sha256.slice(2, 4), f.sha256)))).toBe(f.sha256);
    } finally {
      await next.kill('SIGTERM');
    }
  });
});
