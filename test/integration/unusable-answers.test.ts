/**
 * An upstream answer the mirror cannot use (an HTML page where the Hub's JSON belongs, JSON of the
 * wrong shape, a required field missing) becomes a 502 `UpstreamError` with a clear
 * `X-Error-Message`: never a 500, never passed on as if it were the Hub's answer, never stored.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const PORTAL = '<html><body>Please log in to the network</body></html>';
let hub: FakeHub;
let mirror: TestMirror;
let seq = 0;

beforeAll(async () => {
  hub = await startFakeHub();
  mirror = await startMirror(hub.url, { upstreamRetries: 0, authTtlSeconds: 0 });
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

function addRepo(): { id: string; commit: string } {
  const id = `org/unusable-${++seq}`;
  const { commit } = hub.addRepo({ id, files: { 'config.json': Buffer.from('{"a": 1}\n'), 'sub/b.txt': Buffer.from('b\n') }, xet: false });
  return { id, commit };
}

function expect502(d: Pick<Download, 'status' | 'headers' | 'body'>, message: RegExp): void {
  expect([d.status, header(d, 'x-error-code')]).toEqual([502, 'UpstreamError']);
  expect(header(d, 'x-error-message')).toMatch(message);
  expect(d.body.toString()).not.toContain('Please log in');
}

describe('unusable upstream answers', () => {
  it('a non-JSON (or shapeless) 200 from the repo-access probe is a 502 naming the problem, not a 500', async () => {
    const { id, commit } = addRepo();
    const url = `${mirror.url}/${id}/resolve/${commit}/config.json`;
    expect((await download(url)).status).toBe(200);
    // authTtlSeconds 0: the cached row is served only once upstream says the repo is still public.
    for (const [body, message] of [
      [PORTAL, /repo info .* is not JSON .*text\/html/],
      ['{"id": "x"}', /repo info .* has no "private" field/],
      ['[1, 2]', /repo info .* has no "private" field/],
    ] as const) {
      const fault = hub.setFault({ server: 'hub', method: 'GET', pathIncludes: `/api/models/${id}` }, { kind: 'body', body, contentType: body === PORTAL ? 'text/html; charset=utf-8' : 'application/json' });
      try {
        const d = await download(url);
        expect502(d, message);
        expect(d.body.toString()).not.toContain('{"a": 1}');
        expect(fault.applied).toBe(1);
      } finally {
        fault.remove();
      }
    }
    const after = await download(url);
    expect([after.status, after.body.toString()]).toEqual([200, '{"a": 1}\n']);
  });

  it('repo info, tree and paths-info answers that are not the Hub JSON are 502s, not passed on or stored', async () => {
    const { id, commit } = addRepo();
    const api = (p: string) => `${mirror.url}/api/models/${id}${p}`;
    const pathsInfo = async (): Promise<Download> => {
      const res = await request(api(`/paths-info/${commit}`), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['config.json'] }) });
      const body = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, headers: res.headers, body, sha256: '', complete: true, headersMs: 0, totalMs: 0 };
    };
    const cases: Array<{ ask: () => Promise<Download>; match: string; body: string; type: string; message: RegExp }> = [
      { ask: () => download(api('/revision/main')), match: '/revision/main', body: PORTAL, type: 'text/html', message: /not the Hub's JSON object .*text\/html/ },
      { ask: () => download(api('/revision/main')), match: '/revision/main', body: '{"id": "x"}', type: 'application/json', message: /names no commit/ },
      { ask: () => download(api(`/revision/${commit}?expand=downloads`)), match: '/revision/', body: '"just a string"', type: 'application/json', message: /not the Hub's JSON object/ },
      { ask: () => download(api(`/tree/${commit}?recursive=true`)), match: '/tree/', body: PORTAL, type: 'text/html', message: /not the Hub's JSON list/ },
      { ask: () => download(api(`/tree/${commit}/sub`)), match: '/tree/', body: '{"entries": []}', type: 'application/json', message: /not the Hub's JSON list/ },
      { ask: pathsInfo, match: '/paths-info/', body: '{"path": "config.json"}', type: 'application/json', message: /not the Hub's JSON list/ },
    ];
    for (const c of cases) {
      const fault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${id}${c.match}` }, { kind: 'body', body: c.body, contentType: c.type });
      try {
        expect502(await c.ask(), c.message);
      } finally {
        fault.remove();
      }
    }
    // Nothing unusable was stored: once upstream behaves, the real answers come back.
    for (const c of cases) {
      const d = await c.ask();
      expect([c.match, d.status]).toEqual([c.match, 200]);
      expect(() => JSON.parse(d.body.toString()) as unknown).not.toThrow();
    }
  });

  it('a relative-looking Location that names another host is not followed with the credentials', async () => {
    const { id } = addRepo();
    const other = new URL(hub.cdnUrl).host;
    const before = hub.requests.length;
    for (const location of [`\\\\${other}/leak`, `/\\${other}/leak`]) {
      const fault = hub.setFault({ server: 'hub', method: 'HEAD', pathIncludes: `/${id}/resolve/main/config.json` }, { kind: 'redirect', status: 307, location });
      try {
        const d = await download(`${mirror.url}/${id}/resolve/main/config.json`, { method: 'HEAD', headers: { authorization: 'Bearer hf_valid_follow_me' } });
        expect([d.status, header(d, 'x-error-code')]).toEqual([502, 'UpstreamError']);
      } finally {
        fault.remove();
      }
    }
    expect(hub.requests.slice(before).filter((r) => r.server === 'cdn')).toEqual([]);
  });

  it('a passed-through API answer with a status HTTP cannot relay is a 502', async () => {
    const { id } = addRepo();
    const fault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${id}/refs` }, { kind: 'body', body: '{}', contentType: 'application/json', status: 999 });
    try {
      expect502(await download(`${mirror.url}/api/models/${id}/refs`), /status 999/);
    } finally {
      fault.remove();
    }
    expect((await download(`${mirror.url}/api/models/${id}/refs`)).status).toBe(200);
  });
});
