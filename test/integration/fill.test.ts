/**
 * One fill, every waiter: the cold-miss walk-through of design.md §2.3, asserted on the fake
 * hub's counters. Each test uses its own file so counters never mix.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { header as rawHeader, parseResponses, type RawResponse } from '../support/raw-http.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';

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

/**
 * `n` concurrent downloads of `url` while upstream holds the body at `heldAt` bytes: resolves once
 * every one of them has received bytes (so all of them stream from the one fill in flight, none
 * waits for another to finish), then releases upstream and returns their results.
 */
async function herdWhileHeld(f: { url: string; sha256: string }, n: number, heldAt: number): Promise<Download[]> {
  const barrier = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: heldAt });
  try {
    const received = new Array<number>(n).fill(0);
    const all = Promise.all(received.map((_, i) => download(f.url, { keepBody: false, onProgress: (bytes) => (received[i] = bytes) })));
    await barrier.reached;
    await waitFor(() => received.every((bytes) => bytes > 0), { what: `all ${n} clients to receive bytes while upstream is held` });
    // Upstream has sent `heldAt` bytes and no more: none of the clients can be past that.
    expect(Math.max(...received)).toBeLessThanOrEqual(heldAt);
    barrier.release();
    return await all;
  } finally {
    barrier.release();
    barrier.remove();
  }
}

/**
 * A GET over a raw socket with `Expect: 100-continue`: the server answers `100 Continue` as it
 * starts handling the request, so `started` tells the test the mirror has the request in hand.
 */
function rawGetWithContinue(url: string, extraHeaders: string[]): { started: Promise<void>; response: Promise<RawResponse | undefined> } {
  const u = new URL(url);
  const socket = net.connect({ host: u.hostname, port: Number(u.port) });
  const chunks: Buffer[] = [];
  let onStarted: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (onStarted = resolve));
  const response = new Promise<RawResponse | undefined>((resolve) => {
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (Buffer.concat(chunks).includes('HTTP/1.1 100 Continue')) onStarted();
    });
    socket.on('close', () => resolve(parseResponses(Buffer.concat(chunks)).filter((r) => r.status >= 200).at(0)));
    socket.on('error', () => undefined);
  });
  socket.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nExpect: 100-continue\r\n${extraHeaders.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`);
  return { started, response };
}

describe('one fill, every waiter', () => {
  it('11 concurrent cold GETs cost one upstream HEAD and one body GET, and all get the right bytes', async () => {
    const f = lfsFile(32 * MiB);
    const results = await herdWhileHeld(f, 11, 16 * MiB);
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.complete).toBe(true);
      expect(r.sha256).toBe(f.sha256);
    }
    expect(hub.count(f.cdnFilter)).toBe(1);
    expect(hub.count({ server: 'hub', method: 'HEAD', pathIncludes: `${f.id}/resolve/` })).toBe(1);
    const statuses = results.map((r) => header(r, 'x-mirror-cache')).sort();
    expect(statuses).toEqual(['joined', ...Array(9).fill('joined'), 'miss'].sort());
    // The 12th is a hit: no upstream at all (the branch was resolved a moment ago).
    const before = hub.requests.length;
    const hit = await download(f.url, { keepBody: false });
    expect(header(hit, 'x-mirror-cache')).toBe('hit');
    expect(hit.sha256).toBe(f.sha256);
    expect(hub.requests.length).toBe(before);
  });

  it('a herd of 11 on a 48 MiB file: one upstream GET, 11 correct sha256, all streaming from it together', async () => {
    // Below segmentMinBytes (64 MiB), so one GET (segmented herds: segmented.test.ts). Not one
    // after another: every client has bytes while upstream still holds the second half.
    const f = lfsFile(48 * MiB, 'herd.safetensors');
    const all = await herdWhileHeld(f, 11, 24 * MiB);
    for (const r of all) expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
    expect(hub.count(f.cdnFilter)).toBe(1);
    expect(hub.bytesSent(f.cdnFilter)).toBe(48 * MiB);
  });

  it('T09: a herd of 100 on one cold file: one upstream GET, 100 correct sha256, all served together, memory bounded', async () => {
    const size = 16 * MiB;
    const f = lfsFile(size, 'herd100.safetensors');
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 20);
    try {
      const all = await herdWhileHeld(f, 100, size / 2);
      for (const r of all) expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
      expect(hub.count(f.cdnFilter)).toBe(1);
      expect(hub.bytesSent(f.cdnFilter)).toBe(size);
      // The disk is the buffer: 100 readers cost buffers, not copies of the file (100 copies
      // would be 1.6 GB). This process also runs the 100 clients; 512 MiB is far above its noise.
      expect((rssPeak - rssBefore) / MiB).toBeLessThan(512);
    } finally {
      clearInterval(sampler);
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
      // A range far past the stream's position gets its headers at once, and the fill fetches its
      // bytes with a ranged GET of their own while the stream is still held (the file's last byte
      // waits for the verification, so its body ends after the release).
      const tail = await request(f.url, { headers: { range: 'bytes=-1024' } });
      expect(tail.statusCode).toBe(206);
      expect(tail.headers['content-range']).toBe(`bytes ${16 * MiB - 1024}-${16 * MiB - 1}/${16 * MiB}`);
      const cdnGets = () => hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(f.sha256));
      await waitFor(() => cdnGets().length === 2, { what: 'the ranged GET for the far range' });
      expect(cdnGets()[0]?.endedAt).toBeUndefined(); // the stream is still held at the barrier
      expect(cdnGets()[1]?.headers.range).toMatch(/^bytes=\d+-$/);
      expect(cdnGets()[1]?.headers['if-range']).toBe(`"${f.sha256}"`);
      barrier.release();
      const [tailBody, all] = await Promise.all([tail.body.arrayBuffer(), full]);
      expect(Buffer.from(tailBody).equals(f.content.subarray(16 * MiB - 1024))).toBe(true);
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
      // The fill lands on its own: the blob becomes a hit.
      await waitFor(async () => header(await download(f.url, { method: 'HEAD' }), 'x-mirror-cache') === 'hit', { what: 'the fill without clients to commit' });
      const again = await download(f.url, { keepBody: false });
      expect(header(again, 'x-mirror-cache')).toBe('hit');
      expect(again.sha256).toBe(f.sha256);
      expect(hub.count(f.cdnFilter)).toBe(1);
      expect(stagingFiles(mirror.dataDir)).toEqual([]);
    } finally {
      throttle.remove();
    }
  });

  it('headers that go out before the fill has a staging file (fillStartWaitMs 0): every client still gets every byte', async () => {
    // With no wait at all, responses start while their fills are still creating staging files
    // (the race T28 hit when a queued fill got its slot just as its clients' wait ran out).
    const eager = await startMirror(hub.url, { fillStartWaitMs: 0 });
    try {
      const files = Array.from({ length: 20 }, () => lfsFile(2 * MiB));
      const results = await Promise.all(files.map((f) => download(f.url.replace(mirror.url, eager.url), { keepBody: false })));
      expect(results.map((r, i) => [r.status, r.complete, r.error, r.sha256 === files[i]!.sha256])).toEqual(files.map(() => [200, true, undefined, true]));
    } finally {
      await eager.destroy();
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
    // The CDN would take a minute to answer: a HEAD that started a download would wait for it.
    const slow = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'headerDelay', ms: 60_000 });
    try {
      const head = await download(f.url, { method: 'HEAD' });
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
    // Metadata first (a HEAD starts nothing), so the probes below resolve from the index at once.
    expect((await download(f.url, { method: 'HEAD' })).status).toBe(200);
    // Upstream holds the first range's body: every probe the mirror takes in meanwhile must share it.
    const held = hub.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'barrier', atBytes: 0 });
    const sent = Array.from({ length: 20 }, () => rawGetWithContinue(f.url, ['Range: bytes=0-0']));
    let probes: Array<RawResponse | undefined>;
    try {
      await held.reached;
      await Promise.all(sent.map((p) => p.started));
      // Every probe is in the mirror's hands; let each finish its (in-memory) way to the range.
      await new Promise((resolve) => setImmediate(resolve));
      held.release();
      probes = await Promise.all(sent.map((p) => p.response));
    } finally {
      held.release();
      held.remove();
    }
    for (const p of probes) {
      expect(p?.status).toBe(206);
      expect(rawHeader(p!, 'content-range')).toBe(`bytes 0-0/${32 * MiB}`);
      expect(rawHeader(p!, 'x-mirror-cache')).toBe('bypass');
      expect(p!.body.equals(f.content.subarray(0, 1))).toBe(true);
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
