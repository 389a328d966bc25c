import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { downloadFile, listFiles } from '@huggingface/hub';
import { gitBlobSha1Hex, lfsPointer, makeContent, sha256Hex } from '../support/content.js';
import { waitFor } from '../support/wait-for.js';
import { startFakeHub } from '../support/fake-hub.js';
import type { FakeHub } from '../support/fake-hub.js';

const MiB = 1024 * 1024;
const X = { type: 'model', id: 'org/x' } as const;

const files = {
  'README.md': Buffer.from('# org/x\n\nA test model.\n'),
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
  'config.json': Buffer.from('{"model_type":"test","hidden_size":8}\n'),
  'model.safetensors': makeContent(3 * MiB, 1),
  'big.bin': makeContent(5_000_000, 2),
  'sub/c.txt': Buffer.from('c\n'),
  'sub/dir/a.txt': Buffer.from('a\n'),
  'sub/dir/b.txt': Buffer.from('b\n'),
  'weird/a b#c ü.txt': Buffer.from('weird name\n'),
};

interface ReadResult {
  bytes: Buffer;
  error: unknown;
}

/** Reads a fetch body to the end or to the first error, keeping what arrived. */
/** Reads the whole body (or up to an error); `received` is kept up to date as bytes arrive. */
async function readAll(res: Response, received: { bytes: number } = { bytes: 0 }): Promise<ReadResult> {
  const chunks: Buffer[] = [];
  let error: unknown;
  const body = res.body;
  if (!body) return { bytes: Buffer.alloc(0), error };
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(Buffer.from(value));
      received.bytes += value.length;
    }
  } catch (err) {
    error = err;
  }
  return { bytes: Buffer.concat(chunks), error };
}

/** GET without following redirects. */
async function rawGet(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const h = (name: string): string | undefined => {
    const v = res.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  return { status: res.statusCode, h, body };
}

async function lfsLocation(hub: FakeHub, path: string, repo = 'org/x'): Promise<string> {
  const r = await rawGet(`${hub.url}/${repo}/resolve/main/${path}`);
  expect(r.status).toBe(302);
  const loc = r.h('location');
  if (!loc) throw new Error('no location');
  return loc;
}

function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

let hub: FakeHub;
let head: string;

beforeAll(async () => {
  hub = await startFakeHub();
  head = hub.addRepo({ ...X, files }).commit;
  hub.addRepo({ id: 'legacy', files: { 'README.md': Buffer.from('legacy\n') } });
  hub.addRepo({
    type: 'dataset',
    id: 'org/ds',
    smallFileRedirect: true,
    files: { 'README.md': Buffer.from('dataset card\n'), 'data/train.parquet': makeContent(20_000, 3) },
  });
  hub.addRepo({
    id: 'org/gated',
    gated: { allowedTokens: ['hf_A'] },
    files: { 'README.md': Buffer.from('gated card\n'), 'weights.safetensors': makeContent(50_000, 4) },
  });
  hub.addRepo({ id: 'org/private', private: { allowedTokens: ['hf_P'] }, files: { 'a.txt': Buffer.from('secret\n') } });
  hub.addRepo({ id: 'org/noxet', xet: false, files: { 'model.safetensors': makeContent(2 * MiB, 5) } });
});

afterAll(async () => {
  await hub.stop();
});

afterEach(() => {
  hub.clearFaults();
  hub.treePageSize = 50;
  hub.commitsPageSize = 50;
});

describe('content helpers', () => {
  it('is deterministic and prefix-stable, and every 1 MiB block differs', () => {
    // (How fast it is for big fixtures is for the benchmark, not for this test.)
    expect(makeContent(1000, 7).equals(makeContent(1000, 7))).toBe(true);
    expect(makeContent(3 * MiB, 7).subarray(0, 2 * MiB).equals(makeContent(2 * MiB, 7))).toBe(true);
    expect(makeContent(1000, 7).equals(makeContent(1000, 8))).toBe(false);
    const big = makeContent(64 * MiB + 5, 9);
    expect(big.length).toBe(64 * MiB + 5);
    // Blocks differ from each other.
    expect(big.subarray(0, MiB).equals(big.subarray(MiB, 2 * MiB))).toBe(false);
    expect(big.subarray(10 * MiB, 10 * MiB + 4096).equals(big.subarray(50 * MiB, 50 * MiB + 4096))).toBe(false);
    expect(new Set(Array.from({ length: 64 }, (_, i) => big.subarray(i * MiB, i * MiB + 64).toString('hex'))).size).toBe(64);
    expect(gitBlobSha1Hex(Buffer.from('hello\n'))).toBe('ce013625030ba8dba906f756967f9e9ca394464a');
  });
});

describe('resolve', () => {
  it('serves a regular file with the Hub headers, Range and 416', async () => {
    const content = files['config.json'];
    const etag = `"${gitBlobSha1Hex(content)}"`;
    const url = `${hub.url}/org/x/resolve/main/config.json`;
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(content)).toBe(true);
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(res.headers.get('content-length')).toBe(String(content.length));
    expect(res.headers.get('etag')).toBe(etag);
    expect(res.headers.get('x-repo-commit')).toBe(head);
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('content-disposition')).toContain('filename="config.json"');
    expect(res.headers.get('x-request-id')).toBeTruthy();
    expect(res.headers.get('vary')).toBe('Origin, Accept');
    expect(res.headers.get('access-control-expose-headers')).toContain('X-Linked-Size');

    const h = await fetch(url, { method: 'HEAD' });
    expect(h.status).toBe(200);
    expect(h.headers.get('content-length')).toBe(String(content.length));
    expect(h.headers.get('etag')).toBe(etag);

    const r = await fetch(url, { headers: { Range: 'bytes=0-0' } });
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe(`bytes 0-0/${content.length}`);
    expect(r.headers.get('etag')).toBe(etag);
    expect(Buffer.from(await r.arrayBuffer()).equals(content.subarray(0, 1))).toBe(true);

    const suffix = await fetch(url, { headers: { Range: 'bytes=-5' } });
    expect(suffix.status).toBe(206);
    expect(Buffer.from(await suffix.arrayBuffer()).equals(content.subarray(-5))).toBe(true);

    const bad = await fetch(url, { headers: { Range: `bytes=${content.length}-` } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${content.length}`);
    await bad.arrayBuffer();

    // Commit-addressed, legacy id, odd file names.
    expect((await fetch(`${hub.url}/org/x/resolve/${head}/config.json`)).status).toBe(200);
    const legacy = await fetch(`${hub.url}/legacy/resolve/main/README.md`);
    expect(await legacy.text()).toBe('legacy\n');
    const weird = await fetch(`${hub.url}/org/x/resolve/main/weird/a%20b%23c%20%C3%BC.txt`);
    expect(weird.status).toBe(200);
    expect(await weird.text()).toBe('weird name\n');
    expect(weird.headers.get('content-disposition')).toContain("filename*=UTF-8''a%20b%23c%20%C3%BC.txt");
  });

  it('redirects an LFS file to the CDN origin with linked and Xet headers', async () => {
    const content = files['model.safetensors'];
    const sha = sha256Hex(content);
    const r = await rawGet(`${hub.url}/org/x/resolve/main/model.safetensors`, bearer('hf_whatever'));
    expect(r.status).toBe(302);
    const loc = r.h('location') ?? '';
    expect(loc.startsWith(`${hub.cdnUrl}/repos/`)).toBe(true);
    expect(loc).toMatch(new RegExp(`/${sha}\\?.*X-Amz-Signature=[0-9a-f]+.*Expires=\\d+`));
    expect(r.h('x-linked-size')).toBe(String(content.length));
    expect(r.h('x-linked-etag')).toBe(`"${sha}"`);
    expect(r.h('etag')).toBeTruthy();
    expect(r.h('etag')).not.toBe(`"${sha}"`);
    expect(r.h('x-repo-commit')).toBe(head);
    expect(r.h('content-length')).toBe(String(r.body.length));
    expect(r.h('x-xet-hash')).toMatch(/^[0-9a-f]{64}$/);
    const link = r.h('link') ?? '';
    expect(link).toContain(`<${hub.url}/api/models/org/x/xet-read-token/${head}>; rel="xet-auth"`);
    expect(link).toContain('rel="xet-reconstruction-info"');
    expect(hub.cdnUrl).not.toBe(hub.url);

    // HEAD gives the same metadata.
    const h = await rawGet(`${hub.url}/org/x/resolve/main/model.safetensors`, {}, 'HEAD');
    expect(h.status).toBe(302);
    expect(h.h('x-linked-size')).toBe(String(content.length));

    // Following by hand (no Authorization): bytes and digest match.
    const cdn = await fetch(loc);
    expect(cdn.status).toBe(200);
    expect(cdn.headers.get('content-type')).toBe('application/octet-stream');
    expect(cdn.headers.get('etag')).toBe(`"${sha}"`);
    expect(cdn.headers.get('accept-ranges')).toBe('bytes');
    const bytes = Buffer.from(await cdn.arrayBuffer());
    expect(sha256Hex(bytes)).toBe(sha);

    // fetch follows the cross-origin redirect and drops Authorization; the CDN records it.
    hub.resetCounters();
    const followed = await fetch(`${hub.url}/org/x/resolve/main/model.safetensors`, { headers: bearer('hf_tok') });
    expect(Buffer.from(await followed.arrayBuffer()).equals(content)).toBe(true);
    const [hubReq, cdnReq] = hub.requests;
    expect(hubReq?.hasAuthorization).toBe(true);
    expect(cdnReq?.server).toBe('cdn');
    expect(cdnReq?.hasAuthorization).toBe(false);
    await rawGet(loc, bearer('hf_tok'));
    expect(hub.requests.at(-1)?.hasAuthorization).toBe(true);
  });

  it('handles Range, 416 and If-Range on the CDN', async () => {
    const content = files['model.safetensors'];
    const sha = sha256Hex(content);
    const loc = await lfsLocation(hub, 'model.safetensors');
    const part = await fetch(loc, { headers: { Range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${content.length}`);
    expect(part.headers.get('content-length')).toBe('10');
    expect(Buffer.from(await part.arrayBuffer()).equals(content.subarray(10, 20))).toBe(true);

    const open = await fetch(loc, { headers: { Range: `bytes=${content.length - 100}-` } });
    expect(open.status).toBe(206);
    expect((await open.arrayBuffer()).byteLength).toBe(100);

    const bad = await fetch(loc, { headers: { Range: `bytes=${content.length}-` } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('content-range')).toBe(`bytes */${content.length}`);
    await bad.arrayBuffer();

    const ifRangeOk = await fetch(loc, { headers: { Range: 'bytes=0-99', 'If-Range': `"${sha}"` } });
    expect(ifRangeOk.status).toBe(206);
    await ifRangeOk.arrayBuffer();
    const ifRangeBad = await fetch(loc, { headers: { Range: 'bytes=0-99', 'If-Range': '"other"' } });
    expect(ifRangeBad.status).toBe(200);
    expect((await ifRangeBad.arrayBuffer()).byteLength).toBe(content.length);

    // Any signature is accepted; an expired URL is refused.
    const resigned = loc.replace(/X-Amz-Signature=[0-9a-f]+/, 'X-Amz-Signature=deadbeef');
    const again = await fetch(resigned, { method: 'HEAD' });
    expect(again.status).toBe(200);
    expect(again.headers.get('content-length')).toBe(String(content.length));
    const expired = await fetch(loc.replace(/&Expires=\d+/, '&Expires=1000'));
    expect(expired.status).toBe(403);
    await expired.arrayBuffer();
  });

  it('answers the Xet file-info probe, and /raw/ with the LFS pointer', async () => {
    const content = files['model.safetensors'];
    const sha = sha256Hex(content);
    const probe = await fetch(`${hub.url}/org/x/resolve/main/model.safetensors`, {
      headers: { Range: 'bytes=0-0', Accept: 'application/vnd.xet-fileinfo+json, */*' },
    });
    expect(probe.status).toBe(200);
    expect(probe.headers.get('content-type')).toBe('application/vnd.xet-fileinfo+json');
    expect(probe.headers.get('x-xet-hash')).toMatch(/^[0-9a-f]{64}$/);
    expect(probe.headers.get('x-linked-size')).toBe(String(content.length));
    expect(probe.headers.get('link')).toContain('xet-reconstruction-info');
    const info: unknown = await probe.json();
    expect(info).toMatchObject({ hash: probe.headers.get('x-xet-hash'), size: content.length });

    // Without Xet the same probe follows the 302 and gets a 206 from the CDN.
    const noXet = await fetch(`${hub.url}/org/noxet/resolve/main/model.safetensors`, {
      headers: { Range: 'bytes=0-0', Accept: 'application/vnd.xet-fileinfo+json, */*' },
    });
    expect(noXet.status).toBe(206);
    expect(noXet.headers.get('content-range')).toBe(`bytes 0-0/${2 * MiB}`);
    expect(noXet.headers.get('x-xet-hash')).toBeNull();
    await noXet.arrayBuffer();
    const noXetRedirect = await rawGet(`${hub.url}/org/noxet/resolve/main/model.safetensors`);
    expect(noXetRedirect.h('x-xet-hash')).toBeUndefined();
    expect(noXetRedirect.h('link')).toBeUndefined();

    const pointer = lfsPointer(sha, content.length);
    const raw = await rawGet(`${hub.url}/org/x/raw/main/model.safetensors`);
    expect(raw.status).toBe(200);
    expect(raw.body.equals(pointer)).toBe(true);
    expect(raw.body.toString()).toContain(`oid sha256:${sha}`);
    expect(raw.h('etag')).toBe(`"${gitBlobSha1Hex(pointer)}"`);
    const rawHead = await rawGet(`${hub.url}/org/x/raw/main/nope.txt`, {}, 'HEAD');
    expect(rawHead.status).toBe(404);
  });

  it('does the relative 307 to /api/resolve-cache/ when smallFileRedirect is on', async () => {
    const dsHead = hub.head({ type: 'dataset', id: 'org/ds' });
    const r = await rawGet(`${hub.url}/datasets/org/ds/resolve/main/README.md`);
    expect(r.status).toBe(307);
    const loc = r.h('location') ?? '';
    expect(loc.startsWith(`/api/resolve-cache/datasets/org/ds/${dsHead}/README.md?`)).toBe(true);
    expect(r.h('etag')).toBeUndefined();
    expect(r.h('x-repo-commit')).toBe(dsHead);
    const cached = await rawGet(`${hub.url}${loc}`, {}, 'HEAD');
    expect(cached.status).toBe(200);
    expect(cached.h('etag')).toBe(`"${gitBlobSha1Hex(Buffer.from('dataset card\n'))}"`);
    expect(cached.h('content-length')).toBe('13');
    expect(cached.h('x-repo-commit')).toBe(dsHead);
    const followed = await fetch(`${hub.url}/datasets/org/ds/resolve/main/README.md`);
    expect(await followed.text()).toBe('dataset card\n');
    // LFS files of that repo still go to the CDN.
    expect((await rawGet(`${hub.url}/datasets/org/ds/resolve/main/data/train.parquet`)).status).toBe(302);
  });
});

describe('errors', () => {
  it('EntryNotFound and RevisionNotFound', async () => {
    const missing = await rawGet(`${hub.url}/org/x/resolve/main/nope.json`);
    expect(missing.status).toBe(404);
    expect(missing.h('x-error-code')).toBe('EntryNotFound');
    expect(missing.h('x-error-message')).toBe('Entry not found');
    expect(missing.h('x-repo-commit')).toBe(head);
    expect(missing.h('content-type')).toBe('text/plain; charset=utf-8');
    expect(missing.body.toString()).toBe('Entry not found');

    const rev = await rawGet(`${hub.url}/org/x/resolve/nobranch/config.json`);
    expect(rev.status).toBe(404);
    expect(rev.h('x-error-code')).toBe('RevisionNotFound');
    expect(rev.h('x-error-message')).toContain('nobranch');
    const apiRev = await rawGet(`${hub.url}/api/models/org/x/revision/nobranch`);
    expect(apiRev.status).toBe(404);
    expect(apiRev.h('x-error-code')).toBe('RevisionNotFound');
  });

  it('missing and private repos: anonymous 401, token 404 RepoNotFound', async () => {
    for (const url of [`${hub.url}/org/none/resolve/main/a.txt`, `${hub.url}/api/models/org/none`]) {
      const anon = await rawGet(url);
      expect(anon.status).toBe(401);
      expect(anon.h('x-error-code')).toBeUndefined();
      expect(anon.h('x-error-message')).toBe('Invalid username or password.');
      expect(JSON.parse(anon.body.toString())).toEqual({ error: 'Invalid username or password.' });
      const tok = await rawGet(url, bearer('hf_valid_someone'));
      expect(tok.status).toBe(404);
      expect(tok.h('x-error-code')).toBe('RepoNotFound');
    }
    for (const url of [
      `${hub.url}/org/private/resolve/main/a.txt`,
      `${hub.url}/api/models/org/private`,
      `${hub.url}/api/models/org/private/tree/main`,
    ]) {
      expect((await rawGet(url)).status).toBe(401);
      const wrong = await rawGet(url, bearer('hf_A'));
      expect(wrong.status).toBe(404);
      expect(wrong.h('x-error-code')).toBe('RepoNotFound');
      expect((await rawGet(url, bearer('hf_P'))).status).toBe(200);
    }
  });

  it('gated repo: 401 anonymous/unknown token, 403 known token, public README, revoke', async () => {
    const url = `${hub.url}/org/gated/resolve/main/weights.safetensors`;
    for (const headers of [{}, bearer('garbage')]) {
      const r = await rawGet(url, headers);
      expect(r.status).toBe(401);
      expect(r.h('x-error-code')).toBe('GatedRepo');
      expect(r.h('x-error-message')).toContain('is restricted. You must have access to it and be authenticated');
      expect(r.h('x-linked-size')).toBeUndefined();
    }
    const forbidden = await rawGet(url, bearer('hf_valid_B'));
    expect(forbidden.status).toBe(403);
    expect(forbidden.h('x-error-code')).toBe('GatedRepo');
    expect((await rawGet(url, bearer('hf_A'))).status).toBe(302);
    expect((await rawGet(`${hub.url}/org/gated/resolve/main/README.md`)).status).toBe(200);
    const info = await fetch(`${hub.url}/api/models/org/gated`);
    expect(info.status).toBe(200);
    expect(await info.json()).toMatchObject({ id: 'org/gated', gated: 'auto' });

    hub.revoke({ id: 'org/gated' }, 'hf_A');
    const revoked = await rawGet(url, bearer('hf_A'));
    expect(revoked.status).toBe(403);
    hub.grant({ id: 'org/gated' }, 'hf_A');
    expect((await rawGet(url, bearer('hf_A'))).status).toBe(302);
  });
});

describe('API', () => {
  it('paginates the recursive tree with absolute Link headers', async () => {
    hub.treePageSize = 3;
    let next: string | undefined = `${hub.url}/api/models/org/x/tree/main?recursive=true&expand=false`;
    const entries: Array<{ type: string; path: string; oid: string; size: number; lfs?: unknown; xetHash?: string }> = [];
    let pages = 0;
    while (next) {
      const res: Response = await fetch(next);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
      entries.push(...((await res.json()) as typeof entries));
      pages++;
      const link = res.headers.get('link');
      if (link) {
        const m = /<(https?:\/\/[^>]+)>;\s+rel="([^"]+)"/.exec(link);
        expect(m?.[2]).toBe('next');
        expect(m?.[1]?.startsWith(`${hub.url}/api/models/org/x/tree/main?`)).toBe(true);
        expect(m?.[1]).toContain('cursor=');
        next = m?.[1];
      } else {
        next = undefined;
      }
    }
    expect(pages).toBeGreaterThanOrEqual(3);
    const filePaths = entries.filter((e) => e.type === 'file').map((e) => e.path).sort();
    expect(filePaths).toEqual(Object.keys(files).sort());
    const dirs = entries.filter((e) => e.type === 'directory').map((e) => e.path).sort();
    expect(dirs).toEqual(['sub', 'sub/dir', 'weird']);
    const lfs = entries.find((e) => e.path === 'model.safetensors');
    const sha = sha256Hex(files['model.safetensors']);
    expect(lfs).toMatchObject({
      type: 'file',
      size: files['model.safetensors'].length,
      lfs: { oid: sha, size: files['model.safetensors'].length },
    });
    expect(lfs?.xetHash).toMatch(/^[0-9a-f]{64}$/);
    expect(lfs?.oid).toBe(gitBlobSha1Hex(lfsPointer(sha, files['model.safetensors'].length)));
    const cfg = entries.find((e) => e.path === 'config.json');
    expect(cfg).toEqual({
      type: 'file',
      oid: gitBlobSha1Hex(files['config.json']),
      size: files['config.json'].length,
      path: 'config.json',
    });
  });

  it('lists one directory, accepts sub%2Fdir, expands, 404s a missing path', async () => {
    const top = (await (await fetch(`${hub.url}/api/models/org/x/tree/main`)).json()) as Array<{ path: string }>;
    expect(top.map((e) => e.path)).toContain('sub');
    expect(top.map((e) => e.path)).not.toContain('sub/c.txt');
    const sub = (await (await fetch(`${hub.url}/api/models/org/x/tree/main/sub%2Fdir?expand=true`)).json()) as Array<{
      path: string;
      lastCommit?: { id: string };
      securityFileStatus?: { status: string };
    }>;
    expect(sub.map((e) => e.path)).toEqual(['sub/dir/a.txt', 'sub/dir/b.txt']);
    expect(sub[0]?.lastCommit?.id).toBe(head);
    expect(sub[0]?.securityFileStatus?.status).toBe('safe');
    const raw = (await (await fetch(`${hub.url}/api/models/org/x/tree/main/sub/dir`)).json()) as unknown[];
    expect(raw).toHaveLength(2);
    const missing = await rawGet(`${hub.url}/api/models/org/x/tree/main/nope`);
    expect(missing.status).toBe(404);
    expect(missing.h('x-error-code')).toBe('EntryNotFound');
  });

  it('paths-info accepts form and JSON bodies', async () => {
    const form = await fetch(`${hub.url}/api/models/org/x/paths-info/main`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: 'paths=config.json&paths=sub&paths=missing.txt&expand=false',
    });
    expect(form.status).toBe(200);
    const formBody = (await form.json()) as Array<{ type: string; path: string; lastCommit?: unknown }>;
    expect(formBody.map((e) => [e.type, e.path])).toEqual([
      ['file', 'config.json'],
      ['directory', 'sub'],
    ]);
    expect(formBody[0]?.lastCommit).toBeUndefined();

    const json = await fetch(`${hub.url}/api/models/org/x/paths-info/${head}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ paths: ['model.safetensors'], expand: true }),
    });
    const jsonBody = (await json.json()) as Array<{ lfs?: { oid: string }; lastCommit?: { id: string } }>;
    expect(jsonBody).toHaveLength(1);
    expect(jsonBody[0]?.lfs?.oid).toBe(sha256Hex(files['model.safetensors']));
    expect(jsonBody[0]?.lastCommit?.id).toBe(head);
  });

  it('repo info: siblings, blobs=true, expand, HEAD alias, legacy ids', async () => {
    const full = (await (await fetch(`${hub.url}/api/models/org/x/revision/main?blobs=true`)).json()) as {
      id: string;
      sha: string;
      private: boolean;
      gated: boolean;
      siblings: Array<{ rfilename: string; size?: number; blobId?: string; lfs?: { sha256: string; pointerSize: number } }>;
    };
    expect(full).toMatchObject({ id: 'org/x', sha: head, private: false, gated: false });
    expect(full.siblings.map((s) => s.rfilename).sort()).toEqual(Object.keys(files).sort());
    const st = full.siblings.find((s) => s.rfilename === 'model.safetensors');
    expect(st?.size).toBe(files['model.safetensors'].length);
    expect(st?.lfs?.sha256).toBe(sha256Hex(files['model.safetensors']));
    expect(st?.lfs?.pointerSize).toBeGreaterThan(100);

    const expanded = await (
      await fetch(`${hub.url}/api/models/org/x/revision/HEAD?expand=sha&expand[]=private`)
    ).json();
    expect(Object.keys(expanded as object).sort()).toEqual(['_id', 'id', 'private', 'sha']);
    expect(expanded).toMatchObject({ id: 'org/x', sha: head, private: false });

    const legacy = (await (await fetch(`${hub.url}/api/models/legacy`)).json()) as { id: string };
    expect(legacy.id).toBe('legacy');
    const ds = (await (await fetch(`${hub.url}/api/datasets/org/ds`)).json()) as { id: string };
    expect(ds.id).toBe('org/ds');
  });

  it('commits, branches, tags and refs/pr/N', async () => {
    const ref = { id: 'org/evolving' };
    const c1 = hub.addRepo({ ...ref, files: { 'a.txt': Buffer.from('v1\n'), 'b.txt': Buffer.from('b\n') } }).commit;
    const c2 = hub.commit(ref, { 'a.txt': Buffer.from('v2\n') }).commit;
    const c3 = hub.commit(ref, { 'b.txt': null }).commit;
    expect(new Set([c1, c2, c3]).size).toBe(3);
    for (const c of [c1, c2, c3]) expect(c).toMatch(/^[0-9a-f]{40}$/);
    expect(hub.head(ref)).toBe(c3);

    const a = await fetch(`${hub.url}/org/evolving/resolve/main/a.txt`);
    expect(await a.text()).toBe('v2\n');
    expect(a.headers.get('x-repo-commit')).toBe(c3);
    expect(await (await fetch(`${hub.url}/org/evolving/resolve/${c1}/a.txt`)).text()).toBe('v1\n');
    expect((await rawGet(`${hub.url}/org/evolving/resolve/main/b.txt`)).status).toBe(404);
    expect((await rawGet(`${hub.url}/org/evolving/resolve/${c2}/b.txt`)).status).toBe(200);

    hub.addTag(ref, 'v1.0', c1);
    hub.addBranch(ref, 'dev', c2);
    expect(await (await fetch(`${hub.url}/org/evolving/resolve/v1.0/a.txt`)).text()).toBe('v1\n');
    expect(await (await fetch(`${hub.url}/org/evolving/resolve/dev/a.txt`)).text()).toBe('v2\n');

    const pr = hub.addPullRequest(ref, 1, { 'pr.txt': Buffer.from('pr\n') }).commit;
    expect(hub.head(ref)).toBe(c3);
    const viaPr = await fetch(`${hub.url}/org/evolving/resolve/refs%2Fpr%2F1/pr.txt`);
    expect(await viaPr.text()).toBe('pr\n');
    expect(viaPr.headers.get('x-repo-commit')).toBe(pr);
    const treePr = (await (await fetch(`${hub.url}/api/models/org/evolving/tree/refs/pr/1`)).json()) as Array<{
      path: string;
    }>;
    expect(treePr.map((e) => e.path)).toEqual(['a.txt', 'pr.txt']);
    const treePrEnc = (await (await fetch(`${hub.url}/api/models/org/evolving/tree/refs%2Fpr%2F1`)).json()) as unknown[];
    expect(treePrEnc).toHaveLength(2);
    const revPr = (await (await fetch(`${hub.url}/api/models/org/evolving/revision/refs%2Fpr%2F1`)).json()) as {
      sha: string;
    };
    expect(revPr.sha).toBe(pr);

    const refs = (await (await fetch(`${hub.url}/api/models/org/evolving/refs?include_prs=1`)).json()) as {
      branches: Array<{ name: string; ref: string; targetCommit: string }>;
      tags: Array<{ name: string; targetCommit: string }>;
      converts: unknown[];
      pullRequests: Array<{ ref: string; targetCommit: string }>;
    };
    expect(refs.branches[0]).toEqual({ name: 'main', ref: 'refs/heads/main', targetCommit: c3 });
    expect(refs.branches.map((b) => b.name)).toEqual(['main', 'dev']);
    expect(refs.tags).toEqual([{ name: 'v1.0', ref: 'refs/tags/v1.0', targetCommit: c1 }]);
    expect(refs.converts).toEqual([]);
    expect(refs.pullRequests).toEqual([{ name: 'refs/pr/1', ref: 'refs/pr/1', targetCommit: pr }]);

    hub.commitsPageSize = 2;
    const page0 = await fetch(`${hub.url}/api/models/org/evolving/commits/main`);
    const list0 = (await page0.json()) as Array<{ id: string; title: string; date: string }>;
    expect(list0.map((c) => c.id)).toEqual([c3, c2]);
    const next = /<([^>]+)>;\s+rel="next"/.exec(page0.headers.get('link') ?? '')?.[1];
    expect(next).toContain('p=1');
    const list1 = (await (await fetch(next ?? '')).json()) as Array<{ id: string }>;
    expect(list1.map((c) => c.id)).toEqual([c1]);
  });

  it('whoami-v2 and xet-read-token', async () => {
    expect((await rawGet(`${hub.url}/api/whoami-v2`)).status).toBe(401);
    expect((await rawGet(`${hub.url}/api/whoami-v2`, bearer('hf_nope'))).status).toBe(401);
    const me = await fetch(`${hub.url}/api/whoami-v2`, { headers: bearer('hf_valid_me') });
    expect(me.status).toBe(200);
    expect(await me.json()).toMatchObject({
      type: 'user',
      orgs: [],
      auth: { type: 'access_token', accessToken: { role: 'read' } },
    });
    expect((await rawGet(`${hub.url}/api/whoami-v2`, bearer('hf_A'))).status).toBe(200);

    const tok = await fetch(`${hub.url}/api/models/org/x/xet-read-token/${head}`);
    expect(tok.status).toBe(200);
    expect(await tok.json()).toMatchObject({ accessToken: expect.any(String), exp: expect.any(Number), casUrl: expect.any(String) });
  });
});

describe('faults', () => {
  it('throttle: 5 MB at 50 MB/s is never faster than the rate (plus its 1 MB burst)', async () => {
    const loc = await lfsLocation(hub, 'big.bin');
    hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: 50_000_000 });
    const t0 = performance.now();
    const res = await fetch(loc);
    const bytes = Buffer.from(await res.arrayBuffer());
    const elapsed = performance.now() - t0;
    expect(bytes.equals(files['big.bin'])).toBe(true);
    // A lower bound only (a slow machine can only make it slower): 4 MB past the burst at 50 MB/s.
    expect(elapsed).toBeGreaterThanOrEqual(80 - 5);
  });

  it('stall for a while, then forever', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    hub.setFault({ server: 'cdn' }, { kind: 'stall', afterBytes: 1000, ms: 300, times: 1 });
    const t0 = performance.now();
    const ok = await fetch(loc);
    expect(Buffer.from(await ok.arrayBuffer()).equals(files['model.safetensors'])).toBe(true);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(280);

    hub.setFault({ server: 'cdn' }, { kind: 'stall', afterBytes: 70_000 });
    const ac = new AbortController();
    const res = await fetch(loc, { signal: ac.signal });
    expect(res.headers.get('content-length')).toBe(String(files['model.safetensors'].length));
    const received = { bytes: 0 };
    const reading = readAll(res, received);
    // Stalled for good after 70,000 bytes: the client has them all, then gives up.
    await waitFor(() => received.bytes >= 70_000, { what: 'the bytes before the stall' });
    ac.abort();
    const { bytes, error } = await reading;
    expect(error).toBeDefined();
    expect(bytes.length).toBe(70_000);
    expect(bytes.equals(files['model.safetensors'].subarray(0, 70_000))).toBe(true);
  });

  it('drop after N bytes, only the first time', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    const handle = hub.setFault({ server: 'cdn', pathIncludes: '/repos/' }, { kind: 'drop', afterBytes: 100_000, times: 1 });
    hub.resetCounters();
    const res = await fetch(loc);
    const { bytes, error } = await readAll(res);
    expect(error).toBeDefined();
    expect(bytes.length).toBe(100_000);
    expect(hub.bytesSent({ server: 'cdn' })).toBe(100_000);
    expect(handle.applied).toBe(1);
    const again = await fetch(loc);
    expect(Buffer.from(await again.arrayBuffer()).equals(files['model.safetensors'])).toBe(true);
  });

  it('wrongBytes: same headers and length, different content', async () => {
    hub.setFault({ pathIncludes: 'config.json' }, { kind: 'wrongBytes' });
    const res = await fetch(`${hub.url}/org/x/resolve/main/config.json`);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('etag')).toBe(`"${gitBlobSha1Hex(files['config.json'])}"`);
    expect(bytes.length).toBe(files['config.json'].length);
    expect(bytes.equals(files['config.json'])).toBe(false);
    expect(gitBlobSha1Hex(bytes)).not.toBe(gitBlobSha1Hex(files['config.json']));
  });

  it('short: full Content-Length, fewer bytes, then close', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    hub.setFault({ server: 'cdn' }, { kind: 'short', bytes: 5000 });
    const res = await fetch(loc);
    expect(res.headers.get('content-length')).toBe(String(files['model.safetensors'].length));
    const { bytes, error } = await readAll(res);
    expect(error).toBeDefined();
    expect(bytes.length).toBe(5000);
  });

  it('ignoreRange: a Range is answered with the whole file, 200; only requests with a Range count', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    const fault = hub.setFault({ server: 'cdn' }, { kind: 'ignoreRange', times: 1 });
    expect((await rawGet(loc)).status).toBe(200);
    expect(fault.applied).toBe(0);
    const r = await rawGet(loc, { range: 'bytes=10-19' });
    expect([r.status, r.h('content-range'), r.body.equals(files['model.safetensors'])]).toEqual([200, undefined, true]);
    expect(fault.applied).toBe(1);
    expect((await rawGet(loc, { range: 'bytes=10-19' })).status).toBe(206);
  });

  it('wrongContentRange: a 206 for the span one byte further on (one back at the end of the file)', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    const content = files['model.safetensors'];
    hub.setFault({ server: 'cdn' }, { kind: 'wrongContentRange', times: 2 });
    const r = await rawGet(loc, { range: 'bytes=10-19' });
    expect([r.status, r.h('content-range'), r.body.equals(content.subarray(11, 21))]).toEqual([206, `bytes 11-20/${content.length}`, true]);
    const end = await rawGet(loc, { range: 'bytes=-10' });
    expect([end.status, end.h('content-range')]).toEqual([206, `bytes ${content.length - 11}-${content.length - 2}/${content.length}`]);
    expect(end.body.equals(content.subarray(content.length - 11, content.length - 1))).toBe(true);
    expect((await rawGet(loc, { range: 'bytes=10-19' })).h('content-range')).toBe(`bytes 10-19/${content.length}`);
  });

  it('status: 503 with Retry-After twice, then normal', async () => {
    hub.setFault({ server: 'hub', pathIncludes: 'config.json' }, { kind: 'status', status: 503, retryAfter: 2, times: 2 });
    const url = `${hub.url}/org/x/resolve/main/config.json`;
    for (let i = 0; i < 2; i++) {
      const r = await rawGet(url);
      expect(r.status).toBe(503);
      expect(r.h('retry-after')).toBe('2');
    }
    expect((await rawGet(url)).status).toBe(200);
    hub.setFault({ method: 'HEAD' }, { kind: 'status', status: 429 });
    expect((await rawGet(url, {}, 'HEAD')).status).toBe(429);
    expect((await rawGet(url)).status).toBe(200);
  });

  it('body: a custom answer (an HTML page where JSON belongs), then normal', async () => {
    hub.setFault({ server: 'hub', pathIncludes: '/api/models/org/x' }, { kind: 'body', body: '<html>portal</html>', times: 1 });
    const url = `${hub.url}/api/models/org/x`;
    const odd = await rawGet(url);
    expect([odd.status, odd.h('content-type'), odd.body.toString()]).toEqual([200, 'text/html; charset=utf-8', '<html>portal</html>']);
    const normal = await rawGet(url);
    expect((JSON.parse(normal.body.toString()) as { id: string }).id).toBe('org/x');
  });

  it('barrier holds the body at N bytes until released', async () => {
    const loc = await lfsLocation(hub, 'model.safetensors');
    const barrier = hub.setFault({ server: 'cdn' }, { kind: 'barrier', atBytes: MiB });
    hub.resetCounters();
    const pending = fetch(loc).then(async (r) => Buffer.from(await r.arrayBuffer()));
    await barrier.reached;
    expect(hub.bytesSent({ server: 'cdn' })).toBe(MiB);
    // However many turns of the event loop pass, nothing more is sent until the release.
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(hub.bytesSent({ server: 'cdn' })).toBe(MiB);
    barrier.release();
    const bytes = await pending;
    expect(bytes.equals(files['model.safetensors'])).toBe(true);
    expect(hub.bytesSent({ server: 'cdn' })).toBe(files['model.safetensors'].length);
  });

  it('headerDelay delays the response headers, for the first `times` requests only', async () => {
    const delay = hub.setFault({ pathIncludes: 'README.md' }, { kind: 'headerDelay', ms: 200, times: 1 });
    const t0 = performance.now();
    const res = await fetch(`${hub.url}/org/x/resolve/main/README.md`);
    // A lower bound only: the headers never come before the delay.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    await res.arrayBuffer();
    await (await fetch(`${hub.url}/org/x/resolve/main/README.md`)).arrayBuffer();
    expect(delay.applied).toBe(1); // the second request was not delayed
  });
});

describe('counters and lifecycle', () => {
  it('counts requests and body bytes per filter', async () => {
    hub.resetCounters();
    expect(hub.requests).toHaveLength(0);
    const url = `${hub.url}/org/x/resolve/main/config.json`;
    await (await fetch(url)).arrayBuffer();
    await (await fetch(url)).arrayBuffer();
    await fetch(url, { method: 'HEAD' });
    await (await fetch(`${hub.url}/org/x/resolve/main/model.safetensors`)).arrayBuffer();
    expect(hub.count({ method: 'GET', pathIncludes: 'config.json' })).toBe(2);
    expect(hub.count({ method: 'HEAD' })).toBe(1);
    expect(hub.count({ server: 'cdn' })).toBe(1);
    expect(hub.count({ pathPrefix: '/org/x/resolve/' })).toBe(4);
    expect(hub.count({ status: 302 })).toBe(1);
    expect(hub.bytesSent({ pathIncludes: 'config.json' })).toBe(2 * files['config.json'].length);
    expect(hub.bytesSent({ server: 'cdn' })).toBe(files['model.safetensors'].length);
    expect(hub.requests[0]).toMatchObject({ server: 'hub', method: 'GET', path: '/org/x/resolve/main/config.json', status: 200 });
    hub.resetCounters();
    expect(hub.count({})).toBe(0);
  });

  it('stop() ends stalled bodies and refuses connections; restart() comes back on the same ports', async () => {
    const h2 = await startFakeHub();
    try {
      h2.addRepo({ id: 'a/b', files: { 'w.bin': makeContent(1 * MiB, 11) } });
      const { url, cdnUrl } = h2;
      const loc = await lfsLocation(h2, 'w.bin', 'a/b');
      h2.setFault({ server: 'cdn' }, { kind: 'stall', afterBytes: 10 });
      const res = await fetch(loc);
      const received = { bytes: 0 };
      const reading = readAll(res, received);
      await waitFor(() => received.bytes >= 10, { what: 'the bytes before the stall' });
      await h2.stop();
      const { bytes, error } = await reading;
      expect(bytes.length).toBe(10);
      expect(error).toBeDefined();
      await expect(fetch(`${url}/api/models/a/b`)).rejects.toThrow();

      await h2.restart();
      expect(h2.url).toBe(url);
      expect(h2.cdnUrl).toBe(cdnUrl);
      h2.clearFaults();
      const back = await fetch(`${url}/a/b/resolve/main/w.bin`);
      expect(Buffer.from(await back.arrayBuffer()).equals(h2.fileInfo({ id: 'a/b' }, 'w.bin').content)).toBe(true);
    } finally {
      await h2.stop();
    }
  });
});

describe('@huggingface/hub client against the fake hub', () => {
  it('listFiles follows pagination; downloadFile returns the right bytes', async () => {
    hub.treePageSize = 2;
    const seen: string[] = [];
    for await (const entry of listFiles({ repo: { type: 'model', name: 'org/x' }, hubUrl: hub.url, recursive: true })) {
      if (entry.type === 'file') seen.push(entry.path);
    }
    expect(seen.sort()).toEqual(Object.keys(files).sort());

    const cfg = await downloadFile({ repo: { type: 'model', name: 'org/x' }, path: 'config.json', hubUrl: hub.url });
    expect(Buffer.from(await (cfg as Blob).arrayBuffer()).equals(files['config.json'])).toBe(true);

    // With Xet on, the client would leave for the CAS; with xet: false it downloads through the 302.
    const lfs = await downloadFile({
      repo: { type: 'model', name: 'org/x' },
      path: 'model.safetensors',
      hubUrl: hub.url,
      xet: false,
    });
    expect(sha256Hex(Buffer.from(await (lfs as Blob).arrayBuffer()))).toBe(sha256Hex(files['model.safetensors']));

    const noXet = await downloadFile({ repo: { type: 'model', name: 'org/noxet' }, path: 'model.safetensors', hubUrl: hub.url });
    const noXetBytes = Buffer.from(await (noXet as Blob).arrayBuffer());
    expect(noXetBytes.equals(hub.fileInfo({ id: 'org/noxet' }, 'model.safetensors').content)).toBe(true);

    expect(await downloadFile({ repo: { type: 'model', name: 'org/x' }, path: 'missing.txt', hubUrl: hub.url })).toBeNull();
  });
});
