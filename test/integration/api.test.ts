/**
 * The Hub metadata API through the mirror: the real @huggingface/hub client gets the same answers as going direct, pagination stays on
 * the mirror, commit-addressed answers are cached, a herd costs one upstream request, a snapshot
 * never mixes two commits, and nothing Xet reaches a client.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { datasetInfo, listFiles, modelInfo, pathsInfo, snapshotDownload, spaceInfo, whoAmI } from '@huggingface/hub';
import { makeContent } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { rawRequest } from '../support/raw-request.js';
import { readTree, recordingFetch } from '../support/snapshot.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MODEL: RepoRef = { id: 'org/model' };
const DATASET: RepoRef = { type: 'dataset', id: 'org/data' };
const SPACE: RepoRef = { type: 'space', id: 'org/app' };
const XET: RepoRef = { id: 'org/xet-model' };
const LEGACY: RepoRef = { id: 'gpt-legacy' };
const PRIVATE: RepoRef = { id: 'org/private' };
const TOKEN = 'hf_valid_api_token';

const modelFiles = {
  '.gitattributes': Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'),
  'README.md': Buffer.from('# model\n'),
  'config.json': Buffer.from('{"n_layer": 2}\n'),
  'model.safetensors': makeContent(300_000, 31),
  'sub/dir/x.bin': makeContent(20_000, 32),
  'sub/y.txt': Buffer.from('y\n'),
  'tokenizer.json': Buffer.from('{"vocab": {}}\n'),
};

let hub: FakeHub;
let mirror: TestMirror;
let tmp: string;
let modelCommit: string;

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 2 });
  ({ commit: modelCommit } = hub.addRepo({ ...MODEL, files: modelFiles, xet: false }));
  hub.addPullRequest(MODEL, 1, { 'config.json': Buffer.from('{"pr": 1}\n') });
  hub.addRepo({ ...DATASET, files: { 'README.md': Buffer.from('# data\n'), 'data/train.csv': Buffer.from('a,b\n1,2\n'), 'data/test.csv': Buffer.from('a,b\n3,4\n') }, xet: false });
  hub.addRepo({ ...SPACE, files: { 'app.py': Buffer.from('print("hi")\n'), 'assets/weights.bin': makeContent(50_000, 33) }, xet: false });
  hub.addRepo({ ...XET, files: { 'config.json': Buffer.from('{}\n'), 'model.safetensors': makeContent(200_000, 34), 'sub/w.bin': makeContent(30_000, 35) } });
  hub.addRepo({ ...LEGACY, files: { 'config.json': Buffer.from('{"legacy": true}\n'), 'nested/deep/pytorch_model.bin': makeContent(20_000, 36) }, xet: false });
  hub.addRepo({ ...PRIVATE, files: { 'config.json': Buffer.from('{"secret": true}\n') }, private: { allowedTokens: [TOKEN] } });
  hub.addKnownToken(TOKEN);
  mirror = await startMirror(hub.url);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-api-'));
  vi.spyOn(console, 'debug').mockImplementation(() => undefined); // downloadFileToCacheDir's progress lines
});

afterAll(async () => {
  vi.restoreAllMocks();
  await mirror?.destroy();
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The JS client's repo designation for a fake-hub repo. */
const js = (r: RepoRef) => ({ type: r.type ?? 'model', name: r.id });

let dirCounter = 0;
const freshDir = (name: string) => fs.mkdtempSync(path.join(tmp, `${++dirCounter}-${name}-`));
const api = (p: string) => `${mirror.url}/api/${p}`;

async function json(d: Download): Promise<unknown> {
  return JSON.parse(d.body.toString('utf8'));
}

function expectNoXet(d: Pick<Download, 'headers' | 'body'>): void {
  for (const name of Object.keys(d.headers)) expect(name.toLowerCase().startsWith('x-xet-'), name).toBe(false);
  expect(header(d, 'link') ?? '').not.toMatch(/rel="?xet-|reconstruction|xet-read-token/i);
  expect(header(d, 'content-type') ?? '').not.toMatch(/xet/i);
  expect(d.body.toString('utf8')).not.toContain('xetHash');
}

/** Every Link a client saw from the mirror names the mirror, with one space after `;`. */
function expectLinksOnMirror(seen: Array<{ url: string; link: string | null }>): number {
  let n = 0;
  for (const s of seen) {
    if (!s.link) continue;
    n++;
    expect(s.link).toMatch(new RegExp(`^<${mirror.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/api/[^>]+>; rel="next"$`));
    expect(s.link).not.toContain(hub.url);
  }
  return n;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('the JS client gets the same answers as going direct', () => {
  it('listFiles (recursive, ≥ 3 pages upstream): same entries, every Link names the mirror', async () => {
    // A repo of its own: its tree pages are not cached by any other test.
    const repo: RepoRef = { id: 'org/model-listed' };
    hub.addRepo({ ...repo, files: modelFiles, xet: false });
    const rec = recordingFetch();
    const viaMirror = await collect(listFiles({ repo: js(repo), recursive: true, hubUrl: mirror.url, fetch: rec.fetch }));
    const upstreamPages = hub.count({ server: 'hub', pathIncludes: `/api/models/${repo.id}/tree/` });
    const direct = await collect(listFiles({ repo: js(repo), recursive: true, hubUrl: hub.url }));
    expect(viaMirror).toEqual(direct);
    expect(viaMirror.filter((e) => e.type === 'file').map((e) => e.path).sort()).toEqual(Object.keys(modelFiles).sort());
    expect(upstreamPages).toBeGreaterThanOrEqual(3);
    expect(expectLinksOnMirror(rec.seen)).toBe(upstreamPages - 1);
    expect(rec.seen.every((s) => s.url.startsWith(mirror.url))).toBe(true);
  });

  it('listFiles of a folder, a raw `refs/pr/1`, a legacy repo id; Python-style `sub%2Fdir` and `refs%2Fpr%2F1`', async () => {
    for (const params of [
      { repo: js(MODEL), path: 'sub', recursive: true },
      { repo: js(MODEL), revision: 'refs/pr/1' },
      { repo: js(MODEL), revision: modelCommit, path: 'sub/dir' },
      { repo: js(LEGACY), recursive: true },
      { repo: js(DATASET), recursive: true },
      { repo: js(SPACE), recursive: false },
    ]) {
      const viaMirror = await collect(listFiles({ ...params, hubUrl: mirror.url }));
      expect(viaMirror, JSON.stringify(params)).toEqual(await collect(listFiles({ ...params, hubUrl: hub.url })));
      expect(viaMirror.length).toBeGreaterThan(0);
    }
    const py = await download(api('models/org/model/tree/main/sub%2Fdir?recursive=false&expand=false'));
    expect(py.status).toBe(200);
    expect(((await json(py)) as Array<{ path: string }>).map((e) => e.path)).toEqual(['sub/dir/x.bin']);
    const pr = await download(api('models/org/model/tree/refs%2Fpr%2F1?recursive=false&expand=false'));
    const prDirect = await download(`${hub.url}/api/models/org/model/tree/refs%2Fpr%2F1?recursive=false&expand=false`);
    expect(await json(pr)).toEqual(await json(prDirect));
  });

  it('modelInfo (default revision HEAD, and main with sha), datasetInfo, spaceInfo', async () => {
    const fields = ['sha', 'author', 'createdAt', 'filePaths'] as const;
    expect(await modelInfo({ name: MODEL.id, hubUrl: mirror.url })).toEqual(await modelInfo({ name: MODEL.id, hubUrl: hub.url }));
    const m = await modelInfo({ name: MODEL.id, hubUrl: mirror.url, additionalFields: [...fields], revision: 'main' });
    expect(m).toEqual(await modelInfo({ name: MODEL.id, hubUrl: hub.url, additionalFields: [...fields], revision: 'main' }));
    expect(m.sha).toBe(modelCommit);
    expect(await datasetInfo({ name: DATASET.id, hubUrl: mirror.url, additionalFields: ['sha'] })).toEqual(await datasetInfo({ name: DATASET.id, hubUrl: hub.url, additionalFields: ['sha'] }));
    expect(await spaceInfo({ name: SPACE.id, hubUrl: mirror.url, additionalFields: ['sha'] })).toEqual(await spaceInfo({ name: SPACE.id, hubUrl: hub.url, additionalFields: ['sha'] }));
  });

  it('repo info as Python asks it: no revision, revision/main, blobs=true, files_metadata, repeated and [] expand; siblings complete', async () => {
    for (const p of ['models/org/model', 'models/org/model/revision/main', 'models/org/model/revision/main?blobs=true', 'models/org/model?files_metadata=true', 'models/org/model/revision/main?expand[]=sha&expand[]=siblings', 'models/gpt-legacy/revision/main', 'datasets/org/data/revision/main?expand=sha&expand=siblings']) {
      const viaMirror = await download(api(p));
      const direct = await download(`${hub.url}/api/${p}`);
      expect(viaMirror.status, p).toBe(200);
      expect(await json(viaMirror), p).toEqual(await json(direct));
    }
    const full = (await json(await download(api('models/org/model/revision/main?blobs=true')))) as { sha: string; siblings: Array<{ rfilename: string; size: number }> };
    expect(full.sha).toBe(modelCommit);
    expect(full.siblings.map((s) => s.rfilename).sort()).toEqual(Object.keys(modelFiles).sort());
  });

  it('pathsInfo with expand (JSON), and the same question form-encoded as Python sends it', async () => {
    const paths = ['model.safetensors', 'sub', 'config.json', 'missing.txt'];
    const viaMirror = await pathsInfo({ repo: js(MODEL), paths, expand: true, hubUrl: mirror.url });
    expect(viaMirror).toEqual(await pathsInfo({ repo: js(MODEL), paths, expand: true, hubUrl: hub.url }));
    const lfs = viaMirror.find((e) => e.path === 'model.safetensors');
    expect(lfs?.lfs?.oid).toBe(hub.fileInfo(MODEL, 'model.safetensors').sha256);
    expect(lfs?.lastCommit.id).toBe(modelCommit);
    expect(viaMirror.find((e) => e.path === 'sub')?.type).toBe('directory');

    const form = 'paths=model.safetensors&paths=sub&paths=config.json&paths=missing.txt&expand=true';
    const formAnswer = await fetch(api('models/org/model/paths-info/main'), { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    const direct = await fetch(`${hub.url}/api/models/org/model/paths-info/main`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
    expect(formAnswer.status).toBe(200);
    expect(await formAnswer.json()).toEqual(await direct.json());
  });

  it('snapshotDownload of a model, a dataset and a space: identical files, Links on the mirror', async () => {
    for (const repo of [MODEL, DATASET, SPACE]) {
      const rec = recordingFetch();
      const viaMirror = await snapshotDownload({ repo: js(repo), cacheDir: freshDir('mirror'), hubUrl: mirror.url, fetch: rec.fetch });
      const direct = await snapshotDownload({ repo: js(repo), cacheDir: freshDir('direct'), hubUrl: hub.url });
      expect(path.basename(viaMirror)).toBe(hub.head(repo));
      const got = readTree(viaMirror);
      expect(Object.keys(got).length).toBeGreaterThan(1);
      expect(got).toEqual(readTree(direct));
      expect(fs.readFileSync(path.join(viaMirror, '..', '..', 'refs', 'main'), 'utf8')).toBe(hub.head(repo));
      expectLinksOnMirror(rec.seen);
      expect(rec.seen.every((s) => s.url.startsWith(mirror.url))).toBe(true);
    }
  });

  it('whoAmI, refs and commits are passed through with the caller token; commit pages stay on the mirror', async () => {
    expect(await whoAmI({ accessToken: TOKEN, hubUrl: mirror.url })).toEqual(await whoAmI({ accessToken: TOKEN, hubUrl: hub.url }));
    const anonymous = await download(api('whoami-v2'));
    expect(anonymous.status).toBe(401);
    const refs = await download(api('models/org/model/refs?include_prs=1'));
    expect(await json(refs)).toEqual(await json(await download(`${hub.url}/api/models/org/model/refs?include_prs=1`)));
    hub.commitsPageSize = 1;
    try {
      hub.commit(MODEL, { 'extra.txt': Buffer.from('extra\n') }, 'side');
      const page1 = await download(api('models/org/model/commits/side'));
      expect(page1.status).toBe(200);
      expect(header(page1, 'link')).toMatch(new RegExp(`^<${mirror.url}/api/models/org/model/commits/side\\?p=1>; rel="next"$`));
      expect(header(page1, 'x-total-count')).toBe('2');
      const page2 = await download(header(page1, 'link')!.slice(1, header(page1, 'link')!.indexOf('>')));
      expect(page2.status).toBe(200);
    } finally {
      hub.commitsPageSize = 50;
    }
    expect(mirror.logs.some((l) => l.includes('api passed through uncached') && l.includes('/commits/side'))).toBe(true);
    expect(mirror.logs.join('\n')).not.toContain(TOKEN);
  });
});

describe('caching and consistency', () => {
  it('answers at a commit are served from the index with no upstream request', async () => {
    const questions: Array<[string, RequestInit?]> = [
      [api(`models/org/model/revision/${modelCommit}?expand=sha&expand=siblings`)],
      [api(`models/org/model/tree/${modelCommit}?recursive=true&expand=false`)],
      [api(`models/org/model/tree/${modelCommit}/sub?recursive=false&expand=true`)],
      [api(`models/org/model/paths-info/${modelCommit}`), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['config.json'], expand: true }) }],
      [api(`models/org/model/tree/${modelCommit}/no/such/dir`)],
    ];
    const first = [];
    for (const [u, init] of questions) first.push(await fetch(u, init).then(async (r) => ({ status: r.status, body: await r.text(), code: r.headers.get('x-error-code') })));
    expect(first.map((a) => a.status)).toEqual([200, 200, 200, 200, 404]);
    expect(first[4]?.code).toBe('EntryNotFound');
    const before = hub.requests.length;
    for (let round = 0; round < 3; round++) {
      for (const [i, [u, init]] of questions.entries()) {
        const r = await fetch(u, init);
        expect(r.headers.get('x-mirror-cache')).toBe('hit');
        expect({ status: r.status, body: await r.text(), code: r.headers.get('x-error-code') }).toEqual(first[i]);
      }
    }
    expect(hub.requests.length).toBe(before);
  });

  it('500 concurrent GET revision/main → 1 upstream request', async () => {
    const id = 'org/herd';
    hub.addRepo({ id, files: { 'config.json': Buffer.from('{}\n') } });
    const fault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${id}/` }, { kind: 'headerDelay', ms: 200 });
    try {
      const before = hub.count({ server: 'hub', pathIncludes: `/api/models/${id}/` });
      const answers = await Promise.all(Array.from({ length: 500 }, () => fetch(api(`models/${id}/revision/main`)).then(async (r) => ({ status: r.status, sha: ((await r.json()) as { sha: string }).sha }))));
      expect(answers.every((a) => a.status === 200 && a.sha === hub.head({ id }))).toBe(true);
      expect(hub.count({ server: 'hub', pathIncludes: `/api/models/${id}/` }) - before).toBe(1);
      // And the next one within the refs TTL costs nothing.
      expect((await fetch(api(`models/${id}/revision/main`))).headers.get('x-mirror-cache')).toBe('hit');
      expect(hub.count({ server: 'hub', pathIncludes: `/api/models/${id}/` }) - before).toBe(1);
    } finally {
      fault.remove();
    }
  });

  it('main moves C1 → C2 mid-snapshot: revision, tree, paths-info and every file are C1', async () => {
    const id = 'org/moving';
    const repo = { id };
    const c1Files = { 'a.txt': Buffer.from('a1\n'), 'b.txt': Buffer.from('b1\n'), 'dir/c.bin': makeContent(40_000, 41), 'dir/d.txt': Buffer.from('d1\n') };
    const { commit: c1 } = hub.addRepo({ id, files: c1Files, xet: false });
    // A client that says `main` at every step (the worst case: nothing pinned client-side).
    const info = (await json(await download(api(`models/${id}/revision/main`)))) as { sha: string };
    expect(info.sha).toBe(c1);
    const { commit: c2 } = hub.commit(repo, { 'a.txt': Buffer.from('a2\n'), 'b.txt': null, 'dir/c.bin': makeContent(40_000, 42), 'e.txt': Buffer.from('e2\n') });
    expect(c2).not.toBe(c1);
    const tree = (await json(await download(api(`models/${id}/tree/main?recursive=true&expand=false`)))) as Array<{ type: string; path: string }>;
    let files = tree.filter((e) => e.type === 'file').map((e) => e.path);
    let page = await download(api(`models/${id}/tree/main?recursive=true&expand=false`));
    while (header(page, 'link')) {
      page = await download(header(page, 'link')!.slice(1, header(page, 'link')!.indexOf('>')));
      files = [...files, ...((await json(page)) as Array<{ type: string; path: string }>).filter((e) => e.type === 'file').map((e) => e.path)];
    }
    expect(files.sort()).toEqual(Object.keys(c1Files).sort());
    const pi = (await (await fetch(api(`models/${id}/paths-info/main`), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: ['a.txt', 'b.txt'], expand: true }) })).json()) as Array<{ path: string; lastCommit: { id: string } }>;
    expect(pi.map((e) => e.path)).toEqual(['a.txt', 'b.txt']);
    for (const f of files) {
      const head = await download(`${mirror.url}/${id}/resolve/main/${f}`, { method: 'HEAD' });
      const get = await download(`${mirror.url}/${id}/resolve/main/${f}`);
      expect(header(head, 'x-repo-commit'), f).toBe(c1);
      expect(header(get, 'x-repo-commit'), f).toBe(c1);
      expect(get.body.equals(c1Files[f as keyof typeof c1Files]), f).toBe(true);
    }
    // The JS client's own snapshot in the same window is C1 too.
    const snap = await snapshotDownload({ repo: js(repo), cacheDir: freshDir('moving'), hubUrl: mirror.url });
    expect(path.basename(snap)).toBe(c1);
    expect(readTree(snap)).toEqual(c1Files);
  });

  it('main moves after the tree listing of a JS snapshotDownload, before its file downloads: every file is C1', async () => {
    const id = 'org/moving-js';
    const c1Files = { 'a.txt': Buffer.from('a1\n'), 'w.safetensors': makeContent(60_000, 43), 'dir/c.txt': Buffer.from('c1\n') };
    const { commit: c1 } = hub.addRepo({ id, files: c1Files, xet: false });
    let moved: string | undefined;
    const moving: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (!moved && res.url.includes(`/api/models/${id}/tree/`)) moved = hub.commit({ id }, { 'a.txt': Buffer.from('a2\n'), 'w.safetensors': makeContent(60_000, 44) }).commit;
      return res;
    };
    const snap = await snapshotDownload({ repo: { type: 'model', name: id }, cacheDir: freshDir('moving-js'), hubUrl: mirror.url, fetch: moving });
    expect(moved).toBeDefined();
    expect(hub.head({ id })).toBe(moved);
    expect(path.basename(snap)).toBe(c1);
    expect(readTree(snap)).toEqual(c1Files);
    // And a branch-addressed file asked now, within the refs TTL, is still C1's.
    const a = await download(`${mirror.url}/${id}/resolve/main/a.txt`);
    expect([header(a, 'x-repo-commit'), a.body.toString()]).toEqual([c1, 'a1\n']);
  });

  it('a request with a token is asked upstream with that token and never answered from or stored in the cache', async () => {
    const u = api(`models/org/model/revision/${modelCommit}`);
    await download(u);
    const before = hub.count({ server: 'hub', pathIncludes: `/api/models/org/model/revision/${modelCommit}` });
    const withToken = await download(u, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(withToken.status).toBe(200);
    expect(header(withToken, 'x-mirror-cache')).toBe('pass');
    const last = hub.requests[hub.requests.length - 1]!;
    expect(last.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(hub.count({ server: 'hub', pathIncludes: `/api/models/org/model/revision/${modelCommit}` })).toBe(before + 1);
    // Private repo: the token holder gets it, an anonymous caller never does (nothing stored).
    const priv = await download(api('models/org/private/revision/main'), { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(priv.status).toBe(200);
    const privCommit = ((await json(priv)) as { sha: string }).sha;
    for (const p of ['models/org/private/revision/main', `models/org/private/revision/${privCommit}`, `models/org/private/tree/${privCommit}`]) {
      const anon = await download(api(p));
      expect(anon.status, p).toBe(401);
      expect(header(anon, 'x-error-code'), p).toBe('RepoNotFound');
    }
    expect(mirror.logs.join('\n')).not.toContain(TOKEN);
  });

  it('errors keep the Hub codes: missing revision, missing repo, bad names; none is cached', async () => {
    await expect(modelInfo({ name: MODEL.id, revision: 'no-such-branch', hubUrl: mirror.url })).rejects.toMatchObject({ statusCode: 404 });
    const rev = await download(api('models/org/model/tree/no-such-branch'));
    expect([rev.status, header(rev, 'x-error-code')]).toEqual([404, 'RevisionNotFound']);
    const missing = await download(api('models/org/does-not-exist/revision/main'));
    expect([missing.status, header(missing, 'x-error-code')]).toEqual([401, 'RepoNotFound']);
    const bad = await download(api('models/org/..%2Fx/revision/main'));
    expect(bad.status).toBe(400);
    // Sent raw: fetch-style clients would resolve `%2e%2e` before sending.
    for (const p of ['/api/models/org/model/tree/main/%2e%2e/x', '/api/models/org/model/..%2F..%2Fx', '/api/models/%2e%2e/refs', '/api/models/org/model/refs\\..\\..\\x']) {
      const text = await rawRequest(mirror.url, `GET ${p} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
      expect(text.slice(0, 12), p).toBe('HTTP/1.1 400');
    }
  });
});

describe('xet hygiene', () => {
  it('no xetHash, X-Xet-* or Xet Link relation reaches a client (tree, paths-info, revision, resolve)', async () => {
    expect(hub.fileInfo(XET, 'model.safetensors').xetHash).toBeDefined();
    const upstreamTree = await download(`${hub.url}/api/models/org/xet-model/tree/main?recursive=true`);
    expect(upstreamTree.body.toString()).toContain('xetHash'); // the fake does send it
    const answers: Download[] = [
      await download(api('models/org/xet-model/tree/main?recursive=true&expand=true')),
      await download(api('models/org/xet-model/tree/main/sub')),
      await download(api('models/org/xet-model/revision/main?blobs=true')),
      await download(api('models/org/xet-model')),
      await download(`${mirror.url}/org/xet-model/resolve/main/model.safetensors`, { method: 'HEAD' }),
      await download(`${mirror.url}/org/xet-model/resolve/main/model.safetensors`, { headers: { accept: 'application/vnd.xet-fileinfo+json, */*', range: 'bytes=0-0' } }),
    ];
    for (const body of [JSON.stringify({ paths: ['model.safetensors', 'sub/w.bin'], expand: true }), 'paths=model.safetensors&paths=sub%2Fw.bin']) {
      const json = body.startsWith('{');
      const r = await fetch(api('models/org/xet-model/paths-info/main'), { method: 'POST', headers: { 'content-type': json ? 'application/json' : 'application/x-www-form-urlencoded' }, body });
      answers.push({ status: r.status, headers: Object.fromEntries(r.headers), body: Buffer.from(await r.arrayBuffer()) } as Download);
    }
    for (const a of answers) {
      expect(a.status).toBeLessThan(300);
      expectNoXet(a);
    }
    const entries = JSON.parse(answers[0]!.body.toString()) as Array<{ path: string; lfs?: { oid: string } }>;
    expect(entries.find((e) => e.path === 'model.safetensors')?.lfs?.oid).toBe(hub.fileInfo(XET, 'model.safetensors').sha256);
    const listed = await collect(listFiles({ repo: js(XET), recursive: true, hubUrl: mirror.url }));
    expect(listed.every((e) => e.xetHash === undefined)).toBe(true);
  });

  it('xet-read-token is refused with a clear error and never proxied', async () => {
    const before = hub.count({ pathIncludes: 'xet-read-token' });
    for (const auth of [undefined, TOKEN]) {
      const d = await download(api(`models/org/xet-model/xet-read-token/${hub.head(XET)}`), auth ? { headers: { authorization: `Bearer ${auth}` } } : {});
      expect(d.status).toBe(501);
      expect(header(d, 'x-error-code')).toBe('NotSupported');
      expect(header(d, 'x-error-message')).toMatch(/Xet/);
    }
    expect(hub.count({ pathIncludes: 'xet-read-token' })).toBe(before);
  });
});

describe("the mirror's origin in Links", () => {
  it('follows a plain Host header, ignores a hostile one, and prefers publicUrl', async () => {
    const p = `/api/models/org/model/tree/${modelCommit}?recursive=true&expand=false`;
    const viaHost = async (base: string, host: string) => {
      const text = await rawRequest(base, `GET ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
      return { status: Number(text.slice(9, 12)), link: /\r\nlink: ([^\r]*)/i.exec(text)?.[1] };
    };
    expect((await viaHost(mirror.url, 'hf-mirror.internal:8080')).link).toMatch(/^<http:\/\/hf-mirror\.internal:8080\/api\/models\/org\/model\/tree\/[0-9a-f]{40}\?recursive=true&expand=false&cursor=[^>]+>; rel="next"$/);
    // Not a plain host[:port]: the listen address is used instead.
    for (const odd of ['under_score.example', 'a..b', 'evil.example/x?', 'a@b', 'x y', 'evil.example:99999']) {
      const r = await viaHost(mirror.url, odd);
      if (r.status === 400) continue; // refused by the HTTP layer before routing
      expect(r.link, odd).toMatch(new RegExp(`^<${mirror.url}/api/`));
    }
    const m = await startMirror(hub.url, { publicUrl: 'https://mirror.example/hf' });
    try {
      expect((await viaHost(m.url, 'other.example')).link).toMatch(/^<https:\/\/mirror\.example\/hf\/api\/models\/org\/model\/tree\//);
    } finally {
      await m.destroy();
    }
  });
});
