/**
 * Every value the config schema accepts must work: each test starts a mirror with one option at
 * the edge of its range (0, its maximum, 1) and checks bytes, statuses and upstream counters.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { parseByteranges, partsMatch } from '../support/multipart.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let seed = 5000;

beforeAll(async () => {
  hub = await startFakeHub();
});
afterAll(async () => {
  await hub?.stop();
});

/** Runs `body` against a fresh mirror started with `overrides`, then removes it. */
async function withMirror(overrides: Partial<Config>, body: (mirror: TestMirror) => Promise<void>): Promise<void> {
  const mirror = await startMirror(hub.url, overrides);
  try {
    await body(mirror);
    expect(mirror.logs.filter((l) => l.includes('unhandled error') || l.includes('ENOENT'))).toEqual([]);
  } finally {
    await mirror.destroy();
  }
}

/** A fresh repo with one LFS file. */
function lfsFile(mirror: TestMirror, size: number) {
  const id = `org/edge-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'w.safetensors': content } });
  const info = hub.fileInfo({ id }, 'w.safetensors');
  return { content, size, sha256: info.sha256, url: `${mirror.url}/${id}/resolve/main/w.safetensors`, cdn: { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 } };
}

const stored = (mirror: TestMirror, sha256: string) => fs.readdirSync(path.join(mirror.dataDir, 'blobs-v1'), { recursive: true }).some((n) => String(n).endsWith(sha256));

describe('config values at the edges of the schema', () => {
  it('fillStartWaitMs 0: headers go out before the fill has a staging file; every reader still gets every byte', async () => {
    await withMirror({ fillStartWaitMs: 0 }, async (mirror) => {
      for (let i = 0; i < 30; i++) {
        const f = lfsFile(mirror, 256 * 1024 + i);
        const d = await download(f.url, { keepBody: false });
        expect([d.status, d.complete, d.sha256], `file ${i}`).toEqual([200, true, f.sha256]);
      }
      // A herd on one cold file: the first starts the fill, the others join it at once.
      const herd = lfsFile(mirror, 4 * MiB);
      const all = await Promise.all(Array.from({ length: 5 }, () => download(herd.url, { keepBody: false })));
      for (const d of all) expect([d.status, d.complete, d.sha256]).toEqual([200, true, herd.sha256]);
      expect(hub.count(herd.cdn)).toBe(1);
      // Ranges read from a fill that just started.
      const ranged = lfsFile(mirror, 4 * MiB);
      const [tail, parts] = await Promise.all([
        download(ranged.url, { headers: { range: `bytes=${2 * MiB}-` } }),
        download(ranged.url, { headers: { range: 'bytes=0-599999,-600000' } }),
      ]);
      expect(tail.body.equals(ranged.content.subarray(2 * MiB))).toBe(true);
      expect(partsMatch(parseByteranges(header(parts, 'content-type'), parts.body), ranged.content)).toEqual(['0-599999', `${ranged.size - 600000}-${ranged.size - 1}`]);
    });
  });

  it('fillStartWaitMs 9000 (the maximum): misses, joiners and upstream failures get their normal answers', async () => {
    await withMirror({ fillStartWaitMs: 9000, upstreamRetries: 0 }, async (mirror) => {
      const f = lfsFile(mirror, 4 * MiB);
      const [a, b] = await Promise.all([download(f.url, { keepBody: false }), download(f.url, { keepBody: false })]);
      expect([a.sha256, b.sha256]).toEqual([f.sha256, f.sha256]);
      const broken = lfsFile(mirror, 4 * MiB);
      const fault = hub.setFault(broken.cdn, { kind: 'status', status: 500, times: 1 });
      const bad = await download(broken.url);
      expect([bad.status, header(bad, 'x-error-code')]).toEqual([502, 'UpstreamError']);
      expect(fault.applied).toBe(1);
    });
  });

  it('rangeBypassMaxBytes 0: every range of a cold file fills the whole file', async () => {
    await withMirror({ rangeBypassMaxBytes: 0 }, async (mirror) => {
      const one = lfsFile(mirror, 2 * MiB);
      const probe = await download(one.url, { headers: { range: 'bytes=0-0' } });
      expect([probe.status, header(probe, 'content-range'), header(probe, 'x-mirror-cache')]).toEqual([206, `bytes 0-0/${one.size}`, 'miss']);
      expect(probe.body.equals(one.content.subarray(0, 1))).toBe(true);
      const several = lfsFile(mirror, 2 * MiB);
      const multi = await download(several.url, { headers: { range: 'bytes=0-0,-1' } });
      expect([multi.status, header(multi, 'x-mirror-cache')]).toEqual([206, 'miss']);
      partsMatch(parseByteranges(header(multi, 'content-type'), multi.body), several.content);
      for (const f of [one, several]) {
        expect(hub.requests.filter((r) => r.server === 'cdn' && r.path.includes(f.sha256)).map((r) => r.headers.range)).toEqual([undefined]);
      }
    });
  });

  it('maxResumes 0: a dropped upstream body fails the fill at once, cleanly; the next request fills again', async () => {
    await withMirror({ maxResumes: 0 }, async (mirror) => {
      const f = lfsFile(mirror, 4 * MiB);
      const fault = hub.setFault(f.cdn, { kind: 'drop', afterBytes: MiB, times: 1 });
      const cut = await download(f.url, { keepBody: false });
      expect(cut.status === 200 && cut.complete).toBe(false);
      expect(fault.applied).toBe(1);
      expect(hub.count(f.cdn)).toBe(1);
      expect(stored(mirror, f.sha256)).toBe(false);
      const good = await download(f.url, { keepBody: false });
      expect([good.status, good.complete, good.sha256]).toEqual([200, true, f.sha256]);
    });
  });

  it('upstreamRetries 0: an upstream 503 goes to the client after one attempt; the next request succeeds', async () => {
    await withMirror({ upstreamRetries: 0 }, async (mirror) => {
      const f = lfsFile(mirror, MiB);
      const fault = hub.setFault(f.cdn, { kind: 'status', status: 503, times: 1 });
      const bad = await download(f.url);
      expect([bad.status, header(bad, 'x-error-code')]).toEqual([503, 'UpstreamUnavailable']);
      expect([fault.applied, hub.count(f.cdn)]).toEqual([1, 1]);
      const good = await download(f.url, { keepBody: false });
      expect([good.status, good.sha256]).toEqual([200, f.sha256]);
    });
  });

  it('maxConcurrentFills 1 (with fillStartWaitMs 0): concurrent misses take turns and all complete', async () => {
    await withMirror({ maxConcurrentFills: 1, fillStartWaitMs: 0 }, async (mirror) => {
      const files = Array.from({ length: 3 }, () => lfsFile(mirror, 2 * MiB));
      const results = await Promise.all(files.map((f) => download(f.url, { keepBody: false })));
      results.forEach((d, i) => expect([d.status, d.complete, d.sha256]).toEqual([200, true, files[i]!.sha256]));
      for (const f of files) expect(hub.count(f.cdn)).toBe(1);
    });
  });

  it('maxQueuedFills 0: with the only slot busy, a new miss is refused at once; joiners and range bypasses pass', async () => {
    await withMirror({ maxConcurrentFills: 1, maxQueuedFills: 0 }, async (mirror) => {
      const a = lfsFile(mirror, 8 * MiB);
      const b = lfsFile(mirror, 4 * MiB);
      const barrier = hub.setFault(a.cdn, { kind: 'barrier', atBytes: MiB });
      try {
        const first = download(a.url, { keepBody: false });
        await barrier.reached;
        const refused = await download(b.url);
        expect([refused.status, header(refused, 'x-error-code'), header(refused, 'retry-after')]).toEqual([503, 'Overloaded', '5']);
        const probe = await download(b.url, { headers: { range: 'bytes=0-0,-1' } });
        expect([probe.status, header(probe, 'x-mirror-cache')]).toEqual([206, 'bypass']);
        partsMatch(parseByteranges(header(probe, 'content-type'), probe.body), b.content);
        const joiner = download(a.url, { keepBody: false });
        barrier.release();
        for (const d of await Promise.all([first, joiner])) expect([d.status, d.complete, d.sha256]).toEqual([200, true, a.sha256]);
        const later = await download(b.url, { keepBody: false });
        expect([later.status, later.sha256]).toEqual([200, b.sha256]);
      } finally {
        barrier.release();
        barrier.remove();
      }
    });
  });
});
