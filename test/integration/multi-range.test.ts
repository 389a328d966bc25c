/**
 * Several ranges in one request get one `multipart/byteranges` 206, whatever the cache holds:
 * parts from disk (cached), from the running fill (as its bytes land), or each fetched upstream
 * as its own range (cold, small); past the limits a 416, never a whole-file download for a set of
 * small ranges. Also what a range bypass does with upstream answers that are not the 206 asked
 * for. Bodies are parsed strictly (test/support/multipart.ts) and every part is compared with the
 * file; upstream traffic is asserted on the fake hub's counters.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_RANGES } from '../../src/http/byte-range.js';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { parseByteranges, partsMatch, xetClientParts } from '../support/multipart.js';
import { lastResponseHead, runTool } from '../support/run-tool.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let mirror: TestMirror;
let tmp: string;
let seed = 3000;

beforeAll(async () => {
  hub = await startFakeHub();
  mirror = await startMirror(hub.url);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-multi-range-'));
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh repo with one LFS file (never requested yet). */
function lfsFile(size: number) {
  const id = `org/multi-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'model.safetensors': content } });
  const info = hub.fileInfo({ id }, 'model.safetensors');
  const cdn = { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 };
  return {
    content,
    size,
    sha256: info.sha256,
    url: `${mirror.url}/${id}/resolve/main/model.safetensors`,
    cdn,
    /** The Range header of every upstream body GET so far (`-` for none), sorted. */
    upstreamRanges: () =>
      hub.requests
        .filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(info.sha256))
        .map((r) => String(r.headers.range ?? '-'))
        .sort(),
  };
}

const ranges = (list: string[]) => ({ range: `bytes=${list.join(',')}` });
const blobStored = (sha256: string) => fs.readdirSync(path.join(mirror.dataDir, 'blobs-v1'), { recursive: true }).some((n) => String(n).endsWith(sha256));

async function multipart(url: string, list: string[], extra: Record<string, string> = {}) {
  const d = await download(url, { headers: { ...ranges(list), ...extra } });
  expect(d.status, d.body.toString('latin1').slice(0, 200)).toBe(206);
  expect(d.complete).toBe(true);
  expect(header(d, 'content-range')).toBeUndefined();
  expect(Number(header(d, 'content-length'))).toBe(d.body.length);
  return { d, parts: parseByteranges(header(d, 'content-type'), d.body) };
}

describe('several ranges: one multipart/byteranges 206', () => {
  it('on a cached file: bytes=0-0,-1 gives both parts from disk with an exact length; HEAD gives the same headers', async () => {
    const f = lfsFile(4 * MiB + 3);
    const full = await download(f.url, { keepBody: false });
    expect(full.sha256).toBe(f.sha256);
    const before = hub.count(f.cdn);
    const { d, parts } = await multipart(f.url, ['0-0', '-1']);
    expect(partsMatch(parts, f.content)).toEqual(['0-0', `${f.size - 1}-${f.size - 1}`]);
    expect(parts.map((p) => p.contentType)).toEqual([header(full, 'content-type'), header(full, 'content-type')]);
    expect(header(d, 'x-mirror-cache')).toBe('hit');
    expect(header(d, 'etag')).toBe(header(full, 'etag'));
    expect(header(d, 'x-repo-commit')).toBe(header(full, 'x-repo-commit'));
    expect(header(d, 'accept-ranges')).toBe('bytes');
    const head = await download(f.url, { method: 'HEAD', headers: ranges(['0-0', '-1']) });
    expect(head.status).toBe(206);
    expect(head.body.length).toBe(0);
    expect(header(head, 'content-type')).toMatch(/^multipart\/byteranges; boundary=/);
    expect(header(head, 'content-length')).toBe(header(d, 'content-length'));
    expect(header(head, 'content-range')).toBeUndefined();
    expect(hub.count(f.cdn)).toBe(before);
  });

  it("the JS Xet client's multipart parser reads every part in the order asked, fed in small chunks", async () => {
    const f = lfsFile(2 * MiB);
    await download(f.url, { keepBody: false });
    const list = ['0-99', '100-199', '5000-5000', `${MiB}-${MiB + 4095}`, '-3'];
    const { d } = await multipart(f.url, list);
    const spans = list.map((r) => (r.startsWith('-') ? [f.size - 3, f.size - 1] : r.split('-').map(Number))) as Array<[number, number]>;
    for (const chunk of [1, 7, 64 * 1024]) {
      const parts = await xetClientParts(header(d, 'content-type')!, d.body, chunk);
      expect(parts.length, `chunks of ${chunk}`).toBe(list.length);
      parts.forEach((p, i) => expect(p.equals(f.content.subarray(spans[i]![0], spans[i]![1] + 1)), `part ${i}, chunks of ${chunk}`).toBe(true));
    }
  });

  it('keeps the parts in the order asked and never merges disjoint ones; two overlapping ones become one', async () => {
    const f = lfsFile(2 * MiB);
    await download(f.url, { keepBody: false });
    const asked = await multipart(f.url, ['-10', '0-9', '20-29', '30-39']);
    expect(partsMatch(asked.parts, f.content)).toEqual([`${f.size - 10}-${f.size - 1}`, '0-9', '20-29', '30-39']);
    const merged = await multipart(f.url, ['0-9', '5-14', '100-109']);
    expect(partsMatch(merged.parts, f.content)).toEqual(['0-14', '100-109']);
    // Unsatisfiable ones are dropped; a single one left is a plain 206.
    const single = await download(f.url, { headers: ranges(['5-9', `${f.size}-`]) });
    expect([single.status, header(single, 'content-range'), header(single, 'content-type')]).toEqual([206, `bytes 5-9/${f.size}`, 'application/octet-stream']);
    expect(single.body.equals(f.content.subarray(5, 10))).toBe(true);
    const many = await multipart(
      f.url,
      Array.from({ length: MAX_RANGES }, (_, i) => `${i * 1000}-${i * 1000 + i}`),
    );
    expect(many.parts.length).toBe(MAX_RANGES);
    partsMatch(many.parts, f.content);
  });

  it(`refuses more than ${MAX_RANGES} ranges or more than two overlapping ones with a 416, cached or cold, and a cold file is never fetched for it`, async () => {
    const cached = lfsFile(MiB);
    await download(cached.url, { keepBody: false });
    const cold = lfsFile(8 * MiB);
    const tooMany = Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i * 10}-${i * 10}`);
    const overlapping = ['0-99', '50-149', '100-199'];
    for (const f of [cached, cold]) {
      for (const [list, reason] of [
        [tooMany, `more than ${MAX_RANGES} ranges`],
        [overlapping, 'more than two overlapping ranges'],
      ] as const) {
        const d = await download(f.url, { headers: ranges([...list]) });
        expect(d.status).toBe(416);
        expect(header(d, 'content-range')).toBe(`bytes */${f.size}`);
        expect(header(d, 'x-error-message')).toBe(`Range refused: ${reason}`);
        expect(d.body.length).toBe(0);
      }
    }
    expect(hub.count(cold.cdn)).toBe(0);
    expect(blobStored(cold.sha256)).toBe(false);
  });

  it('on a cold file: each part is fetched upstream as its own range and not stored; no whole-file GET', async () => {
    const f = lfsFile(32 * MiB);
    const { d, parts } = await multipart(f.url, ['0-0', '-1']);
    expect(header(d, 'x-mirror-cache')).toBe('bypass');
    expect(partsMatch(parts, f.content)).toEqual(['0-0', `${f.size - 1}-${f.size - 1}`]);
    expect(f.upstreamRanges()).toEqual(['bytes=0-0', `bytes=${f.size - 1}-${f.size - 1}`].sort());
    expect(hub.bytesSent(f.cdn)).toBe(2);
    // Ten parts, more than run upstream at once: each its own range, all in order.
    const list = Array.from({ length: 10 }, (_, i) => `${i * MiB}-${i * MiB + 99}`);
    const ten = await multipart(f.url, list);
    expect(partsMatch(ten.parts, f.content)).toEqual(list);
    expect(f.upstreamRanges().filter((r) => r === '-')).toEqual([]);
    expect(hub.bytesSent(f.cdn)).toBe(2 + 10 * 100);
    expect(blobStored(f.sha256)).toBe(false);
  });

  it('on a cold file whose parts add up to more than rangeBypassMaxBytes: one fill, the parts from it', async () => {
    const f = lfsFile(8 * MiB);
    const { d, parts } = await multipart(f.url, ['0-599999', '-600000']);
    expect(header(d, 'x-mirror-cache')).toBe('miss');
    expect(partsMatch(parts, f.content)).toEqual(['0-599999', `${f.size - 600000}-${f.size - 1}`]);
    expect(f.upstreamRanges()).toEqual(['-']);
    const hit = await multipart(f.url, ['0-0', '-1']);
    expect(header(hit.d, 'x-mirror-cache')).toBe('hit');
    expect(f.upstreamRanges()).toEqual(['-']);
  });

  it('on a file being filled: parts already on disk come at once, later ones as their bytes land', async () => {
    const f = lfsFile(16 * MiB);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 8 * MiB });
    try {
      const whole = download(f.url, { keepBody: false });
      await barrier.reached;
      // Below the barrier: complete while upstream is held.
      const early = await multipart(f.url, ['0-99', `${MiB}-${MiB + 99}`]);
      expect(header(early.d, 'x-mirror-cache')).toBe('joined');
      expect(partsMatch(early.parts, f.content)).toEqual(['0-99', `${MiB}-${MiB + 99}`]);
      // The second part is past the barrier: it is fetched at once with its own ranged GET (demand
      // first), but it holds the file's last byte, which waits for the verification: the answer
      // cannot end while upstream is held.
      let ended = false;
      let sawFirstPart!: () => void;
      const firstPart = new Promise<void>((resolve) => (sawFirstPart = resolve));
      const late = download(f.url, {
        headers: ranges(['100-199', '-100']),
        onProgress: (n) => n >= 100 && sawFirstPart(),
      }).then((d) => {
        ended = true;
        return d;
      });
      await firstPart;
      // The tail is fetched with its own ranged GET while the stream is still held.
      for (const deadline = performance.now() + 30_000; f.upstreamRanges().length < 2 && performance.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      expect(f.upstreamRanges()).toEqual(['-', `bytes=${f.size - 64 * 1024}-`]);
      expect(ended).toBe(false);
      barrier.release();
      const d = await late;
      expect([d.status, d.complete, header(d, 'x-mirror-cache')]).toEqual([206, true, 'joined']);
      expect(partsMatch(parseByteranges(header(d, 'content-type'), d.body), f.content)).toEqual(['100-199', `${f.size - 100}-${f.size - 1}`]);
      expect((await whole).sha256).toBe(f.sha256);
      // The fill's stream, and the ranged GET for the tail (from a 64 KiB boundary): each byte about once.
      expect(f.upstreamRanges()).toEqual(['-', `bytes=${f.size - 64 * 1024}-`]);
      expect(hub.bytesSent(f.cdn)).toBeLessThanOrEqual(1.01 * f.size);
    } finally {
      barrier.release();
      barrier.remove();
    }
  });

  it('a fill that fails (wrong bytes) cuts the multipart answer short: never a complete one', async () => {
    const f = lfsFile(8 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'wrongBytes', times: 1 });
    const d = await download(f.url, { headers: ranges(['0-599999', '-600000']) });
    expect(d.status === 206 && d.complete).toBe(false);
    expect(fault.applied).toBe(1);
    expect(blobStored(f.sha256)).toBe(false);
    const again = await multipart(f.url, ['0-599999', '-600000']);
    partsMatch(again.parts, f.content);
  });

  it('If-Range and If-None-Match work as for a single range', async () => {
    const f = lfsFile(MiB);
    const full = await download(f.url, { keepBody: false });
    const etag = header(full, 'etag')!;
    const matching = await multipart(f.url, ['0-0', '-1'], { 'if-range': etag });
    partsMatch(matching.parts, f.content);
    const other = await download(f.url, { headers: { ...ranges(['0-0', '-1']), 'if-range': '"something-else"' } });
    expect([other.status, other.sha256, header(other, 'content-type')]).toEqual([200, f.sha256, 'application/octet-stream']);
    const unchanged = await download(f.url, { headers: { ...ranges(['0-0', '-1']), 'if-none-match': etag } });
    expect([unchanged.status, unchanged.body.length]).toEqual([304, 0]);
  });

  it('curl -r 0-0,-1 gets a multipart body whose parts equal the file, cold and then cached', async () => {
    const f = lfsFile(8 * MiB);
    const curl = async () => {
      const out = path.join(tmp, `curl-${seed++}`);
      const r = await runTool('curl', ['-sS', '-f', '-D', '-', '-o', out, '-r', '0-0,-1', f.url]);
      expect(r.code, r.stderr).toBe(0);
      const head = lastResponseHead(r.stdout);
      expect(head.status).toBe(206);
      const parts = parseByteranges(head.headers['content-type'], fs.readFileSync(out));
      expect(partsMatch(parts, f.content)).toEqual(['0-0', `${f.size - 1}-${f.size - 1}`]);
      return head.headers['x-mirror-cache'];
    };
    expect(await curl()).toBe('bypass');
    expect(f.upstreamRanges()).toEqual(['bytes=0-0', `bytes=${f.size - 1}-${f.size - 1}`].sort());
    expect((await download(f.url, { keepBody: false })).sha256).toBe(f.sha256);
    expect(await curl()).toBe('hit');
  });
});

describe('range bypass: upstream answers that are not the 206 asked for', () => {
  it('upstream ignores Range (200): a span near the start is read off the start of the body; nothing is stored', async () => {
    const f = lfsFile(32 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'ignoreRange' });
    try {
      const one = await download(f.url, { headers: { range: 'bytes=100-199' } });
      expect([one.status, header(one, 'content-range'), header(one, 'x-mirror-cache')]).toEqual([206, `bytes 100-199/${f.size}`, 'bypass']);
      expect(one.body.equals(f.content.subarray(100, 200))).toBe(true);
      const { d, parts } = await multipart(f.url, ['0-9', '1000-1099']);
      expect(header(d, 'x-mirror-cache')).toBe('bypass');
      expect(partsMatch(parts, f.content)).toEqual(['0-9', '1000-1099']);
      expect(fault.applied).toBe(3);
      expect(hub.count({ ...f.cdn, status: 200 })).toBe(3);
      expect(hub.count(f.cdn)).toBe(3);
      // The rest of each 200 was never read: far less than one file crossed.
      expect(hub.bytesSent(f.cdn)).toBeLessThan(f.size);
      expect(blobStored(f.sha256)).toBe(false);
    } finally {
      fault.remove();
    }
  });

  it('upstream ignores Range (200) for a span far into the file: the file is filled instead, once', async () => {
    const f = lfsFile(32 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'ignoreRange' });
    try {
      const tail = await download(f.url, { headers: { range: 'bytes=-100' } });
      expect([tail.status, header(tail, 'content-range'), header(tail, 'x-mirror-cache')]).toEqual([206, `bytes ${f.size - 100}-${f.size - 1}/${f.size}`, 'miss']);
      expect(tail.body.equals(f.content.subarray(f.size - 100))).toBe(true);
      // The ranged GET that got a 200 (dropped), then the fill's own GET.
      expect(f.upstreamRanges()).toEqual(['-', `bytes=${f.size - 100}-${f.size - 1}`]);
      const { d, parts } = await multipart(f.url, ['0-0', '-1']);
      expect(header(d, 'x-mirror-cache')).toBe('hit');
      partsMatch(parts, f.content);
      expect(hub.count(f.cdn)).toBe(2);
    } finally {
      fault.remove();
    }
  });

  it('upstream ignores Range (200) for one part of several, far into the file: one fill serves every part', async () => {
    const f = lfsFile(32 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'ignoreRange' });
    try {
      const { d, parts } = await multipart(f.url, ['0-0', '-1']);
      expect(header(d, 'x-mirror-cache')).toBe('miss');
      expect(partsMatch(parts, f.content)).toEqual(['0-0', `${f.size - 1}-${f.size - 1}`]);
      expect(f.upstreamRanges().filter((r) => r === '-')).toEqual(['-']);
      expect(blobStored(f.sha256)).toBe(true);
    } finally {
      fault.remove();
    }
  });

  it('upstream answers a 206 for other bytes than asked: a clean 502, never a wrong byte', async () => {
    const f = lfsFile(8 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'wrongContentRange', times: 2 });
    const one = await download(f.url, { headers: { range: 'bytes=100-199' } });
    expect([one.status, header(one, 'x-error-code')]).toEqual([502, 'UpstreamError']);
    expect(header(one, 'x-error-message')).toContain(`Content-Range bytes 101-200/${f.size}`);
    expect(one.body.includes(f.content.subarray(101, 201))).toBe(false);
    const multi = await download(f.url, { headers: ranges(['0-0', '-1']) });
    expect([multi.status, header(multi, 'x-error-code')]).toEqual([502, 'UpstreamError']);
    expect(fault.applied).toBe(2);
    // Nothing was remembered: the next answer is right.
    const again = await download(f.url, { headers: { range: 'bytes=100-199' } });
    expect([again.status, header(again, 'x-mirror-cache')]).toEqual([206, 'bypass']);
    expect(again.body.equals(f.content.subarray(100, 200))).toBe(true);
    expect(mirror.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  });

  it('upstream cuts a range body short: a clean error answer, never a short 206', async () => {
    const f = lfsFile(8 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'short', bytes: 40, times: 1 });
    const cut = await download(f.url, { headers: { range: 'bytes=1000-1099' } });
    expect([502, 503]).toContain(cut.status);
    expect(header(cut, 'x-error-code')).toBeDefined();
    expect(fault.applied).toBe(1);
    const again = await download(f.url, { headers: { range: 'bytes=1000-1099' } });
    expect(again.body.equals(f.content.subarray(1000, 1100))).toBe(true);
    expect(mirror.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  });
});
