/**
 * Offline: after one online snapshot, the same
 * snapshot works through the mirror when upstream is down (connection refused), hangs (timeout)
 * or fails (5xx), and with `offline: true`; what was never cached fails fast with a clear 503/504;
 * public content is served to requests with a token too.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { snapshotDownload } from '@huggingface/hub';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { readTree } from '../support/snapshot.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MODEL: RepoRef = { id: 'org/offline-model' };
const DATASET: RepoRef = { type: 'dataset', id: 'org/offline-data' };
const TOKEN = 'hf_valid_offline_token';
const files = {
  'config.json': Buffer.from('{"n_layer": 2}\n'),
  'model.safetensors': makeContent(500_000, 51),
  'sub/dir/x.bin': makeContent(30_000, 52),
  'sub/y.txt': Buffer.from('y\n'),
  'tokenizer.json': Buffer.from('{}\n'),
};

let hub: FakeHub;
let mirror: TestMirror;
// refs TTL 0: every branch question goes upstream, so the offline answers below really are the fallback.
const ONLINE = { refsTtlSeconds: 0 };

/** Runs `fn` against a mirror with `overrides` on the shared data dir, then brings the usual one back. */
async function withMirrorOnDataDir(overrides: Parameters<typeof startMirror>[1], fn: (m: TestMirror) => Promise<void>): Promise<void> {
  const dataDir = mirror.dataDir;
  await mirror.close();
  const other = await startMirror(hub.url, { ...overrides, dataDir });
  try {
    await fn(other);
  } finally {
    await other.close();
    mirror = await startMirror(hub.url, { ...ONLINE, dataDir });
  }
}
let tmp: string;
let commit: string;
let online: { model: Record<string, Buffer>; dataset: Record<string, Buffer> };

const js = (r: RepoRef) => ({ type: r.type ?? 'model', name: r.id });
let dirCounter = 0;
const freshDir = () => fs.mkdtempSync(path.join(tmp, `${++dirCounter}-`));

/** What huggingface_hub's snapshot_download asks: revision/main, tree pages at the commit, HEAD + GET per file. */
async function pythonStyleSnapshot(base: string): Promise<{ sources: string[]; files: Record<string, Buffer> }> {
  const sources: string[] = [];
  const info = await download(`${base}/api/models/${MODEL.id}/revision/main`);
  expect(info.status, info.body.toString()).toBe(200);
  sources.push(header(info, 'x-mirror-cache') ?? '');
  const sha = (JSON.parse(info.body.toString()) as { sha: string }).sha;
  const paths: string[] = [];
  let next: string | undefined = `${base}/api/models/${MODEL.id}/tree/${sha}?recursive=true&expand=false`;
  while (next) {
    const page = await download(next);
    expect(page.status).toBe(200);
    sources.push(header(page, 'x-mirror-cache') ?? '');
    for (const e of JSON.parse(page.body.toString()) as Array<{ type: string; path: string }>) if (e.type === 'file') paths.push(e.path);
    const link = header(page, 'link');
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
  }
  const out: Record<string, Buffer> = {};
  for (const p of paths.sort()) {
    const head = await download(`${base}/${MODEL.id}/resolve/${sha}/${p}`, { method: 'HEAD' });
    expect(header(head, 'x-repo-commit')).toBe(sha);
    const get = await download(`${base}/${MODEL.id}/resolve/${sha}/${p}`);
    expect(get.status).toBe(200);
    out[p] = get.body;
  }
  return { sources, files: out };
}

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 2 });
  ({ commit } = hub.addRepo({ ...MODEL, files, xet: false }));
  hub.addRepo({ ...DATASET, files: { 'data/train.csv': Buffer.from('a,b\n1,2\n'), 'README.md': Buffer.from('# d\n') }, xet: false });
  hub.addKnownToken(TOKEN);
  mirror = await startMirror(hub.url, ONLINE);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-offline-'));
  vi.spyOn(console, 'debug').mockImplementation(() => undefined);
  online = {
    model: readTree(await snapshotDownload({ repo: js(MODEL), cacheDir: freshDir(), hubUrl: mirror.url })),
    dataset: readTree(await snapshotDownload({ repo: js(DATASET), cacheDir: freshDir(), hubUrl: mirror.url })),
  };
  expect(online.model).toEqual(files);
  expect((await pythonStyleSnapshot(mirror.url)).files).toEqual(files);
});

afterAll(async () => {
  vi.restoreAllMocks();
  await mirror?.destroy();
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('upstream unreachable (connection refused)', () => {
  it('the same snapshots succeed entirely; uncached questions fail in well under 2 s with a clear 503', async () => {
    await hub.stop();
    try {
      const model = readTree(await snapshotDownload({ repo: js(MODEL), cacheDir: freshDir(), hubUrl: mirror.url }));
      const dataset = readTree(await snapshotDownload({ repo: js(DATASET), cacheDir: freshDir(), hubUrl: mirror.url }));
      expect(model).toEqual(online.model);
      expect(dataset).toEqual(online.dataset);
      const py = await pythonStyleSnapshot(mirror.url);
      expect(py.files).toEqual(files);
      expect(py.sources[0]).toBe('stale'); // revision/main: last known commit
      expect(py.sources.slice(1).every((s) => s === 'hit')).toBe(true); // tree pages at a commit

      const uncached = [
        () => download(`${mirror.url}/${MODEL.id}/resolve/main/never-fetched.bin`),
        () => download(`${mirror.url}/api/models/${MODEL.id}/tree/${commit}/sub?recursive=true&expand=true`),
        () => download(`${mirror.url}/api/models/${MODEL.id}/revision/other-branch`),
        () => download(`${mirror.url}/api/models/${MODEL.id}/refs`),
        () =>
          fetch(`${mirror.url}/api/models/${MODEL.id}/paths-info/${commit}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"paths":["never.txt"]}' }).then(async (r) => ({
            status: r.status,
            headers: Object.fromEntries(r.headers),
            body: Buffer.from(await r.arrayBuffer()),
          })),
      ];
      // Connection refused is known at once: 503 "unreachable", not a wait for the metadata
      // timeout (which would answer 504 UpstreamTimeout).
      for (const ask of uncached) {
        const d = await ask();
        expect(d.status).toBe(503);
        expect(header(d, 'x-error-message')).toMatch(/unreachable/i);
      }
      // Public content (cached from anonymous answers) is served to a client with its own token
      // too; content only a token could read fails closed (service-identity.test.ts).
      const withToken = await download(`${mirror.url}/api/models/${MODEL.id}/revision/main`, { headers: { authorization: `Bearer ${TOKEN}` } });
      expect([withToken.status, header(withToken, 'x-mirror-cache')]).toEqual([200, 'stale']);
    } finally {
      await hub.restart();
    }
  });
});

describe('upstream hanging or failing', () => {
  it('a timeout answers from the index after the metadata timeout; an uncached question gets 504', async () => {
    // Upstream would answer after a minute: both answers come while it still has not. (A 1 s
    // metadata timeout for this test only: the others must not time out on a busy machine.)
    const fault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${MODEL.id}/` }, { kind: 'headerDelay', ms: 60_000 });
    const unanswered = () => hub.requests.filter((r) => r.path.includes(`/api/models/${MODEL.id}/revision/main`) && r.status === undefined);
    try {
      await withMirrorOnDataDir({ ...ONLINE, metadataTimeoutSeconds: 1 }, async (m) => {
        const before = unanswered().length;
        const cached = await download(`${m.url}/api/models/${MODEL.id}/revision/main`);
        expect([cached.status, header(cached, 'x-mirror-cache')]).toEqual([200, 'stale']);
        const uncached = await download(`${m.url}/api/models/${MODEL.id}/revision/main?expand=downloads`);
        expect([uncached.status, header(uncached, 'x-error-code')]).toEqual([504, 'UpstreamTimeout']);
        expect(unanswered().length - before).toBe(2);
      });
    } finally {
      fault.remove();
    }
  });

  it('a 5xx answers from the index; uncached, the client gets a 502 (never a cached error)', async () => {
    const fault = hub.setFault({ server: 'hub', pathIncludes: `/api/models/${MODEL.id}/` }, { kind: 'status', status: 500 });
    try {
      const cached = await download(`${mirror.url}/api/models/${MODEL.id}/revision/main`);
      expect([cached.status, header(cached, 'x-mirror-cache')]).toEqual([200, 'stale']);
      const uncached = await download(`${mirror.url}/api/models/${MODEL.id}/revision/main?expand=likes`);
      expect(uncached.status).toBe(502);
    } finally {
      fault.remove();
    }
    const after = await download(`${mirror.url}/api/models/${MODEL.id}/revision/main?expand=likes`);
    expect(after.status).toBe(200);
  });
});

describe('offline: true', () => {
  it('never contacts upstream: the snapshot is served from the cache, anything else is a clear 503', async () => {
    // The same data dir, served by an offline mirror (the online one is brought back after).
    await withMirrorOnDataDir({ offline: true }, async (off) => {
      expect(off.logs.some((l) => l.includes('offline mode'))).toBe(true);
      const before = hub.requests.length;
      const model = readTree(await snapshotDownload({ repo: js(MODEL), cacheDir: freshDir(), hubUrl: off.url }));
      expect(model).toEqual(online.model);
      expect((await pythonStyleSnapshot(off.url)).files).toEqual(files);
      const missing = await download(`${off.url}/api/models/${MODEL.id}/revision/v9`);
      expect(missing.status).toBe(503);
      expect(header(missing, 'x-error-message')).toMatch(/offline/i);
      const file = await download(`${off.url}/${MODEL.id}/resolve/main/never-fetched.bin`);
      expect(file.status).toBe(503);
      expect(header(file, 'x-error-message')).toMatch(/offline/i);
      expect(hub.requests.length).toBe(before);
    });
  });
});
