/**
 * `GET /metrics`: a real scrape of the mirror after real downloads, checked by Prometheus's own
 * `promtool check metrics` (format and naming conventions), and the counters followed through a
 * miss and a hit: bytes by source, upstream bytes equal to the file once, cache result labels.
 * Who may scrape: `metricsToken`, else the access keys. No repo or path ever appears in a label.
 *
 * The promtool test needs Debian's `prometheus` package (/usr/bin/promtool, or PROMTOOL_PATH):
 * without it that one test is skipped with a message saying so (never under CI=true).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';

const PROMTOOL = process.env.PROMTOOL_PATH ?? '/usr/bin/promtool';
// Under CI (which installs Debian's prometheus package) a missing promtool fails instead of hiding.
const havePromtool = fs.existsSync(PROMTOOL) || process.env.CI === 'true';
if (!havePromtool) process.stderr.write(`metrics.test.ts: the promtool check is skipped: no promtool at ${PROMTOOL} (apt-get install prometheus, or set PROMTOOL_PATH)\n`);

const REPO: RepoRef = { id: 'secret-org/gated-model-name' };
const WEIGHTS = makeContent(3 * 1024 * 1024 + 17, 121);
const CONFIG = Buffer.from('{"metrics": true}\n');

let hub: FakeHub | undefined;
let mirror: TestMirror | undefined;

afterEach(async () => {
  await mirror?.destroy();
  await hub?.stop();
  mirror = undefined;
  hub = undefined;
});

async function setup(overrides: Parameters<typeof startMirror>[1] = {}): Promise<{ hub: FakeHub; mirror: TestMirror }> {
  hub = await startFakeHub();
  hub.addRepo({ ...REPO, files: { 'model.safetensors': WEIGHTS, 'config.json': CONFIG } });
  mirror = await startMirror(hub.url, overrides);
  return { hub, mirror };
}

/** One sample of the exposition: `name{a="x",b="y"} value`. */
interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the sample named `name` whose labels include `labels` (0 when absent). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const s = samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s.reduce((n, x) => n + x.value, 0);
}

async function scrape(m: TestMirror, headers: Record<string, string> = {}): Promise<{ status: number; text: string; contentType: string | undefined }> {
  const res = await download(`${m.url}/metrics`, { headers });
  return { status: res.status, text: res.body.toString('utf8'), contentType: header(res, 'content-type') };
}

async function samples(m: TestMirror, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await scrape(m, headers);
  expect(res.status).toBe(200);
  return parse(res.text);
}

/** Scrapes until `done(samples)` holds: a response's counters are updated when it closes on the server, just after the client has it all. */
async function samplesWhen(m: TestMirror, what: string, done: (s: Sample[]) => boolean, headers: Record<string, string> = {}): Promise<Sample[]> {
  return waitFor(async () => {
    const s = await samples(m, headers);
    return done(s) ? s : undefined;
  }, { what, intervalMs: 20 });
}

const fileUrl = (m: TestMirror, path: string): string => `${m.url}/${REPO.id}/resolve/main/${path}`;

describe('GET /metrics', () => {
  it.skipIf(!havePromtool)(`passes promtool check metrics after traffic${havePromtool ? '' : ` (skipped: no promtool at ${PROMTOOL})`}`, async () => {
    const { mirror } = await setup();
    expect((await download(fileUrl(mirror, 'model.safetensors'))).status).toBe(200);
    expect((await download(fileUrl(mirror, 'model.safetensors'), { headers: { range: 'bytes=0-99' } })).status).toBe(206);
    expect((await download(fileUrl(mirror, 'missing.bin'))).status).toBe(404);
    expect((await download(`${mirror.url}/api/models/${REPO.id}`)).status).toBe(200);
    const { status, text, contentType } = await scrape(mirror);
    expect(status).toBe(200);
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    // promtool prints every format error or naming-convention problem and exits non-zero.
    expect({ status: check.status, stdout: check.stdout, stderr: check.stderr }).toEqual({ status: 0, stdout: '', stderr: '' });
  });

  it('exposes every family the operator needs, with the default process metrics', async () => {
    const { mirror } = await setup();
    const text = (await scrape(mirror)).text;
    const names = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
    for (const family of [
      'hubcache_http_requests_total',
      'hubcache_served_bytes_total',
      'hubcache_upstream_requests_total',
      'hubcache_upstream_bytes_total',
      'hubcache_fill_bytes_total',
      'hubcache_fills_total',
      'hubcache_fills_in_progress',
      'hubcache_fills_queued',
      'hubcache_disk_writes_in_progress',
      'hubcache_disk_writes_waiting',
      'hubcache_disk_write_waits_total',
      'hubcache_fill_resumes_total',
      'hubcache_upstream_retries_total',
      'hubcache_upstream_failovers_total',
      'hubcache_evictions_total',
      'hubcache_evicted_bytes_total',
      'hubcache_cache_used_bytes',
      'hubcache_cache_budget_bytes',
      'hubcache_disk_free_bytes',
      'hubcache_index_rows',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'hubcache_http_errors_total',
      'hubcache_http_first_byte_seconds',
      'nodejs_eventloop_lag_seconds',
      'nodejs_active_handles',
    ]) {
      expect(names, family).toContain(family);
    }
  });

  it('counts a miss then a hit: bytes by source, the file pulled from upstream once, cache result labels', async () => {
    const { hub, mirror } = await setup();
    const before = await samples(mirror);
    const fileReq = { route: 'file', method: 'GET', status: '200' };
    expect(value(before, 'hubcache_http_requests_total', fileReq)).toBe(0);
    expect(value(before, 'hubcache_upstream_bytes_total', { kind: 'file' })).toBe(0);

    const miss = await download(fileUrl(mirror, 'model.safetensors'));
    expect([miss.status, header(miss, 'x-mirror-cache'), miss.sha256]).toEqual([200, 'miss', sha256Hex(WEIGHTS)]);
    // Disk and index numbers are read at most once a second, and the index row may land a moment after the answer.
    const afterMiss = await samplesWhen(mirror, 'the miss counted', (s) => value(s, 'hubcache_http_requests_total', fileReq) === 1 && value(s, 'hubcache_cache_used_bytes') > 0);
    expect(value(afterMiss, 'hubcache_http_requests_total', { ...fileReq, cache: 'miss' })).toBe(1);
    expect(value(afterMiss, 'hubcache_served_bytes_total', { source: 'fill' })).toBe(WEIGHTS.length);
    expect(value(afterMiss, 'hubcache_served_bytes_total', { source: 'cache' })).toBe(0);
    expect(value(afterMiss, 'hubcache_upstream_bytes_total', { kind: 'file' })).toBe(WEIGHTS.length);
    expect(value(afterMiss, 'hubcache_fill_bytes_total')).toBe(WEIGHTS.length);
    expect(value(afterMiss, 'hubcache_fills_total', { outcome: 'started' })).toBe(1);
    expect(value(afterMiss, 'hubcache_fills_total', { outcome: 'committed' })).toBe(1);
    // One GET to the Hub, one to the CDN it redirects to: both counted as file requests; the
    // rest (the HEAD, API questions about the repo) as metadata.
    const fileGets = (): number => hub.count({ server: 'hub', method: 'GET', pathIncludes: '/resolve/' }) + hub.count({ server: 'cdn' });
    const upstreamGets = fileGets();
    expect(upstreamGets).toBe(2);
    expect(value(afterMiss, 'hubcache_upstream_requests_total', { kind: 'file' })).toBe(upstreamGets);
    expect(value(afterMiss, 'hubcache_upstream_requests_total', { kind: 'metadata' })).toBe(hub.count() - upstreamGets);
    expect(value(afterMiss, 'hubcache_cache_used_bytes')).toBe(WEIGHTS.length);
    expect(value(afterMiss, 'hubcache_index_rows', { table: 'blobs' })).toBe(1);

    const hit = await download(fileUrl(mirror, 'model.safetensors'));
    expect([hit.status, header(hit, 'x-mirror-cache'), hit.sha256]).toEqual([200, 'hit', sha256Hex(WEIGHTS)]);
    const afterHit = await samplesWhen(mirror, 'the hit counted', (s) => value(s, 'hubcache_http_requests_total', fileReq) === 2);
    expect(value(afterHit, 'hubcache_http_requests_total', { ...fileReq, cache: 'hit' })).toBe(1);
    expect(value(afterHit, 'hubcache_http_requests_total', { ...fileReq, cache: 'miss' })).toBe(1);
    expect(value(afterHit, 'hubcache_served_bytes_total', { source: 'cache' })).toBe(WEIGHTS.length);
    expect(value(afterHit, 'hubcache_served_bytes_total', { source: 'fill' })).toBe(WEIGHTS.length);
    // The hit cost upstream nothing: still the file's size, once.
    expect(value(afterHit, 'hubcache_upstream_bytes_total', { kind: 'file' })).toBe(WEIGHTS.length);
    expect(fileGets()).toBe(upstreamGets);
    expect(value(afterHit, 'hubcache_fills_total', { outcome: 'started' })).toBe(1);
    // Both GETs were timed to their first byte, under their cache results.
    expect(value(afterHit, 'hubcache_http_first_byte_seconds_count', { method: 'GET', route: 'file', cache: 'hit' })).toBe(1);
    expect(value(afterHit, 'hubcache_http_first_byte_seconds_count', { method: 'GET', route: 'file', cache: 'miss' })).toBe(1);
  });

  it('counts a small range read from a cold file as bypass bytes, not stored', async () => {
    const { mirror } = await setup();
    const range = await download(fileUrl(mirror, 'model.safetensors'), { headers: { range: 'bytes=100-1099' } });
    expect([range.status, header(range, 'x-mirror-cache'), range.body.length]).toEqual([206, 'bypass', 1000]);
    const s = await samplesWhen(mirror, 'the bypass counted', (x) => value(x, 'hubcache_http_requests_total', { route: 'file', cache: 'bypass' }) === 1);
    expect(value(s, 'hubcache_served_bytes_total', { source: 'bypass' })).toBe(1000);
    expect(value(s, 'hubcache_upstream_bytes_total', { kind: 'file' })).toBe(1000);
    expect(value(s, 'hubcache_fill_bytes_total')).toBe(0);
    expect(value(s, 'hubcache_fills_total', { outcome: 'started' })).toBe(0);
  });

  it('counts errors by X-Error-Code, HEAD latency, retries and resumes', async () => {
    const { hub, mirror } = await setup({ upstreamRetries: 2 });
    expect((await download(fileUrl(mirror, 'missing.bin'))).status).toBe(404);
    expect((await download(fileUrl(mirror, 'config.json'), { method: 'HEAD' })).status).toBe(200);
    // One 503 from the CDN, retried; then a body dropped half-way, resumed.
    const sha = hub.fileInfo(REPO, 'model.safetensors').sha256;
    hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'status', status: 503, times: 1 });
    hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'drop', afterBytes: 1024 * 1024, times: 1 });
    const got = await download(fileUrl(mirror, 'model.safetensors'));
    expect([got.status, got.sha256]).toEqual([200, sha256Hex(WEIGHTS)]);
    const s = await samplesWhen(mirror, 'the requests counted', (x) => value(x, 'hubcache_http_requests_total', { route: 'file' }) === 3);
    expect(value(s, 'hubcache_http_errors_total', { code: 'EntryNotFound' })).toBe(1);
    expect(value(s, 'hubcache_http_requests_total', { route: 'file', method: 'GET', status: '404', cache: 'error' })).toBe(1);
    expect(value(s, 'hubcache_http_first_byte_seconds_count', { method: 'HEAD', route: 'file' })).toBe(1);
    expect(value(s, 'hubcache_upstream_retries_total', { outcome: 'retried' })).toBe(1);
    expect(value(s, 'hubcache_fill_resumes_total')).toBe(1);
    // Bytes are counted once they are on disk: a resumed download still adds up to the file.
    expect(value(s, 'hubcache_upstream_bytes_total', { kind: 'file' })).toBe(WEIGHTS.length);
  });

  it('never names a repo or a file in a label', async () => {
    const { mirror } = await setup();
    await download(fileUrl(mirror, 'model.safetensors'));
    await download(fileUrl(mirror, 'missing.bin'));
    const { text } = await scrape(mirror);
    expect(text).not.toContain('secret-org');
    expect(text).not.toContain('gated-model-name');
    expect(text).not.toContain('safetensors');
    expect(text).not.toContain('missing.bin');
  });

  it('with metricsToken, answers only that bearer token (access keys are not enough)', async () => {
    const token = 'metrics-token-for-the-test';
    const { mirror } = await setup({ metricsToken: token, accessKeys: ['client-access-key'] });
    const none = await scrape(mirror);
    expect(none.status).toBe(401);
    expect(none.text).not.toContain('hubcache_');
    expect((await scrape(mirror, { authorization: 'Bearer client-access-key' })).status).toBe(401);
    expect((await scrape(mirror, { authorization: `Bearer ${token}x` })).status).toBe(401);
    const ok = await scrape(mirror, { authorization: `Bearer ${token}` });
    expect(ok.status).toBe(200);
    expect(ok.text).toContain('hubcache_http_requests_total');
    // The token is a client's credential for metrics only: files still need an access key.
    expect((await download(fileUrl(mirror, 'config.json'), { headers: { authorization: `Bearer ${token}` } })).status).toBe(401);
    expect(mirror.logs.join('\n')).not.toContain(token);
  });

  it('without metricsToken, follows the access keys like every other request', async () => {
    const { mirror } = await setup({ accessKeys: ['client-access-key'] });
    expect((await scrape(mirror)).status).toBe(401);
    expect((await scrape(mirror, { authorization: 'Bearer client-access-key' })).status).toBe(200);
  });
});

describe('GET /_/status (the dashboard data)', () => {
  it('names repos and files only for the metrics token holder', async () => {
    const token = 'dashboard-token';
    const { mirror } = await setup({ metricsToken: token });
    await download(fileUrl(mirror, 'model.safetensors'));
    await download(fileUrl(mirror, 'missing.bin'));
    const res = await download(`${mirror.url}/_/status`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const status = JSON.parse(res.body.toString('utf8')) as { names: boolean; topRepos: Array<{ repo: string; bytes: number }>; errors: Array<{ path?: string; code?: string }> };
    expect(status.names).toBe(true);
    expect(status.topRepos).toEqual([{ repo: `models/${REPO.id}`, requests: 1, hits: 0, bytes: WEIGHTS.length }]);
    expect(status.errors[0]).toMatchObject({ code: 'EntryNotFound', path: `/${REPO.id}/resolve/main/missing.bin` });
    expect((await download(`${mirror.url}/_/status`)).status).toBe(401);
  });

  it('without a metrics token, shows numbers and no names', async () => {
    const { mirror } = await setup();
    await download(fileUrl(mirror, 'model.safetensors'));
    await download(fileUrl(mirror, 'missing.bin'));
    const res = await waitFor(async () => {
      const r = await download(`${mirror.url}/_/status`);
      const s = JSON.parse(r.body.toString('utf8')) as { totals: { fileGets: { miss: number; error: number } } };
      return s.totals.fileGets.miss === 1 && s.totals.fileGets.error === 1 ? r : undefined;
    }, { what: 'both downloads counted' });
    const text = res.body.toString('utf8');
    const status = JSON.parse(text) as { names: boolean; topRepos: unknown; errors: Array<{ code?: string }> };
    expect(status.names).toBe(false);
    expect(status.topRepos).toBeNull();
    expect(status.errors[0]?.code).toBe('EntryNotFound');
    expect(text).not.toContain('secret-org');
    expect(text).not.toContain('missing.bin');
  });
});
