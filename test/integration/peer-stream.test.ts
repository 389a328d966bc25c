/**
 * Streaming across replicas: two real mirrors on 127.0.0.1 (fs storage each, separate data dirs,
 * the same clusterSecret) and one fake hub. Mirror B is told (the `peerFor` hook, which the fill
 * leases will drive) to fill a blob from mirror A's internal endpoint while A fills it from the
 * hub. Ordering is asserted by events (a barrier in A's upstream body), never by timing.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirrorProcess } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';
import type { Config } from '../../src/config/config.js';
import type { ServerEnvironment } from '../../src/server.js';

const MiB = 1024 * 1024;
const SIZE = 48 * MiB;
let seed = 14_400;
const cleanup: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const newSecret = (): string => `cluster-${randomBytes(16).toString('hex')}`;

async function hub(): Promise<FakeHub> {
  const h = await startFakeHub();
  cleanup.push(() => h.stop());
  return h;
}

// Barriers hold upstream bodies on purpose; a client waiting at a held connection would have it
// replaced after upstreamStallSeconds (segmented.test.ts tests that), and these tests count the
// requests and hold the moments: no stall takeovers here.
async function mirror(h: FakeHub, overrides: Partial<Config> = {}, env: ServerEnvironment = {}): Promise<TestMirror> {
  const m = await startMirror(h.url, { upstreamStallSeconds: 0, ...overrides }, env);
  cleanup.push(() => m.destroy());
  return m;
}

/** A mirror that fills every miss from the replica at `peerUrl` (what a lease naming that owner will say). */
function fromPeer(peerUrl: () => string): ServerEnvironment {
  return { peerFor: () => ({ url: new URL(peerUrl()) }) };
}

function addFile(h: FakeHub, size = SIZE) {
  const id = `org/peer-${seed}`;
  const content = makeContent(size, seed++);
  h.addRepo({ id, files: { 'model.safetensors': content } });
  const sha256 = h.fileInfo({ id }, 'model.safetensors').sha256;
  return { id, size, content, sha256, key: `sha256:${sha256}`, path: `/${id}/resolve/main/model.safetensors` };
}

type File = ReturnType<typeof addFile>;

/** GETs of the file's bytes upstream: the hub's resolve GETs (HEADs not counted) and the CDN GETs. */
const fileGets = (h: FakeHub, f: File) => ({
  // The mirror asks for the commit-pinned path, /<id>/resolve/<commit>/model.safetensors.
  hub: h.count({ server: 'hub', method: 'GET', pathIncludes: `/${f.id}/resolve/` }),
  cdn: h.requests.filter((q) => q.server === 'cdn' && q.method === 'GET' && q.path.includes(f.sha256)),
});

const stored = (m: { dataDir: string }, sha256: string): boolean =>
  fs.existsSync(path.join(m.dataDir, 'blobs-v1', 'sha256', sha256.slice(0, 2), sha256.slice(2, 4), sha256));

async function metric(m: TestMirror, name: string): Promise<number> {
  const text = await (await fetch(`${m.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

const peerBlob = (base: string, key: string): string => `${base}/internal/v1/blobs/${key}`;

describe('a replica streams another replica’s running fill', () => {
  it('B fills from A while A fills from upstream: one upstream GET, right bytes on both, B’s client gets bytes before A’s fill ends', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h);
    const a = await mirror(h, { clusterSecret: secret });
    const b = await mirror(h, { clusterSecret: secret }, fromPeer(() => a.url));
    h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'throttle', bytesPerSecond: 64 * MiB });
    const half = 24 * MiB;
    const barrier = h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'barrier', atBytes: half, times: 1 });

    const onA = download(`${a.url}${f.path}`, { keepBody: false });
    await barrier.reached;
    let bReceived = 0;
    const onB = download(`${b.url}${f.path}`, { keepBody: false, onProgress: (n) => (bReceived = n) });
    // A's upstream body is held at the barrier: whatever B's client gets now came while A's fill ran.
    await waitFor(() => bReceived >= half, { what: "B's client to receive the half A holds" });
    expect(await metric(a, 'hubcache_fills_in_progress')).toBe(1);
    expect(stored(a, f.sha256)).toBe(false);
    expect(bReceived).toBeLessThan(f.size);
    barrier.release();

    const [ra, rb] = await Promise.all([onA, onB]);
    expect([ra.status, ra.complete, ra.sha256]).toEqual([200, true, f.sha256]);
    expect([rb.status, rb.complete, rb.sha256, header(rb, 'x-mirror-cache')]).toEqual([200, true, f.sha256, 'miss']);
    const gets = fileGets(h, f);
    expect(gets.hub).toBe(1); // A's; B resolved the file with a HEAD only
    expect(gets.cdn.map((q) => q.headers.range)).toEqual([undefined]);
    await waitFor(() => stored(b, f.sha256), { what: 'B to store the blob' });
    expect(stored(a, f.sha256)).toBe(true);
    // B read A's endpoint: one stream (B does not segment against a peer).
    expect(a.logs.filter((l) => l.includes(`/internal/v1/blobs/${f.key}`))).toHaveLength(1);
    for (const line of [...a.logs, ...b.logs]) expect(line).not.toContain(secret);
  });

  it('a peer that neither holds nor fills the blob (404) hands the fill to upstream at once', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h, 16 * MiB);
    const a = await mirror(h, { clusterSecret: secret });
    const b = await mirror(h, { clusterSecret: secret }, fromPeer(() => a.url));
    const r = await download(`${b.url}${f.path}`, { keepBody: false });
    expect([r.status, r.complete, r.sha256]).toEqual([200, true, f.sha256]);
    expect(fileGets(h, f).cdn.map((q) => q.headers.range)).toEqual([undefined]);
    expect(a.logs.some((l) => l.includes(`/internal/v1/blobs/${f.key}`) && l.includes('"status":404'))).toBe(true);
    expect(stored(a, f.sha256)).toBe(false); // asking A never started a fill there
    await waitFor(() => stored(b, f.sha256), { what: 'B to store the blob' });
  });

  it('a Range far ahead on B is answered while A’s fill is held near the start: B asks A for it, A asks upstream', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h);
    const a = await mirror(h, { clusterSecret: secret });
    const b = await mirror(h, { clusterSecret: secret }, fromPeer(() => a.url));
    const barrier = h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'barrier', atBytes: 4 * MiB, times: 1 });
    const onA = download(`${a.url}${f.path}`, { keepBody: false });
    await barrier.reached;

    const start = 40 * MiB;
    const end = 44 * MiB - 1;
    const r = await download(`${b.url}${f.path}`, { headers: { range: `bytes=${start}-${end}` } });
    expect([r.status, r.complete, header(r, 'content-range')]).toEqual([206, true, `bytes ${start}-${end}/${f.size}`]);
    expect(sha256Hex(r.body)).toBe(sha256Hex(f.content.subarray(start, end + 1)));
    // Still held: these bytes came from A's demand on its own fill, not from its first stream.
    expect(stored(a, f.sha256)).toBe(false);
    const cdn = fileGets(h, f).cdn;
    expect(cdn).toHaveLength(2);
    const rangeStart = Number(/^bytes=(\d+)-/.exec(String(cdn[1]?.headers.range))?.[1]);
    expect(rangeStart).toBeGreaterThan(4 * MiB);
    expect(rangeStart).toBeLessThanOrEqual(start);

    barrier.release();
    const ra = await onA;
    expect([ra.complete, ra.sha256]).toEqual([true, f.sha256]);
    // Committed, not just renamed into place: the blob file appears a moment before the index row
    // and the end of the fill, and a request in between joins the fill instead of hitting.
    await waitFor(async () => stored(b, f.sha256) && (await metric(b, 'hubcache_fills_in_progress')) === 0, { what: 'B to complete its fill from A' });
    const whole = await download(`${b.url}${f.path}`, { keepBody: false });
    expect([whole.complete, whole.sha256, header(whole, 'x-mirror-cache')]).toEqual([true, f.sha256, 'hit']);
    expect(fileGets(h, f).cdn).toHaveLength(2);
  });

  it('wrong bytes from a peer are caught by B’s verification: nothing stored, the client is cut', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h, 16 * MiB);
    const flipped = Buffer.from(f.content.map((x) => x ^ 0xff));
    const asked: Array<string | undefined> = [];
    const fake: Server = createServer((req, res) => {
      asked.push(req.headers.authorization);
      res.writeHead(200, {
        'content-length': String(f.size),
        etag: `"${f.key}"`,
        'x-blob-key': f.key,
        'x-blob-size': String(f.size),
        'x-peer-source': 'filling',
      });
      res.end(flipped);
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => fake.close(() => resolve())));
    const fakeUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
    const b = await mirror(h, { clusterSecret: secret }, fromPeer(() => fakeUrl));

    const r = await download(`${b.url}${f.path}`, { keepBody: false });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    expect(r.sha256).not.toBe(f.sha256);
    expect(asked).toEqual([`Bearer ${secret}`]);
    await waitFor(async () => (await metric(b, 'hubcache_fills_in_progress')) === 0, { what: "B's fill to end" });
    expect(stored(b, f.sha256)).toBe(false);
    expect(fs.readdirSync(path.join(b.dataDir, 'staging'))).toEqual([]);
    expect(fileGets(h, f)).toEqual({ hub: 0, cdn: [] });
    expect(b.logs.some((l) => l.includes('fill failed') && l.includes('IntegrityError'))).toBe(true);
  });

  it('A is killed at 40 %: B’s fill continues from upstream at its offset, its client sees one correct download', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h);
    const dataDirA = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-peer-a-'));
    cleanup.push(async () => fs.rmSync(dataDirA, { recursive: true, force: true }));
    const a = await startMirrorProcess(h.url, dataDirA, { HUBCACHE_CLUSTER_SECRET: secret, HUBCACHE_UPSTREAM_STALL_SECONDS: '0' });
    cleanup.push(() => a.kill());
    const b = await mirror(h, { clusterSecret: secret }, fromPeer(() => a.url));
    const at = Math.floor((0.4 * f.size) / (64 * 1024)) * 64 * 1024;
    const barrier = h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'barrier', atBytes: at, times: 1 });

    const onA = download(`${a.url}${f.path}`, { keepBody: false });
    await barrier.reached;
    let bReceived = 0;
    const onB = download(`${b.url}${f.path}`, { keepBody: false, onProgress: (n) => (bReceived = n) });
    await waitFor(() => bReceived >= at, { what: "B's client to receive what A holds" });
    await a.kill('SIGKILL');
    expect((await onA).complete).toBe(false);

    const rb = await onB;
    expect([rb.status, rb.complete, rb.sha256]).toEqual([200, true, f.sha256]);
    const cdn = fileGets(h, f).cdn;
    // A's whole GET, then B's GET of exactly the rest.
    expect(cdn.map((q) => q.headers.range)).toEqual([undefined, `bytes=${at}-`]);
    await waitFor(() => stored(b, f.sha256), { what: 'B to store the blob' });
    expect(b.logs.some((l) => l.includes('fill continues from the next upstream'))).toBe(true);
    for (const line of [...a.output, ...b.logs]) expect(line).not.toContain(secret);
  });
});

describe('the internal endpoint', () => {
  it('needs the secret (401 without, 403 with another), serves stored blobs whole and ranged, 404 for a cold blob without asking upstream, does not exist without a clusterSecret, never logs the secret', async () => {
    const h = await hub();
    const secret = newSecret();
    const f = addFile(h, 16 * MiB);
    const cold = addFile(h, 16 * MiB);
    const a = await mirror(h, { clusterSecret: secret });
    const plain = await mirror(h);
    const first = await download(`${a.url}${f.path}`, { keepBody: false });
    expect(first.sha256).toBe(f.sha256);
    const auth = { authorization: `Bearer ${secret}` };

    const none = await download(peerBlob(a.url, f.key), { keepBody: false });
    expect([none.status, header(none, 'x-error-code')]).toEqual([401, 'ClusterSecretRequired']);
    expect(header(none, 'access-control-allow-origin')).toBeUndefined();
    const wrong = await download(peerBlob(a.url, f.key), { headers: { authorization: `Bearer ${newSecret()}` }, keepBody: false });
    expect([wrong.status, header(wrong, 'x-error-code')]).toEqual([403, 'ClusterSecretRejected']);
    const notBearer = await download(peerBlob(a.url, f.key), { headers: { authorization: `Basic ${Buffer.from(`x:${secret}`).toString('base64')}` }, keepBody: false });
    expect(notBearer.status).toBe(403);

    const whole = await download(peerBlob(a.url, f.key), { headers: auth, keepBody: false });
    expect([whole.status, whole.complete, whole.sha256]).toEqual([200, true, f.sha256]);
    expect([header(whole, 'x-blob-key'), header(whole, 'x-blob-size'), header(whole, 'etag'), header(whole, 'x-peer-source')]).toEqual([f.key, String(f.size), `"${f.key}"`, 'stored']);
    const part = await download(peerBlob(a.url, f.key), { headers: { ...auth, range: 'bytes=100-199' } });
    expect([part.status, header(part, 'content-range'), header(part, 'content-length')]).toEqual([206, `bytes 100-199/${f.size}`, '100']);
    expect(part.body.equals(f.content.subarray(100, 200))).toBe(true);
    const tail = await download(peerBlob(a.url, f.key), { headers: { ...auth, range: `bytes=${f.size - 10}-` } });
    expect([tail.status, header(tail, 'content-range')]).toEqual([206, `bytes ${f.size - 10}-${f.size - 1}/${f.size}`]);
    // If-Range with another validator: the whole blob.
    const stale = await download(peerBlob(a.url, f.key), { headers: { ...auth, range: 'bytes=0-9', 'if-range': '"other"' }, keepBody: false });
    expect([stale.status, stale.sha256]).toEqual([200, f.sha256]);
    const two = await download(peerBlob(a.url, f.key), { headers: { ...auth, range: 'bytes=0-9,20-29' }, keepBody: false });
    expect(two.status).toBe(416);
    const head = await download(peerBlob(a.url, f.key), { method: 'HEAD', headers: auth });
    expect([head.status, header(head, 'content-length'), head.body.length]).toEqual([200, String(f.size), 0]);
    const bad = await download(peerBlob(a.url, 'sha256:xyz'), { headers: auth, keepBody: false });
    expect(bad.status).toBe(400);

    h.resetCounters();
    const coldGet = await download(peerBlob(a.url, cold.key), { headers: auth, keepBody: false });
    const coldHead = await download(peerBlob(a.url, cold.key), { method: 'HEAD', headers: auth });
    expect([coldGet.status, coldHead.status]).toEqual([404, 404]);
    expect(h.requests).toEqual([]);
    expect(await metric(a, 'hubcache_fills_in_progress')).toBe(0);
    expect(stored(a, cold.sha256)).toBe(false);

    const absent = await download(peerBlob(plain.url, f.key), { headers: auth, keepBody: false });
    expect(absent.status).toBe(404);
    expect(header(absent, 'x-error-code')).toBeUndefined();

    expect(a.logs.some((l) => l.includes('/internal/v1/blobs/'))).toBe(true);
    for (const line of [...a.logs, ...plain.logs]) expect(line).not.toContain(secret);
  });
});
