/**
 * Real clients against the mirror: curl, wget, aria2c and @huggingface/hub
 * download through the mirror from one fake hub and must end up with byte-identical files, with
 * the headers each client relies on and no Xet leaking through.
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
import { download } from '../support/download.js';
import { waitFor } from '../support/wait-for.js';

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
let repoCounter = 0;

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

/** A repo of its own for one test (so no other test has fetched its files): its id and files. */
function freshRepo(files: Record<string, Buffer>): RepoRef {
  const repo: RepoRef = { id: `org/fresh-${++repoCounter}` };
  hub.addRepo({ ...repo, files });
  return repo;
}

/** The fake CDN's body GETs for an LFS file (by its sha256). */
function cdnGets(sha256: string) {
  return hub.requests.filter((r) => r.server === 'cdn' && r.method === 'GET' && r.path.includes(sha256));
}

/** Holds the upstream body of `sha256` at `atBytes` until released. */
function holdUpstream(sha256: string, atBytes: number) {
  return hub.setFault({ server: 'cdn', pathIncludes: sha256 }, { kind: 'barrier', atBytes });
}

const sizeOf = (p: string): number => (fs.existsSync(p) ? fs.statSync(p).size : 0);

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
  /** When the line was logged (epoch ms, the answer's end) and how long the answer took. */
  time?: number;
  ms?: number;
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

/** aria2c with 8 connections of 1 MiB pieces into a fresh directory; returns the output path. */
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

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-clients-'));
  hub = await startFakeHub();
  hub.addRepo({
    ...MODEL,
    files: {
      'config.json': Buffer.from(JSON.stringify({ architectures: ['FakeModel'], hidden_size: 64 }, null, 2) + '\n'),
      [BIG]: makeContent(24 * MiB + 12_345, 101),
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

  it('-C - resumes a partial copy of a cold file: one fill, and the resumed bytes stream as they land', async () => {
    const repo = freshRepo({ [BIG]: makeContent(12 * MiB + 4321, 111) });
    const info = hub.fileInfo(repo, BIG);
    // Less than 4 MiB: a reader that close to the fill's stream waits for it instead of having its
    // bytes fetched by a ranged GET of their own (demand first), however slowly the stream starts.
    const prefix = 3 * MiB + 3;
    const out = outPath(BIG);
    fs.writeFileSync(out, info.content.subarray(0, prefix));
    // Upstream holds the body 2 MiB past the prefix: curl's resume can only be served from the
    // fill its own request started.
    const held = holdUpstream(info.sha256, prefix + 2 * MiB);
    try {
      const resumed = curl(['-f', '-D', '-', '-C', '-', '-o', out, url(repo, BIG)]);
      await held.reached;
      await waitFor(() => sizeOf(out) > prefix, { what: 'curl to append bytes of the fill in flight' });
      expect(sizeOf(out)).toBeLessThanOrEqual(prefix + 2 * MiB);
      held.release();
      const { head } = await resumed;
      expect(head.status).toBe(206);
      expect(head.headers['content-range']).toBe(`bytes ${prefix}-${info.size - 1}/${info.size}`);
      expect(head.headers['x-mirror-cache']).toBe('miss');
    } finally {
      held.release();
      held.remove();
    }
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
    // The resume started a fill of the whole file (no range bypass for a big range): one GET.
    expect(cdnGets(info.sha256).map((r) => r.headers.range)).toEqual([undefined]);
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

  it('-c resumes a partial copy of a file still filling: it joins the fill and gets the rest as it lands', async () => {
    const repo = freshRepo({ [BIG]: makeContent(12 * MiB + 77, 112) });
    const info = hub.fileInfo(repo, BIG);
    const prefix = 7 * MiB + 11;
    const out = outPath(BIG);
    fs.writeFileSync(out, info.content.subarray(0, prefix));
    const held = holdUpstream(info.sha256, prefix + 2 * MiB);
    try {
      // Another client's download is filling the file, held upstream 2 MiB past wget's prefix.
      const first = download(url(repo, BIG), { keepBody: false });
      await held.reached;
      const resumed = runTool('wget', ['-nv', '-S', '-c', '-O', out, url(repo, BIG)]);
      await waitFor(() => sizeOf(out) > prefix, { what: 'wget to append bytes of the fill in flight' });
      held.release();
      const r = await resumed;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/HTTP\/1\.1 206/);
      expect(r.stderr).toMatch(/X-Mirror-Cache: joined/i);
      expect((await first).sha256).toBe(info.sha256);
    } finally {
      held.release();
      held.remove();
    }
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
    expect(cdnGets(info.sha256)).toHaveLength(1);
  });
});

describe('aria2c', { timeout: 90_000 }, () => {
  it('parallel ranged download of a cached LFS file', async () => {
    const info = hub.fileInfo(MODEL, BIG);
    expect((await download(url(MODEL, BIG), { keepBody: false })).sha256).toBe(info.sha256);
    expect((await download(url(MODEL, BIG), { method: 'HEAD' })).headers['x-mirror-cache']).toBe('hit');
    const out = await aria2(url(MODEL, BIG), BIG);
    expect(fs.statSync(out).size).toBe(info.size);
    expect(fileSha256(out)).toBe(info.sha256);
  });

  it('parallel ranged download of a cold LFS file still filling: correct bytes, one fill that fetches each byte once', async () => {
    await ariaIntoHeldFill(102, (size) => Math.floor(size / 2), 1);
  });

  it('parallel ranged download of a cold LFS file whose fill is held far below aria2\'s pieces: demand GETs fetch them, each byte once', async () => {
    // The stream is held before most of aria2's pieces: the far ones make the fill cut its stream
    // below where any fixed hold could be (what a slow stream on a loaded machine also gets).
    await ariaIntoHeldFill(107, () => 1 * MiB, 2);
  });
});

/**
 * aria2c -x 8 into a cold 24 MiB file whose fill another client started and whose stream
 * upstream holds at `holdAt(size)`. aria2 starts once the stream is held, and the hold applies
 * to that stream only: where aria2's ranges make the fill split its stream (demand first),
 * and whether those demand GETs are held, must not decide whether this test can go on.
 * `minGets`: upstream GETs the fill must have made (2 when aria2's first complete piece can only
 * have come from a demand GET).
 */
async function ariaIntoHeldFill(seed: number, holdAt: (size: number) => number, minGets: number): Promise<void> {
  const repo = freshRepo({ [COLD]: makeContent(24 * MiB + 777, seed) });
  const info = hub.fileInfo(repo, COLD);
  const gets = () => mirrorRequestLogs().filter((l) => l.method === 'GET' && l.path === `/${repo.id}/resolve/main/${COLD}`);
  // Upstream holds the fill's stream: aria2's pieces below the hold are served from the fill in
  // flight; those beyond it make the fill fetch their bytes next with ranged GETs (demand first).
  const held = hub.setFault({ server: 'cdn', pathIncludes: info.sha256 }, { kind: 'barrier', atBytes: holdAt(info.size), times: 1 });
  let out: string;
  let releasedAt = Infinity;
  try {
    const first = download(url(repo, COLD), { keepBody: false });
    await held.reached;
    const running = aria2(url(repo, COLD), COLD);
    // While the stream is held the fill cannot end: a ranged GET served in full comes from it.
    await waitFor(() => gets().some((l) => l.status === 206 && l.cache === 'joined' && l.completed), { what: 'a ranged GET served in full from the fill in flight' });
    releasedAt = Date.now();
    held.release();
    out = await running;
    expect((await first).sha256).toBe(info.sha256);
  } finally {
    held.release();
    held.remove();
  }
  expect(fs.statSync(out).size).toBe(info.size);
  expect(fileSha256(out)).toBe(info.sha256);
  // One fill (the first client's miss). Every aria2 request joined it, or came once the stream
  // was let go and the fill had committed (then it is a hit): aria2 asks for its last pieces
  // whenever a connection frees up, and once released the rest of a 24 MiB fill takes moments
  // (3 such hits in 1 of ~20 CI runs). No request that began while the fill was held can be a hit:
  // that would be a blob served before it was verified. (Same clock: the mirror runs in-process;
  // a line's start is its time less its duration, within 2 ms.)
  expect(gets().length).toBeGreaterThanOrEqual(3);
  expect(gets().filter((l) => l.cache === 'miss')).toHaveLength(1);
  expect(gets().filter((l) => l.cache !== 'miss' && l.cache !== 'joined' && l.cache !== 'hit')).toEqual([]);
  expect(gets().filter((l) => l.cache === 'hit' && (l.time ?? 0) - (l.ms ?? 0) < releasedAt - 2)).toEqual([]);
  // One fill: its stream plus the ranged GETs that fetched aria2's far pieces first; together
  // the file plus, for each GET the fill cut at the first byte another one fetched, what upstream
  // had already written into that GET's socket (a few MiB on loopback), never a second copy. How
  // many cuts there are depends on how fast each GET went when a piece asked (demand first).
  const cdn = { server: 'cdn' as const, method: 'GET', pathIncludes: info.sha256 };
  const upstreamGets = cdnGets(info.sha256).length;
  expect(upstreamGets).toBeGreaterThanOrEqual(minGets);
  expect(hub.bytesSent(cdn)).toBeGreaterThanOrEqual(info.size);
  expect(hub.bytesSent(cdn)).toBeLessThanOrEqual(info.size + (upstreamGets - 1) * 6 * MiB);
}

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

  it('the Xet file-info Accept the JS client sends never reaches the hub', async () => {
    const repo = freshRepo({ [BIG]: makeContent(2 * MiB + 3, 131) });
    const info = hub.fileInfo(repo, BIG);
    expect(info.xetHash).toBeDefined();
    // What the client sends to the mirror (to prove the header is really there to be dropped).
    const sentAccepts: string[] = [];
    const spy: typeof fetch = (input, init) => {
      sentAccepts.push(new Headers(init?.headers).get('accept') ?? '');
      return fetch(input, init);
    };
    const dl = await fileDownloadInfo({ repo: repo.id, path: BIG, hubUrl: mirror.url, fetch: spy });
    expect(dl?.size).toBe(info.size);
    const blob = await downloadFile({ repo: repo.id, path: BIG, hubUrl: mirror.url, fetch: spy });
    expect(sha256Hex(Buffer.from(await blob!.arrayBuffer()))).toBe(info.sha256);
    expect(sentAccepts.some((a) => a.includes('xet'))).toBe(true);
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

describe('upstream traffic', { timeout: 90_000 }, () => {
  it('each LFS file crosses the WAN once, whatever mix of clients asks for it, cold and at once', async () => {
    const files = { 'a.safetensors': makeContent(6 * MiB + 1, 121), 'sub/b.bin': makeContent(3 * MiB + 5, 122) };
    const repo = freshRepo(files);
    for (const file of Object.keys(files)) {
      const info = hub.fileInfo(repo, file);
      const what = `${repo.id}/${file}`;
      // Cold: a size probe and a header read (small ranges: fetched upstream as ranges only).
      for (const range of ['0-0', '100-199']) {
        const out = outPath();
        await curl(['-f', '-D', '-', '-o', out, '-r', range, url(repo, file)]);
        const [from, to] = range.split('-').map(Number) as [number, number];
        expect(fs.readFileSync(out).equals(info.content.subarray(from, to + 1)), what).toBe(true);
      }
      // Then curl, wget, aria2c and the JS client all at once on the still cold file.
      const curlOut = outPath();
      const wgetOut = outPath();
      const [, wget, aria2Out, blob] = await Promise.all([
        curl(['-f', '-L', '-D', '-', '-o', curlOut, url(repo, file)]),
        runTool('wget', ['-q', '-O', wgetOut, url(repo, file)]),
        aria2(url(repo, file), path.basename(file)),
        downloadFile({ repo: repo.id, path: file, hubUrl: mirror.url }),
      ]);
      expect(wget.code, wget.stderr).toBe(0);
      for (const out of [curlOut, wgetOut, aria2Out]) expect(fileSha256(out), what).toBe(info.sha256);
      expect(sha256Hex(Buffer.from(await blob!.arrayBuffer())), what).toBe(info.sha256);
      // Afterwards a resume, a slice and a HEAD, from the cache.
      const partial = outPath();
      fs.writeFileSync(partial, info.content.subarray(0, MiB));
      await curl(['-f', '-D', '-', '-C', '-', '-o', partial, url(repo, file)]);
      expect(fileSha256(partial), what).toBe(info.sha256);
      expect(Buffer.from(await blob!.slice(MiB, MiB + 10).arrayBuffer()).equals(info.content.subarray(MiB, MiB + 10)), what).toBe(true);
      expect((await curl(['-f', '-I', url(repo, file)])).head.headers['x-mirror-cache'], what).toBe('hit');
      // One whole-body GET. Small ranges that reached a cold file (the two probes, and whatever
      // small range a client sent before the fill started) were fetched as ranges of at most
      // rangeBypassMaxBytes, never as another full download.
      const gets = cdnGets(info.sha256);
      expect(gets.filter((r) => r.headers.range === undefined).length, what).toBe(1);
      const ranged = gets.filter((r) => r.headers.range !== undefined);
      expect(ranged.map((r) => r.headers.range), what).toEqual(expect.arrayContaining(['bytes=0-0', 'bytes=100-199']));
      for (const r of ranged) expect(r.bytesSent, `${what} ${String(r.headers.range)}`).toBeLessThanOrEqual(mirror.config.rangeBypassMaxBytes);
      expect(hub.bytesSent({ server: 'cdn', method: 'GET', pathIncludes: info.sha256 }), what).toBe(info.size + ranged.reduce((n, r) => n + r.bytesSent, 0));
    }
  });
});
