/**
 * `hubcache import`: caches written by the real @huggingface/hub client (`snapshotDownload`,
 * `downloadFileToCacheDir`, the huggingface_hub layout) and a local_dir download are adopted,
 * with the server stopped or through its admin API, and then served as hits — offline with zero
 * upstream requests. Bad input: corrupt blobs, links leading outside, directories that are no
 * cache, blobs that do not fit. Gated content never becomes anonymously readable.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { downloadFile, downloadFileToCacheDir, snapshotDownload } from '@huggingface/hub';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { runCli } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
const ADMIN = 'admin-secret-import-0123';
const GRANTED = 'hf_granted_import_token';
let hub: FakeHub;
const tmpDirs: string[] = [];

beforeAll(async () => {
  hub = await startFakeHub();
  vi.spyOn(console, 'debug').mockImplementation(() => undefined); // downloadFileToCacheDir's progress lines
});
afterAll(async () => {
  await hub?.stop();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(tag = 'import'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `hubcache-${tag}-`));
  tmpDirs.push(d);
  return d;
}

/** The CLI with the server stopped: the upstream (for "is it public?") and the data dir from the environment. */
async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string[] }> {
  const run = runCli(args, { HUBCACHE_UPSTREAM: hub.url, HUBCACHE_ADMIN_TOKEN: ADMIN, ...env });
  const { code } = await run.exited;
  return { code, output: run.output };
}

function blobPath(dataDir: string, hex: string): string {
  const alg = hex.length === 64 ? 'sha256' : 'gitsha1';
  return path.join(dataDir, 'blobs-v1', alg, hex.slice(0, 2), hex.slice(2, 4), hex);
}

async function offlineMirror(dataDir: string): Promise<TestMirror> {
  return startMirror(hub.url, { dataDir, offline: true });
}

/** Every file of a repo served by `m` at `revision`: 200, a hit, the same bytes. */
async function expectServed(m: TestMirror, prefix: string, revision: string, files: Record<string, Buffer>, headers: Record<string, string> = {}): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    const d = await download(`${m.url}/${prefix}/resolve/${revision}/${name}`, { headers });
    expect([d.status, header(d, 'x-mirror-cache'), d.sha256], `${prefix} ${revision} ${name}`).toEqual([200, 'hit', sha256Hex(content)]);
  }
}

describe('import with the server stopped', () => {
  it('a cache written by snapshotDownload and downloadFileToCacheDir: hard-linked, then served offline byte-identical with no upstream request', async () => {
    const model: Record<string, Buffer> = {
      'README.md': Buffer.from('# imported\n'),
      'config.json': Buffer.from('{"hidden": 64}\n'),
      'model.safetensors': makeContent(3 * MiB, 101),
      'sub/tokenizer.json': Buffer.from('{"tok": 1}\n'),
    };
    const data: Record<string, Buffer> = { 'data/train.csv': Buffer.from('a,b\n1,2\n'), 'data/big.parquet': makeContent(2 * MiB, 102) };
    const { commit } = hub.addRepo({ id: 'org/imp-snap', files: model, xet: false });
    const { commit: dataCommit } = hub.addRepo({ type: 'dataset', id: 'org/imp-data', files: data, xet: false });
    const cacheDir = tempDir('hfcache');
    await snapshotDownload({ repo: { type: 'model', name: 'org/imp-snap' }, cacheDir, hubUrl: hub.url });
    for (const f of Object.keys(data)) await downloadFileToCacheDir({ repo: { type: 'dataset', name: 'org/imp-data' }, path: f, cacheDir, hubUrl: hub.url });
    const before = Object.fromEntries(fs.readdirSync(cacheDir, { recursive: true }).map((f) => [f, fs.lstatSync(path.join(cacheDir, String(f))).mtimeMs]));

    const dataDir = tempDir();
    const imported = await cli(['import', cacheDir, '--data-dir', dataDir]);
    expect(imported.code, imported.output.join('\n')).toBe(0);
    for (const f of Object.keys(model)) expect(imported.output.filter((l) => l.startsWith('linked') && l.endsWith(`org/imp-snap@${commit}/${f}  (public (upstream says so))`)), f).toHaveLength(1);
    expect(imported.output.some((l) => l.startsWith('ref') && l.includes(`main → ${commit}`))).toBe(true);
    // Hard links: the mirror's blob is the cache's file, no byte copied; the cache is left as it was.
    const lfs = hub.fileInfo({ id: 'org/imp-snap' }, 'model.safetensors');
    expect(fs.statSync(blobPath(dataDir, lfs.sha256)).ino).toBe(fs.statSync(path.join(cacheDir, 'models--org--imp-snap', 'blobs', lfs.sha256)).ino);
    expect(Object.fromEntries(fs.readdirSync(cacheDir, { recursive: true }).map((f) => [f, fs.lstatSync(path.join(cacheDir, String(f))).mtimeMs]))).toEqual(before);

    hub.resetCounters();
    const m = await offlineMirror(dataDir);
    try {
      await expectServed(m, 'org/imp-snap', 'main', model);
      await expectServed(m, 'org/imp-snap', commit, model);
      await expectServed(m, 'datasets/org/imp-data', dataCommit, data);
      // A real client, through the mirror, offline.
      for (const [name, content] of Object.entries(model)) {
        const blob = await downloadFile({ repo: { type: 'model', name: 'org/imp-snap' }, path: name, hubUrl: m.url });
        expect(Buffer.from(await blob!.arrayBuffer()).equals(content), name).toBe(true);
      }
      expect(hub.requests).toHaveLength(0);
    } finally {
      await m.close();
    }

    // ls and stats read the data dir itself while no server runs.
    const ls = await cli(['ls', '--data-dir', dataDir, '--json']);
    expect(ls.code).toBe(0);
    const { repos } = JSON.parse(ls.output.join('\n')) as { repos: Array<{ type: string; id: string; cachedFiles: number; cachedBytes: number; hits: number; refs: Record<string, string> }> };
    const snap = repos.find((r) => r.id === 'org/imp-snap');
    expect(snap).toMatchObject({ type: 'model', cachedFiles: 4, refs: { main: commit } });
    expect(snap?.cachedBytes).toBe(Object.values(model).reduce((n, b) => n + b.length, 0));
    const dataset = repos.find((r) => r.id === 'org/imp-data');
    expect(dataset).toMatchObject({ type: 'dataset', cachedFiles: 2, hits: 2 });
    expect(snap?.hits).toBeGreaterThanOrEqual(12); // each file served at least three times above
    const stats = await cli(['stats', '--data-dir', dataDir, '--json']);
    const report = JSON.parse(stats.output.join('\n')) as { disk: { blobs: number; usedBytes: number; budgetBytes: number }; traffic: { requests: { hit: number; total: number }; hitRatio: number; bytesPulledFromUpstream: number } };
    expect(report.disk).toMatchObject({ blobs: 6, budgetBytes: expect.any(Number), usedBytes: [...Object.values(model), ...Object.values(data)].reduce((n, b) => n + b.length, 0) });
    // Two counts of the same hits: per blob (ls) and per request (stats).
    expect(report.traffic.requests.hit).toBe((snap?.hits ?? 0) + 2);
    expect(report.traffic.requests.total).toBe(report.traffic.requests.hit);
    expect(report.traffic.hitRatio).toBe(1);
    expect(report.traffic.bytesPulledFromUpstream).toBe(0);

    // Importing again finds everything present.
    const again = await cli(['import', cacheDir, '--data-dir', dataDir, '--json']);
    expect(again.code).toBe(0);
    const doc = JSON.parse(again.output.join('\n')) as { job: { state: string }; items: Array<{ outcome: string }> };
    expect(doc.job.state).toBe('done');
    expect(doc.items.filter((i) => i.outcome === 'present')).toHaveLength(6);
  });

  it('a local_dir download (its .metadata files give commit and etag): --repo names it, --revision records the branch', async () => {
    const files: Record<string, Buffer> = { 'config.json': Buffer.from('{"local": true}\n'), 'weights/model.bin': makeContent(1 * MiB + 3, 103) };
    const { commit } = hub.addRepo({ id: 'org/imp-local', files, xet: false });
    const dir = tempDir('localdir');
    for (const [name, content] of Object.entries(files)) {
      const info = hub.fileInfo({ id: 'org/imp-local' }, name);
      fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
      fs.writeFileSync(path.join(dir, name), content);
      const meta = path.join(dir, '.cache', 'huggingface', 'download', `${name}.metadata`);
      fs.mkdirSync(path.dirname(meta), { recursive: true });
      fs.writeFileSync(meta, `${commit}\n${info.etag}\n${Date.now() / 1000}\n`);
    }
    const dataDir = tempDir();
    const noRepo = await cli(['import', dir, '--data-dir', dataDir]);
    expect(noRepo.code).toBe(1);
    expect(noRepo.output.join('\n')).toMatch(/local_dir download, which does not record its repo: name it \(--repo/);

    const imported = await cli(['import', dir, '--repo', 'org/imp-local', '--revision', 'main', '--data-dir', dataDir]);
    expect(imported.code, imported.output.join('\n')).toBe(0);
    hub.resetCounters();
    const m = await offlineMirror(dataDir);
    try {
      await expectServed(m, 'org/imp-local', 'main', files);
      expect(hub.requests).toHaveLength(0);
    } finally {
      await m.close();
    }
  });

  it('a corrupt blob is reported and skipped, a link leading outside the cache refused, the rest imported (exit 1)', async () => {
    const files: Record<string, Buffer> = { 'good.safetensors': makeContent(1 * MiB, 104), 'bad.safetensors': makeContent(1 * MiB, 105), 'notes.txt': Buffer.from('fine\n') };
    const { commit } = hub.addRepo({ id: 'org/imp-bad', files, xet: false });
    const cacheDir = tempDir('hfcache');
    const snapshot = await snapshotDownload({ repo: { type: 'model', name: 'org/imp-bad' }, cacheDir, hubUrl: hub.url });
    const badBlob = path.join(cacheDir, 'models--org--imp-bad', 'blobs', hub.fileInfo({ id: 'org/imp-bad' }, 'bad.safetensors').sha256);
    const fd = fs.openSync(badBlob, 'r+');
    fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 1000);
    fs.closeSync(fd);
    const outside = path.join(tempDir('outside'), 'secret.txt');
    fs.writeFileSync(outside, 'outside the cache\n');
    fs.symlinkSync(outside, path.join(snapshot, 'escape.txt'));
    fs.symlinkSync(path.relative(snapshot, outside), path.join(snapshot, 'escape-relative.txt'));

    const dataDir = tempDir();
    const imported = await cli(['import', cacheDir, '--data-dir', dataDir]);
    expect(imported.code).toBe(1);
    const text = imported.output.join('\n');
    expect(imported.output.find((l) => l.startsWith('corrupt') && l.includes('bad.safetensors'))).toMatch(/does not hash to sha256:/);
    expect(imported.output.filter((l) => l.startsWith('refused') && /escape(-relative)?\.txt/.test(l) && l.includes('leads outside the cache'))).toHaveLength(2);
    expect(text).toMatch(/import local: failed \(3 of \d+ items failed\)/);
    expect(fs.existsSync(blobPath(dataDir, hub.fileInfo({ id: 'org/imp-bad' }, 'bad.safetensors').sha256))).toBe(false);
    expect(fs.readdirSync(path.join(dataDir, 'staging'))).toEqual([]);

    hub.resetCounters();
    const m = await offlineMirror(dataDir);
    try {
      await expectServed(m, 'org/imp-bad', commit, { 'good.safetensors': files['good.safetensors']!, 'notes.txt': files['notes.txt']! });
      const bad = await download(`${m.url}/org/imp-bad/resolve/${commit}/bad.safetensors`);
      expect(bad.status).toBe(503);
      const escaped = await download(`${m.url}/org/imp-bad/resolve/${commit}/escape.txt`);
      expect(escaped.status).toBe(503);
      expect(escaped.body.toString()).not.toContain('outside the cache');
    } finally {
      await m.close();
    }
  });

  it('a directory that is no cache, or no directory at all: a clear message, exit 1, nothing recorded', async () => {
    const notCache = tempDir('junk');
    fs.writeFileSync(path.join(notCache, 'model.bin'), 'x');
    fs.mkdirSync(path.join(notCache, 'models--org--x')); // no snapshots/
    const dataDir = tempDir();
    const junk = await cli(['import', notCache, '--data-dir', dataDir]);
    expect(junk.code).toBe(1);
    expect(junk.output.join('\n')).toMatch(/is not a huggingface_hub cache or a local_dir download: it has no models--\*\/, datasets--\*\/ or spaces--\*\/ folder with snapshots\//);
    const missing = await cli(['import', path.join(notCache, 'nope'), '--data-dir', dataDir]);
    expect(missing.code).toBe(1);
    expect(missing.output.join('\n')).toMatch(/is not a huggingface_hub cache or a local_dir download: it does not exist/);
    const ls = await cli(['ls', '--data-dir', dataDir, '--json']);
    expect(JSON.parse(ls.output.join('\n'))).toEqual({ repos: [] });
  });

  it('--copy copies (another inode), after checking the free space: a blob that does not fit is refused', async () => {
    const files: Record<string, Buffer> = { 'w.safetensors': makeContent(2 * MiB, 106), 'c.json': Buffer.from('{}\n') };
    const { commit } = hub.addRepo({ id: 'org/imp-copy', files, xet: false });
    const cacheDir = tempDir('hfcache');
    await snapshotDownload({ repo: { type: 'model', name: 'org/imp-copy' }, cacheDir, hubUrl: hub.url });
    const dataDir = tempDir();
    const full = await cli(['import', cacheDir, '--copy', '--data-dir', dataDir], { HUBCACHE_MIN_FREE_BYTES: String(Number.MAX_SAFE_INTEGER) });
    expect(full.code).toBe(1);
    expect(full.output.filter((l) => l.startsWith('refused') && l.includes('too large for the cache disk'))).toHaveLength(2);
    expect(fs.readdirSync(path.join(dataDir, 'blobs-v1'), { recursive: true }).filter((f) => fs.statSync(path.join(dataDir, 'blobs-v1', String(f))).isFile())).toEqual([]);
    // A blob larger than the whole cache budget is refused, linked or copied; the rest is imported.
    const small = await cli(['import', cacheDir, '--data-dir', tempDir()], { HUBCACHE_MAX_CACHE_BYTES: String(MiB) });
    expect(small.code).toBe(1);
    expect(small.output.filter((l) => l.startsWith('refused') && l.includes('too large for the cache budget') && l.includes('w.safetensors'))).toHaveLength(1);
    expect(small.output.filter((l) => l.startsWith('linked') && l.includes('c.json'))).toHaveLength(1);

    const copied = await cli(['import', cacheDir, '--copy', '--data-dir', dataDir]);
    expect(copied.code, copied.output.join('\n')).toBe(0);
    expect(copied.output.filter((l) => l.startsWith('copied'))).toHaveLength(2);
    const sha = hub.fileInfo({ id: 'org/imp-copy' }, 'w.safetensors').sha256;
    expect(fs.statSync(blobPath(dataDir, sha)).ino).not.toBe(fs.statSync(path.join(cacheDir, 'models--org--imp-copy', 'blobs', sha)).ino);
    hub.resetCounters();
    const m = await offlineMirror(dataDir);
    try {
      await expectServed(m, 'org/imp-copy', commit, files);
      expect(hub.requests).toHaveLength(0);
    } finally {
      await m.close();
    }
  });
});

describe('who may read imported files', () => {
  it('a gated repo imported from a granted cache is served only after upstream grants the caller, never offline, even with --public', async () => {
    const weights = makeContent(2 * MiB, 107);
    const files = { 'README.md': Buffer.from('# gated\n'), 'w.safetensors': weights };
    const { commit } = hub.addRepo({ id: 'org/imp-gated', files, xet: false, gated: { allowedTokens: [GRANTED] } });
    const cacheDir = tempDir('hfcache');
    await snapshotDownload({ repo: { type: 'model', name: 'org/imp-gated' }, cacheDir, hubUrl: hub.url, accessToken: GRANTED });
    const dataDir = tempDir();
    const imported = await cli(['import', cacheDir, '--public', '--data-dir', dataDir]);
    expect(imported.code, imported.output.join('\n')).toBe(0);
    expect(imported.output.some((l) => l.startsWith('linked') && l.includes('w.safetensors') && l.includes('token holders only: upstream says the repo is private or gated'))).toBe(true);
    expect(imported.output.some((l) => l.startsWith('ref-skipped') && l.includes('main'))).toBe(true);

    const online = await startMirror(hub.url, { dataDir });
    try {
      const anonymous = await download(`${online.url}/org/imp-gated/resolve/${commit}/w.safetensors`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.body.includes(weights.subarray(0, 64))).toBe(false);
      const cdn = hub.count({ server: 'cdn' });
      const granted = await download(`${online.url}/org/imp-gated/resolve/main/w.safetensors`, { headers: { authorization: `Bearer ${GRANTED}` } });
      expect([granted.status, header(granted, 'x-mirror-cache'), granted.sha256]).toEqual([200, 'hit', sha256Hex(weights)]);
      expect(hub.count({ server: 'cdn' })).toBe(cdn);
    } finally {
      await online.close();
    }
    const offline = await offlineMirror(dataDir);
    try {
      for (const headers of [{}, { authorization: `Bearer ${GRANTED}` }] as Array<Record<string, string>>) {
        const d = await download(`${offline.url}/org/imp-gated/resolve/${commit}/w.safetensors`, { headers });
        expect(d.status).toBe(503);
        expect(d.body.includes(weights.subarray(0, 64))).toBe(false);
      }
    } finally {
      await offline.close();
    }
  });

  it('when upstream cannot be asked, files are public only with --public', async () => {
    const files = { 'a.json': Buffer.from('{"a": 1}\n') };
    const { commit } = hub.addRepo({ id: 'org/imp-vouch', files, xet: false });
    const cacheDir = tempDir('hfcache');
    await snapshotDownload({ repo: { type: 'model', name: 'org/imp-vouch' }, cacheDir, hubUrl: hub.url });
    const unreachable = { HUBCACHE_OFFLINE: 'true' };

    const quiet = tempDir();
    const withoutVouch = await cli(['import', cacheDir, '--data-dir', quiet], unreachable);
    expect(withoutVouch.code).toBe(0);
    expect(withoutVouch.output.some((l) => l.includes('token holders only: upstream could not be asked and --public was not given'))).toBe(true);
    let m = await offlineMirror(quiet);
    try {
      expect((await download(`${m.url}/org/imp-vouch/resolve/${commit}/a.json`)).status).toBe(503);
    } finally {
      await m.close();
    }

    const vouched = tempDir();
    const withVouch = await cli(['import', cacheDir, '--public', '--data-dir', vouched], unreachable);
    expect(withVouch.code).toBe(0);
    m = await offlineMirror(vouched);
    try {
      await expectServed(m, 'org/imp-vouch', 'main', files);
    } finally {
      await m.close();
    }
  });
});

describe('import through the running server', () => {
  it('the CLI finds the data dir locked and asks the server (admin API); the files are hits right away', async () => {
    const files: Record<string, Buffer> = { 'model.safetensors': makeContent(2 * MiB, 108), 'config.json': Buffer.from('{"live": 1}\n') };
    hub.addRepo({ id: 'org/imp-live', files, xet: false });
    const cacheDir = tempDir('hfcache');
    await snapshotDownload({ repo: { type: 'model', name: 'org/imp-live' }, cacheDir, hubUrl: hub.url });
    const m = await startMirror(hub.url, { adminToken: ADMIN });
    try {
      const port = new URL(m.url).port;
      const imported = await cli(['import', cacheDir, '--data-dir', m.dataDir], { HUBCACHE_PORT: port });
      expect(imported.code, imported.output.join('\n')).toBe(0);
      expect(imported.output.filter((l) => l.startsWith('linked'))).toHaveLength(2);
      expect(imported.output.at(-1)).toMatch(/^import [0-9a-f]{12}: done/);
      const cdn = hub.count({ server: 'cdn' });
      await expectServed(m, 'org/imp-live', 'main', files);
      expect(hub.count({ server: 'cdn' })).toBe(cdn);

      const wrongToken = await cli(['import', cacheDir, '--data-dir', m.dataDir], { HUBCACHE_PORT: port, HUBCACHE_ADMIN_TOKEN: 'not-the-admin-token-at-all' });
      expect(wrongToken.code).toBe(1);
      expect(wrongToken.output.join('\n')).toMatch(/refused the request: wrong admin token/);
      const junk = await cli(['import', tempDir('junk'), '--data-dir', m.dataDir], { HUBCACHE_PORT: port });
      expect(junk.code).toBe(1);
      expect(junk.output.join('\n')).toMatch(/is not a huggingface_hub cache/);
    } finally {
      await m.destroy();
    }
  });
});
