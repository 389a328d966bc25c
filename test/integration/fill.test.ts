/**
 * One fill, every waiter: the cold-miss walk-through of design.md §2.3, asserted on the fake
 * hub's counters. Each test uses its own file so counters never mix.
 */
import fs from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { curlSha256 } from '../support/external-client.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let mirror: TestMirror;
let seed = 100;

beforeAll(async () => {
  hub = await startFakeHub();
  mirror = await startMirror(hub.url);
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

/** A fresh repo with one LFS file; returns its URL on the mirror and what upstream holds. */
function lfsFile(size: number, name = 'model.safetensors') {
  const id = `org/fill-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { [name]: content, 'config.json': Buffer.from(`{"seed": ${seed}}\n`) } });
  const info = hub.fileInfo({ id }, name);
  return { id, content, sha256: info.sha256, url: `${mirror.url}/${id}/resolve/main/${name}`, cdnFilter: { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 } };
}

function blobFiles(dataDir: string): string[] {
  const root = path.join(dataDir, 'blobs-v1');
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name);
}
const stagingFiles = (dataDir: string) => fs.readdirSync(path.join(dataDir, 'staging'));

describe('one fill, every waiter', () => {
  it('11 concurrent cold GETs cost one upstream HEAD and one fill (its ranged GETs fetch each byte once), and all get the right bytes', async () => {
    // 64 MiB is segmentMinBytes: the fill fetches the file with several ranged GETs at once.
    const f = lfsFile(64 * MiB);
    const results = await Promise.all(Array.from({ length: 11 }, () => download(f.url, { keepBody: false })));
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.complete).toBe(true);
      expect(r.sha256).toBe(f.sha256);
    }
    const gets = hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(f.sha256));
    expect(gets.length).toBeGreaterThan(1);
    expect(gets.every((r) => r.status === 206 && /^bytes=\d+-\d*$/.test(String(r.headers.range)))).toBe(true);
    expect(hub.bytesSent(f.cdnFilter)).toBeGreaterThanOrEqual(64 * MiB);
    expect(hub.bytesSent(f.cdnFilter)).toBeLessThanOrEqual(1.01 * 64 * MiB);
    expect(hub.count({ server: 'hub', method: 'HEAD', pathIncludes: `${f.id}/resolve/` })).toBe(1);
    expect(hub.count({ server: 'hub', method: 'GET', pathIncludes: `${f.id}/resolve/` })).toBe(1);
    const statuses = results.map((r) => header(r, 'x-mirror-cache')).sort();
    expect(statuses).toEqual(['joined', ...Array(9).fill('joined'), 'miss'].sort());
    // The 12th is a hit: no upstream at all (the branch was resolved a moment ago).
    const before = hub.requests.length;
    const hit = await download(f.url, { keepBody: false });
    expect(header(hit, 'x-mirror-cache')).toBe('hit');
    expect(hit.sha256).toBe(f.sha256);
    expect(hub.requests.length).toBe(before);
  });

  it('a herd of 11 on a 256 MiB file throttled upstream at 50 MB/s per connection: one fill, each byte fetched once, 11 correct sha256, no serialization', async () => {
    const single = lfsFile(256 * MiB, 'single.safetensors');
    const herd = lfsFile(256 * MiB, 'herd.safetensors');
    const throttle = hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: 50e6 });
    try {
      // Clients are curl processes piped into openssl: their parsing and hashing stay off the
      // mirror's event loop (they still share this machine's 2 cores, see the bound below).
      const one = await curlSha256(single.url);
      expect(one.sha256).toBe(single.sha256);
      const t0 = performance.now();
      const all = await Promise.all(Array.from({ length: 11 }, () => curlSha256(herd.url)));
      const herdMs = performance.now() - t0;
      for (const r of all) expect(r.sha256).toBe(herd.sha256);
      // One fill: one resolve GET, its segments (ranged CDN GETs) fetch the file about once.
      expect(hub.count({ server: 'hub', method: 'GET', pathIncludes: `${herd.id}/resolve/` })).toBe(1);
      expect(hub.bytesSent(herd.cdnFilter)).toBeGreaterThanOrEqual(256 * MiB);
      expect(hub.bytesSent(herd.cdnFilter)).toBeLessThanOrEqual(1.01 * 256 * MiB);
      // The 1.15x figure is measured by `npm run bench` (clients discarding bytes). Here 11 clients
      // hash 2.8 GB inside the same window on 2 shared cores, so the bound only proves the herd is
      // streamed together: serving the clients one after another would take ~11x.
      expect(herdMs / one.ms).toBeLessThan(3);
    } finally {
      throttle.remove();
    }
  });

  it('T09: a herd of 100 on one cold file: one upstream GET, 100 correct sha256, memory and event loop stay bounded', async () => {
    const f = lfsFile(32 * MiB, 'herd100.safetensors');
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 200e6 });
    const lag = monitorEventLoopDelay({ resolution: 10 });
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 50);
    lag.enable();
    try {
      const all = await Promise.all(Array.from({ length: 100 }, () => curlSha256(f.url)));
      for (const r of all) expect(r.sha256).toBe(f.sha256);
      expect(hub.count(f.cdnFilter)).toBe(1);
      expect(hub.bytesSent(f.cdnFilter)).toBe(32 * MiB);
      // The disk is the buffer: 100 readers cost buffers, not copies of the file.
      expect((rssPeak - rssBefore) / MiB).toBeLessThan(200);
      // 100 curl + openssl processes share this machine's 2 cores with the mirror; the budget
      // still proves no reader ever blocks the loop for long.
      expect(lag.percentile(99) / 1e6).toBeLessThan(250);
    } finally {
      clearInterval(sampler);
      lag.disable();
      throttle.remove();
    }
  });

  it('serves a Range of a file still filling as soon as its bytes are on disk, and fetches a far one next (demand first)', async () => {
    const f = lfsFile(16 * MiB);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 8 * MiB });
    try {
      const full = download(f.url, { keepBody: false });
      await barrier.reached;
      // Upstream is held at 8 MiB: a range below it answers now, a full-body reader has its first bytes.
      const early = await download(f.url, { headers: { range: 'bytes=1048576-2097151' } });
      expect(early.status).toBe(206);
      expect(early.complete).toBe(true);
      expect(header(early, 'content-range')).toBe(`bytes 1048576-2097151/${16 * MiB}`);
      expect(early.body.equals(f.content.subarray(MiB, 2 * MiB))).toBe(true);
      expect(header(early, 'x-mirror-cache')).toBe('joined');
      // A range far past the stream's position is fetched at once with its own ranged GET, while
      // the stream is still held: every byte but the file's last, which waits for the verification.
      let tailBytes = 0;
      const tail = download(f.url, { headers: { range: 'bytes=-1024' }, onProgress: (n) => (tailBytes = n) });
      for (const deadline = performance.now() + 30_000; tailBytes < 1023 && performance.now() < deadline; ) await new Promise((r) => setTimeout(r, 20));
      expect(tailBytes).toBe(1023);
      const held = hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(f.sha256));
      expect(held).toHaveLength(2);
      expect(held[0]?.endedAt).toBeUndefined(); // the stream is still held at the barrier
      expect(held[1]?.headers.range).toBe(`bytes=${16 * MiB - 64 * 1024}-`);
      expect(held[1]?.headers['if-range']).toBe(`"${f.sha256}"`);
      barrier.release();
      const [t, all] = await Promise.all([tail, full]);
      expect(t.status).toBe(206);
      expect(t.body.equals(f.content.subarray(16 * MiB - 1024))).toBe(true);
      expect(all.sha256).toBe(f.sha256);
      // The stream stopped where the ranged GET began: each byte crossed about once.
      expect(hub.count(f.cdnFilter)).toBe(2);
      expect(hub.bytesSent(f.cdnFilter)).toBeLessThanOrEqual(1.01 * 16 * MiB);
    } finally {
      barrier.release();
      barrier.remove();
    }
  });

  it('a client that aborts at 10 % cancels only itself; the others complete on the same upstream GET', async () => {
    const f = lfsFile(32 * MiB);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 16 * MiB });
    try {
      const abort = new AbortController();
      const first = download(f.url, {
        keepBody: false,
        signal: abort.signal,
        onProgress: (n) => {
          if (n >= 3.2 * MiB) abort.abort();
        },
      });
      const others = Array.from({ length: 3 }, () => download(f.url, { keepBody: false }));
      await barrier.reached;
      await first.then(
        (r) => expect(r.complete).toBe(false),
        () => undefined,
      );
      barrier.release();
      for (const r of await Promise.all(others)) {
        expect(r.complete).toBe(true);
        expect(r.sha256).toBe(f.sha256);
      }
      expect(hub.count(f.cdnFilter)).toBe(1);
    } finally {
      barrier.release();
      barrier.remove();
    }
  });

  it('the fill outlives its clients: when every client aborts, it still completes and the next request is a hit', async () => {
    const f = lfsFile(8 * MiB);
    const abort = new AbortController();
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 40e6 });
    try {
      const clients = Array.from({ length: 2 }, () =>
        download(f.url, { keepBody: false, signal: abort.signal, onProgress: (n) => n > MiB && abort.abort() }).catch(() => null),
      );
      await Promise.all(clients);
      // Wait for the fill to land (upstream sends the whole body once).
      for (let i = 0; i < 100 && hub.bytesSent(f.cdnFilter) < 8 * MiB; i++) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 200));
      const again = await download(f.url, { keepBody: false });
      expect(header(again, 'x-mirror-cache')).toBe('hit');
      expect(again.sha256).toBe(f.sha256);
      expect(hub.count(f.cdnFilter)).toBe(1);
      expect(stagingFiles(mirror.dataDir)).toEqual([]);
    } finally {
      throttle.remove();
    }
  });

  it('a slow reader does not slow the fill or a fast reader', async () => {
    const f = lfsFile(32 * MiB);
    const res = await fetch(f.url); // never read: a client that stalls completely
    expect(res.status).toBe(200);
    const fast = await download(f.url, { keepBody: false });
    expect(fast.sha256).toBe(f.sha256);
    expect(hub.bytesSent(f.cdnFilter)).toBe(32 * MiB);
    // The stalled client can still read everything afterwards, from the disk.
    const body = Buffer.from(await res.arrayBuffer());
    expect(sha256Hex(body)).toBe(f.sha256);
  });

  it('HEAD answers from metadata and never starts a download, even when upstream is slow', async () => {
    const f = lfsFile(4 * MiB);
    const slow = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'headerDelay', ms: 5000 });
    try {
      const t0 = performance.now();
      const head = await download(f.url, { method: 'HEAD' });
      expect(performance.now() - t0).toBeLessThan(1000);
      expect(head.status).toBe(200);
      expect(header(head, 'content-length')).toBe(String(4 * MiB));
      expect(header(head, 'x-mirror-cache')).toBe('miss');
      expect(hub.count({ server: 'cdn', pathIncludes: f.sha256 })).toBe(0);
    } finally {
      slow.remove();
    }
  });
});

describe('small ranges of cold files', () => {
  it('are fetched upstream as ranges (coalesced), not by downloading the whole file', async () => {
    const f = lfsFile(32 * MiB);
    // Upstream answers the first range slowly, so all 20 probes are in flight together.
    const slow = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'headerDelay', ms: 300, times: 1 });
    const probes = await Promise.all(Array.from({ length: 20 }, () => download(f.url, { headers: { range: 'bytes=0-0' } })));
    slow.remove();
    for (const p of probes) {
      expect(p.status).toBe(206);
      expect(header(p, 'content-range')).toBe(`bytes 0-0/${32 * MiB}`);
      expect(header(p, 'x-mirror-cache')).toBe('bypass');
      expect(p.body.equals(f.content.subarray(0, 1))).toBe(true);
    }
    const header8 = await download(f.url, { headers: { range: 'bytes=8-100007' } });
    expect(header8.body.equals(f.content.subarray(8, 100_008))).toBe(true);
    const gets = hub.requests.filter((r) => r.server === 'cdn' && r.path.includes(f.sha256));
    expect(gets.map((r) => r.headers.range)).toEqual(['bytes=0-0', 'bytes=8-100007']);
    expect(hub.bytesSent(f.cdnFilter)).toBe(1 + 100_000);
    expect(blobFiles(mirror.dataDir)).not.toContain(f.sha256);
    // A full download then fills normally, and ranges become hits.
    const full = await download(f.url, { keepBody: false });
    expect(full.sha256).toBe(f.sha256);
    const hit = await download(f.url, { headers: { range: 'bytes=0-0' } });
    expect(header(hit, 'x-mirror-cache')).toBe('hit');
  });
});

describe('upstream sends the wrong bytes', () => {
  it('wrong bytes of the right size: nothing stored, no client gets a complete 200, the next request fills correctly', async () => {
    const f = lfsFile(4 * MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'wrongBytes', times: 1 });
    const bad = await Promise.all(Array.from({ length: 3 }, () => download(f.url, { keepBody: false })));
    for (const r of bad) expect(r.status === 200 && r.complete).toBe(false);
    expect(blobFiles(mirror.dataDir)).not.toContain(f.sha256);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    fault.remove();
    const good = await download(f.url, { keepBody: false });
    expect(good.complete).toBe(true);
    expect(good.sha256).toBe(f.sha256);
    expect(header(good, 'x-mirror-cache')).toBe('miss');
    expect(hub.count(f.cdnFilter)).toBe(2);
    expect(blobFiles(mirror.dataDir)).toContain(f.sha256);
  });

  it('wrong bytes in a regular (git sha1) file are refused the same way', async () => {
    const id = `org/small-${seed++}`;
    const content = Buffer.from('{"hidden_size": 768, "num_layers": 12}\n');
    hub.addRepo({ id, files: { 'config.json': content } });
    const url = `${mirror.url}/${id}/resolve/main/config.json`;
    const fault = hub.setFault({ server: 'hub', method: 'GET', pathIncludes: `${id}/resolve/` }, { kind: 'wrongBytes', times: 1 });
    const bad = await download(url);
    expect(bad.status === 200 && bad.complete).toBe(false);
    fault.remove();
    const good = await download(url);
    expect(good.complete).toBe(true);
    expect(good.body.equals(content)).toBe(true);
  });

  it('a short body with no resume left fails cleanly and is not stored', async () => {
    const strict = await startMirror(hub.url, { maxResumes: 0 });
    try {
      const id = `org/short-${seed}`;
      const content = makeContent(4 * MiB, seed++);
      hub.addRepo({ id, files: { 'w.safetensors': content } });
      const url = `${strict.url}/${id}/resolve/main/w.safetensors`;
      const fault = hub.setFault({ server: 'cdn', pathIncludes: sha256Hex(content) }, { kind: 'short', bytes: MiB, times: 1 });
      const bad = await download(url, { keepBody: false });
      expect(bad.status === 200 && bad.complete).toBe(false);
      expect(blobFiles(strict.dataDir)).toEqual([]);
      expect(stagingFiles(strict.dataDir)).toEqual([]);
      fault.remove();
      const good = await download(url, { keepBody: false });
      expect(good.sha256).toBe(sha256Hex(content));
    } finally {
      await strict.destroy();
    }
  });

  it('a dropped upstream connection is resumed with Range and a strong If-Range; waiters notice nothing', async () => {
    const f = lfsFile(16 * MiB);
    hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'drop', afterBytes: Math.floor(6.4 * MiB), times: 1 });
    const results = await Promise.all(Array.from({ length: 3 }, () => download(f.url, { keepBody: false })));
    for (const r of results) {
      expect(r.complete).toBe(true);
      expect(r.sha256).toBe(f.sha256);
    }
    const gets = hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(f.sha256));
    expect(gets).toHaveLength(2);
    const resume = gets[1]!;
    expect(resume.headers.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/\d+/.exec(String(resume.headers.range))![0])).toBeGreaterThan(0);
    expect(resume.headers['if-range']).toBe(`"${f.sha256}"`);
    expect(resume.hasAuthorization).toBe(false);
  });

  it('T12: the file changes upstream between a drop and the resume: no splice, nothing stored, the next request fills cleanly', async () => {
    const f = lfsFile(8 * MiB);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 2 * MiB, times: 1 });
    hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'drop', afterBytes: 4 * MiB, times: 1 });
    const client = download(f.url, { keepBody: false });
    await barrier.reached;
    // From now on upstream answers with another version (another strong ETag): If-Range fails.
    const changed = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'changedEtag' });
    barrier.release();
    const r = await client;
    expect(r.status === 200 && r.complete).toBe(false);
    const gets = hub.requests.filter((q) => q.server === 'cdn' && q.method === 'GET' && q.path.includes(f.sha256));
    expect(gets).toHaveLength(2);
    expect(gets[1]?.headers['if-range']).toBe(`"${f.sha256}"`);
    expect(gets[1]?.status).toBe(200); // upstream refused to continue the old version
    expect(blobFiles(mirror.dataDir)).not.toContain(f.sha256);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    changed.remove();
    const good = await download(f.url, { keepBody: false });
    expect([good.status, good.sha256]).toEqual([200, f.sha256]);
  });

  it('an upstream error on the body GET becomes a clean error response, and is not remembered', async () => {
    const f = lfsFile(MiB);
    const fault = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'status', status: 500 });
    const bad = await download(f.url);
    expect(bad.status).toBe(502);
    expect(header(bad, 'x-error-code')).toBeDefined();
    // Retried (upstreamRetries, default 3, with backoff) before the client is told.
    expect(hub.count(f.cdnFilter)).toBe(4);
    fault.remove();
    const good = await download(f.url, { keepBody: false });
    expect(good.status).toBe(200);
    expect(good.sha256).toBe(f.sha256);
  });
});

describe('restart', () => {
  it('a blob committed by one process is served by the next with no upstream file request', async () => {
    const f = lfsFile(2 * MiB);
    const first = await download(f.url, { keepBody: false });
    const commit = header(first, 'x-repo-commit')!;
    const dataDir = mirror.dataDir;
    await mirror.close();
    mirror = await startMirror(hub.url, { dataDir });
    const before = hub.requests.length;
    const again = await download(`${mirror.url}/${f.id}/resolve/${commit}/model.safetensors`, { keepBody: false });
    expect(again.sha256).toBe(f.sha256);
    expect(header(again, 'x-mirror-cache')).toBe('hit');
    // The new process only re-decides, once per repo and auth TTL, that the repo is still public.
    expect(hub.requests.slice(before).map((r) => `${r.method} ${r.path}`)).toEqual([`GET /api/models/${f.id}`]);
    const third = await download(`${mirror.url}/${f.id}/resolve/${commit}/config.json`, { keepBody: false });
    expect(third.status).toBe(200);
  });
});
