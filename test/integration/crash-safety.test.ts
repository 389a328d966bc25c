/**
 * Crash safety: kill -9 at chosen points of a fill and at
 * random during concurrent fills; tampering behind the mirror's back; one process per data dir.
 * After every restart: SQLite integrity ok, every indexed blob present with the right digest,
 * no staging leftovers, and downloads give the right bytes.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { runCli, startMirrorProcess } from '../support/mirror-process.js';
import { startMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
let hub: FakeHub;
const files = new Map<string, Buffer>();
const tmpDirs: string[] = [];

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-crash-'));
  tmpDirs.push(d);
  return d;
}

beforeAll(async () => {
  hub = await startFakeHub();
  const repoFiles: Record<string, Buffer> = {};
  for (let i = 0; i < 4; i++) {
    const content = makeContent(8 * MiB + i, 500 + i);
    repoFiles[`shard-${i}.safetensors`] = content;
    files.set(`shard-${i}.safetensors`, content);
  }
  repoFiles['config.json'] = Buffer.from('{"crash": "test"}\n');
  files.set('config.json', repoFiles['config.json']);
  hub.addRepo({ id: 'org/crash', files: repoFiles });
});
afterAll(async () => {
  await hub?.stop();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** Blob files already read back and found right (path, inode, mtime). */
const checkedBlobs = new Set<string>();

/** The invariants that must hold in a data dir after any crash (read with the mirror stopped). */
function checkDataDir(dataDir: string): { blobs: number } {
  const db = new Database(path.join(dataDir, 'index.sqlite'));
  try {
    expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
    const rows = db.prepare<[], { blob_key: string; size: number }>('SELECT blob_key, size FROM blobs').all();
    for (const row of rows) {
      const [alg, hex] = row.blob_key.split(':') as [string, string];
      const file = path.join(dataDir, 'blobs-v1', alg, hex.slice(0, 2), hex.slice(2, 4), hex);
      expect(fs.existsSync(file), `${row.blob_key} indexed but missing`).toBe(true);
      // A blob at its final path never changes (staging, then rename): each is read and hashed once,
      // not again at every later check of the same data dir.
      const stat = fs.statSync(file);
      expect(stat.size).toBe(row.size);
      const seen = `${file}:${stat.ino}:${stat.mtimeMs}`;
      if (alg === 'sha256' && !checkedBlobs.has(seen)) {
        expect(sha256Hex(fs.readFileSync(file))).toBe(hex);
        checkedBlobs.add(seen);
      }
    }
    return { blobs: rows.length };
  } finally {
    db.close();
  }
}

async function downloadAll(url: string): Promise<void> {
  await Promise.all(
    [...files.entries()].map(async ([name, content]) => {
      const d = await download(`${url}/org/crash/resolve/main/${name}`, { keepBody: false });
      expect(d.status).toBe(200);
      expect(d.complete).toBe(true);
      expect(d.sha256).toBe(sha256Hex(content));
    }),
  );
}

describe('kill -9', () => {
  it.each([
    ['after-staging-fsync', 2], // staging file removed at restart: fetched again
    ['after-rename', 1], // verified blob at its final path without an index row: adopted after re-hash
    ['after-index-commit', 1],
  ] as const)('at %s: restart finds a consistent cache and serves the right bytes (upstream GETs: %i)', async (point, expectedGets) => {
    const dataDir = tempDir();
    const shard0 = hub.fileInfo({ id: 'org/crash' }, 'shard-0.safetensors').sha256;
    const gets = () => hub.count({ server: 'cdn', method: 'GET', pathIncludes: shard0 });
    const before = gets();
    const doomed = await startMirrorProcess(hub.url, dataDir, { HUBCACHE_TEST_CRASH_AT: point });
    const cut = await download(`${doomed.url}/org/crash/resolve/main/shard-0.safetensors`, { keepBody: false });
    expect(cut.status === 200 && cut.complete).toBe(false); // the last byte waits for the commit
    const { signal } = await doomed.exited;
    expect(signal).toBe('SIGKILL');
    const next = await startMirrorProcess(hub.url, dataDir);
    try {
      expect(fs.readdirSync(path.join(dataDir, 'staging'))).toEqual([]);
      await downloadAll(next.url);
      const cached = await download(`${next.url}/org/crash/resolve/main/shard-0.safetensors`, { keepBody: false });
      expect(header(cached, 'x-mirror-cache')).toBe('hit');
    } finally {
      await next.kill('SIGTERM');
    }
    expect(gets() - before).toBe(expectedGets);
    checkDataDir(dataDir);
  });

  it('20 kills at random points of 4 concurrent fills never leave a wrong or lost blob', async () => {
    const dataDir = tempDir();
    // Each round its own 4 files, so every kill lands in fills of its own: before upstream
    // answered, mid-body, or between the last byte and the commit (the kill point is a random
    // count of upstream bytes, or some ms after the last one). What was cut short is fetched
    // again, correctly, after the last restart.
    const ROUNDS = 20;
    const SIZE = 2 * MiB;
    const rounds: Array<{ id: string; files: Map<string, Buffer> }> = [];
    const wrong: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const id = `org/crash-kill-${round}`;
      const roundFiles = new Map<string, Buffer>();
      for (let i = 0; i < 4; i++) roundFiles.set(`w-${i}.safetensors`, makeContent(SIZE + round * 4 + i, 1000 + round * 4 + i));
      hub.addRepo({ id, files: Object.fromEntries(roundFiles) });
      rounds.push({ id, files: roundFiles });
      const shas = [...roundFiles.values()].map((c) => sha256Hex(c));
      // ~130 ms per file: long enough for the kill to land anywhere in it.
      const throttles = shas.map((sha) => hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'throttle', bytesPerSecond: 16e6 }));
      const cdnBytes = () => shas.reduce((n, sha) => n + hub.bytesSent({ server: 'cdn', method: 'GET', pathIncludes: sha }), 0);
      try {
        const m = await startMirrorProcess(hub.url, dataDir);
        const before = checkDataDir(dataDir).blobs;
        // Cut short by the kill, or complete if it won the race: a complete 200 must be right.
        const downloads = Promise.all(
          [...roundFiles.entries()].map(async ([name, content]) => {
            const d = await download(`${m.url}/${id}/resolve/main/${name}`, { keepBody: false }).catch(() => null);
            if (d?.status === 200 && d.complete && d.sha256 !== sha256Hex(content)) wrong.push(`${id}/${name}`);
          }),
        );
        const total = 4 * SIZE;
        const killAt = Math.floor(Math.random() * total * 1.2);
        if (killAt < total) {
          await waitFor(() => cdnBytes() >= killAt, { what: `upstream to send ${killAt} bytes`, intervalMs: 1 });
        } else {
          await waitFor(() => cdnBytes() >= total, { what: 'upstream to send every byte', intervalMs: 1 });
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 30)); // somewhere in verify/rename/commit
        }
        await m.kill('SIGKILL');
        await downloads;
        // Nothing completed is ever lost: the blob count never goes down.
        expect(checkDataDir(dataDir).blobs).toBeGreaterThanOrEqual(before);
      } finally {
        for (const t of throttles) t.remove();
      }
    }
    const last = await startMirrorProcess(hub.url, dataDir);
    try {
      await Promise.all(
        rounds.flatMap(({ id, files: roundFiles }) =>
          [...roundFiles.entries()].map(async ([name, content]) => {
            const d = await download(`${last.url}/${id}/resolve/main/${name}`, { keepBody: false });
            expect([`${id}/${name}`, d.status, d.complete, d.sha256]).toEqual([`${id}/${name}`, 200, true, sha256Hex(content)]);
          }),
        ),
      );
    } finally {
      await last.kill('SIGTERM');
    }
    expect(checkDataDir(dataDir).blobs).toBe(ROUNDS * 4);
    expect(wrong).toEqual([]);
  });
});

describe('tampering and reconcile', () => {
  it('a deleted blob is refetched, a flipped byte is quarantined by `hubcache verify`, orphans are adopted or removed', async () => {
    const dataDir = tempDir();
    let m = await startMirror(hub.url, { dataDir });
    const url = (n: string) => `${m.url}/org/crash/resolve/main/${n}`;
    await downloadAll(m.url);
    const blob = (n: string) => {
      const hex = hub.fileInfo({ id: 'org/crash' }, n).sha256;
      return path.join(dataDir, 'blobs-v1', 'sha256', hex.slice(0, 2), hex.slice(2, 4), hex);
    };

    // Deleted behind our back: a miss, refetched, right bytes (never a 500 or an empty body).
    fs.rmSync(blob('shard-1.safetensors'));
    const refetched = await download(url('shard-1.safetensors'), { keepBody: false });
    expect([refetched.status, header(refetched, 'x-mirror-cache'), refetched.sha256]).toEqual([200, 'miss', sha256Hex(files.get('shard-1.safetensors')!)]);
    await m.close();

    // One flipped byte: verify finds it, quarantines it, exits 1; the next request refetches.
    const fd = fs.openSync(blob('shard-2.safetensors'), 'r+');
    fs.writeSync(fd, Buffer.from([0x42]), 0, 1, 4096);
    fs.closeSync(fd);
    const verify = runCli(['verify', '--data-dir', dataDir]);
    const { code } = await verify.exited;
    expect(code).toBe(1);
    const report = JSON.parse(verify.output.filter((l) => !l.startsWith('verify [')).join('\n')) as { verified: number; corrupt: Array<{ key: string }> };
    expect(report.corrupt.map((c) => c.key)).toEqual([`sha256:${hub.fileInfo({ id: 'org/crash' }, 'shard-2.safetensors').sha256}`]);
    expect(report.verified).toBe(4);
    expect(fs.existsSync(blob('shard-2.safetensors'))).toBe(false);
    expect(fs.readdirSync(path.join(dataDir, 'quarantine'))).toHaveLength(1);

    // Orphans: a valid blob whose index row was lost is adopted; garbage is removed; staging cleared.
    const db = new Database(path.join(dataDir, 'index.sqlite'));
    db.prepare('DELETE FROM blobs WHERE blob_key = ?').run(`sha256:${hub.fileInfo({ id: 'org/crash' }, 'shard-3.safetensors').sha256}`);
    db.close();
    const bogus = path.join(dataDir, 'blobs-v1', 'sha256', 'ab', 'cd', 'abcd'.padEnd(64, '0'));
    fs.mkdirSync(path.dirname(bogus), { recursive: true });
    fs.writeFileSync(bogus, 'not what the name says');
    fs.writeFileSync(path.join(dataDir, 'staging', 'left.part'), 'partial');
    const gets = hub.count({ server: 'cdn', method: 'GET' });
    m = await startMirror(hub.url, { dataDir });
    try {
      expect(fs.existsSync(bogus)).toBe(false);
      expect(fs.readdirSync(path.join(dataDir, 'staging'))).toEqual([]);
      const adopted = await download(url('shard-3.safetensors'), { keepBody: false });
      expect([header(adopted, 'x-mirror-cache'), adopted.sha256]).toEqual(['hit', sha256Hex(files.get('shard-3.safetensors')!)]);
      const healed = await download(url('shard-2.safetensors'), { keepBody: false });
      expect(healed.sha256).toBe(sha256Hex(files.get('shard-2.safetensors')!));
      expect(hub.count({ server: 'cdn', method: 'GET' })).toBe(gets + 1);
    } finally {
      await m.close();
    }
    checkDataDir(dataDir);
  });
});

describe('one process per data dir', () => {
  it('a second mirror on the same data dir refuses to start with a clear error', async () => {
    const dataDir = tempDir();
    const first = await startMirrorProcess(hub.url, dataDir);
    try {
      const second = runCli(['serve', '--port', '0', '--host', '127.0.0.1', '--data-dir', dataDir, '--upstream', hub.url]);
      const { code } = await second.exited;
      expect(code).toBe(1);
      expect(second.output.join('\n')).toMatch(/in use by another hubcache process/);
      expect((await download(`${first.url}/healthz`)).status).toBe(200);
    } finally {
      await first.kill('SIGKILL');
    }
    // The lock dies with its process, even by kill -9: the next start works.
    const third = await startMirrorProcess(hub.url, dataDir);
    await third.kill('SIGTERM');
  });
});
