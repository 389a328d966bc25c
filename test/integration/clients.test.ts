/**
 * Real clients against the mirror (checklist D and E): curl, wget, aria2c and @huggingface/hub
 * download through the mirror from one fake hub and must end up with byte-identical files, with
 * the headers each client relies on (hf-protocol §4) and no Xet leaking through (§10).
 *
 * External tools run through `runTool` (async execFile): the mirror lives in this process, so a
 * synchronous child_process call would block the event loop serving the tool.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { downloadFile, fileDownloadInfo, fileExists } from '@huggingface/hub';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { lastResponseHead, runTool, type ResponseHead } from '../support/run-tool.js';

const MiB = 1 << 20;

const MODEL: RepoRef = { id: 'org/model' };
const LEGACY: RepoRef = { id: 'gpt-legacy' };
const DATASET: RepoRef = { type: 'dataset', id: 'org/data' };
const SPACE: RepoRef = { type: 'space', id: 'org/space' };

const BIG = 'model.safetensors';
const COLD = 'model-00002.safetensors';
const NESTED = 'sub/dir/x.bin';
const LEGACY_NESTED = 'nested/deep/pytorch_model.bin';
const DATASET_FILE = 'data/train-00000-of-00001.parquet';
const SPACE_FILE = 'assets/weights.bin';

const URL_PREFIX = { model: '', dataset: 'datasets/', space: 'spaces/' } as const;

let hub: FakeHub;
let mirror: TestMirror;
let tmp: string;
let outCounter = 0;

function url(repo: RepoRef, file: string, kind: 'resolve' | 'raw' = 'resolve', revision = 'main'): string {
  return `${mirror.url}/${URL_PREFIX[repo.type ?? 'model']}${repo.id}/${kind}/${revision}/${file}`;
}

/** A fresh output path in the temp dir. */
function outPath(name = 'out'): string {
  return path.join(tmp, `${++outCounter}-${name}`);
}

function fileSha256(p: string): string {
  return sha256Hex(fs.readFileSync(p));
}

/** Runs curl and returns its exit code + last response head (printed with `-D -`). */
async function curl(args: string[]): Promise<{ code: number; head: ResponseHead; stderr: string }> {
  const r = await runTool('curl', ['-sS', ...args]);
  expect(r.code, `curl ${args.join(' ')} → exit ${r.code}: ${r.stderr}`).toBe(0);
  return { code: r.code, head: lastResponseHead(r.stdout), stderr: r.stderr };
}

interface RequestLogLine {
  method?: string;
  path?: string;
  status?: number;
  cache?: string;
  bytes?: number;
  completed?: boolean;
}

/** The mirror's per-request log lines so far. */
function mirrorRequestLogs(): RequestLogLine[] {
  const lines: RequestLogLine[] = [];
  for (const raw of mirror.logs) {
    try {
      const parsed = JSON.parse(raw) as RequestLogLine & { msg?: string };
      if (parsed.msg === 'request') lines.push(parsed);
    } catch {
      // not JSON: ignore
    }
  }
  return lines;
}

/** No Xet header and no Link relation pointing clients to Xet. */
function expectNoXet(head: ResponseHead): void {
  const xetHeaders = Object.keys(head.headers).filter((h) => h.startsWith('x-xet-'));
  expect(xetHeaders).toEqual([]);
  expect(head.headers.link ?? '').not.toMatch(/xet/i);
  expect(head.headers['content-type'] ?? '').not.toContain('xet');
}

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-clients-'));
  hub = await startFakeHub();
  hub.addRepo({
    ...MODEL,
    files: {
      'config.json': Buffer.from(JSON.stringify({ architectures: ['FakeModel'], hidden_size: 64 }, null, 2) + '\n'),
      [BIG]: makeContent(24 * MiB + 12_345, 101),
      [COLD]: makeContent(24 * MiB + 777, 102),
      [NESTED]: makeContent(3 * MiB + 5, 103),
    },
  });
  hub.addRepo({
    ...LEGACY,
    files: {
      'config.json': Buffer.from('{"model_type":"gpt2"}\n'),
      [LEGACY_NESTED]: makeContent(2 * MiB + 1, 104),
    },
  });
  hub.addRepo({
    ...DATASET,
    files: {
      'README.md': Buffer.from('# a dataset\n'),
      [DATASET_FILE]: makeContent(1 * MiB + 333, 105),
    },
  });
  hub.addRepo({
    ...SPACE,
    files: {
      'app.py': Buffer.from('print("hello")\n'),
      [SPACE_FILE]: makeContent(300 * 1024 + 7, 106),
    },
  });
  mirror = await startMirror(hub.url);
}, 60_000);

afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('curl', { timeout: 60_000 }, () => {
  it('(control) upstream itself advertises Xet for the LFS file, so stripping is really exercised', async () => {
    const { head } = await curl(['-I', `${hub.url}/${MODEL.id}/resolve/main/${BIG}`]);
    expect(head.status).toBe(302);
    expect(head.headers['x-xet-hash']).toBeDefined();
    expect(head.headers.link ?? '').toMatch(/xet-auth/);
  });

  it('-r 100-199 gets 206 with exactly that slice', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const out = outPath();
    const { head } = await curl(['-f', '-D', '-', '-o', out, '-r', '100-199', url(MODEL, BIG)]);
    expect(head.status).toBe(206);
    expect(head.headers['content-range']).toBe(`bytes 100-199/${info.size}`);
    const got = fs.readFileSync(out);
    expect(got.length).toBe(100);
    expect(got.equals(info.content.subarray(100, 200))).toBe(true);
  });

  it('-r 0-0 gets 206 with Content-Range bytes 0-0/<size>', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const out = outPath();
    const { head } = await curl(['-f', '-D', '-', '-o', out, '-r', '0-0', url(MODEL, BIG)]);
    expect(head.status).toBe(206);
    expect(head.headers['content-range']).toBe(`bytes 0-0/${info.size}`);
    expect(fs.readFileSync(out).equals(info.content.subarray(0, 1))).toBe(true);
  });

  it('a range past the end gets 416 with Content-Range bytes */<size>', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    for (const range of [`${info.size}-`, `${info.size + 10}-${info.size + 20}`]) {
      const { head } = await curl(['-D', '-', '-o', outPath(), '-r', range, url(MODEL, BIG)]);
      expect(head.status, `range ${range}`).toBe(416);
      expect(head.headers['content-range'], `range ${range}`).toBe(`bytes */${info.size}`);
    }
  });

  it('-L downloads the full LFS file byte-identical', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const out = outPath(BIG);
    const { head } = await curl(['-f', '-L', '-D', '-', '-o', out, url(MODEL, BIG)]);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(info.size));
    expect(head.headers['x-repo-commit']).toBe(info.commit);
    expectNoXet(head);
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
  });

  it('-L downloads a regular file and a nested LFS file byte-identical', async () => {
    for (const file of ['config.json', NESTED]) {
      const info = hub.fileInfo(MODEL, file);
      const out = outPath(path.basename(file));
      const { head } = await curl(['-f', '-L', '-D', '-', '-o', out, url(MODEL, file)]);
      expect(head.status, file).toBe(200);
      expect(head.headers.etag, file).toBe(`"${info.etag}"`);
      expectNoXet(head);
      expect(fileSha256(out), file).toBe(info.sha256);
    }
  });

  it('-I on the LFS file: 200 with size, ETag, X-Repo-Commit, X-Linked-Size, Accept-Ranges, no Xet', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const { head } = await curl(['-f', '-I', url(MODEL, BIG)]);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(info.size));
    expect(head.headers.etag).toBe(`"${info.sha256}"`);
    expect(head.headers['x-linked-etag']).toBe(`"${info.sha256}"`);
    expect(head.headers['x-repo-commit']).toBe(info.commit);
    expect(head.headers['x-linked-size']).toBe(String(info.size));
    expect(head.headers['accept-ranges']).toBe('bytes');
    expect(head.headers.location).toBeUndefined();
    expectNoXet(head);
  });

  it('-I on a regular file: 200 with size, git-sha1 ETag, X-Repo-Commit', async () => {
    const info = hub.fileInfo(MODEL, 'config.json');
    const { head } = await curl(['-f', '-I', url(MODEL, 'config.json')]);
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(info.size));
    expect(head.headers.etag).toBe(`"${info.gitSha1}"`);
    expect(head.headers['x-repo-commit']).toBe(info.commit);
    expect(head.headers['accept-ranges']).toBe('bytes');
    expectNoXet(head);
  });

  it('-C - resumes a partial file into the full correct file', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const prefix = 5 * MiB + 3;
    const out = outPath(BIG);
    fs.writeFileSync(out, info.content.subarray(0, prefix));
    const { head } = await curl(['-f', '-D', '-', '-C', '-', '-o', out, url(MODEL, BIG)]);
    expect(head.status).toBe(206);
    expect(head.headers['content-range']).toBe(`bytes ${prefix}-${info.size - 1}/${info.size}`);
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
  });
});

describe('wget', { timeout: 60_000 }, () => {
  it('plain download of a nested LFS file', async () => {
    const info = hub.fileInfo(MODEL, NESTED);
    const out = outPath('x.bin');
    const r = await runTool('wget', ['-q', '-O', out, url(MODEL, NESTED)]);
    expect(r.code, r.stderr).toBe(0);
    expect(fileSha256(out)).toBe(info.sha256);
  });

  it('-c resumes a partial file into the full correct file', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const prefix = 7 * MiB + 11;
    const out = outPath(BIG);
    fs.writeFileSync(out, info.content.subarray(0, prefix));
    const r = await runTool('wget', ['-q', '-c', '-O', out, url(MODEL, BIG)]);
    expect(r.code, r.stderr).toBe(0);
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
  });
});

describe('aria2c', { timeout: 90_000 }, () => {
  async function aria2(target: string, name: string): Promise<string> {
    const dir = fs.mkdtempSync(path.join(tmp, 'aria2-'));
    const r = await runTool('aria2c', [
      '-x', '8', '-s', '8', '-k', '1M',
      '--allow-overwrite=true', '--auto-file-renaming=false', '--file-allocation=none',
      '--console-log-level=warn', '--summary-interval=0', '--download-result=hide',
      '-d', dir, '-o', name, target,
    ]);
    expect(r.code, `aria2c exit ${r.code}: ${r.stdout}\n${r.stderr}`).toBe(0);
    return path.join(dir, name);
  }

  it('parallel ranged download of a cached LFS file', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const out = await aria2(url(MODEL, BIG), BIG);
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
  });

  it('parallel ranged download of a cold LFS file still filling: correct bytes, one fill that fetches each byte once', async () => {
    const info = hub.fileInfo(MODEL, COLD);
    expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: info.sha256 })).toBe(0);
    // Pace upstream (~2 s for the file) so aria2's 8 ranged connections all hit a blob still filling.
    const throttle = hub.setFault({ server: 'cdn', pathIncludes: info.sha256 }, { kind: 'throttle', bytesPerSecond: 12 * MiB });
    try {
      const out = await aria2(url(MODEL, COLD), COLD);
      expect(fs.statSync(out).size).toBe(info.size);
      expect(fileSha256(out)).toBe(info.sha256);
    } finally {
      throttle.remove();
    }
    // The scenario really happened: several ranged GETs, some joining the fill in flight.
    const gets = mirrorRequestLogs().filter((l) => l.method === 'GET' && l.path?.endsWith(`/${COLD}`));
    expect(gets.length).toBeGreaterThanOrEqual(2);
    expect(gets.filter((l) => l.cache === 'miss')).toHaveLength(1);
    expect(gets.some((l) => l.status === 206 && l.cache === 'joined')).toBe(true);
    // One fill: its stream plus the ranged GETs that fetched aria2's far pieces first (demand
    // first); together about the file, never a second download of it.
    const cdn = { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 };
    expect(hub.count(cdn)).toBeGreaterThanOrEqual(1);
    expect(hub.bytesSent(cdn)).toBeGreaterThanOrEqual(info.size);
    expect(hub.bytesSent(cdn)).toBeLessThanOrEqual(1.01 * info.size);
  });
});

describe('@huggingface/hub', { timeout: 60_000 }, () => {
  it('downloadFile of a regular, an LFS and a nested LFS file: bytes match', async () => {
    for (const file of ['config.json', BIG, NESTED]) {
      const info = hub.fileInfo(MODEL, file);
      const blob = await downloadFile({ repo: MODEL.id, path: file, hubUrl: mirror.url });
      expect(blob, file).not.toBeNull();
      expect(blob!.size, file).toBe(info.size);
      const bytes = Buffer.from(await blob!.arrayBuffer());
      expect(bytes.length, file).toBe(info.size);
      expect(sha256Hex(bytes), file).toBe(info.sha256);
    }
  });

  it('blob.slice(a, b) of the LFS download fetches exactly that range', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    const blob = await downloadFile({ repo: MODEL.id, path: BIG, hubUrl: mirror.url });
    expect(blob).not.toBeNull();
    for (const [a, b] of [
      [0, 1],
      [1000, 5000],
      [3 * MiB - 17, 9 * MiB + 5],
      [info.size - 100, info.size],
    ] as const) {
      const bytes = Buffer.from(await blob!.slice(a, b).arrayBuffer());
      expect(bytes.length, `${a}-${b}`).toBe(b - a);
      expect(bytes.equals(info.content.subarray(a, b)), `${a}-${b}`).toBe(true);
    }
  });

  it('fileDownloadInfo on the LFS file: real size, sha256 etag, no xet, mirror URL', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    expect(info.xetHash).toBeDefined(); // the upstream repo really is on Xet
    const dl = await fileDownloadInfo({ repo: MODEL.id, path: BIG, hubUrl: mirror.url });
    expect(dl).not.toBeNull();
    expect(dl!.size).toBe(info.size);
    expect(dl!.etag).toContain(info.sha256);
    expect(dl!.xet).toBeUndefined();
    expect(dl!.url.startsWith(mirror.url)).toBe(true);
  });

  it('fileDownloadInfo on a regular file: size and git-sha1 etag', async () => {
    const info = hub.fileInfo(MODEL, 'config.json');
    const dl = await fileDownloadInfo({ repo: MODEL.id, path: 'config.json', hubUrl: mirror.url });
    expect(dl).not.toBeNull();
    expect(dl!.size).toBe(info.size);
    expect(dl!.etag).toContain(info.gitSha1);
    expect(dl!.xet).toBeUndefined();
  });

  it('fileDownloadInfo on a missing path → null', async () => {
    const dl = await fileDownloadInfo({ repo: MODEL.id, path: 'does/not/exist.bin', hubUrl: mirror.url });
    expect(dl).toBeNull();
  });

  it('fileExists (HEAD /raw/) → true for config.json, false for a missing file', async () => {
    await expect(fileExists({ repo: MODEL.id, path: 'config.json', hubUrl: mirror.url })).resolves.toBe(true);
    await expect(fileExists({ repo: MODEL.id, path: NESTED, hubUrl: mirror.url })).resolves.toBe(true);
    await expect(fileExists({ repo: MODEL.id, path: 'missing.json', hubUrl: mirror.url })).resolves.toBe(false);
  });

  it('dataset repo through the JS client', async () => {
    const info = hub.fileInfo(DATASET, DATASET_FILE);
    const blob = await downloadFile({ repo: { type: 'dataset', name: DATASET.id }, path: DATASET_FILE, hubUrl: mirror.url });
    expect(blob).not.toBeNull();
    expect(sha256Hex(Buffer.from(await blob!.arrayBuffer()))).toBe(info.sha256);
  });

  it('the Xet file-info Accept header never reaches the hub', () => {
    const leaked = hub.requests.filter((r) => r.server === 'hub' && String(r.headers.accept ?? '').includes('xet'));
    expect(leaked.map((r) => `${r.method} ${r.path} accept=${String(r.headers.accept)}`)).toEqual([]);
  });
});

describe('repo types and legacy ids (curl)', { timeout: 60_000 }, () => {
  const cases: Array<[string, RepoRef, string]> = [
    ['dataset', DATASET, DATASET_FILE],
    ['dataset regular file', DATASET, 'README.md'],
    ['space', SPACE, SPACE_FILE],
    ['space regular file', SPACE, 'app.py'],
    ['legacy id, nested path', LEGACY, LEGACY_NESTED],
    ['legacy id, regular file', LEGACY, 'config.json'],
  ];
  for (const [label, repo, file] of cases) {
    it(`${label}: ${URL_PREFIX[repo.type ?? 'model']}${repo.id}/resolve/main/${file}`, async () => {
      const info = hub.fileInfo(repo, file);
      const out = outPath(path.basename(file));
      const { head } = await curl(['-f', '-L', '-D', '-', '-o', out, url(repo, file)]);
      expect(head.status).toBe(200);
      expect(head.headers['x-repo-commit']).toBe(info.commit);
      expect(head.headers.etag).toBe(`"${info.etag}"`);
      expectNoXet(head);
      expect(fileSha256(out)).toBe(info.sha256);

      const { head: h } = await curl(['-f', '-I', url(repo, file)]);
      expect(h.status).toBe(200);
      expect(h.headers['content-length']).toBe(String(info.size));
      expect(h.headers['x-repo-commit']).toBe(info.commit);
      expectNoXet(h);
    });
  }

  it('a range on a legacy-id nested LFS file', async () => {
    const info = hub.fileInfo(LEGACY, LEGACY_NESTED);
    const out = outPath();
    const { head } = await curl(['-f', '-D', '-', '-o', out, '-r', '1000-1999', url(LEGACY, LEGACY_NESTED)]);
    expect(head.status).toBe(206);
    expect(head.headers['content-range']).toBe(`bytes 1000-1999/${info.size}`);
    expect(fs.readFileSync(out).equals(info.content.subarray(1000, 2000))).toBe(true);
  });
});

describe('upstream traffic', () => {
  it('each LFS file crossed the WAN once, whatever the clients did', () => {
    for (const [repo, file] of [
      [MODEL, BIG],
      [MODEL, COLD],
      [MODEL, NESTED],
      [LEGACY, LEGACY_NESTED],
      [DATASET, DATASET_FILE],
      [SPACE, SPACE_FILE],
    ] as const) {
      const info = hub.fileInfo(repo, file);
      // One whole-body GET; small ranges on a cold file may be fetched as ranges (bypass), never as
      // another full download.
      const gets = hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(info.sha256));
      expect(gets.filter((r) => r.headers.range === undefined).length, `${repo.id}/${file}`).toBe(1);
      expect(hub.bytesSent({ server: 'cdn', method: 'GET', pathIncludes: info.sha256 }), `${repo.id}/${file}`).toBeLessThanOrEqual(info.size + 2 * 1024 * 1024);
    }
  });

  it('no request to the hub ever carried the Xet file-info Accept', () => {
    const leaked = hub.requests.filter((r) => r.server === 'hub' && String(r.headers.accept ?? '').includes('xet'));
    expect(leaked.map((r) => `${r.method} ${r.path}`)).toEqual([]);
  });
});
