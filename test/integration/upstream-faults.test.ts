/**
 * Upstream faults (test plan F3, F4, S8; T23, T24, T25): 429/5xx with Retry-After, stalled and
 * trickling upstreams, redirects to where the mirror must not go.
 *
 * The mirror runs in this process (startMirror), so /proc/self/fd counts its descriptors too.
 * Timeouts are short (config overrides) to keep the file fast.
 */
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub, type RecordedRequest } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
let seed = 500;
/** Arrival time of every request the fake hub records (performance.now()). */
const arrivedAt = new WeakMap<RecordedRequest, number>();

beforeAll(async () => {
  hub = await startFakeHub();
  const requests = hub.requests;
  const push = requests.push.bind(requests);
  requests.push = (...items: RecordedRequest[]) => {
    for (const r of items) arrivedAt.set(r, performance.now());
    return push(...items);
  };
});
afterAll(async () => {
  await hub?.stop();
});

/** Measured numbers, printed with the test output. */
function note(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** A fresh repo with one LFS file of `size` bytes. */
function lfsFile(mirrorUrl: string, size: number) {
  const id = `org/faults-${seed}`;
  const content = makeContent(size, seed++);
  hub.addRepo({ id, files: { 'model.safetensors': content } });
  const info = hub.fileInfo({ id }, 'model.safetensors');
  return {
    id,
    sha256: info.sha256,
    url: `${mirrorUrl}/${id}/resolve/main/model.safetensors`,
    hubGet: { server: 'hub' as const, method: 'GET', pathIncludes: `/${id}/resolve/` },
    hubHead: { server: 'hub' as const, method: 'HEAD', pathIncludes: `/${id}/resolve/` },
    cdnGet: { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 },
  };
}

function requestsMatching(filter: { server: 'hub' | 'cdn'; method: string; pathIncludes: string }): RecordedRequest[] {
  return hub.requests.filter((r) => r.server === filter.server && r.method === filter.method && (r.path.includes(filter.pathIncludes) || decodeURIComponent(r.path).includes(filter.pathIncludes)));
}

/**
 * The waits the mirror announced before retrying (its "upstream busy: retrying" log lines for
 * `what`), in order.
 */
function announcedWaits(m: TestMirror, what: string): number[] {
  return m.logs
    .filter((l) => l.includes('upstream busy: retrying') && l.includes(what))
    .map((l) => (JSON.parse(l) as { waitMs: number }).waitMs);
}

/**
 * A retry never comes before the wait upstream asked for: the gaps between attempts are at least
 * that long (less 10 ms of timer granularity). A lower bound only: a slow machine lengthens gaps.
 */
const MIN_GAP_MS = 1000 - 10;

/** Milliseconds between consecutive matching requests. */
function gapsMs(filter: Parameters<typeof requestsMatching>[0]): number[] {
  const times = requestsMatching(filter).map((r) => arrivedAt.get(r) ?? NaN);
  return times.slice(1).map((t, i) => t - (times[i] ?? NaN));
}

function blobCount(dataDir: string): number {
  const root = path.join(dataDir, 'blobs-v1');
  if (!fs.existsSync(root)) return 0;
  return fs.readdirSync(root, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length;
}
const stagingFiles = (dataDir: string) => fs.readdirSync(path.join(dataDir, 'staging'));

interface FdSnapshot {
  total: number;
  sockets: number;
  /** Descriptors open on staging files (partial downloads). */
  staging: number;
}

function fds(dataDir: string): FdSnapshot {
  const snap: FdSnapshot = { total: 0, sockets: 0, staging: 0 };
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = fs.readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the directory listing's own descriptor, already closed
    }
    snap.total++;
    if (target.startsWith('socket:')) snap.sockets++;
    else if (target.startsWith(path.join(dataDir, 'staging'))) snap.staging++;
  }
  return snap;
}

/** Polls until the descriptor count is back to `baseline` (or `ms` passed); returns the last snapshot. */
async function fdsSettle(dataDir: string, baseline: FdSnapshot, ms = 8_000): Promise<FdSnapshot> {
  const deadline = performance.now() + ms;
  let snap = fds(dataDir);
  while ((snap.total > baseline.total || snap.staging > 0) && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    snap = fds(dataDir);
  }
  return snap;
}

/** `n` concurrent downloads over their own connection pool, closed afterwards (no client sockets left). */
async function herd(url: string, n: number, headers: Record<string, string> = {}): Promise<Download[]> {
  const agent = new Agent({ connections: n });
  try {
    return await Promise.all(Array.from({ length: n }, () => download(url, { keepBody: false, dispatcher: agent, headers })));
  } finally {
    await agent.close();
  }
}

// ---------------------------------------------------------------------------------------------
// T24: 429 / 5xx with Retry-After
// ---------------------------------------------------------------------------------------------

describe('T24: 429 and 5xx with Retry-After', () => {
  let mirror: TestMirror;
  beforeAll(async () => {
    // A start wait longer than the whole retry budget (4 attempts, Retry-After: 1), so that a
    // spent budget still reaches the clients as an error status rather than as a cut body.
    mirror = await startMirror(hub.url, { fillStartWaitMs: 6000 });
  });
  afterAll(async () => {
    await mirror?.destroy();
  });

  it('503 with Retry-After: 1 twice on the resolve GET, then 200: 50 waiters, 3 upstream attempts ≥ 1 s apart, all succeed', async () => {
    const f = lfsFile(mirror.url, 4 * MiB);
    const fault = hub.setFault(f.hubGet, { kind: 'status', status: 503, retryAfter: 1, times: 2 });
    const all = await herd(f.url, 50);
    fault.remove();
    for (const d of all) {
      expect(d.status).toBe(200);
      expect(d.complete).toBe(true);
      expect(d.sha256).toBe(f.sha256);
    }
    expect(hub.count(f.hubGet)).toBe(3);
    expect(hub.count(f.cdnGet)).toBe(1);
    expect(hub.count(f.hubHead)).toBe(1);
    // Retry-After: 1 was honoured: the mirror chose waits of at least 1 s, and kept to them.
    const waits = announcedWaits(mirror, f.id);
    expect(waits).toHaveLength(2);
    for (const w of waits) expect(w).toBeGreaterThanOrEqual(1000);
    const gaps = gapsMs(f.hubGet);
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(MIN_GAP_MS);
    note(`T24 503×2: upstream GET gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms (announced waits ${waits.join(', ')} ms)`);
  });

  it('429 with Retry-After: 1 twice on the CDN GET, then 200: the whole chain is asked again (fresh signed URL), 3 attempts, 50 succeed', async () => {
    const f = lfsFile(mirror.url, 4 * MiB);
    const fault = hub.setFault(f.cdnGet, { kind: 'status', status: 429, retryAfter: 1, times: 2 });
    const all = await herd(f.url, 50);
    fault.remove();
    expect(all.every((d) => d.status === 200 && d.complete && d.sha256 === f.sha256)).toBe(true);
    expect(hub.count(f.cdnGet)).toBe(3);
    expect(hub.count(f.hubGet)).toBe(3);
    const cdnUrls = new Set(requestsMatching(f.cdnGet).map((r) => r.path));
    expect(cdnUrls.size).toBe(3);
    for (const w of announcedWaits(mirror, f.sha256)) expect(w).toBeGreaterThanOrEqual(1000);
    const gaps = gapsMs(f.cdnGet);
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(MIN_GAP_MS);
    note(`T24 429×2 on CDN: upstream CDN GET gaps ${gaps.map((g) => g.toFixed(0)).join(', ')} ms`);
  });

  it('429 with Retry-After: 1 on the metadata HEAD: one HEAD per attempt for 20 clients, then all succeed', async () => {
    const f = lfsFile(mirror.url, MiB);
    const fault = hub.setFault(f.hubHead, { kind: 'status', status: 429, retryAfter: 1, times: 1 });
    const all = await herd(f.url, 20);
    fault.remove();
    expect(all.every((d) => d.status === 200 && d.sha256 === f.sha256)).toBe(true);
    expect(hub.count(f.hubHead)).toBe(2);
    for (const g of gapsMs(f.hubHead)) expect(g).toBeGreaterThanOrEqual(MIN_GAP_MS);
  });

  it('when the budget runs out clients get the 503 with its Retry-After; nothing is cached; after recovery the next request is a clean miss', async () => {
    const f = lfsFile(mirror.url, 4 * MiB);
    const blobsBefore = blobCount(mirror.dataDir);
    const fault = hub.setFault(f.hubGet, { kind: 'status', status: 503, retryAfter: 1 });
    const all = await herd(f.url, 10);
    for (const d of all) {
      expect(d.status).toBe(503);
      expect(header(d, 'retry-after')).toBe('1');
      expect(header(d, 'x-error-code')).toBe('UpstreamUnavailable');
    }
    // 1 + upstreamRetries (3) attempts for the blob, however many clients.
    expect(hub.count(f.hubGet)).toBe(4);
    expect(blobCount(mirror.dataDir)).toBe(blobsBefore);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    fault.remove();
    const before = hub.count(f.hubGet);
    const again = await download(f.url, { keepBody: false });
    expect([again.status, again.sha256, header(again, 'x-mirror-cache')]).toEqual([200, f.sha256, 'miss']);
    expect(hub.count(f.hubGet)).toBe(before + 1);
  });

  it('a Retry-After longer than upstreamRetryMaxWaitSeconds is passed to the client at once', async () => {
    const f = lfsFile(mirror.url, MiB);
    const fault = hub.setFault(f.hubGet, { kind: 'status', status: 429, retryAfter: 120 });
    const d = await download(f.url);
    fault.remove();
    // One attempt, no wait announced: the 429 went to the client as upstream gave it.
    expect([d.status, header(d, 'retry-after')]).toEqual([429, '120']);
    expect(hub.count(f.hubGet)).toBe(1);
    expect(announcedWaits(mirror, f.id)).toEqual([]);
  });

  it("the Hub's RateLimit header (no Retry-After) is understood and turned into a Retry-After", async () => {
    const f = lfsFile(mirror.url, MiB);
    const fault = hub.setFault(f.hubHead, { kind: 'status', status: 429, headers: { RateLimit: '"resolvers";r=0;t=90', 'RateLimit-Policy': '"resolvers";q=3000;w=300' } });
    const d = await download(f.url);
    fault.remove();
    expect([d.status, header(d, 'retry-after')]).toEqual([429, '90']);
    expect(hub.count(f.hubHead)).toBe(1);
  });

  it('metadata retries stay inside the metadata timeout', async () => {
    // 2.6 s: after an attempt at ~1 s, another wait of 1 s plus time for an attempt (a quarter of
    // the timeout) cannot fit, however fast this machine is.
    const m = await startMirror(hub.url, { metadataTimeoutSeconds: 2.6 });
    try {
      const f = lfsFile(m.url, MiB);
      const fault = hub.setFault(f.hubHead, { kind: 'status', status: 503, retryAfter: 1 });
      const d = await download(f.url);
      fault.remove();
      // Upstream's own 503 and Retry-After: the mirror gave up before its timeout (waiting into
      // it would have ended in a 504 UpstreamTimeout).
      expect([d.status, header(d, 'retry-after'), header(d, 'x-error-code')]).toEqual([503, '1', 'UpstreamUnavailable']);
      // The first attempt, and a retry after ~1 s if the first answer came in time for one.
      expect(hub.count(f.hubHead)).toBeGreaterThanOrEqual(1);
      expect(hub.count(f.hubHead)).toBeLessThanOrEqual(2);
      const api = `${m.url}/api/models/${f.id}/revision/main?expand=downloads`;
      const apiFault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${f.id}/revision/main` }, { kind: 'status', status: 503, retryAfter: 1, times: 1 });
      const answer = await download(api);
      apiFault.remove();
      expect(answer.status).toBe(200);
    } finally {
      await m.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// T25: stalled or trickling upstream
// ---------------------------------------------------------------------------------------------

describe('T25: stalled or trickling upstream', () => {
  let mirror: TestMirror;
  beforeAll(async () => {
    // Short windows to keep the file quick, but not so short that a busy machine's pause in a
    // healthy transfer would look like a stall: 2 s.
    mirror = await startMirror(hub.url, {
      upstreamHeadersTimeoutSeconds: 2,
      upstreamIdleTimeoutSeconds: 2,
      upstreamMinBytesPerSecond: 100_000,
      maxResumes: 1,
      fillStartWaitMs: 5000,
    });
    // Warm the pools (HEAD and body connections) so the baseline includes them.
    const warm = lfsFile(mirror.url, MiB);
    expect((await herd(warm.url, 2))[0]?.status).toBe(200);
  });
  afterAll(async () => {
    await mirror?.destroy();
  });

  it('headers never come: the headers timeout fires, every waiter gets a 504 UpstreamTimeout, fds back to baseline', async () => {
    const f = lfsFile(mirror.url, 8 * MiB);
    const baseline = fds(mirror.dataDir);
    // Upstream would send headers after a minute: the 504s come from the 2 s headers timeout.
    const fault = hub.setFault(f.cdnGet, { kind: 'headerDelay', ms: 60_000 });
    const all = await herd(f.url, 5);
    fault.remove();
    for (const d of all) expect([d.status, header(d, 'x-error-code')]).toEqual([504, 'UpstreamTimeout']);
    expect(requestsMatching(f.cdnGet).map((r) => r.status)).toEqual([undefined]); // never answered
    expect(hub.count(f.cdnGet)).toBe(1);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    const after = await fdsSettle(mirror.dataDir, baseline);
    expect(after.staging).toBe(0);
    expect(after.total).toBeLessThanOrEqual(baseline.total);
    note(`T25 headers stall: fds ${baseline.total} → ${after.total} (sockets ${baseline.sockets} → ${after.sockets})`);
  });

  it('headers then silence, once: the idle timeout fires, the fill resumes with Range + If-Range and every waiter gets the right bytes', async () => {
    const f = lfsFile(mirror.url, 8 * MiB);
    const fault = hub.setFault(f.cdnGet, { kind: 'stall', afterBytes: 3 * MiB, times: 1 });
    const all = await herd(f.url, 5);
    fault.remove();
    for (const d of all) expect([d.status, d.complete, d.sha256]).toEqual([200, true, f.sha256]);
    const gets = requestsMatching(f.cdnGet);
    expect(gets).toHaveLength(2);
    expect(gets[1]?.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(gets[1]?.headers['if-range']).toBe(`"${f.sha256}"`);
  });

  it('headers then silence, every time: one resume per allowed attempt, then a clean failure; nothing stored, fds back to baseline', async () => {
    const f = lfsFile(mirror.url, 8 * MiB);
    const blobsBefore = blobCount(mirror.dataDir);
    const baseline = fds(mirror.dataDir);
    const fault = hub.setFault(f.cdnGet, { kind: 'stall', afterBytes: MiB });
    const all = await herd(f.url, 5);
    fault.remove();
    // Headers went out with the first bytes: the failure can only be a cut body, never a complete one.
    for (const d of all) {
      expect(d.status).toBe(200);
      expect(d.complete).toBe(false);
    }
    const gets = requestsMatching(f.cdnGet);
    expect(gets).toHaveLength(2); // the first GET + maxResumes (1)
    expect(gets[1]?.headers.range).toMatch(/^bytes=[1-9]\d*-$/);
    expect(blobCount(mirror.dataDir)).toBe(blobsBefore);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    expect(mirror.logs.some((l) => l.includes('fill failed') && l.includes('UpstreamTimeout'))).toBe(true);
    const after = await fdsSettle(mirror.dataDir, baseline);
    expect(after.staging).toBe(0);
    expect(after.total).toBeLessThanOrEqual(baseline.total);
    // The failure is not remembered.
    const again = await download(f.url, { keepBody: false });
    expect([again.status, again.complete, again.sha256]).toEqual([200, true, f.sha256]);
    note(`T25 body stall: fds ${baseline.total} → ${after.total}`);
  });

  it('a 20 KB/s trickle is dropped after one window and resumed at full speed', async () => {
    const f = lfsFile(mirror.url, 4 * MiB);
    const fault = hub.setFault(f.cdnGet, { kind: 'throttle', bytesPerSecond: 20_000, times: 1 });
    const all = await herd(f.url, 3);
    fault.remove();
    for (const d of all) expect([d.status, d.complete, d.sha256]).toEqual([200, true, f.sha256]);
    const gets = requestsMatching(f.cdnGet);
    expect(gets).toHaveLength(2);
    expect(gets[1]?.headers['if-range']).toBe(`"${f.sha256}"`);
    // The trickle was given up early (at 20 KB/s the whole file would take 200 s): the resume
    // fetched most of the file, from where the trickle had got to.
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(String(gets[1]?.headers.range))?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThan(4 * MiB / 2);
    expect(gets[1]!.bytesSent).toBe(4 * MiB - resumedAt);
  });

  it('a trickle that never ends fails cleanly after maxResumes, and fds return to baseline', async () => {
    const f = lfsFile(mirror.url, 4 * MiB);
    const baseline = fds(mirror.dataDir);
    const fault = hub.setFault(f.cdnGet, { kind: 'throttle', bytesPerSecond: 20_000 });
    const all = await herd(f.url, 3);
    fault.remove();
    for (const d of all) expect(d.complete).toBe(false);
    expect(hub.count(f.cdnGet)).toBe(2);
    expect(stagingFiles(mirror.dataDir)).toEqual([]);
    const after = await fdsSettle(mirror.dataDir, baseline);
    expect(after.total).toBeLessThanOrEqual(baseline.total);
  });

  it('connection refused: a miss fails at once with 503, nothing is remembered', async () => {
    const m = await startMirror('http://127.0.0.1:1', {});
    try {
      // Refused at once: 503 UpstreamUnavailable (a wait for a timeout would end in a 504).
      const d = await download(`${m.url}/org/x/resolve/main/config.json`);
      expect([d.status, header(d, 'x-error-code')]).toEqual([503, 'UpstreamUnavailable']);
    } finally {
      await m.destroy();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// T23: SSRF through upstream redirects and request headers
// ---------------------------------------------------------------------------------------------

describe('T23: redirects only to allowed hosts, never to private addresses', () => {
  let canary: Server;
  let canaryPort: number;
  let connections = 0;
  let mirror: TestMirror;
  let strict: TestMirror;

  beforeAll(async () => {
    canary = createServer((_req, res) => res.end('canary'));
    canary.on('connection', (s: Socket) => {
      connections++;
      s.destroy();
    });
    // Dual stack: reachable as 127.0.0.1, 127.0.0.2, localhost and [::1].
    await new Promise<void>((resolve) => canary.listen({ port: 0, host: '::', ipv6Only: false }, resolve));
    canaryPort = (canary.address() as AddressInfo).port;
    // The test default: loopback allowed (the fake CDN), allow-list = defaults + the upstream's host.
    mirror = await startMirror(hub.url);
    // Production default for private addresses; the allow-list admits the canary's names so
    // that only the address checks (literal, then DNS) stand between the mirror and it.
    strict = await startMirror(hub.url, { allowPrivateRedirects: false, allowedRedirectHosts: ['*.hf.co', 'localhost', '127.0.0.2', '[::1]', '169.254.169.254', '[::ffff:7f00:2]'] });
  });
  afterAll(async () => {
    await mirror?.destroy();
    await strict?.destroy();
    await new Promise<void>((resolve) => canary.close(() => resolve()));
  });

  async function redirectedTo(m: TestMirror, location: string): Promise<Download> {
    const f = lfsFile(m.url, 64 * 1024);
    const fault = hub.setFault(f.hubGet, { kind: 'redirect', location });
    try {
      return await download(f.url);
    } finally {
      fault.remove();
    }
  }

  it('refuses redirects to other hosts and schemes (allow-list): 502, canary untouched', async () => {
    const cases: Array<[string, RegExp]> = [
      [`http://127.0.0.2:${canaryPort}/latest`, /127\.0\.0\.2:\d+ is not in allowedRedirectHosts/],
      ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', /169\.254\.169\.254 is not in allowedRedirectHosts/],
      [`http://[::1]:${canaryPort}/`, /::1:\d+ is not in allowedRedirectHosts/],
      ['file:///etc/passwd', /file: URL refused/],
      [`gopher://127.0.0.2:${canaryPort}/_GET`, /gopher: URL refused/],
      [`http://canary.evil.example:${canaryPort}/`, /canary\.evil\.example:\d+ is not in allowedRedirectHosts/],
    ];
    for (const [location, message] of cases) {
      const d = await redirectedTo(mirror, location);
      expect([location, d.status, header(d, 'x-error-code')]).toEqual([location, 502, 'UpstreamError']);
      expect(header(d, 'x-error-message')).toMatch(message);
    }
    expect(connections).toBe(0);
  });

  it('refuses private addresses even on allowed hosts, as literals and after DNS (allowPrivateRedirects: false)', async () => {
    const cases: Array<[string, RegExp]> = [
      // The upstream's own host name is allowed, but not another port on a loopback address.
      [`http://127.0.0.1:${canaryPort}/`, /127\.0\.0\.1 is not a public address \(loopback/],
      [`http://127.0.0.2:${canaryPort}/`, /127\.0\.0\.2 is not a public address \(loopback/],
      [`http://[::1]:${canaryPort}/`, /::1 is not a public address \(loopback/],
      [`http://[::ffff:127.0.0.2]:${canaryPort}/`, /not a public address \(loopback/],
      ['http://169.254.169.254/latest/meta-data/', /169\.254\.169\.254 is not a public address \(link-local/],
      // A name: judged on the addresses the connection's own lookup returns (no rebinding window).
      [`http://localhost:${canaryPort}/`, /localhost resolves to (127\.0\.0\.1|::1), not a public address \(loopback/],
      // The fake CDN itself is on loopback: refused too, which is the production default.
      [`${hub.cdnUrl}/repos/x`, /127\.0\.0\.1 is not a public address/],
    ];
    for (const [location, message] of cases) {
      const d = await redirectedTo(strict, location);
      expect([location, d.status, header(d, 'x-error-code')]).toEqual([location, 502, 'UpstreamError']);
      expect(header(d, 'x-error-message')).toMatch(message);
    }
    expect(connections).toBe(0);
  });

  it('Host, X-Upstream and X-Forwarded-Host from the client never change the upstream', async () => {
    const f = lfsFile(mirror.url, 64 * 1024);
    const evil = `127.0.0.2:${canaryPort}`;
    const d = await download(f.url, { headers: { host: evil, 'x-upstream': `http://${evil}`, 'x-forwarded-host': evil, 'x-forwarded-proto': 'http' } });
    expect([d.status, d.sha256]).toEqual([200, f.sha256]);
    expect(hub.count(f.hubHead)).toBe(1);
    expect(hub.count(f.cdnGet)).toBe(1);
    expect(requestsMatching(f.hubHead)[0]?.headers.host).toBe(new URL(hub.url).host);
    expect(connections).toBe(0);
  });
});
