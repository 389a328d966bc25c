/**
 * Disk budget and eviction: the cache stays within maxCacheBytes while several times that much
 * goes through it, never evicts what is being read, refuses (507) only when nothing is
 * evictable, survives kill -9 in the middle of an eviction, and lets the operator evict a repo.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { runCli, startMirrorProcess } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
const ADMIN = 'admin-secret-evict-0123456';
let hub: FakeHub;
const tmpDirs: string[] = [];

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-evict-'));
  tmpDirs.push(d);
  return d;
}

beforeAll(async () => {
  hub = await startFakeHub();
});
afterAll(async () => {
  await hub?.stop();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Bytes of blob and staging files on disk (blobs first: a file renamed meanwhile is missed, never counted twice). */
function bytesOnDisk(dataDir: string): number {
  let n = 0;
  for (const dir of ['blobs-v1', 'staging']) {
    const root = path.join(dataDir, dir);
    for (const e of fs.readdirSync(root, { recursive: true, withFileTypes: true })) {
      if (!e.isFile()) continue;
      try {
        n += fs.statSync(path.join(e.parentPath, e.name)).size;
      } catch {
        // removed meanwhile
      }
    }
  }
  return n;
}

function blobPath(dataDir: string, sha256: string): string {
  return path.join(dataDir, 'blobs-v1', 'sha256', sha256.slice(0, 2), sha256.slice(2, 4), sha256);
}

/** Index rows and blob files name the same set, with the right sizes (read with the mirror stopped). */
function checkConsistent(dataDir: string): Set<string> {
  const db = new Database(path.join(dataDir, 'index.sqlite'), { readonly: true });
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    const rows = db.prepare<[], { blob_key: string; size: number }>('SELECT blob_key, size FROM blobs').all();
    const onDisk = new Set<string>();
    const root = path.join(dataDir, 'blobs-v1');
    for (const e of fs.readdirSync(root, { recursive: true, withFileTypes: true })) if (e.isFile()) onDisk.add(e.name);
    const recorded = new Set(rows.map((r) => r.blob_key.split(':')[1]!));
    expect([...recorded].sort()).toEqual([...onDisk].sort());
    for (const r of rows) {
      const [alg, hex] = r.blob_key.split(':') as [string, string];
      if (alg === 'sha256') expect(fs.statSync(blobPath(dataDir, hex)).size).toBe(r.size);
    }
    return recorded;
  } finally {
    db.close();
  }
}

/** A GET whose body is read only when told: headers and the first chunk, then paused. */
function slowReader(url: string): { firstChunk: Promise<number>; finish: () => Promise<{ status: number; bytes: number; sha256: string }> } {
  const hash = createHash('sha256');
  let bytes = 0;
  let status = 0;
  let res: http.IncomingMessage | undefined;
  let firstSeen: ((n: number) => void) | undefined;
  const firstChunk = new Promise<number>((resolve) => (firstSeen = resolve));
  const ended = new Promise<void>((resolve, reject) => {
    const req = http.get(url, (r) => {
      res = r;
      status = r.statusCode ?? 0;
      r.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (firstSeen) {
          r.pause();
          firstSeen(bytes);
          firstSeen = undefined;
        }
      });
      r.on('end', () => resolve());
      r.on('error', reject);
    });
    req.on('error', reject);
  });
  ended.catch(() => undefined);
  return {
    firstChunk,
    finish: async () => {
      res?.resume();
      await ended;
      return { status, bytes, sha256: hash.digest('hex') };
    },
  };
}

describe('disk budget', () => {
  it('4× the budget through the mirror with concurrent clients: disk within the budget, right bytes, no 507, a slow reader of a large blob never cut', async () => {
    const id = 'org/evict-flow';
    const files: Record<string, Buffer> = { 'big.safetensors': makeContent(8 * MiB, 700) };
    for (let i = 0; i < 24; i++) files[`part-${String(i).padStart(2, '0')}.bin`] = makeContent(2 * MiB + i, 710 + i);
    hub.addRepo({ id, files });
    const budget = 24 * MiB;
    const m = await startMirror(hub.url, { maxCacheBytes: String(budget), evictionGraceSeconds: 0, minFreeBytes: 0 });
    try {
      const base = `${m.url}/${id}/resolve/main`;
      // The slow client starts first: its blob is the least recently used all along.
      const slow = slowReader(`${base}/big.safetensors`);
      expect(await slow.firstChunk).toBeGreaterThan(0);

      const names = Object.keys(files).filter((n) => n !== 'big.safetensors');
      const queue = [...names, ...names]; // two rounds: under LRU the second round misses again
      const statuses: number[] = [];
      let maxOnDisk = 0;
      const worker = async (): Promise<void> => {
        for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
          const d = await download(`${base}/${name}`, { keepBody: false });
          statuses.push(d.status);
          expect(d.status, `${name}: ${d.body.toString()}`).toBe(200);
          expect(d.complete).toBe(true);
          expect(d.sha256).toBe(sha256Hex(files[name]!));
          maxOnDisk = Math.max(maxOnDisk, bytesOnDisk(m.dataDir));
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      expect(statuses).toHaveLength(48);
      expect(statuses.filter((s) => s !== 200)).toEqual([]); // never a 507: something was always evictable
      // Admission counts downloads in progress against the budget: the disk never holds more.
      expect(maxOnDisk).toBeLessThanOrEqual(budget);
      const pushed = names.reduce((n, name) => n + hub.count({ server: 'cdn', method: 'GET', pathIncludes: hub.fileInfo({ id }, name).sha256 }) * files[name]!.length, 0);
      expect(pushed).toBeGreaterThanOrEqual(3 * budget);

      // The slow reader held its blob the whole time: still on disk, and its body completes.
      const big = hub.fileInfo({ id }, 'big.safetensors').sha256;
      expect(fs.existsSync(blobPath(m.dataDir, big))).toBe(true);
      const done = await slow.finish();
      expect(done).toEqual({ status: 200, bytes: 8 * MiB, sha256: sha256Hex(files['big.safetensors']!) });
      const again = await download(`${base}/big.safetensors`, { keepBody: false });
      expect(header(again, 'x-mirror-cache')).toBe('hit');
      expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: big })).toBe(1);
    } finally {
      await m.destroy();
    }
  });

  it('a file that does not fit is 507 only while every stored file is in use (the grace period), then evicts what it needs', async () => {
    const id = 'org/evict-grace';
    const files = { 'a.bin': makeContent(3 * MiB, 720), 'b.bin': makeContent(3 * MiB, 721) };
    hub.addRepo({ id, files });
    const dataDir = tempDir();
    let m: TestMirror = await startMirror(hub.url, { dataDir, maxCacheBytes: String(4 * MiB), evictionGraceSeconds: 3600, minFreeBytes: 0 });
    try {
      expect((await download(`${m.url}/${id}/resolve/main/a.bin`, { keepBody: false })).status).toBe(200);
      const refused = await download(`${m.url}/${id}/resolve/main/b.bin`);
      expect(refused.status).toBe(507);
      expect(header(refused, 'x-error-code')).toBe('InsufficientStorage');
    } finally {
      await m.close();
    }
    m = await startMirror(hub.url, { dataDir, maxCacheBytes: String(4 * MiB), evictionGraceSeconds: 0, minFreeBytes: 0 });
    try {
      const b = await download(`${m.url}/${id}/resolve/main/b.bin`, { keepBody: false });
      expect(b.status).toBe(200);
      expect(b.sha256).toBe(sha256Hex(files['b.bin']));
      expect(fs.existsSync(blobPath(dataDir, hub.fileInfo({ id }, 'a.bin').sha256))).toBe(false);
    } finally {
      await m.close();
    }
    expect(checkConsistent(dataDir)).toEqual(new Set([hub.fileInfo({ id }, 'b.bin').sha256]));
  });

  it('kill -9 between removing a blob file and its rows: the restart finds index and disk consistent and serves the right bytes', async () => {
    const id = 'org/evict-crash';
    const files = { 'a.bin': makeContent(6 * MiB, 730), 'b.bin': makeContent(6 * MiB, 731), 'c.bin': makeContent(6 * MiB, 732) };
    hub.addRepo({ id, files });
    const dataDir = tempDir();
    const env = { HUBCACHE_MAX_CACHE_BYTES: String(13 * MiB), HUBCACHE_EVICTION_GRACE_SECONDS: '0', HUBCACHE_MIN_FREE_BYTES: '0' };
    const doomed = await startMirrorProcess(hub.url, dataDir, { ...env, HUBCACHE_TEST_CRASH_AT: 'after-evict-unlink' });
    for (const name of ['a.bin', 'b.bin']) expect((await download(`${doomed.url}/${id}/resolve/main/${name}`, { keepBody: false })).status).toBe(200);
    const cut = await download(`${doomed.url}/${id}/resolve/main/c.bin`, { keepBody: false });
    expect(cut.status === 200 && cut.complete).toBe(false);
    expect((await doomed.exited).signal).toBe('SIGKILL');
    // The crash came after the unlink: a's file is gone, its row not yet.
    expect(fs.existsSync(blobPath(dataDir, hub.fileInfo({ id }, 'a.bin').sha256))).toBe(false);

    const next = await startMirrorProcess(hub.url, dataDir, env);
    try {
      for (const [name, content] of Object.entries(files)) {
        const d = await download(`${next.url}/${id}/resolve/main/${name}`, { keepBody: false });
        expect(d.status).toBe(200);
        expect(d.sha256).toBe(sha256Hex(content));
      }
    } finally {
      await next.kill('SIGTERM');
    }
    const kept = checkConsistent(dataDir);
    expect(kept.size).toBeGreaterThan(0);
    expect([...kept].reduce((n, hex) => n + fs.statSync(blobPath(dataDir, hex)).size, 0)).toBeLessThanOrEqual(13 * MiB);
  });

  it('the operator evicts a repo (dry run first) through the admin API and the CLI; blobs shared with another repo stay', async () => {
    const shared = makeContent(1 * MiB, 740);
    hub.addRepo({ id: 'org/evict-mine', files: { 'own.bin': makeContent(2 * MiB, 741), 'shared.bin': shared } });
    hub.addRepo({ id: 'org/evict-other', files: { 'shared.bin': shared } });
    const dataDir = tempDir();
    const m = await startMirror(hub.url, { dataDir, adminToken: ADMIN, evictionGraceSeconds: 0 });
    const own = hub.fileInfo({ id: 'org/evict-mine' }, 'own.bin').sha256;
    const sharedSha = hub.fileInfo({ id: 'org/evict-mine' }, 'shared.bin').sha256;
    try {
      for (const p of ['org/evict-mine/resolve/main/own.bin', 'org/evict-mine/resolve/main/shared.bin', 'org/evict-other/resolve/main/shared.bin']) {
        expect((await download(`${m.url}/${p}`, { keepBody: false })).status).toBe(200);
      }
      const post = async (body: unknown): Promise<{ status: number; json: { dryRun: boolean; bytes: number; blobs: Array<{ blob: string; outcome: string }> } }> => {
        const r = await fetch(`${m.url}/admin/evict`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
        return { status: r.status, json: (await r.json()) as never };
      };
      expect((await post({})).status).toBe(400);
      const dry = await post({ repo: 'org/evict-mine', dryRun: true });
      expect(dry.json).toEqual({ dryRun: true, bytes: 2 * MiB, blobs: [{ blob: `sha256:${own}`, size: 2 * MiB, outcome: 'would-evict' }] });
      expect(fs.existsSync(blobPath(dataDir, own))).toBe(true);
      const real = await post({ repo: 'org/evict-mine' });
      expect(real.json.blobs).toEqual([{ blob: `sha256:${own}`, size: 2 * MiB, outcome: 'evicted' }]);
      expect(fs.existsSync(blobPath(dataDir, own))).toBe(false);
      expect(fs.existsSync(blobPath(dataDir, sharedSha))).toBe(true);
      const refetched = await download(`${m.url}/org/evict-mine/resolve/main/own.bin`, { keepBody: false });
      expect(header(refetched, 'x-mirror-cache')).toBe('miss');
      expect(refetched.sha256).toBe(own);
    } finally {
      await m.close();
    }
    // With the server stopped the CLI works on the data dir: everything unused for 0 s, by size.
    const cli = runCli(['evict', '--unused-for', '0s', '--bytes', '1', '--data-dir', dataDir, '--json'], { HUBCACHE_EVICTION_GRACE_SECONDS: '0' });
    const { code } = await cli.exited;
    expect(code, cli.output.join('\n')).toBe(0);
    const report = JSON.parse(cli.output.join('\n')) as { bytes: number; blobs: Array<{ outcome: string }> };
    expect(report.blobs.map((b) => b.outcome)).toEqual(['evicted']); // one blob was enough for 1 byte
    expect(checkConsistent(dataDir).size).toBe(1);
    const bad = runCli(['evict', '--unused-for', 'soon', '--data-dir', dataDir]);
    expect((await bad.exited).code).toBe(2);
  });
});
