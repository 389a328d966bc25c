/**
 * Gated and private repositories through a shared cache, and the
 * operator's access options: service token, client access keys, repo allow/deny policy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { TestClock } from '../support/test-clock.js';

const MiB = 1024 * 1024;
const A = 'hf_valid_access_A';
const B = 'hf_valid_access_B';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
let hub: FakeHub;

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addKnownToken(B);
});
afterAll(async () => {
  await hub?.stop();
});

async function withMirror<T>(overrides: Parameters<typeof startMirror>[1], fn: (m: TestMirror) => Promise<T>, clock?: TestClock): Promise<T> {
  const m = await startMirror(hub.url, overrides, clock ? { clock } : {});
  try {
    return await fn(m);
  } finally {
    await m.destroy();
  }
}

describe('gated content in a shared cache', () => {
  it('T02: a client joining an authorized fill is authorized on its own first; the fill completes on one GET', async () => {
    const content = makeContent(16 * MiB, 31);
    hub.addRepo({ id: 'org/gated-join', files: { 'w.safetensors': content }, gated: { allowedTokens: [A] } });
    const sha = sha256Hex(content);
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'barrier', atBytes: Math.floor(0.3 * 16 * MiB) });
    await withMirror({}, async (m) => {
      const url = `${m.url}/org/gated-join/resolve/main/w.safetensors`;
      const owner = download(url, { headers: bearer(A), keepBody: false });
      await barrier.reached;
      for (const headers of [{}, bearer(B), { ...bearer(B), range: 'bytes=0-1023' }]) {
        const intruder = await download(url, { headers });
        expect([401, 403]).toContain(intruder.status);
        expect(header(intruder, 'x-error-code')).toBe('GatedRepo');
        expect(intruder.body.toString()).not.toContain(content.subarray(0, 64).toString('latin1'));
        expect(header(intruder, 'etag')).toBeUndefined();
        expect(header(intruder, 'x-linked-size')).toBeUndefined();
      }
      barrier.release();
      const done = await owner;
      expect([done.status, done.complete, done.sha256]).toEqual([200, true, sha]);
      expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha })).toBe(1);
    });
    barrier.remove();
  });

  it('a public repo that becomes gated stops being served from cache to anonymous clients within the TTL', async () => {
    const content = Buffer.from('{"was": "public"}\n');
    const { commit } = hub.addRepo({ id: 'org/turns-gated', files: { 'config.json': content } });
    const clock = new TestClock();
    await withMirror(
      { authTtlSeconds: 60 },
      async (m) => {
        const url = `${m.url}/org/turns-gated/resolve/${commit}/config.json`;
        expect((await download(url)).status).toBe(200);
        hub.deleteRepo({ id: 'org/turns-gated' });
        hub.addRepo({ id: 'org/turns-gated', files: { 'config.json': content }, gated: { allowedTokens: [A] } });
        clock.advance(60_000 + 1); // past the auth TTL: the repo's visibility is asked again
        const after = await download(url);
        expect([401, 403, 404]).toContain(after.status);
        expect(after.body.includes(content)).toBe(false);
      },
      clock,
    );
  });

  it('T03: private metadata and negative answers never cross identities', async () => {
    hub.addRepo({ id: 'org/private-meta', files: { 'config.json': Buffer.from('{"secret": 1}\n'), 'sub/a.txt': Buffer.from('a\n') }, private: { allowedTokens: [A] } });
    await withMirror({}, async (m) => {
      const paths = ['/api/models/org/private-meta', '/api/models/org/private-meta/revision/main', '/api/models/org/private-meta/tree/main?recursive=true', '/api/models/org/private-meta/refs'];
      // Anonymous first: a 401 must not be remembered for A.
      for (const p of paths) {
        const anon = await download(`${m.url}${p}`);
        expect([p, anon.status]).toEqual([p, 401]);
        expect(header(anon, 'x-error-code')).toBe('RepoNotFound');
      }
      for (const p of paths) {
        const a = await download(`${m.url}${p}`, { headers: bearer(A) });
        expect([p, a.status]).toEqual([p, 200]);
      }
      // A's answers must not be served to anyone else.
      for (const p of paths) {
        const anon = await download(`${m.url}${p}`);
        expect([p, anon.status]).toEqual([p, 401]);
        expect(anon.body.toString()).not.toMatch(/secret|config\.json/);
        const b = await download(`${m.url}${p}`, { headers: bearer(B) });
        expect([p, b.status]).toEqual([p, 404]);
        expect(b.body.toString()).not.toMatch(/secret|config\.json/);
      }
      const post = await fetch(`${m.url}/api/models/org/private-meta/paths-info/main`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['config.json'] }) });
      expect(post.status).toBe(401);
    });
  });
});

describe('operator options', () => {
  it('hfToken: clients without a token are served gated files with the service identity; the CDN never sees it', async () => {
    const content = makeContent(MiB, 32);
    hub.addRepo({ id: 'org/gated-service', files: { 'w.safetensors': content }, gated: { allowedTokens: [A] } });
    await withMirror({ hfToken: A }, async (m) => {
      const d = await download(`${m.url}/org/gated-service/resolve/main/w.safetensors`);
      expect([d.status, d.sha256]).toEqual([200, sha256Hex(content)]);
      const hubCalls = hub.requests.filter((r) => r.server === 'hub' && r.path.includes('org/gated-service/resolve/'));
      expect(hubCalls.length).toBeGreaterThan(0);
      for (const r of hubCalls) expect(r.headers.authorization).toBe(`Bearer ${A}`);
      for (const r of hub.requests.filter((r) => r.server === 'cdn')) expect(r.hasAuthorization).toBe(false);
      expect(m.logs.join('\n')).not.toContain(A);
    });
  });

  it('accessKeys: only key holders use the mirror; keys never go upstream', async () => {
    hub.addRepo({ id: 'org/gated-keys', files: { 'w.safetensors': makeContent(MiB, 33) }, gated: { allowedTokens: [A] } });
    hub.addRepo({ id: 'org/public-keys', files: { 'config.json': Buffer.from('{}\n') } });
    const key = 'mirror-key-123';
    await withMirror({ accessKeys: [key, 'other-key'], hfToken: A }, async (m) => {
      for (const headers of [{}, bearer('wrong'), bearer(A), { authorization: key }]) {
        const d = await download(`${m.url}/org/public-keys/resolve/main/config.json`, { headers });
        expect(d.status).toBe(401);
        expect(header(d, 'x-error-message')).toMatch(/access key/);
      }
      const before = hub.requests.length;
      const ok = await download(`${m.url}/org/gated-keys/resolve/main/w.safetensors`, { headers: bearer(key) });
      expect(ok.status).toBe(200);
      const api = await download(`${m.url}/api/models/org/public-keys`, { headers: bearer('other-key') });
      expect(api.status).toBe(200);
      for (const r of hub.requests.slice(before)) {
        expect(JSON.stringify(r.headers)).not.toContain(key);
        if (r.server === 'hub') expect(r.headers.authorization).toBe(`Bearer ${A}`);
      }
      expect((await download(`${m.url}/healthz`)).status).toBe(200);
    });
  });

  it('allowRepos / denyRepos: refused repos get 403 RepoNotAllowed and upstream is never asked', async () => {
    hub.addRepo({ id: 'org/allowed', files: { 'config.json': Buffer.from('{}\n') } });
    hub.addRepo({ id: 'org/secret-model', files: { 'config.json': Buffer.from('{}\n') } });
    hub.addRepo({ id: 'other/model', files: { 'config.json': Buffer.from('{}\n') } });
    hub.addRepo({ type: 'dataset', id: 'org/data-allowed', files: { 'a.csv': Buffer.from('a\n') } });
    await withMirror({ allowRepos: ['models/org/*', 'datasets/**'], denyRepos: ['models/org/secret-*'] }, async (m) => {
      expect((await download(`${m.url}/org/allowed/resolve/main/config.json`)).status).toBe(200);
      expect((await download(`${m.url}/datasets/org/data-allowed/resolve/main/a.csv`)).status).toBe(200);
      const before = hub.requests.length;
      for (const p of ['/org/secret-model/resolve/main/config.json', '/other/model/resolve/main/config.json', '/api/models/other/model', '/api/models/org/secret-model/tree/main', '/api/models/other/model/refs', '/spaces/org/app/resolve/main/app.py']) {
        const d = await download(`${m.url}${p}`);
        expect([p, d.status, header(d, 'x-error-code')]).toEqual([p, 403, 'RepoNotAllowed']);
      }
      expect(hub.requests.length).toBe(before);
    });
  });
});
