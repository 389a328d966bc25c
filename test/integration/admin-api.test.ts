/**
 * The operator API (`/admin/`): who can reach it (only the admin token, never a Hub token or an
 * access key; absent unless configured; on its own listener with adminListen), its JSON answers
 * (stats, ls, jobs, errors), and `hubcache verify` as a background job of the running server.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { runCli } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
const ADMIN = 'admin-secret-api-012345';
const HUB_TOKEN = 'hf_client_token_for_api';
const ACCESS_KEY = 'team-access-key-123';
let hub: FakeHub;
const weights = makeContent(2 * MiB, 120);
const config = Buffer.from('{"api": true}\n');

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ id: 'org/admin-api', files: { 'w.safetensors': weights, 'config.json': config } });
  hub.addKnownToken(HUB_TOKEN);
});
afterAll(async () => {
  await hub?.stop();
});

async function withMirror<T>(overrides: Parameters<typeof startMirror>[1], fn: (m: TestMirror) => Promise<T>): Promise<T> {
  const m = await startMirror(hub.url, overrides);
  try {
    return await fn(m);
  } finally {
    await m.destroy();
  }
}

async function call(url: string, opts: { method?: string; token?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; json: unknown; headers: Headers }> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  const res = await fetch(url, { method: opts.method ?? 'GET', headers, ...(opts.body === undefined ? {} : { body: opts.body }) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json, headers: res.headers };
}

describe('who reaches /admin/', () => {
  it('without adminToken or adminListen, /admin/ is a 404 like any unknown path', async () => {
    await withMirror({}, async (m) => {
      const unknown = await call(`${m.url}/no/such/thing`);
      for (const [method, p] of [['GET', '/admin/stats'], ['GET', '/admin/jobs'], ['POST', '/admin/prefetch'], ['GET', '/admin/']]) {
        const r = await call(`${m.url}${p}`, { method: method!, token: ADMIN, ...(method === 'POST' ? { body: '{"repo":"org/admin-api"}' } : {}) });
        expect([r.status, r.json], `${method} ${p}`).toEqual([404, unknown.json]);
      }
      expect(hub.count({ pathPrefix: '/admin' })).toBe(0);
    });
  });

  it('with adminToken: only that token opens it (no token, a wrong one, a Hub token and an access key are 401); it is never logged', async () => {
    await withMirror({ adminToken: ADMIN, accessKeys: [ACCESS_KEY] }, async (m) => {
      for (const token of [undefined, 'wrong-admin-token-0123456', HUB_TOKEN, ACCESS_KEY, `${ADMIN}x`]) {
        const r = await call(`${m.url}/admin/stats`, token === undefined ? {} : { token });
        expect(r.status, String(token)).toBe(401);
        expect(r.headers.get('www-authenticate')).toBe('Bearer realm="hubcache-admin"');
        expect(r.headers.get('access-control-allow-origin')).toBeNull();
        expect(JSON.stringify(r.json)).not.toContain('"disk"');
      }
      const basic = await call(`${m.url}/admin/stats`, { headers: { authorization: `Basic ${Buffer.from(`x:${ADMIN}`).toString('base64')}` } });
      expect(basic.status).toBe(401);
      const ok = await call(`${m.url}/admin/stats`, { token: ADMIN });
      expect(ok.status).toBe(200);
      expect(ok.json).toMatchObject({ disk: { blobs: 0, budgetBytes: expect.any(Number) } });
      // The access key still guards the Hub routes, and the admin token is not one.
      expect((await call(`${m.url}/org/admin-api/resolve/main/config.json`, { token: ADMIN })).status).toBe(401);
      expect((await call(`${m.url}/org/admin-api/resolve/main/config.json`, { token: ACCESS_KEY })).status).toBe(200);
      // A browser page is never told it may read the operator API.
      const preflight = await call(`${m.url}/admin/stats`, { method: 'OPTIONS', headers: { origin: 'https://page.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } });
      expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
      expect(m.logs.join('\n')).not.toContain(ADMIN);
      expect(hub.requests.some((r) => JSON.stringify(r.headers).includes(ADMIN))).toBe(false);
    });
  });

  it('adminListen: a second listener that serves /admin/ only; the main port then has no admin API', async () => {
    await withMirror({ adminListen: '127.0.0.1:0' }, async (m) => {
      expect(m.adminUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(m.adminUrl).not.toBe(m.url);
      const stats = await call(`${m.adminUrl}/admin/stats`);
      expect(stats.status).toBe(200);
      for (const p of ['/healthz', '/org/admin-api/resolve/main/config.json', '/api/models/org/admin-api', '/admin/nope']) {
        expect((await call(`${m.adminUrl}${p}`)).status, p).toBe(404);
      }
      expect((await call(`${m.url}/admin/stats`)).status).toBe(404);
      expect((await call(`${m.url}/org/admin-api/resolve/main/config.json`)).status).toBe(200);
      expect(hub.count({ pathIncludes: '/healthz' }) + hub.count({ pathPrefix: '/admin' })).toBe(0);
    });
    await withMirror({ adminListen: '127.0.0.1:0', adminToken: ADMIN }, async (m) => {
      expect((await call(`${m.adminUrl}/admin/stats`)).status).toBe(401);
      expect((await call(`${m.adminUrl}/admin/stats`, { token: HUB_TOKEN })).status).toBe(401);
      expect((await call(`${m.adminUrl}/admin/stats`, { token: ADMIN })).status).toBe(200);
      expect((await call(`${m.url}/admin/stats`, { token: ADMIN })).status).toBe(404);
    });
  });

  it('configuration: an admin token that is short, shaped like a Hub token or equal to hfToken or an access key stops the server (exit 2, value not shown)', async () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ HUBCACHE_ADMIN_TOKEN: 'short' }, /adminToken \(from environment\): must be at least 16 characters/],
      [{ HUBCACHE_ADMIN_TOKEN: 'hf_abcdefghijklmnopqrstuvwxyz' }, /looks like a Hugging Face token/],
      [{ HUBCACHE_ADMIN_TOKEN: 'same-secret-0123456789', HUBCACHE_HF_TOKEN: 'same-secret-0123456789' }, /adminToken \(from environment\): must differ from hfToken/],
      [{ HUBCACHE_ADMIN_TOKEN: 'same-secret-0123456789', HUBCACHE_ACCESS_KEYS: 'k1,same-secret-0123456789' }, /must differ from every access key/],
      [{ HUBCACHE_ADMIN_LISTEN: '127.0.0.1' }, /adminListen \(from environment\): expected host:port/],
    ];
    for (const [env, message] of cases) {
      const run = runCli(['serve', '--port', '0', '--data-dir', '/nonexistent/never-created'], env);
      const { code } = await run.exited;
      const text = run.output.join('\n');
      expect(code, text).toBe(2);
      expect(text).toMatch(message);
      for (const v of Object.values(env)) if (v.length >= 16) expect(text).not.toContain(v);
    }
    expect(fs.existsSync('/nonexistent/never-created')).toBe(false);
  });
});

describe('admin API answers', () => {
  it('stats, ls and errors as JSON; the CLI prints them for humans and for scripts', async () => {
    await withMirror({ adminToken: ADMIN }, async (m) => {
      const miss = await download(`${m.url}/org/admin-api/resolve/main/w.safetensors`, { keepBody: false });
      const hit = await download(`${m.url}/org/admin-api/resolve/main/w.safetensors`, { keepBody: false });
      expect([miss.sha256, header(miss, 'x-mirror-cache'), header(hit, 'x-mirror-cache')]).toEqual([sha256Hex(weights), 'miss', 'hit']);
      const stats = await call(`${m.url}/admin/stats`, { token: ADMIN });
      expect(stats.json).toMatchObject({
        disk: { blobs: 1, usedBytes: weights.length, minFreeBytes: m.config.minFreeBytes },
        repos: 1,
        traffic: { requests: { hit: 1, miss: 1, joined: 0, bypass: 0, total: 2 }, hitRatio: 0.5, bytesServed: { hit: weights.length, miss: weights.length }, byteHitRatio: 0.5, bytesPulledFromUpstream: weights.length },
        fills: { active: 0, queued: 0 },
      });
      const free = (stats.json as { disk: { freeBytes: number; totalBytes: number; budgetBytes: number } }).disk;
      expect(free.freeBytes).toBeGreaterThan(0);
      expect(free.totalBytes).toBeGreaterThanOrEqual(free.freeBytes);
      // No maxCacheBytes: the budget is the filesystem less minFreeBytes.
      expect(free.budgetBytes).toBe(Math.max(0, free.totalBytes - m.config.minFreeBytes));

      const repos = await call(`${m.url}/admin/repos`, { token: ADMIN });
      expect(repos.json).toMatchObject({ repos: [{ type: 'model', id: 'org/admin-api', files: 1, cachedFiles: 1, cachedBytes: weights.length, hits: 1, refs: { main: hub.head({ id: 'org/admin-api' }) } }] });
      const detail = await call(`${m.url}/admin/repos/model/org/admin-api`, { token: ADMIN });
      expect(detail.json).toMatchObject({ revisions: [{ commit: hub.head({ id: 'org/admin-api' }), refs: ['main'], files: [{ path: 'w.safetensors', size: weights.length, cached: true, hits: 1, visibility: 'public', lfs: true }] }] });
      expect((await call(`${m.url}/admin/repos/model/org/nothing-here`, { token: ADMIN })).status).toBe(404);

      const env = { HUBCACHE_ADMIN_TOKEN: ADMIN };
      const ls = runCli(['ls', 'org/admin-api', '--url', m.url], env);
      expect((await ls.exited).code).toBe(0);
      expect(ls.output.join('\n')).toMatch(new RegExp(`commit ${hub.head({ id: 'org/admin-api' })} \\(main\\)`));
      expect(ls.output.some((l) => /yes\s+2\.0 MiB\s+1\s+\S+.*public\s+w\.safetensors$/.test(l))).toBe(true);
      const human = runCli(['stats', '--url', m.url], env);
      expect((await human.exited).code).toBe(0);
      expect(human.output.join('\n')).toMatch(/hit ratio 50\.0%/);

      const bad: Array<[string, string, number, RegExp]> = [
        ['/admin/prefetch', 'not json', 400, /JSON object/],
        ['/admin/prefetch', '{"repo":"org/admin-api","colour":"blue"}', 400, /unknown field "colour"/],
        ['/admin/prefetch', '{"repo":"../x"}', 400, /Invalid repo id/],
        ['/admin/import', '{"path":"relative/dir"}', 400, /absolute path/],
        ['/admin/import', `{"path":${JSON.stringify(path.join(m.dataDir, 'blobs-v1'))}}`, 400, /is not a huggingface_hub cache/],
        ['/admin/jobs/abcdef123456/cancel', '', 404, /No job abcdef123456/],
      ];
      for (const [p, body, status, message] of bad) {
        const r = await call(`${m.url}${p}`, { method: 'POST', token: ADMIN, body });
        expect([r.status, (r.json as { error: string }).error], `${p} ${body}`).toEqual([status, expect.stringMatching(message)]);
      }
      expect((await call(`${m.url}/admin/jobs`, { token: ADMIN })).json).toEqual({ jobs: [] });
    });
  });

  it('hubcache verify with the server running: a background job that quarantines a corrupt blob (exit 1); the next request downloads it again', async () => {
    await withMirror({ adminToken: ADMIN }, async (m) => {
      await download(`${m.url}/org/admin-api/resolve/main/w.safetensors`, { keepBody: false });
      await download(`${m.url}/org/admin-api/resolve/main/config.json`, { keepBody: false });
      const clean = runCli(['verify', '--data-dir', m.dataDir], { HUBCACHE_ADMIN_TOKEN: ADMIN, HUBCACHE_PORT: new URL(m.url).port });
      expect((await clean.exited).code, clean.output.join('\n')).toBe(0);
      expect(clean.output.at(-1)).toMatch(/^verify [0-9a-f]{12}: done, 2\/2/);

      const sha = sha256Hex(weights);
      const file = path.join(m.dataDir, 'blobs-v1', 'sha256', sha.slice(0, 2), sha.slice(2, 4), sha);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, Buffer.from([0x13]), 0, 1, 12345);
      fs.closeSync(fd);
      const run = runCli(['verify', '--url', m.url, '--json'], { HUBCACHE_ADMIN_TOKEN: ADMIN });
      expect((await run.exited).code).toBe(1);
      const doc = JSON.parse(run.output.join('\n')) as { job: { state: string; progress: { itemsDone: number; itemsFailed: number } }; items: Array<{ item: string; outcome: string }> };
      expect(doc.job).toMatchObject({ state: 'failed', progress: { itemsDone: 2, itemsFailed: 1 } });
      expect(doc.items).toEqual([expect.objectContaining({ item: `sha256:${sha}`, outcome: 'corrupt' })]);
      expect(fs.existsSync(file)).toBe(false);
      expect(fs.readdirSync(path.join(m.dataDir, 'quarantine'))).toHaveLength(1);
      const cdn = hub.count({ server: 'cdn', method: 'GET' });
      const again = await download(`${m.url}/org/admin-api/resolve/main/w.safetensors`, { keepBody: false });
      expect([again.status, header(again, 'x-mirror-cache'), again.sha256]).toEqual([200, 'miss', sha]);
      expect(hub.count({ server: 'cdn', method: 'GET' })).toBe(cdn + 1);
    });
  });
});
