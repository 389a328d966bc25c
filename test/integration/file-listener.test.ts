/**
 * File downloads are answered by a Node request handler in front of the Hono app (for speed); the
 * app's own file route stays for what the handler leaves to it. The two must answer alike: the
 * same requests go to two mirrors over one fake hub, one with the file listener and one without
 * (`fileListener: false`), and every status, header (bar Date and X-Request-Id) and body byte must
 * match — hits, misses, ranges, 304, 416, HEAD and GET errors, gated files, CORS with `*` and with
 * a list of origins, access keys. Both mirrors' request logs and metrics must agree too.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const REPO: RepoRef = { id: 'org/listener-model' };
const GATED: RepoRef = { id: 'org/listener-gated' };
const WEIGHTS = makeContent(300_000, 91);
const GATED_FILE = makeContent(50_000, 92);
const TOKEN = 'hf_listener_granted';
const PAGE = 'http://page.example:3000';
const OTHER = 'https://evil.example';
const KEY = 'listener-access-key';

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Headers that differ by nature between two servers (the clock, the per-request id): compared by presence only. */
const VARYING = new Set(['date', 'x-request-id']);

async function call(base: string, path: string, method: 'GET' | 'HEAD', headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${base}${path}`, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = VARYING.has(k) ? 'present' : Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers: out, body };
}

let hub: FakeHub;
let commit: string;

beforeAll(async () => {
  hub = await startFakeHub();
  ({ commit } = hub.addRepo({ ...REPO, files: { 'config.json': Buffer.from('{"listener": true}\n'), 'model.safetensors': WEIGHTS } }));
  hub.addRepo({ ...GATED, gated: { allowedTokens: [TOKEN] }, files: { 'model.safetensors': GATED_FILE } });
});
afterAll(async () => {
  await hub?.stop();
});

/** Two mirrors with the same config, with and without the file listener. */
async function withPair<T>(overrides: Parameters<typeof startMirror>[1], fn: (withListener: TestMirror, withoutListener: TestMirror) => Promise<T>): Promise<T> {
  const a = await startMirror(hub.url, overrides);
  const b = await startMirror(hub.url, overrides, { fileListener: false });
  try {
    return await fn(a, b);
  } finally {
    await Promise.all([a.destroy(), b.destroy()]);
  }
}

/** Sends the same request to both; expects equal answers; returns the listener's. */
async function same(a: TestMirror, b: TestMirror, path: string, method: 'GET' | 'HEAD', headers: Record<string, string> = {}): Promise<Answer> {
  const [x, y] = [await call(a.url, path, method, headers), await call(b.url, path, method, headers)];
  expect({ path, method, status: x.status, headers: x.headers }).toEqual({ path, method, status: y.status, headers: y.headers });
  expect(x.body.equals(y.body), `${method} ${path}: bodies differ`).toBe(true);
  return x;
}

const METRICS_TOKEN = 'listener-metrics-token';
const observer = { authorization: `Bearer ${METRICS_TOKEN}` };

async function metricLines(m: TestMirror, name: string, headers: Record<string, string> = {}): Promise<string[]> {
  const res = await request(`${m.url}/metrics`, { headers });
  const text = await res.body.text();
  return text.split('\n').filter((l) => l.startsWith(name));
}

/** The dashboard's recent errors (with messages: a metrics token is set), without their times. */
async function recentErrors(m: TestMirror): Promise<unknown[]> {
  const res = await request(`${m.url}/_/status`, { headers: observer });
  const status = (await res.body.json()) as { errors: Array<Record<string, unknown>> };
  return status.errors.map(({ at: _at, ...rest }) => rest);
}

describe('file downloads through the file listener answer as the app does', () => {
  it('hits, misses, ranges, conditionals, errors and gated files: the same status, headers and bytes', async () => {
    await withPair({ metricsToken: METRICS_TOKEN }, async (a, b) => {
      const model = `/${REPO.id}/resolve/main/model.safetensors`;
      const cold = await same(a, b, model, 'GET');
      expect(cold.status).toBe(200);
      expect(cold.headers['x-mirror-cache']).toBe('miss');
      expect(sha256Hex(cold.body)).toBe(sha256Hex(WEIGHTS));

      const head = await same(a, b, model, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.headers['x-mirror-cache']).toBe('hit');
      expect(head.headers['access-control-allow-origin']).toBe('*');

      const range = await same(a, b, model, 'GET', { range: 'bytes=10-99' });
      expect(range.status).toBe(206);
      expect(range.body.equals(WEIGHTS.subarray(10, 100))).toBe(true);
      expect((await same(a, b, model, 'GET', { range: 'bytes=-500' })).body.equals(WEIGHTS.subarray(WEIGHTS.length - 500))).toBe(true);
      expect((await same(a, b, model, 'GET', { range: `bytes=${WEIGHTS.length}-` })).status).toBe(416);
      const refused = await same(a, b, model, 'GET', { range: 'bytes=0-9,5-14,8-20' });
      expect([refused.status, refused.headers['x-error-message']]).toEqual([416, 'Range refused: more than two overlapping ranges']);
      expect((await same(a, b, model, 'GET', { 'if-none-match': head.headers.etag! })).status).toBe(304);
      expect((await same(a, b, model, 'GET', { origin: OTHER })).headers['access-control-allow-origin']).toBe('*');

      expect((await same(a, b, `/${REPO.id}/resolve/${commit}/config.json`, 'HEAD')).status).toBe(200);
      expect((await same(a, b, `/${REPO.id}/raw/main/config.json`, 'GET')).body.toString()).toBe('{"listener": true}\n');

      for (const method of ['GET', 'HEAD'] as const) {
        const missing = await same(a, b, `/${REPO.id}/resolve/main/missing.bin`, method);
        expect(missing.status).toBe(404);
        expect(missing.headers['x-error-code']).toBe('EntryNotFound');
        expect(missing.headers['access-control-allow-origin']).toBe('*');
        expect((await same(a, b, `/${REPO.id}/resolve/no-such-branch/config.json`, method)).headers['x-error-code']).toBe('RevisionNotFound');
        expect((await same(a, b, `/org/no-such-repo/resolve/main/config.json`, method)).headers['x-error-code']).toBe('RepoNotFound');
        expect((await same(a, b, `/${REPO.id}/resolve/ma%ZZin/config.json`, method)).status).toBe(400);
        const gated = await same(a, b, `/${GATED.id}/resolve/main/model.safetensors`, method);
        expect(gated.status).toBeGreaterThanOrEqual(401);
        expect(gated.status).toBeLessThanOrEqual(403);
        const granted = await same(a, b, `/${GATED.id}/resolve/main/model.safetensors`, method, { authorization: `Bearer ${TOKEN}` });
        expect(granted.status).toBe(200);
      }

      // Both told their request log and metrics the same: every request counted, by status.
      const [x, y] = [await metricLines(a, 'hubcache_http_requests_total', observer), await metricLines(b, 'hubcache_http_requests_total', observer)];
      expect(x.length).toBeGreaterThan(0);
      expect(x).toEqual(y);
      // ...and the same recent errors, messages included (read back from the response's headers).
      const errors = await recentErrors(a);
      expect(errors).toContainEqual(expect.objectContaining({ status: 416, message: 'Range refused: more than two overlapping ranges' }));
      expect(errors).toEqual(await recentErrors(b));
    });
  });

  it("a list of origins, access keys and the operator API: echo, Vary and 401 alike; file-shaped API and admin paths stay the app's", async () => {
    await withPair({ corsOrigins: [PAGE], accessKeys: [KEY], adminToken: 'listener-admin-token' }, async (a, b) => {
      const model = `/${REPO.id}/resolve/main/model.safetensors`;
      const key = { authorization: `Bearer ${KEY}` };
      for (const method of ['GET', 'HEAD'] as const) {
        const refused = await same(a, b, model, method, { origin: PAGE });
        expect(refused.status).toBe(401);
        expect(refused.headers['access-control-allow-origin']).toBe(PAGE);
        expect(refused.headers.vary).toContain('Origin');
      }
      const ok = await same(a, b, model, 'GET', { ...key, origin: PAGE });
      expect(ok.status).toBe(200);
      expect(ok.headers['access-control-allow-origin']).toBe(PAGE);
      expect(ok.headers.vary).toContain('Origin');
      expect(sha256Hex(ok.body)).toBe(sha256Hex(WEIGHTS));
      const other = await same(a, b, model, 'HEAD', { ...key, origin: OTHER });
      expect(other.status).toBe(200);
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
      const missing = await same(a, b, `/${REPO.id}/resolve/main/missing.bin`, 'GET', { ...key, origin: PAGE });
      expect(missing.status).toBe(404);
      expect(missing.headers.vary).toContain('Origin');
      // Paths the app routes before files, though they parse as file URLs (repo `admin/x`, `api/x`).
      const admin = await same(a, b, `/admin/x/resolve/main/config.json`, 'GET', key);
      expect(admin.status).toBe(401);
      expect((await same(a, b, `/api/x/resolve/main/config.json`, 'HEAD', key)).headers['x-mirror-cache']).toBe('pass'); // the API's pass-through
    });
  });
});
