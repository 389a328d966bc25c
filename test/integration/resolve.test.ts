/**
 * The `/resolve/` and `/raw/` protocol as clients read it:
 * headers, repo and revision shapes, errors, credentials, conditional requests, and when the
 * mirror does or does not ask upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lfsPointer, makeContent } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { rawGet } from '../support/raw-request.js';
import { parseByteranges, partsMatch } from '../support/multipart.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { TestClock } from '../support/test-clock.js';

const TOKEN_A = 'hf_valid_token_A_with_grant';
const TOKEN_B = 'hf_valid_token_B_without_grant';
let hub: FakeHub;
let mirror: TestMirror;
let commit: string;
const config = Buffer.from('{"architectures": ["GPT2LMHeadModel"], "n_layer": 2}\n');
const weights = makeContent(3 * 1024 * 1024 + 17, 7);
const nested = makeContent(200_000, 8);

beforeAll(async () => {
  hub = await startFakeHub();
  ({ commit } = hub.addRepo({ id: 'org/model', files: { 'config.json': config, 'model.safetensors': weights, 'sub/dir/x.bin': nested, 'with space#.txt': Buffer.from('odd name\n') } }));
  hub.addPullRequest({ id: 'org/model' }, 1, { 'config.json': Buffer.from('{"pr": 1}\n') });
  hub.addTag({ id: 'org/model' }, 'v1.0');
  hub.addRepo({ id: 'gpt-legacy', files: { 'sub/dir/x.bin': nested } });
  hub.addRepo({ type: 'dataset', id: 'org/data', files: { 'data/train.csv': Buffer.from('a,b\n1,2\n') } });
  hub.addRepo({ type: 'space', id: 'org/app', files: { 'app.py': Buffer.from('print("hi")\n') } });
  hub.addRepo({ id: 'org/gated', files: { 'README.md': Buffer.from('# gated\n'), 'weights.safetensors': makeContent(1024 * 1024, 9) }, gated: { allowedTokens: [TOKEN_A] } });
  hub.addRepo({ id: 'org/private', files: { 'config.json': Buffer.from('{"secret": true}\n') }, private: { allowedTokens: [TOKEN_A] } });
  hub.addKnownToken(TOKEN_B);
  mirror = await startMirror(hub.url);
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

const url = (p: string) => `${mirror.url}${p}`;
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

function expectNoXet(d: Download) {
  for (const name of Object.keys(d.headers)) expect(name.toLowerCase().startsWith('x-xet-')).toBe(false);
  expect(header(d, 'link') ?? '').not.toMatch(/xet/);
  expect(header(d, 'content-type') ?? '').not.toMatch(/xet/);
}

describe('file answers carry what clients read', () => {
  it('a regular file: 200 with bytes, Content-Length, git-sha1 ETag, X-Repo-Commit, no X-Linked-*', async () => {
    const info = hub.fileInfo({ id: 'org/model' }, 'config.json');
    const head = await download(url('/org/model/resolve/main/config.json'), { method: 'HEAD' });
    const get = await download(url('/org/model/resolve/main/config.json'));
    for (const d of [head, get]) {
      expect(d.status).toBe(200);
      expect(header(d, 'content-length')).toBe(String(config.length));
      expect(header(d, 'etag')).toBe(`"${info.gitSha1}"`);
      expect(header(d, 'x-repo-commit')).toBe(commit);
      expect(header(d, 'accept-ranges')).toBe('bytes');
      expect(header(d, 'x-linked-etag')).toBeUndefined();
      expect(header(d, 'location')).toBeUndefined();
      expectNoXet(d);
    }
    expect(get.body.equals(config)).toBe(true);
    expect(head.body.length).toBe(0);
  });

  it('an LFS file: 200 (never a redirect), sha256 ETag and X-Linked-Etag, X-Linked-Size, no Xet headers', async () => {
    const info = hub.fileInfo({ id: 'org/model' }, 'model.safetensors');
    const head = await download(url('/org/model/resolve/main/model.safetensors'), { method: 'HEAD' });
    const get = await download(url('/org/model/resolve/main/model.safetensors'));
    for (const d of [head, get]) {
      expect(d.status).toBe(200);
      expect(header(d, 'content-length')).toBe(String(weights.length));
      expect(header(d, 'etag')).toBe(`"${info.sha256}"`);
      expect(header(d, 'x-linked-etag')).toBe(`"${info.sha256}"`);
      expect(header(d, 'x-linked-size')).toBe(String(weights.length));
      expect(header(d, 'x-repo-commit')).toBe(commit);
      expect(header(d, 'content-type')).toBe('application/octet-stream');
      expectNoXet(d);
    }
    expect(get.body.equals(weights)).toBe(true);
    // HEAD = GET's headers (but for per-response ones).
    const skip = new Set(['date', 'x-request-id', 'x-mirror-cache', 'connection', 'keep-alive']);
    const pick = (d: Download) => Object.fromEntries(Object.entries(d.headers).filter(([k]) => !skip.has(k)));
    expect(pick(head)).toEqual(pick(get));
  });

  it('the JS probe (Range 0-0 with the Xet Accept) gets a plain 206, and upstream never sees that Accept', async () => {
    const probe = await download(url('/org/model/resolve/main/model.safetensors'), {
      headers: { range: 'bytes=0-0', accept: 'application/vnd.xet-fileinfo+json, */*' },
    });
    expect(probe.status).toBe(206);
    expect(header(probe, 'content-range')).toBe(`bytes 0-0/${weights.length}`);
    expect(probe.body.equals(weights.subarray(0, 1))).toBe(true);
    expectNoXet(probe);
    expect(hub.requests.filter((r) => String(r.headers.accept ?? '').includes('xet'))).toEqual([]);
  });

  it('serves datasets, spaces, legacy ids, nested paths, tags, PR refs (encoded or not) and commits', async () => {
    const cases: Array<[string, Buffer]> = [
      ['/datasets/org/data/resolve/main/data/train.csv', Buffer.from('a,b\n1,2\n')],
      ['/spaces/org/app/resolve/main/app.py', Buffer.from('print("hi")\n')],
      ['/gpt-legacy/resolve/main/sub/dir/x.bin', nested],
      ['/org/model/resolve/main/sub/dir/x.bin', nested],
      ['/org/model/resolve/v1.0/config.json', config],
      [`/org/model/resolve/${commit}/config.json`, config],
      ['/org/model/resolve/refs%2Fpr%2F1/config.json', Buffer.from('{"pr": 1}\n')],
      ['/org/model/resolve/refs/pr/1/config.json', Buffer.from('{"pr": 1}\n')],
      ['/org/model/resolve/main/with%20space%23.txt', Buffer.from('odd name\n')],
    ];
    for (const [p, bytes] of cases) {
      const d = await download(url(p));
      expect({ p, status: d.status }).toEqual({ p, status: 200 });
      expect(d.body.equals(bytes)).toBe(true);
    }
    const pr = await download(url('/org/model/resolve/refs%2Fpr%2F1/config.json'), { method: 'HEAD' });
    expect(header(pr, 'x-repo-commit')).toBe(hub.head({ id: 'org/model' }, 'refs/pr/1'));
  });

  it('/raw/ serves the git object: the LFS pointer for an LFS file', async () => {
    const info = hub.fileInfo({ id: 'org/model' }, 'model.safetensors');
    const raw = await download(url('/org/model/raw/main/model.safetensors'));
    expect(raw.status).toBe(200);
    expect(raw.body.equals(lfsPointer(info.sha256, weights.length))).toBe(true);
    expect(header(raw, 'etag')).toBe(`"${info.oid}"`);
    expect(header(raw, 'x-linked-etag')).toBeUndefined();
  });
});

describe('errors keep the Hub codes', () => {
  it('missing file → 404 EntryNotFound with X-Repo-Commit', async () => {
    const d = await download(url('/org/model/resolve/main/missing.txt'));
    expect(d.status).toBe(404);
    expect(header(d, 'x-error-code')).toBe('EntryNotFound');
    expect(header(d, 'x-repo-commit')).toBe(commit);
  });

  it('missing revision → 404 RevisionNotFound', async () => {
    const d = await download(url('/org/model/resolve/no-such-branch/config.json'));
    expect(d.status).toBe(404);
    expect(header(d, 'x-error-code')).toBe('RevisionNotFound');
  });

  it('missing repo → RepoNotFound, anonymous (401, code added for http:// mirrors) and with a token (404)', async () => {
    const anon = await download(url('/org/does-not-exist/resolve/main/x'));
    expect(anon.status).toBe(401);
    expect(header(anon, 'x-error-code')).toBe('RepoNotFound');
    const withToken = await download(url('/org/does-not-exist/resolve/main/x'), { headers: bearer(TOKEN_B) });
    expect(withToken.status).toBe(404);
    expect(header(withToken, 'x-error-code')).toBe('RepoNotFound');
  });

  it('gated file → 401 GatedRepo anonymous, 403 GatedRepo without a grant; README stays public', async () => {
    const anon = await download(url('/org/gated/resolve/main/weights.safetensors'));
    expect([anon.status, header(anon, 'x-error-code')]).toEqual([401, 'GatedRepo']);
    const b = await download(url('/org/gated/resolve/main/weights.safetensors'), { headers: bearer(TOKEN_B) });
    expect([b.status, header(b, 'x-error-code')]).toEqual([403, 'GatedRepo']);
    const readme = await download(url('/org/gated/resolve/main/README.md'));
    expect(readme.status).toBe(200);
  });

  it('malformed names → 400 with an X-Error-Code, and upstream is never asked', async () => {
    const before = hub.requests.length;
    const cases: Array<[string, string]> = [
      ['/org/model/resolve/main/../../../etc/passwd', 'InvalidPath'],
      ['/org/model/resolve/main/%2e%2e/%2e%2e/etc/passwd', 'InvalidPath'],
      ['/org/model/resolve/main/a%00b', 'InvalidPath'],
      ['/org/model/resolve/main/a%0d%0aX-Evil:%201', 'InvalidPath'],
      ['/org/mo..del/resolve/main/config.json', 'InvalidRepoId'],
      ['/org/model/resolve/ma..in/config.json', 'InvalidRevision'],
      ['/org/model/resolve/main/%ZZ', 'InvalidPath'],
    ];
    for (const [p, code] of cases) {
      // Raw bytes on the socket: a URL-parsing client would normalise `..` before sending.
      const { status, head } = await rawGet(mirror.url, p);
      const errorCode = /^x-error-code: (.*)$/im.exec(head)?.[1];
      expect({ p, status, code: errorCode }).toEqual({ p, status: 400, code });
      expect(head).not.toMatch(/^x-evil/im);
    }
    expect(hub.requests.length).toBe(before);
  });
});

describe('credentials', () => {
  it('go to the Hub origin on HEAD and GET, never to the CDN', async () => {
    const id = 'org/gated';
    const p = '/org/gated/resolve/main/weights.safetensors';
    const d = await download(url(p), { headers: bearer(TOKEN_A) });
    expect(d.status).toBe(200);
    expect(d.complete).toBe(true);
    const hubCalls = hub.requests.filter((r) => r.server === 'hub' && r.path.includes(`${id}/resolve/`) && r.path.endsWith('weights.safetensors') && r.status !== 401 && r.status !== 403);
    expect(hubCalls.length).toBeGreaterThan(0);
    for (const r of hubCalls) expect(r.headers.authorization).toBe(`Bearer ${TOKEN_A}`);
    const cdnCalls = hub.requests.filter((r) => r.server === 'cdn');
    expect(cdnCalls.length).toBeGreaterThan(0);
    for (const r of cdnCalls) expect(r.hasAuthorization).toBe(false);
  });

  it('a cached gated file is only served after upstream grants the caller', async () => {
    const p = '/org/gated/resolve/main/weights.safetensors';
    const warm = await download(url(p), { headers: bearer(TOKEN_A) });
    expect(warm.status).toBe(200);
    for (const method of ['GET', 'HEAD'] as const) {
      const variants: Array<Record<string, string>> = [{}, bearer(TOKEN_B), { ...bearer(TOKEN_B), range: 'bytes=0-99' }, { range: 'bytes=0-99' }];
      for (const headers of variants) {
        const d = await download(url(p), { method, headers });
        expect([401, 403]).toContain(d.status);
        expect(header(d, 'x-error-code')).toBe('GatedRepo');
        expect(d.body.length).toBe(method === 'HEAD' ? 0 : d.body.length);
        expect(d.body.toString()).not.toContain('\u0000');
        expect(header(d, 'etag')).toBeUndefined();
        expect(header(d, 'x-linked-size')).toBeUndefined();
        expect(header(d, 'x-repo-commit')).toBeUndefined();
      }
    }
  });

  it('private repos answer RepoNotFound to others even when cached', async () => {
    const p = '/org/private/resolve/main/config.json';
    expect((await download(url(p), { headers: bearer(TOKEN_A) })).status).toBe(200);
    const anon = await download(url(p));
    expect([anon.status, header(anon, 'x-error-code')]).toEqual([401, 'RepoNotFound']);
    const b = await download(url(p), { headers: bearer(TOKEN_B) });
    expect([b.status, header(b, 'x-error-code')]).toEqual([404, 'RepoNotFound']);
    expect(anon.body.toString()).not.toContain('secret');
  });

  it('revocation upstream takes effect within the grant TTL', async () => {
    const clock = new TestClock();
    const short = await startMirror(hub.url, { authTtlSeconds: 60 }, { clock });
    const id = 'org/gated-revoke';
    hub.addRepo({ id, files: { 'w.safetensors': makeContent(100_000, 11) }, gated: { allowedTokens: ['hf_valid_revoke_me'] } });
    const p = `${short.url}/${id}/resolve/main/w.safetensors`;
    try {
      expect((await download(p, { headers: bearer('hf_valid_revoke_me') })).status).toBe(200);
      hub.revoke({ id }, 'hf_valid_revoke_me');
      clock.advance(60_000 + 1);
      const after = await download(p, { headers: bearer('hf_valid_revoke_me') });
      expect([after.status, header(after, 'x-error-code')]).toEqual([403, 'GatedRepo']);
    } finally {
      await short.destroy();
    }
  });
});

describe('when the mirror asks upstream', () => {
  it('a commit-addressed cached file costs no upstream request at all', async () => {
    const p = url(`/org/model/resolve/${commit}/sub/dir/x.bin`);
    await download(p);
    const before = hub.requests.length;
    for (let i = 0; i < 5; i++) {
      const d = await download(p);
      expect(d.body.equals(nested)).toBe(true);
      const h = await download(p, { method: 'HEAD' });
      expect(header(h, 'x-mirror-cache')).toBe('hit');
    }
    expect(hub.requests.length).toBe(before);
  });

  it('a branch is re-resolved after refs TTL; within it every answer names the same commit', async () => {
    const clock = new TestClock();
    const m = await startMirror(hub.url, { refsTtlSeconds: 60 }, { clock });
    const id = 'org/moving';
    const { commit: c1 } = hub.addRepo({ id, files: { 'a.txt': Buffer.from('one\n'), 'b.txt': Buffer.from('b1\n') } });
    try {
      const a1 = await download(`${m.url}/${id}/resolve/main/a.txt`);
      expect(header(a1, 'x-repo-commit')).toBe(c1);
      const { commit: c2 } = hub.commit({ id }, { 'a.txt': Buffer.from('two\n'), 'b.txt': Buffer.from('b2\n') });
      // Within the TTL: still C1, for files asked for before and after the move.
      const b1 = await download(`${m.url}/${id}/resolve/main/b.txt`);
      expect([header(b1, 'x-repo-commit'), b1.body.toString()]).toEqual([c1, 'b1\n']);
      const upstreamHeads = hub.count({ server: 'hub', method: 'HEAD', pathIncludes: `${id}/resolve/` });
      expect(hub.requests.some((r) => r.path.includes(`${id}/resolve/main/b.txt`))).toBe(false); // asked by commit, not by branch
      clock.advance(60_000 + 1);
      const a2 = await download(`${m.url}/${id}/resolve/main/a.txt`);
      expect([header(a2, 'x-repo-commit'), a2.body.toString()]).toEqual([c2, 'two\n']);
      expect(hub.count({ server: 'hub', method: 'HEAD', pathIncludes: `${id}/resolve/` })).toBe(upstreamHeads + 1);
    } finally {
      await m.destroy();
    }
  });

  it('a request with a token always has upstream check that token (memoized briefly)', async () => {
    const p = url(`/org/model/resolve/${commit}/config.json`);
    await download(p);
    const before = hub.count({ server: 'hub', method: 'HEAD' });
    const d = await download(p, { headers: bearer('hf_valid_some_user') });
    expect(d.status).toBe(200);
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(before + 1);
    await download(p, { headers: bearer('hf_valid_some_user') });
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(before + 1);
  });
});

describe('conditional requests and ranges', () => {
  const p = () => url('/org/model/resolve/main/model.safetensors');
  const etag = () => `"${hub.fileInfo({ id: 'org/model' }, 'model.safetensors').sha256}"`;

  it('If-None-Match → 304 with the ETag', async () => {
    const d = await download(p(), { headers: { 'if-none-match': etag() } });
    expect(d.status).toBe(304);
    expect(header(d, 'etag')).toBe(etag());
    expect(d.body.length).toBe(0);
  });

  it('If-Range with the strong ETag honours Range; anything else gets the full body', async () => {
    const ok = await download(p(), { headers: { range: 'bytes=10-19', 'if-range': etag() } });
    expect(ok.status).toBe(206);
    expect(ok.body.equals(weights.subarray(10, 20))).toBe(true);
    for (const v of ['"something-else"', `W/${etag()}`, 'Wed, 21 Oct 2015 07:28:00 GMT']) {
      const full = await download(p(), { headers: { range: 'bytes=10-19', 'if-range': v } });
      expect(full.status).toBe(200);
      expect(full.body.length).toBe(weights.length);
    }
  });

  it('416 with bytes */size past the end; suffix and open-ended ranges; multi-range as multipart', async () => {
    const past = await download(p(), { headers: { range: `bytes=${weights.length}-` } });
    expect(past.status).toBe(416);
    expect(header(past, 'content-range')).toBe(`bytes */${weights.length}`);
    const suffix = await download(p(), { headers: { range: 'bytes=-500' } });
    expect(suffix.body.equals(weights.subarray(weights.length - 500))).toBe(true);
    const open = await download(p(), { headers: { range: `bytes=${weights.length - 10}-` } });
    expect(open.body.equals(weights.subarray(weights.length - 10))).toBe(true);
    const multi = await download(p(), { headers: { range: 'bytes=0-9,100-109' } });
    expect(multi.status).toBe(206);
    expect(header(multi, 'content-range')).toBeUndefined();
    expect(partsMatch(parseByteranges(header(multi, 'content-type'), multi.body), weights)).toEqual(['0-9', '100-109']);
  });
});

describe('upstream down', () => {
  it('cached public files are still served; uncached ones fail fast with a clear 503', async () => {
    const p = url('/org/model/resolve/main/config.json');
    expect((await download(p)).status).toBe(200);
    const m = await startMirror(hub.url, { refsTtlSeconds: 0, dataDir: mirror.dataDir + '-offline' });
    try {
      const cached = `${m.url}/org/model/resolve/main/config.json`;
      expect((await download(cached)).status).toBe(200);
      await hub.stop();
      const again = await download(cached);
      expect(again.status).toBe(200);
      expect(again.body.equals(config)).toBe(true);
      // Connection refused: answered at once, as unreachable (not after a timeout, which is a 504).
      const missing = await download(`${m.url}/org/model/resolve/main/never-fetched.bin`);
      expect(missing.status).toBe(503);
      expect(header(missing, 'x-error-message')).toMatch(/unreachable/i);
      const gated = await download(`${m.url}/org/gated/resolve/main/weights.safetensors`, { headers: bearer(TOKEN_A) });
      expect(gated.status).toBe(503);
    } finally {
      await hub.restart();
      await m.destroy();
    }
  });

  it('a metadata answer that takes too long becomes a 504 before the client would give up', async () => {
    const m = await startMirror(hub.url, { metadataTimeoutSeconds: 0.5 });
    // Upstream would answer after a minute: the 504 comes while it still has not.
    const fault = hub.setFault({ server: 'hub', method: 'HEAD', pathIncludes: 'org/model/resolve/main/slow.txt' }, { kind: 'headerDelay', ms: 60_000 });
    try {
      const d = await download(`${m.url}/org/model/resolve/main/slow.txt`);
      expect(d.status).toBe(504);
      expect(header(d, 'x-error-code')).toBe('UpstreamTimeout');
      const asked = hub.requests.filter((r) => r.method === 'HEAD' && r.path.includes('org/model/resolve/main/slow.txt'));
      expect(asked).toHaveLength(1);
      expect(asked[0]?.status).toBeUndefined(); // upstream never answered
    } finally {
      fault.remove();
      await m.destroy();
    }
  });
});
