/**
 * The mirror is read-only by default: write methods under /api/ are refused with 403
 * `ReadOnlyMirror` before anything goes upstream (with hfToken, anyone who reaches the mirror
 * would otherwise write as the service token), except the POST that only reads (paths-info).
 * `allowWrites: true` passes them through. File URLs never take a write method.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const SERVICE = 'hf_valid_writer_service';
const REPO = 'org/read-only';
let hub: FakeHub;

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ id: REPO, files: { 'config.json': Buffer.from('{}\n'), 'sub/a.txt': Buffer.from('a\n') }, xet: false });
});
afterAll(async () => {
  await hub?.stop();
});

/** Writes real clients send (uploads, commits, repo and discussion management). */
const WRITES: Array<[string, string]> = [
  ['POST', '/api/repos/create'],
  ['DELETE', '/api/repos/delete'],
  ['PUT', `/api/models/${REPO}/settings`],
  ['POST', `/api/models/${REPO}/commit/main`],
  ['POST', `/api/models/${REPO}/preupload/main`],
  ['POST', `/api/models/${REPO}/branch/dev`],
  ['DELETE', `/api/models/${REPO}/tag/v1`],
  ['POST', `/api/models/${REPO}/discussions`],
  ['PATCH', `/api/models/${REPO}`],
  ['POST', `/api/models/${REPO}/revision/main`],
  ['PUT', `/api/models/${REPO}/paths-info/main`],
  ['DELETE', `/api/datasets/org/data/paths-info/main`],
];

async function send(base: string, method: string, path: string, headers: Record<string, string> = {}, body = '{"x":1}') {
  const res = await request(`${base}${path}`, { method: method as 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.body.text();
  const h = (name: string) => {
    const v = res.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };
  return { status: res.statusCode, h, text };
}

async function withMirror(overrides: Parameters<typeof startMirror>[1], fn: (m: TestMirror) => Promise<void>): Promise<void> {
  const m = await startMirror(hub.url, overrides);
  try {
    await fn(m);
  } finally {
    await m.destroy();
  }
}

describe('read-only by default', () => {
  it('refuses POST/PUT/PATCH/DELETE under /api/ with 403 ReadOnlyMirror; upstream sees nothing, with or without a token', async () => {
    for (const overrides of [{}, { hfToken: SERVICE }]) {
      await withMirror(overrides, async (m) => {
        const before = hub.requests.length;
        for (const headers of [{}, { authorization: 'Bearer hf_valid_writer' }] as Array<Record<string, string>>) {
          for (const [method, path] of WRITES) {
            const r = await send(m.url, method, path, headers);
            expect([method, path, r.status, r.h('x-error-code')]).toEqual([method, path, 403, 'ReadOnlyMirror']);
            expect(r.h('x-error-message')).toMatch(/read-only/);
          }
        }
        expect(hub.requests.slice(before)).toEqual([]);
      });
    }
  });

  it('the read-only POST (paths-info, JSON or form-encoded) still works', async () => {
    await withMirror({ hfToken: SERVICE }, async (m) => {
      const json = await send(m.url, 'POST', `/api/models/${REPO}/paths-info/main`, {}, JSON.stringify({ paths: ['config.json'], expand: false }));
      expect(json.status).toBe(200);
      expect((JSON.parse(json.text) as Array<{ path: string }>).map((e) => e.path)).toEqual(['config.json']);
      const form = await send(m.url, 'POST', `/api/models/${REPO}/paths-info/main`, { 'content-type': 'application/x-www-form-urlencoded' }, 'paths=sub%2Fa.txt&expand=false');
      expect(form.status).toBe(200);
      expect((JSON.parse(form.text) as Array<{ path: string }>).map((e) => e.path)).toEqual(['sub/a.txt']);
    });
  });

  it('file URLs take no write method (refused, never sent upstream)', async () => {
    await withMirror({ allowWrites: true }, async (m) => {
      const before = hub.requests.length;
      for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) {
        for (const path of [`/${REPO}/resolve/main/config.json`, `/datasets/org/data/raw/main/a.csv`, `/${REPO}.git/info/lfs/objects/batch`]) {
          const r = await send(m.url, method, path);
          expect([method, path, r.status]).toEqual([method, path, 404]);
        }
      }
      expect(hub.requests.slice(before)).toEqual([]);
    });
  });

  it('allowWrites: true passes writes through with the caller credentials (the service token for tokenless clients)', async () => {
    await withMirror({ allowWrites: true, hfToken: SERVICE }, async (m) => {
      for (const [method, path] of WRITES) {
        const before = hub.requests.length;
        const r = await send(m.url, method, path);
        const seen = hub.requests.slice(before);
        expect(seen.map((q) => [q.method, q.path, q.headers.authorization])).toEqual([[method, path, `Bearer ${SERVICE}`]]);
        // The fake hub implements no write: its refusal is relayed as it gave it.
        expect([method, path, r.status]).toEqual([method, path, seen[0]?.status]);
      }
    });
  });
});
