/**
 * Hostile input (issue 5, test plan §2 S3–S5): T16 path and name fuzzing on every route, T17
 * SQL/LIKE-shaped names, T18 Host and forwarding-header poisoning, T19 header injection through
 * file names. Requests go over raw sockets (fetch would normalise `..` and refuse CR/LF).
 *
 * What must hold whatever a client sends: a 4xx or a correct pass-through, never a 5xx and never
 * an unhandled error, never a hang; no file outside the data dir touched and nothing but the
 * mirror's own layout inside it; upstream only ever sees canonical, properly encoded targets on
 * the configured origin; no response header a client could inject.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header as dlHeader } from '../support/download.js';
import { startFakeHub, type FakeHub, type RecordedRequest } from '../support/fake-hub.js';
import { header, mapLimit, rawExchange, type RawExchange } from '../support/raw-http.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

let hub: FakeHub;
let mirror: TestMirror;
/** Parent of the data dir, with sentinel files next to it (a traversal would land here first). */
let tmpRoot: string;
let host: string;
const commits = new Map<string, string>();

// T17: names whose SQL LIKE patterns would collide (`_` matches any one character, `%` any run).
const UNDERSCORE_FILES = {
  'f.txt': Buffer.from('I am org/a_b\n'),
  'dir_1/x.txt': Buffer.from('a_b dir_1\n'),
  'dirX1/x.txt': Buffer.from('a_b dirX1\n'),
  '100%_sure.txt': Buffer.from('percent underscore\n'),
  '100%Xsure.txt': Buffer.from('percent X\n'),
  "it's.txt": Buffer.from('single quote\n'),
  'say "hi".txt': Buffer.from('double quotes\n'),
  'semi;--.txt': Buffer.from('semicolon comment\n'),
  "x'); DROP TABLE files;--.txt": Buffer.from('bobby tables\n'),
  'w.bin': makeContent(40_000, 171),
};
const AXB_FILES = {
  'f.txt': Buffer.from('I am org/axb, not a_b\n'),
  'dir_1/x.txt': Buffer.from('axb dir_1\n'),
  'w.bin': makeContent(40_000, 172),
};

// T19: names that end up in Content-Disposition.
const ODD_NAMES: Record<string, Buffer> = {
  'quote"d.txt': Buffer.from('quoted\n'),
  'semi;colon.txt': Buffer.from('semicolon\n'),
  'x"; filename="evil.exe.txt': Buffer.from('param injection\n'),
  'a%0d%0aSet-Cookie: injected=1.txt': Buffer.from('percent crlf text\n'),
  'été.txt': Buffer.from('accents\n'),
  '中文.txt': Buffer.from('chinese\n'),
  'emoji 😀.txt': Buffer.from('emoji\n'),
  "it's (1) *.txt": Buffer.from('rfc 5987 specials\n'),
  'dir/naïve "weights"; v=1.bin': makeContent(30_000, 191),
  'crlf\r\nSet-Cookie: injected=1.txt': Buffer.from('real crlf\n'),
};

function walk(dir: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(e.parentPath, e.name);
    if (full === skip || full.startsWith(`${skip}${path.sep}`)) continue;
    const st = fs.lstatSync(full);
    out.set(path.relative(dir, full), `${st.isDirectory() ? 'd' : 'f'}:${st.isDirectory() ? 0 : st.size}:${st.mtimeMs}`);
  }
  return out;
}

/** Top-level names in places a naive `path.join(cwd|tmp, requestPath)` would write to. */
const ESCAPE_MARK = /t16-escape|passwd|evil|windows|%2e|\.\./i;
function escapeCandidates(): string[] {
  const names: string[] = [];
  for (const dir of [process.cwd(), os.tmpdir(), '/tmp']) {
    try {
      for (const n of fs.readdirSync(dir)) if (ESCAPE_MARK.test(n)) names.push(path.join(dir, n));
    } catch {
      // not there
    }
  }
  return names.sort();
}

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 2 });
  commits.set('org/x', hub.addRepo({ id: 'org/x', files: { 'f.txt': Buffer.from('hello\n'), 'sub/g.txt': Buffer.from('g\n'), 'sub/h.txt': Buffer.from('h\n'), 'w.bin': makeContent(30_000, 161) } }).commit);
  commits.set('org/d', hub.addRepo({ type: 'dataset', id: 'org/d', files: { 'f.txt': Buffer.from('dataset\n'), 'data/t.csv': Buffer.from('a,b\n') } }).commit);
  commits.set('org/s', hub.addRepo({ type: 'space', id: 'org/s', files: { 'f.txt': Buffer.from('space\n'), 'app.py': Buffer.from('print(1)\n') } }).commit);
  commits.set('legacy', hub.addRepo({ id: 'legacy', files: { 'f.txt': Buffer.from('legacy\n') } }).commit);
  commits.set('org/a_b', hub.addRepo({ id: 'org/a_b', files: UNDERSCORE_FILES }).commit);
  commits.set('org/axb', hub.addRepo({ id: 'org/axb', files: AXB_FILES }).commit);
  commits.set('a_b/x', hub.addRepo({ id: 'a_b/x', files: { 'f.txt': Buffer.from('org a_b\n') } }).commit);
  commits.set('axb/x', hub.addRepo({ id: 'axb/x', files: { 'f.txt': Buffer.from('org axb\n') } }).commit);
  commits.set('org/odd', hub.addRepo({ id: 'org/odd', files: ODD_NAMES }).commit);
  tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-hostile-'));
  fs.mkdirSync(path.join(tmpRoot, 'etc'));
  fs.writeFileSync(path.join(tmpRoot, 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
  fs.writeFileSync(path.join(tmpRoot, 'sentinel.txt'), 'do not touch\n');
  mirror = await startMirror(hub.url, { dataDir: path.join(tmpRoot, 'data') });
  host = new URL(mirror.url).host;
});

afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
  if (tmpRoot) fs.rmSync(tmpRoot, { recursive: true, force: true });
});

interface Sent {
  method: string;
  target: string;
  ex: RawExchange;
}

async function send(method: string, target: string, extraHeaders: string[] = [], body?: string): Promise<Sent> {
  const lines = [`${method} ${target} HTTP/1.1`, `Host: ${host}`, 'Connection: close', ...extraHeaders];
  if (body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(body)}`);
  const ex = await rawExchange(mirror.url, `${lines.join('\r\n')}\r\n\r\n${body ?? ''}`, { methods: [method] });
  return { method, target, ex };
}

/** Every header line of a response is a well-formed `token: value` with nothing injected. */
function expectCleanHead(s: Sent): void {
  const r = s.ex.responses[0];
  if (!r) return;
  const lines = r.head.split('\r\n').slice(1);
  for (const line of lines) expect(line, `${s.method} ${s.target.slice(0, 80)}`).toMatch(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+: ?[\x20-\x7e\x80-\xff]*$/);
  const names = r.headers.map(([k]) => k);
  expect(names.filter((n) => n === 'set-cookie' || n.includes('evil') || n === 'injected'), s.target).toEqual([]);
  expect(names.filter((n) => n === 'content-length').length, s.target).toBeLessThanOrEqual(1);
}

/** A recorded upstream request target: canonical, encoded, on the Hub's own routes. */
function expectCanonicalUpstream(r: RecordedRequest): void {
  const what = `${r.method} ${r.path.slice(0, 160)}`;
  // Only printable ASCII: no raw CR, LF, NUL, space, non-ASCII, backslash or quote.
  expect(r.path, what).toMatch(/^\/[\x21-\x7e]*$/);
  expect(r.path, what).not.toMatch(/[\\"<>^`{|}]/);
  const q = r.path.indexOf('?');
  const p = q === -1 ? r.path : r.path.slice(0, q);
  // Every `%` starts a valid escape, and no segment is (or decodes to) a dot segment.
  expect(p.replace(/%[0-9A-Fa-f]{2}/g, ''), what).not.toMatch(/%/);
  for (const seg of p.split('/').slice(1)) {
    let decoded = seg;
    try {
      decoded = decodeURIComponent(seg);
    } catch {
      // invalid UTF-8 in a valid escape: passed through as sent, still no dot segment
    }
    expect(['.', '..'].includes(seg) || decoded.split(/[/\\]/).some((x) => x === '.' || x === '..'), what).toBe(false);
    // Passed-through API paths may carry an encoded control character (the Hub refuses it); file
    // URLs the mirror builds never do (validation refused those names).
    // eslint-disable-next-line no-control-regex
    if (!p.startsWith('/api/')) expect(decoded, what).not.toMatch(/[\x00-\x1f\x7f]/);
  }
  if (r.server === 'hub') expect(p, what).toMatch(/^\/(api\/.+|(datasets\/|spaces\/)?[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)?\/(resolve|raw)\/[^/]+\/.+)$/);
  // File URLs the mirror builds itself are canonical: each segment exactly encodeURIComponent(decoded).
  if (r.server === 'hub' && /\/(resolve|raw)\//.test(p) && !p.startsWith('/api/')) {
    for (const seg of p.split('/').slice(1)) expect(encodeURIComponent(decodeURIComponent(seg)), what).toBe(seg);
  }
}

// ---------------------------------------------------------------------------------------------
// T16
// ---------------------------------------------------------------------------------------------

const MANY_SEGMENTS = Array.from({ length: 600 }, (_, i) => `s${i}`).join('/');
const CORPUS: string[] = [
  '..',
  '.',
  '%2e%2e',
  '%2E%2e%2f',
  '%2e',
  '.%2e',
  '..%2f..%2fetc%2fpasswd',
  '%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2ftmp%2ft16-escape',
  '../../../../../../tmp/t16-escape',
  '%252e%252e',
  '%252e%252e%252fetc%252fpasswd',
  'a%2Fb',
  '%2F',
  '%2F%2Fetc%2Fpasswd',
  '%00',
  'f%00.txt',
  '/etc/passwd',
  '//etc/passwd',
  '%2Fetc%2Fpasswd',
  'C:%5cWindows%5cwin.ini',
  '..%5c..%5ct16-escape',
  '%5c',
  'a'.repeat(4096),
  'b'.repeat(300),
  `${'c/'.repeat(2000)}f`,
  MANY_SEGMENTS,
  '%0d%0aSet-Cookie:%20injected=1',
  'a%0d%0aX-Evil:%201',
  '%0a',
  '"quoted"',
  "'single'",
  'semi;colon',
  'f.txt;jsessionid=1',
  '%C3%A9t%C3%A9.txt',
  '%C0%AE%C0%AE',
  '%C0%AE%C0%AE%C0%AF',
  '%EF%BC%8E%EF%BC%8E',
  '%zz',
  '%',
  '%e',
  '%u002e%u002e',
  'a%3Fb%23c',
  'a?b=%0d%0a',
  'f.txt#frag',
  'xet-read-token',
  `f.txt?${'q='.padEnd(8000, 'x')}`,
];

interface Route {
  name: string;
  methods: string[];
  build: (t: string) => string;
  body?: (t: string) => { text: string; type: string };
}

const ROUTES: Route[] = [
  { name: 'resolve path', methods: ['GET', 'HEAD'], build: (t) => `/org/x/resolve/main/${t}` },
  { name: 'raw nested path', methods: ['GET', 'HEAD'], build: (t) => `/org/x/raw/main/sub/${t}` },
  { name: 'dataset resolve', methods: ['GET', 'HEAD'], build: (t) => `/datasets/org/d/resolve/main/${t}` },
  { name: 'space raw', methods: ['GET', 'HEAD'], build: (t) => `/spaces/org/s/raw/main/${t}` },
  { name: 'revision', methods: ['GET', 'HEAD'], build: (t) => `/org/x/resolve/${t}/f.txt` },
  { name: 'repo name', methods: ['GET', 'HEAD'], build: (t) => `/org/${t}/resolve/main/f.txt` },
  { name: 'legacy repo id', methods: ['GET', 'HEAD'], build: (t) => `/${t}/resolve/main/f.txt` },
  { name: 'api repo info', methods: ['GET', 'HEAD'], build: (t) => `/api/models/org/${t}` },
  { name: 'api legacy info', methods: ['GET', 'HEAD'], build: (t) => `/api/models/${t}` },
  { name: 'api revision', methods: ['GET', 'HEAD'], build: (t) => `/api/datasets/org/d/revision/${t}` },
  { name: 'api tree path', methods: ['GET', 'HEAD'], build: (t) => `/api/models/org/x/tree/main/${t}` },
  { name: 'api tree revision', methods: ['GET'], build: (t) => `/api/spaces/org/s/tree/${t}` },
  { name: 'api refs', methods: ['GET'], build: (t) => `/api/models/org/x/refs/${t}` },
  { name: 'api commits', methods: ['GET', 'HEAD'], build: (t) => `/api/models/org/x/commits/${t}` },
  { name: 'api prefix', methods: ['GET'], build: (t) => `/${t}/api/models/org/x/refs` },
  { name: 'paths-info revision', methods: ['POST'], build: (t) => `/api/models/org/x/paths-info/${t}`, body: () => ({ text: 'paths=f.txt', type: 'application/x-www-form-urlencoded' }) },
  {
    name: 'paths-info form paths',
    methods: ['POST'],
    build: () => '/api/models/org/x/paths-info/main',
    body: (t) => ({ text: `paths=${t}&paths=sub%2F${t}&expand=true`, type: 'application/x-www-form-urlencoded' }),
  },
  {
    name: 'paths-info json paths',
    methods: ['POST'],
    build: () => '/api/datasets/org/d/paths-info/main',
    body: (t) => {
      let decoded = t;
      try {
        decoded = decodeURIComponent(t);
      } catch {
        // keep the raw text
      }
      return { text: JSON.stringify({ paths: [decoded, `../${decoded}`], expand: true }), type: 'application/json' };
    },
  },
];

/**
 * Targets the router only matches as `/api/...` once normalised (dot segments, `%61` = `a`): they
 * used to be passed through as sent, skipping the Xet refusal and every check on the parsed path.
 */
const NORMALISED_API_TARGETS = [
  '/x/../api/models/org/x/xet-read-token/main',
  '/x/%2e%2e/api/models/org/x/xet-read-token/main',
  '/%61pi/models/org/x/xet-read-token/main',
  '/%61pi/models/org/x/tree/main',
  '/a/b/../../api/models/org/x/refs',
];

describe('T16: path and name fuzzing on every route', () => {
  const results: Sent[] = [];
  let before: Map<string, string>;
  let escapesBefore: string[];

  beforeAll(async () => {
    // Warm a little so the fuzz runs against a populated index too.
    expect((await download(`${mirror.url}/org/x/resolve/main/f.txt`)).status).toBe(200);
    expect((await download(`${mirror.url}/org/x/resolve/main/w.bin`)).status).toBe(200);
    expect((await download(`${mirror.url}/api/models/org/x/tree/main`)).status).toBe(200);
    before = walk(tmpRoot, mirror.dataDir);
    escapesBefore = escapeCandidates();
    hub.resetCounters();
    const jobs: Array<() => Promise<Sent>> = [];
    for (const route of ROUTES) {
      for (const t of CORPUS) {
        for (const method of route.methods) {
          const b = route.body?.(t);
          jobs.push(() => send(method, route.build(t), b ? [`Content-Type: ${b.type}`] : [], b?.text));
        }
      }
    }
    for (const t of NORMALISED_API_TARGETS) jobs.push(() => send('GET', t));
    results.push(...(await mapLimit(jobs, 8, (job) => job())));
  });

  it('refuses API paths that only match once normalised', () => {
    const got = results.filter((s) => NORMALISED_API_TARGETS.includes(s.target)).map((s) => [s.target, s.ex.responses[0]?.status]);
    expect(got).toEqual(NORMALISED_API_TARGETS.map((t) => [t, 400]));
  });

  it('answers every request (none hangs: each has 5 s) with a 4xx or a correct pass-through: never a 5xx', () => {
    expect(results.length).toBeGreaterThan(1000);
    // The one deliberate 5xx: 501 NotSupported for anything naming a Xet token route.
    const xetRefusal = (s: Sent) => s.ex.responses[0]?.status === 501 && header(s.ex.responses[0], 'x-error-code') === 'NotSupported' && s.target.includes('xet-read-token');
    const bad = results.filter((s) => s.ex.timedOut || s.ex.responses.length !== 1 || ((s.ex.responses[0]?.status ?? 0) >= 500 && !xetRefusal(s)) || (s.ex.responses[0]?.status ?? 0) < 200);
    expect(bad.map((s) => `${s.method} ${s.target.slice(0, 100)} → ${s.ex.responses[0]?.status ?? 'no answer'}${s.ex.timedOut ? ' (hang)' : ''}`)).toEqual([]);
    // 2xx answers are real pass-throughs: file answers name the repo's commit.
    for (const s of results) {
      const r = s.ex.responses[0];
      if (!r || r.status >= 300 || s.target.startsWith('/api/')) continue;
      expect([...commits.values()], s.target).toContain(header(r, 'x-repo-commit'));
    }
    // Mostly refusals, as expected, but not only: some names are legitimate (encoded `?`, `%2F`).
    const statuses = new Set(results.map((s) => s.ex.responses[0]?.status));
    expect(statuses.has(400)).toBe(true);
    expect(statuses.has(404)).toBe(true);
  });

  it('logs no unhandled error, injects no response header, and the process is alive', async () => {
    expect(mirror.logs.filter((l) => l.includes('unhandled error') || /"level":(50|60)/.test(l))).toEqual([]);
    for (const s of results) expectCleanHead(s);
    expect((await download(`${mirror.url}/org/x/resolve/main/f.txt`)).status).toBe(200);
  });

  it('upstream only ever sees canonical, encoded targets on its own routes', () => {
    expect(hub.requests.length).toBeGreaterThan(50);
    for (const r of hub.requests) expectCanonicalUpstream(r);
    // The refused Xet token routes never reached upstream, however they were spelled.
    const xet = hub.requests.filter((r) => r.path.startsWith('/api/') && r.path.split(/[/?]/).some((seg) => /^xet-[a-z-]*token$/i.test(decodeURIComponent(seg.replace(/%(?![0-9A-Fa-f]{2})/g, '%25')))));
    expect(xet.map((r) => r.path)).toEqual([]);
  });

  it('touches no file outside the data dir, and only its own layout inside it', () => {
    expect(walk(tmpRoot, mirror.dataDir)).toEqual(before);
    expect(escapeCandidates()).toEqual(escapesBefore);
    const allowedTop = /^(blobs-v1|staging|quarantine|index\.sqlite(-wal|-shm|-journal)?|lock\.sqlite(-wal|-shm|-journal)?|listening\.json)$/;
    expect(fs.readdirSync(mirror.dataDir).filter((n) => !allowedTop.test(n))).toEqual([]);
    const blobs = path.join(mirror.dataDir, 'blobs-v1');
    const files = fs.readdirSync(blobs, { recursive: true, withFileTypes: true }).filter((e) => !e.isDirectory());
    expect(files.length).toBeGreaterThan(0);
    for (const e of files) {
      const rel = path.relative(blobs, path.join(e.parentPath, e.name));
      expect(rel).toMatch(/^(sha256\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{64}|gitsha1\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{40})$/);
    }
    const staging = path.join(mirror.dataDir, 'staging');
    if (fs.existsSync(staging)) for (const n of fs.readdirSync(staging)) expect(n).toMatch(/^[A-Za-z0-9._-]+$/);
  });
});

// ---------------------------------------------------------------------------------------------
// T17
// ---------------------------------------------------------------------------------------------

const enc = (p: string) => p.split('/').map(encodeURIComponent).join('/');

describe('T17: SQL- and LIKE-shaped names', () => {
  it('serves every odd name of org/a_b with its own bytes, from cache the second time', async () => {
    for (const [name, bytes] of Object.entries(UNDERSCORE_FILES)) {
      for (let round = 0; round < 2; round++) {
        const d = await download(`${mirror.url}/org/a_b/resolve/main/${enc(name)}`);
        expect({ name, status: d.status }).toEqual({ name, status: 200 });
        expect(d.body.equals(bytes), name).toBe(true);
        expect(dlHeader(d, 'x-repo-commit')).toBe(commits.get('org/a_b'));
        if (round === 1) expect(dlHeader(d, 'x-mirror-cache'), name).toBe('hit');
      }
    }
  });

  it('a file cached for org/l_m is never served for org/lxm (nor l_m/x for lxm/x), online or not', async () => {
    // Repos of its own (the a_b / axb pair under other names), so both start cold here.
    const [U, X] = ['org/l_m', 'org/lxm'];
    const uCommit = hub.addRepo({ id: U, files: UNDERSCORE_FILES }).commit;
    const xCommit = hub.addRepo({ id: X, files: AXB_FILES }).commit;
    hub.addRepo({ id: 'l_m/x', files: { 'f.txt': Buffer.from('org l_m\n') } });
    hub.addRepo({ id: 'lxm/x', files: { 'f.txt': Buffer.from('org lxm\n') } });
    for (const [name, bytes] of Object.entries(UNDERSCORE_FILES)) expect((await download(`${mirror.url}/${U}/resolve/main/${enc(name)}`)).body.equals(bytes), name).toBe(true);
    hub.resetCounters();
    for (const [name, bytes] of Object.entries(AXB_FILES)) {
      const d = await download(`${mirror.url}/${X}/resolve/main/${enc(name)}`);
      expect(d.status).toBe(200);
      expect(d.body.equals(bytes), name).toBe(true);
      expect(dlHeader(d, 'x-repo-commit')).toBe(xCommit);
    }
    // Each was a miss for lxm: upstream was asked for lxm's files.
    expect(hub.count({ method: 'HEAD', pathIncludes: `/${X}/` })).toBe(Object.keys(AXB_FILES).length);
    // A name only l_m has is not found in lxm.
    const missing = await download(`${mirror.url}/${X}/resolve/main/${enc('100%_sure.txt')}`);
    expect(missing.status).toBe(404);
    expect(dlHeader(missing, 'x-error-code')).toBe('EntryNotFound');
    for (const [id, text] of [['l_m/x', 'org l_m\n'], ['lxm/x', 'org lxm\n']] as const) {
      const d = await download(`${mirror.url}/${id}/resolve/main/f.txt`);
      expect(d.body.toString()).toBe(text);
    }

    // Upstream gone: the index answers for what it holds, and only for the repo it holds it for.
    for (const name of ['f.txt', 'semi;--.txt']) expect((await download(`${mirror.url}/${U}/resolve/${uCommit}/${enc(name)}`)).status).toBe(200);
    await hub.stop();
    try {
      const stillU = await download(`${mirror.url}/${U}/resolve/${uCommit}/f.txt`);
      expect(stillU.body.equals(UNDERSCORE_FILES['f.txt'])).toBe(true);
      for (const p of [`/${X}/resolve/${uCommit}/f.txt`, `/${X}/resolve/${uCommit}/semi%3B--.txt`, `/${X}/resolve/main/semi%3B--.txt`, '/org/lXm/resolve/main/f.txt', '/org/l_n/resolve/main/f.txt', '/org/l%5Fm/resolve/main/dir_1/x.txt']) {
        const d = await download(`${mirror.url}${p}`);
        if (p === '/org/l%5Fm/resolve/main/dir_1/x.txt') {
          // `%5F` is just `_`: the same repo, so the same bytes.
          expect(d.status, p).toBe(200);
          expect(d.body.equals(UNDERSCORE_FILES['dir_1/x.txt'])).toBe(true);
          continue;
        }
        expect(d.status, p).not.toBe(200);
        expect(d.status, p).toBeLessThan(600);
        for (const bytes of Object.values(UNDERSCORE_FILES)) expect(d.body.equals(bytes) && bytes.length > 0, p).toBe(false);
      }
    } finally {
      await hub.restart();
    }
  });

  it('folders and LIKE wildcards in names do not bleed into each other (files, tree, paths-info)', async () => {
    for (const [name, bytes] of [
      ['dir_1/x.txt', UNDERSCORE_FILES['dir_1/x.txt']],
      ['dirX1/x.txt', UNDERSCORE_FILES['dirX1/x.txt']],
      ['100%_sure.txt', UNDERSCORE_FILES['100%_sure.txt']],
      ['100%Xsure.txt', UNDERSCORE_FILES['100%Xsure.txt']],
    ] as const) {
      const d = await download(`${mirror.url}/org/a_b/resolve/main/${enc(name)}`);
      expect(d.body.equals(bytes), name).toBe(true);
    }
    const tree = async (repo: string, dir: string) => {
      const d = await download(`${mirror.url}/api/models/${repo}/tree/main/${dir}`);
      expect(d.status).toBe(200);
      return (JSON.parse(d.body.toString()) as Array<{ path: string }>).map((e) => e.path).sort();
    };
    for (let round = 0; round < 2; round++) {
      expect(await tree('org/a_b', 'dir_1')).toEqual(['dir_1/x.txt']);
      expect(await tree('org/a_b', 'dirX1')).toEqual(['dirX1/x.txt']);
      expect(await tree('org/axb', 'dir_1')).toEqual(['dir_1/x.txt']);
    }
    const axbDir = await download(`${mirror.url}/org/axb/resolve/main/dir_1/x.txt`);
    expect(axbDir.body.toString()).toBe('axb dir_1\n');

    const names = ["it's.txt", 'say "hi".txt', 'semi;--.txt', "x'); DROP TABLE files;--.txt", '100%_sure.txt'];
    for (const repo of ['org/a_b', 'org/axb']) {
      for (let round = 0; round < 2; round++) {
        const res = await fetch(`${mirror.url}/api/models/${repo}/paths-info/main`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ paths: names, expand: false }),
        });
        expect(res.status).toBe(200);
        const got = ((await res.json()) as Array<{ path: string }>).map((e) => e.path).sort();
        expect(got).toEqual(repo === 'org/a_b' ? [...names].sort() : []);
      }
    }
  });

  it('quotes, semicolons and percent signs in repo ids are refused before any SQL or upstream request', async () => {
    hub.resetCounters();
    for (const id of ["org/a'b", 'org/a%22b', 'org/a;b', 'org/a%25b', 'org/a%25_b', "a'--/x", 'org/a%27%20OR%201=1--']) {
      for (const p of [`/${id}/resolve/main/f.txt`, `/api/models/${id}/revision/main`, `/api/models/${id}/tree/main`]) {
        const r = (await send('GET', p)).ex.responses[0];
        expect({ p, status: r?.status }).toEqual({ p, status: 400 });
        expect(header(r!, 'x-error-code')).toBe('InvalidRepoId');
      }
    }
    expect(hub.requests.filter((r) => r.server === 'hub')).toEqual([]);
  });

  it('no SQL error anywhere, and the source builds no SQL from strings', async () => {
    const before = mirror.logs.length;
    // Every SQL-shaped name through each route that stores or looks up rows.
    const names = Object.keys(UNDERSCORE_FILES);
    for (const name of names) expect((await download(`${mirror.url}/org/a_b/resolve/main/${enc(name)}`)).status).toBe(200);
    const info = await fetch(`${mirror.url}/api/models/org/a_b/paths-info/main`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ paths: names }) });
    expect(info.status).toBe(200);
    expect((await download(`${mirror.url}/api/models/org/a_b/tree/main?recursive=true`)).status).toBe(200);
    expect(mirror.logs.slice(before).filter((l) => /sqlite|SQL logic|syntax error/i.test(l) && /"level":(40|50|60)/.test(l))).toEqual([]);
    const srcDir = path.join(process.cwd(), 'src');
    const offenders: string[] = [];
    for (const e of fs.readdirSync(srcDir, { recursive: true, withFileTypes: true })) {
      if (!e.isFile() || !e.name.endsWith('.ts')) continue;
      const text = fs.readFileSync(path.join(e.parentPath, e.name), 'utf8');
      // `.prepare(`…${x}…`)`, `.exec('…' + x)` and the like: SQL text built from values.
      const re = /\.(prepare|exec)\s*(<[^()]*>)?\(\s*(`[^`]*\$\{|['"][^'"]*['"]\s*\+)/g;
      for (const m of text.matchAll(re)) offenders.push(`${path.relative(process.cwd(), path.join(e.parentPath, e.name))}: ${m[0]}`);
    }
    expect(offenders).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// T18
// ---------------------------------------------------------------------------------------------

describe('T18: Host and forwarding headers never change the upstream or what is cached', () => {
  let canary: net.Server;
  let canaryPort = 0;
  let canaryConnections = 0;

  beforeAll(async () => {
    canary = net.createServer((s) => {
      canaryConnections++;
      s.destroy();
    });
    await new Promise<void>((resolve) => canary.listen(0, '127.0.0.1', resolve));
    canaryPort = (canary.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => canary.close(() => resolve()));
  });

  const targets = () => {
    const c = commits.get('org/x') ?? '';
    return [
      '/org/x/resolve/main/f.txt',
      `/org/x/resolve/${c}/sub/g.txt`,
      '/org/x/resolve/main/w.bin',
      '/api/models/org/x',
      '/api/models/org/x/tree/main',
      `/api/models/org/x/tree/${c}/sub`,
      '/api/models/org/x/revision/main',
    ];
  };
  const mentionsEvil = (text: string) => /evil/i.test(text) || text.includes(`:${canaryPort}`);

  it('ignores them all: upstream target, cache keys and later answers stay clean', async () => {
    const clean = async () => {
      const out: Sent[] = [];
      for (const t of targets()) out.push(await send('GET', t));
      return out;
    };
    // Warm, then measure what a clean warm round costs upstream (nothing, within the TTLs).
    for (const s of await clean()) expect(s.ex.responses[0]?.status, s.target).toBe(200);
    hub.resetCounters();
    await clean();
    const cleanRoundUpstream = hub.requests.length;

    const c = `127.0.0.1:${canaryPort}`;
    const variants: Array<{ name: string; headers: string[]; hostLine?: string; absolute?: string }> = [
      { name: 'Host evil', headers: [], hostLine: 'Host: evil.example' },
      { name: 'Host canary', headers: [], hostLine: `Host: ${c}` },
      { name: 'Host with userinfo', headers: [], hostLine: `Host: evil.example@${c}` },
      { name: 'Host with path', headers: [], hostLine: 'Host: evil.example/x?' },
      { name: 'two Host lines', headers: ['Host: evil.example'] },
      { name: 'X-Forwarded-*', headers: ['X-Forwarded-Host: evil.example', 'X-Forwarded-Proto: https', `X-Forwarded-Port: ${canaryPort}`, 'X-Forwarded-For: 6.6.6.6', 'X-Forwarded-Prefix: /evil'] },
      { name: 'Forwarded', headers: [`Forwarded: for=6.6.6.6;host=evil.example;proto=https, host=${c}`] },
      { name: 'rewrites', headers: ['X-Original-URL: /evil/x/resolve/main/f.txt', 'X-Rewrite-URL: /api/models/evil/x', 'X-Original-Host: evil.example', 'X-Host: evil.example'] },
      { name: 'upstream selectors', headers: [`X-Upstream: http://${c}`, `X-Hub-Endpoint: http://${c}`, `HF-Endpoint: http://${c}`, 'X-HTTP-Method-Override: DELETE'] },
      { name: 'garbage Accept-Encoding', headers: ['Accept-Encoding: evil;q=garbage, gzip;q=2, br, *;q=nope, identity;q=0'] },
      { name: 'Vary-style noise', headers: ['Accept: application/evil', 'Accept-Language: evil', 'Cookie: evil=1', 'Origin: http://evil.example', 'User-Agent: evil'] },
      { name: 'absolute-form evil', headers: [], absolute: 'http://evil.example' },
      { name: 'absolute-form canary', headers: [], absolute: `http://${c}` },
      { name: 'absolute-form https evil', headers: ['X-Forwarded-Host: evil.example'], absolute: 'https://evil.example:443' },
    ];
    hub.resetCounters();
    const poisoned: Array<Sent & { variant: string }> = [];
    for (const v of variants) {
      for (const t of targets()) {
        const lines = [`GET ${v.absolute ?? ''}${t} HTTP/1.1`, v.hostLine ?? `Host: ${host}`, ...v.headers, 'Connection: close'];
        const ex = await rawExchange(mirror.url, `${lines.join('\r\n')}\r\n\r\n`);
        poisoned.push({ method: 'GET', target: t, ex, variant: v.name });
      }
    }
    for (const s of poisoned) {
      const r = s.ex.responses[0];
      const what = `${s.variant}: ${s.target}`;
      expect(r?.status, what).toBeDefined();
      expect(r!.status, what).toBeLessThan(500);
      // Whatever the mirror answers, it is the real file or listing, never something evil-derived.
      if (r!.status === 200 && !s.target.startsWith('/api/')) expect(header(r!, 'x-repo-commit'), what).toBe(commits.get('org/x'));
      expect(mentionsEvil(r!.body.toString('latin1')), what).toBe(false);
      // Only the pagination Link of a request that itself named the evil host may echo it
      // (it is built per request for that client); nothing else in the head.
      const echoed = s.variant.startsWith('Host ') && r!.status === 200;
      const head = echoed ? r!.headers.filter(([k]) => k !== 'link').map(([k, v]) => `${k}: ${v}`).join('\n') : r!.head;
      expect(mentionsEvil(head), what).toBe(false);
    }
    // Most variants are simply served (a 400 is fine for a malformed Host).
    expect(poisoned.filter((s) => s.ex.responses[0]?.status === 200).length).toBeGreaterThan(poisoned.length * 0.7);
    // Upstream: the configured origin, its own Host, the normal paths, no forwarded noise, and
    // no more requests than a clean round (no extra misses from Host or Accept-Encoding).
    expect(hub.requests.length).toBeLessThanOrEqual(cleanRoundUpstream * variants.length);
    expect(hub.count({ method: 'GET', server: 'cdn' })).toBe(0);
    expect(hub.count({ method: 'GET', pathIncludes: '/resolve/' })).toBe(0);
    for (const r of hub.requests) {
      expect(r.headers.host).toBe(new URL(hub.url).host);
      expect(mentionsEvil(JSON.stringify(r)), r.path).toBe(false);
      expectCanonicalUpstream(r);
    }
    // (Every request above was answered: a connection the mirror made for one of them came first.)
    expect(canaryConnections).toBe(0);

    // A clean client afterwards gets clean answers, its own Link origin, the same bytes.
    for (const s of await clean()) {
      const r = s.ex.responses[0]!;
      expect(r.status, s.target).toBe(200);
      expect(mentionsEvil(r.head + r.body.toString('latin1')), s.target).toBe(false);
      const link = header(r, 'link');
      if (link) expect(link, s.target).toContain(`<http://${host}/api/models/org/x/tree/`);
    }
    // Answers first fetched (and cached) for an evil Host: the next clean client gets its own Link.
    const evilGet = (t: string) => rawExchange(mirror.url, `GET ${t} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n`);
    const page1 = '/api/models/org/x/tree/main?recursive=true';
    const evil1 = (await evilGet(page1)).responses[0]!;
    expect(header(evil1, 'x-mirror-cache')).toBe('miss');
    const next = /^<http:\/\/evil\.example(\/[^>]+)>; rel="next"$/.exec(header(evil1, 'link') ?? '')?.[1];
    expect(next).toBeDefined();
    const evil2 = (await evilGet(next!)).responses[0]!;
    expect(evil2.status).toBe(200);
    for (const t of [page1, next!]) {
      const r = (await send('GET', t)).ex.responses[0]!;
      expect(r.status).toBe(200);
      expect(header(r, 'x-mirror-cache'), t).toBe('hit');
      expect(mentionsEvil(r.head + r.body.toString('latin1')), t).toBe(false);
      if (header(r, 'link')) expect(header(r, 'link')).toContain(`<http://${host}/api/models/org/x/tree/`);
    }
    // Another legitimate name for the mirror gets its own Link; the next client is unaffected.
    const viaAlias = await rawExchange(mirror.url, 'GET /api/models/org/x/tree/main HTTP/1.1\r\nHost: mirror-alias.internal:8080\r\nConnection: close\r\n\r\n');
    expect(header(viaAlias.responses[0]!, 'link')).toContain('<http://mirror-alias.internal:8080/api/models/org/x/tree/');
    const after = (await send('GET', '/api/models/org/x/tree/main')).ex.responses[0]!;
    expect(header(after, 'link')).toContain(`<http://${host}/`);
    expect(header(after, 'link')).not.toContain('alias');

    // Nothing of what these requests sent was stored: not in the index, not in any file of the
    // data dir. (T19's odd names include a file called `evil.exe.txt`, which is stored rightly.)
    const sentValues = new RegExp(`evil(?!\\.exe\\.txt)|:${canaryPort}\\b`, 'i');
    const dataFiles = fs.readdirSync(mirror.dataDir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    for (const e of dataFiles) expect(sentValues.test(fs.readFileSync(path.join(e.parentPath, e.name)).toString('latin1')), e.name).toBe(false);
    expect(mirror.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// T19
// ---------------------------------------------------------------------------------------------

describe('T19: file names never inject a response header', () => {
  // `inline; filename*=UTF-8''<attr-chars and %XX>; filename="<printable ASCII, no quote or backslash>";`
  const CD_RE = /^inline; filename\*=UTF-8''((?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-F]{2})+); filename="([\x20\x21\x23-\x5b\x5d-\x7e]+)";?$/;

  it('odd names download with a correct RFC 5987 filename* and a safe ASCII fallback', async () => {
    for (const [name, bytes] of Object.entries(ODD_NAMES)) {
      const base = name.slice(name.lastIndexOf('/') + 1);
      const target = `/org/odd/resolve/main/${enc(name)}`;
      for (const method of ['GET', 'HEAD', 'GET']) {
        const s = await send(method, target);
        expectCleanHead(s);
        const r = s.ex.responses[0]!;
        expect(s.ex.responses.length, `${method} ${name}`).toBe(1);
        if (/[\r\n]/.test(name)) {
          // A real CR/LF in a name: refused as an invalid path, and nothing of it reaches a header.
          expect(r.status).toBe(400);
          expect(header(r, 'x-error-code')).toBe('InvalidPath');
          // (The message quotes the name escaped, `\r\n` as text, inside one header line.)
          expect(r.head.split('\r\n').filter((l) => /^set-cookie:/i.test(l))).toEqual([]);
          continue;
        }
        expect({ name, method, status: r.status }).toEqual({ name, method, status: 200 });
        if (method === 'GET') expect(r.body.equals(bytes), name).toBe(true);
        const cd = header(r, 'content-disposition') ?? '';
        const m = CD_RE.exec(cd);
        expect(m, `${name}: ${cd}`).not.toBeNull();
        expect(decodeURIComponent(m![1]!), name).toBe(base);
        const fallback = m![2]!;
        if (/^[\x20-\x7e]*$/.test(base) && !/["\\]/.test(base)) expect(fallback).toBe(base);
        else expect(fallback.length).toBeGreaterThan(0);
        expect(r.headers.filter(([k]) => k === 'content-disposition').length).toBe(1);
      }
    }
    // The header an undici client parses says the same thing, and the bytes are right.
    const d = await download(`${mirror.url}/org/odd/resolve/main/${enc('dir/naïve "weights"; v=1.bin')}`);
    expect(d.status).toBe(200);
    expect(d.body.equals(ODD_NAMES['dir/naïve "weights"; v=1.bin']!)).toBe(true);
    expect(dlHeader(d, 'set-cookie')).toBeUndefined();
    expect(decodeURIComponent(CD_RE.exec(dlHeader(d, 'content-disposition') ?? '')?.[1] ?? '')).toBe('naïve "weights"; v=1.bin');
  });

  it('odd names cause no unhandled error, and the process stays alive', async () => {
    const before = mirror.logs.length;
    for (const name of Object.keys(ODD_NAMES)) {
      for (const method of ['HEAD', 'GET']) expect((await send(method, `/org/odd/resolve/main/${enc(name)}`)).ex.responses).toHaveLength(1);
    }
    expect(mirror.logs.slice(before).filter((l) => l.includes('unhandled error') || /"level":(50|60)/.test(l))).toEqual([]);
    const d = await download(`${mirror.url}/org/odd/resolve/main/${enc('été.txt')}`);
    expect(d.status).toBe(200);
  });
});
