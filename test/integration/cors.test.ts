/**
 * Cross-origin access for browser clients (transformers.js or @huggingface/hub in a web page):
 * preflights are answered before access control, every answer (file bodies and ranges, HEAD, API,
 * errors, 404s) carries Access-Control-Allow-Origin for an allowed origin and the Hub's
 * Access-Control-Expose-Headers, and with a list of origins only listed ones are echoed, with
 * `Vary: Origin`. Real HTTP requests against the mirror and a fake hub.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import { Hono } from 'hono';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AppEnv } from '../../src/http/app-env.js';
import { cors } from '../../src/http/cors.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const REPO: RepoRef = { id: 'org/cors-model' };
const WEIGHTS = makeContent(200_000, 71);
const PAGE = 'http://page.example:3000';
const OTHER = 'https://evil.example';
const KEY = 'mirror-access-key-cors';
/** What the Hub lets a page read (its list, without the Xet headers the mirror strips). */
const HUB_EXPOSED = 'X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag';

interface Answer {
  status: number;
  headers: Record<string, string | undefined>;
  body: Buffer;
}

async function call(url: string, opts: { method?: 'GET' | 'HEAD' | 'OPTIONS' | 'POST'; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const res = await request(url, { method: opts.method ?? 'GET', headers: opts.headers, body: opts.body });
  const body = Buffer.from(await res.body.arrayBuffer());
  const headers: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers, body };
}

const preflight = (url: string, origin: string, method = 'GET', requestHeaders = 'authorization,range') =>
  call(url, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': requestHeaders } });

const listOf = (value: string | undefined) => (value ?? '').split(',').map((v) => v.trim().toLowerCase()).filter(Boolean);

let hub: FakeHub;
let commit: string;

beforeAll(async () => {
  hub = await startFakeHub();
  ({ commit } = hub.addRepo({ ...REPO, files: { 'config.json': Buffer.from('{"cors": true}\n'), 'model.safetensors': WEIGHTS } }));
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

describe('CORS with the default corsOrigins ["*"]', () => {
  it('answers a preflight on a file URL with 204, GET/HEAD, the Hub clients\' request headers and a max-age, without asking upstream', async () => {
    await withMirror({}, async (m) => {
      hub.resetCounters();
      const res = await preflight(`${m.url}/${REPO.id}/resolve/main/model.safetensors`, PAGE, 'GET', 'authorization,range,if-none-match,x-custom-trace');
      expect(res.status).toBe(204);
      expect(res.body.length).toBe(0);
      expect(res.headers['access-control-allow-origin']).toBe('*');
      expect(listOf(res.headers['access-control-allow-methods'])).toEqual(['get', 'head']);
      const allowed = listOf(res.headers['access-control-allow-headers']);
      for (const h of ['authorization', 'range', 'if-none-match', 'if-range', 'content-type', 'x-custom-trace']) expect(allowed).toContain(h);
      expect(Number(res.headers['access-control-max-age'])).toBeGreaterThan(0);
      // Tokens travel as an explicit Authorization header: no credentials mode (and `*` forbids it).
      expect(res.headers['access-control-allow-credentials']).toBeUndefined();
      expect(hub.count()).toBe(0);
    });
  });

  it('allows POST in a preflight for the API (paths-info), and the POST answer carries the CORS headers', async () => {
    await withMirror({}, async (m) => {
      const url = `${m.url}/api/models/${REPO.id}/paths-info/${commit}`;
      const pre = await preflight(url, PAGE, 'POST', 'content-type');
      expect(pre.status).toBe(204);
      expect(listOf(pre.headers['access-control-allow-methods'])).toEqual(['get', 'head', 'post']);
      expect(listOf(pre.headers['access-control-allow-headers'])).toContain('content-type');
      const res = await call(url, { method: 'POST', headers: { origin: PAGE, 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['config.json'] }) });
      expect(res.status, res.body.toString()).toBe(200);
      expect((JSON.parse(res.body.toString()) as Array<{ path: string }>).map((e) => e.path)).toEqual(['config.json']);
      expect(res.headers['access-control-allow-origin']).toBe('*');
      expect(res.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);
    });
  });

  it('puts Allow-Origin and the Hub\'s expose list on a 206 range answer, a full GET and a HEAD', async () => {
    await withMirror({}, async (m) => {
      const url = `${m.url}/${REPO.id}/resolve/main/model.safetensors`;
      const range = await call(url, { headers: { origin: PAGE, range: 'bytes=100-1099' } });
      expect(range.status).toBe(206);
      expect(range.body.equals(WEIGHTS.subarray(100, 1100))).toBe(true);
      expect(range.headers['content-range']).toBe(`bytes 100-1099/${WEIGHTS.length}`);
      expect(range.headers['x-repo-commit']).toBe(commit);
      expect(range.headers['access-control-allow-origin']).toBe('*');
      expect(range.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const full = await call(url, { headers: { origin: PAGE } });
      expect([full.status, sha256Hex(full.body)]).toEqual([200, sha256Hex(WEIGHTS)]);
      expect(full.headers['access-control-allow-origin']).toBe('*');
      expect(full.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const head = await call(url, { method: 'HEAD', headers: { origin: PAGE } });
      expect(head.status).toBe(200);
      expect(head.headers['etag']).toBe(`"${sha256Hex(WEIGHTS)}"`);
      expect(head.headers['access-control-allow-origin']).toBe('*');
      expect(head.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);
      // `*` does not depend on the request's Origin: no Vary for it.
      expect(listOf(head.headers['vary'])).not.toContain('origin');
    });
  });

  it('puts them on API answers and on error answers (404 from upstream, 404 route, 416)', async () => {
    await withMirror({}, async (m) => {
      const api = await call(`${m.url}/api/models/${REPO.id}/revision/main`, { headers: { origin: PAGE } });
      expect(api.status).toBe(200);
      expect((JSON.parse(api.body.toString()) as { sha: string }).sha).toBe(commit);
      expect(api.headers['access-control-allow-origin']).toBe('*');
      expect(api.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const missing = await call(`${m.url}/${REPO.id}/resolve/main/no-such-file.bin`, { headers: { origin: PAGE } });
      expect(missing.status).toBe(404);
      expect(missing.headers['x-error-code']).toBe('EntryNotFound');
      expect(missing.headers['access-control-allow-origin']).toBe('*');
      expect(missing.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const noRoute = await call(`${m.url}/not/a/hub/url`, { headers: { origin: PAGE } });
      expect(noRoute.status).toBe(404);
      expect(noRoute.headers['access-control-allow-origin']).toBe('*');
      expect(noRoute.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const unsatisfiable = await call(`${m.url}/${REPO.id}/resolve/main/config.json`, { headers: { origin: PAGE, range: 'bytes=999999-' } });
      expect(unsatisfiable.status).toBe(416);
      expect(unsatisfiable.headers['access-control-allow-origin']).toBe('*');
    });
  });

  it('answers preflights before access keys are checked, and puts the CORS headers on the 401 and on the keyed answer', async () => {
    await withMirror({ accessKeys: [KEY] }, async (m) => {
      const url = `${m.url}/${REPO.id}/resolve/main/config.json`;
      const pre = await preflight(url, PAGE);
      expect(pre.status).toBe(204);
      expect(pre.headers['access-control-allow-origin']).toBe('*');
      expect(listOf(pre.headers['access-control-allow-headers'])).toContain('authorization');

      const refused = await call(url, { headers: { origin: PAGE } });
      expect(refused.status).toBe(401);
      expect(refused.headers['x-error-message']).toMatch(/access key/);
      expect(refused.headers['access-control-allow-origin']).toBe('*');
      expect(refused.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);

      const admitted = await call(url, { headers: { origin: PAGE, authorization: `Bearer ${KEY}`, range: 'bytes=0-3' } });
      expect([admitted.status, admitted.body.toString()]).toEqual([206, '{"co']);
      expect(admitted.headers['access-control-allow-origin']).toBe('*');
    });
  });

  it('leaves an OPTIONS request that is not a preflight to the routes', async () => {
    await withMirror({}, async (m) => {
      const res = await call(`${m.url}/${REPO.id}/resolve/main/config.json`, { method: 'OPTIONS', headers: { origin: PAGE } });
      expect(res.status).toBe(404);
      expect(res.headers['access-control-allow-methods']).toBeUndefined();
    });
  });
});

describe('CORS with a list of origins', () => {
  it('echoes a listed origin with Vary: Origin on files, API answers and errors', async () => {
    await withMirror({ corsOrigins: [PAGE] }, async (m) => {
      const pre = await preflight(`${m.url}/${REPO.id}/resolve/main/model.safetensors`, PAGE);
      expect(pre.status).toBe(204);
      expect(pre.headers['access-control-allow-origin']).toBe(PAGE);
      expect(listOf(pre.headers['vary'])).toContain('origin');

      const answers = [
        await call(`${m.url}/${REPO.id}/resolve/main/model.safetensors`, { headers: { origin: PAGE, range: 'bytes=0-99' } }),
        await call(`${m.url}/api/models/${REPO.id}`, { headers: { origin: PAGE } }),
        await call(`${m.url}/${REPO.id}/resolve/main/no-such-file.bin`, { headers: { origin: PAGE } }),
      ];
      expect(answers.map((a) => a.status)).toEqual([206, 200, 404]);
      for (const a of answers) {
        expect(a.headers['access-control-allow-origin']).toBe(PAGE);
        expect(a.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);
        // Once, even where upstream's answer already varied on Origin.
        expect(listOf(a.headers['vary']).filter((v) => v === 'origin')).toHaveLength(1);
      }
    });
  });

  it('gives an unlisted origin no Allow-Origin (the browser then withholds the answer), and still Vary: Origin', async () => {
    await withMirror({ corsOrigins: [PAGE] }, async (m) => {
      const url = `${m.url}/${REPO.id}/resolve/main/config.json`;
      const pre = await preflight(url, OTHER);
      expect(pre.status).toBe(204);
      expect(pre.headers['access-control-allow-origin']).toBeUndefined();
      expect(pre.headers['access-control-allow-methods']).toBeUndefined();
      expect(pre.headers['access-control-allow-headers']).toBeUndefined();

      for (const headers of [{ origin: OTHER }, { origin: PAGE.replace('3000', '3001') }, {}] as Array<Record<string, string>>) {
        const res = await call(url, { headers });
        expect(res.status).toBe(200);
        expect(res.headers['access-control-allow-origin']).toBeUndefined();
        expect(listOf(res.headers['vary'])).toContain('origin');
      }
      const api = await call(`${m.url}/api/models/${REPO.id}`, { headers: { origin: OTHER } });
      expect(api.status).toBe(200);
      expect(api.headers['access-control-allow-origin']).toBeUndefined();
    });
  });

  it('with an empty list, allows no origin at all', async () => {
    await withMirror({ corsOrigins: [] }, async (m) => {
      const pre = await preflight(`${m.url}/${REPO.id}/resolve/main/config.json`, PAGE);
      expect(pre.status).toBe(204);
      expect(pre.headers['access-control-allow-origin']).toBeUndefined();
      const res = await call(`${m.url}/${REPO.id}/resolve/main/config.json`, { headers: { origin: PAGE } });
      expect(res.status).toBe(200);
      expect(res.headers['access-control-allow-origin']).toBeUndefined();
    });
  });
});

describe('CORS headers of an answer relayed from upstream', () => {
  it('replaces every Access-Control-* header the answer carried (no credentials, no foreign origin) and merges Vary', async () => {
    // An API answer as relayed or replayed from the index: the Hub's own CORS headers for its own origin.
    const app = new Hono<AppEnv>();
    app.use(cors({ origins: [PAGE] }));
    app.get('/relayed', () =>
      new Response('{}', {
        headers: {
          'content-type': 'application/json',
          'access-control-allow-origin': 'https://huggingface.co',
          'access-control-allow-credentials': 'true',
          'access-control-expose-headers': 'X-Repo-Commit,X-Xet-Hash',
          vary: 'Accept',
        },
      }),
    );
    const server = createAdaptorServer({ fetch: app.fetch, createServer }) as Server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/relayed`;
      const listed = await call(url, { headers: { origin: PAGE } });
      expect(listed.status).toBe(200);
      expect(listed.headers['access-control-allow-origin']).toBe(PAGE);
      expect(listed.headers['access-control-allow-credentials']).toBeUndefined();
      expect(listed.headers['access-control-expose-headers']).toBe(HUB_EXPOSED);
      expect(listOf(listed.headers['vary'])).toEqual(['accept', 'origin']);
      const other = await call(url, { headers: { origin: OTHER } });
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
      expect(other.headers['access-control-allow-credentials']).toBeUndefined();
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
