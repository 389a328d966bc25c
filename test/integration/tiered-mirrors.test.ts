/**
 * Tiered mirrors: an edge hubcache (one per rack) whose upstream is a core hubcache, whose upstream
 * is the (fake) Hub. Clients of the edge must see what they would see from the Hub directly (bytes,
 * the headers huggingface_hub and @huggingface/hub read, API answers), every file must still cross
 * the WAN once however many tiers and clients ask, and the edge must keep serving what it holds
 * when the core is gone. Both mirrors are real ones (`startServer`, as `hubcache serve`) on
 * 127.0.0.1; the edge's upstream is the core's loopback URL.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadFile, fileDownloadInfo, listFiles } from '@huggingface/hub';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { curlSha256 } from '../support/external-client.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { recordingFetch } from '../support/snapshot.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { TestClock } from '../support/test-clock.js';
import { waitFor, within } from '../support/wait-for.js';

const MiB = 1024 * 1024;
/** At least segmentMinBytes (64 MiB): both tiers fill it with several ranged GETs at once. */
const BIG_SIZE = 64 * MiB + 4_321;
const TOKEN = 'hf_tiered_granted_token';
const OTHER = 'hf_tiered_known_token_without_access';

const REPO: RepoRef = { id: 'org/tiered' };
const GATED: RepoRef = { id: 'org/tiered-gated' };
const files = {
  'config.json': Buffer.from(JSON.stringify({ architectures: ['Tiered'], hidden_size: 64 }, null, 2) + '\n'),
  'model.safetensors': makeContent(BIG_SIZE, 1401),
  'herd.bin': makeContent(24 * MiB + 7, 1402),
  'ranges.bin': makeContent(8 * MiB + 3, 1403),
  'sub/a.txt': Buffer.from('a\n'),
  'sub/dir/b.txt': Buffer.from('b\n'),
  'tokenizer.json': Buffer.from('{"version":"1.0"}\n'),
};

/** An edge as configured in production: no private redirects allowed (startMirror's test default is on). */
const EDGE = { allowPrivateRedirects: false };

let hub: FakeHub;
let core: TestMirror;
let edge: TestMirror;

beforeAll(async () => {
  // Small tree pages: listings are paginated at every tier.
  hub = await startFakeHub({ treePageSize: 2 });
  hub.addRepo({ ...REPO, files });
  hub.addRepo({ ...GATED, files: { 'w.safetensors': makeContent(2 * MiB + 11, 1404), 'README.md': Buffer.from('# gated\n') }, gated: { allowedTokens: [TOKEN] } });
  hub.addKnownToken(OTHER);
  // The core needs loopback redirects (the fake CDN is on 127.0.0.1); the edge does not: its
  // upstream is the core itself, which answers every file directly, never by a redirect.
  core = await startMirror(hub.url);
  edge = await startMirror(core.url, EDGE);
});

afterAll(async () => {
  await edge?.destroy();
  await core?.destroy();
  await hub?.stop();
});

const fileUrl = (base: string, repo: RepoRef, file: string, revision = 'main') => `${base}/${repo.id}/resolve/${revision}/${file}`;

/** The CDN's body GETs of an LFS file, and what it sent for them. */
const cdnBody = (sha256: string) => ({ gets: hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha256 }), bytes: hub.bytesSent({ server: 'cdn', method: 'GET', pathIncludes: sha256 }) });

/** `m` holds the blob: an LFS file by its sha256, a regular one by its git blob id. */
const stored = (m: TestMirror, hex: string): boolean => fs.existsSync(path.join(m.dataDir, 'blobs-v1', hex.length === 64 ? 'sha256' : 'gitsha1', hex.slice(0, 2), hex.slice(2, 4), hex));

async function metric(m: TestMirror, name: string): Promise<number> {
  const text = await (await fetch(`${m.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

/** Waits until `m` holds the blob and runs no fill (its commit is over: the next request is a hit). */
async function settled(m: TestMirror, hex: string, what: string): Promise<void> {
  await waitFor(async () => stored(m, hex) && (await metric(m, 'hubcache_fills_in_progress')) === 0, { what });
}

interface RequestLine {
  msg?: string;
  method?: string;
  path?: string;
  status?: number;
  cache?: string;
}

/** The requests `m` has logged so far (one line each, written when the response closes). */
function requestLines(m: TestMirror): RequestLine[] {
  const out: RequestLine[] = [];
  for (const raw of m.logs) {
    try {
      const line = JSON.parse(raw) as RequestLine;
      if (line.msg === 'request') out.push(line);
    } catch {
      // not JSON
    }
  }
  return out;
}

/**
 * Every request the core has answered so far. A sentinel request to the core itself is logged
 * last (its line is awaited), so any request the edge sent the core before it has been logged too.
 */
async function coreRequests(): Promise<RequestLine[]> {
  // Its own path (the log drops query strings): a 404 that asks nothing upstream.
  const sentinel = `/tiered-sentinel/${Math.random().toString(36).slice(2)}`;
  expect((await download(`${core.url}${sentinel}`)).status).toBe(404);
  await waitFor(() => requestLines(core).some((l) => l.path === sentinel), { what: "the core's log line of the sentinel request" });
  return requestLines(core).filter((l) => !/^\/(tiered-sentinel\/|healthz$|metrics$|_\/)/.test(l.path ?? ''));
}

/**
 * The file metadata huggingface_hub reads from a HEAD (get_hf_file_metadata, v1.28): commit,
 * etag (X-Linked-Etag, else ETag, quotes and W/ stripped), size (X-Linked-Size, else
 * Content-Length of a non-redirect) and the URL it would then GET (Location, else the URL asked).
 */
function hfMetadata(d: Download, asked: string): { commit: string | undefined; etag: string | undefined; size: number | undefined; location: string } {
  const redirect = d.status >= 300 && d.status < 400;
  const etag = (header(d, 'x-linked-etag') ?? header(d, 'etag'))?.replace(/^W\//, '').replace(/"/g, '');
  const linkedSize = header(d, 'x-linked-size');
  const length = header(d, 'content-length');
  const size = linkedSize !== undefined ? Number(linkedSize) : !redirect && length !== undefined ? Number(length) : undefined;
  const location = header(d, 'location');
  return { commit: header(d, 'x-repo-commit'), etag, size, location: location ? new URL(location, asked).href : asked };
}

describe('a client of the edge, two tiers from the Hub', () => {
  it('resolves main, downloads an LFS file (segmented at both tiers) and a regular one; the second download is an edge hit; the Hub sent each body once', async () => {
    const big = hub.fileInfo(REPO, 'model.safetensors');
    const small = hub.fileInfo(REPO, 'config.json');
    const commit = hub.head(REPO);

    // HEAD, as huggingface_hub sends it: the same metadata as from the Hub, a URL on the edge.
    for (const info of [big, small]) {
      const viaEdge = fileUrl(edge.url, REPO, info.path);
      const direct = fileUrl(hub.url, REPO, info.path);
      const opts = { method: 'HEAD' as const, headers: { 'accept-encoding': 'identity' } };
      const fromEdge = await download(viaEdge, opts);
      const fromHub = await download(direct, opts);
      expect(fromEdge.status, info.path).toBe(200);
      const edgeMeta = hfMetadata(fromEdge, viaEdge);
      const hubMeta = hfMetadata(fromHub, direct);
      expect({ ...edgeMeta, location: undefined }, info.path).toEqual({ ...hubMeta, location: undefined });
      expect(edgeMeta, info.path).toEqual({ commit, etag: info.etag, size: info.size, location: viaEdge });
      expect(header(fromEdge, 'content-length'), info.path).toBe(String(info.size));
      expect(header(fromEdge, 'accept-ranges'), info.path).toBe('bytes');
      expect(header(fromEdge, 'etag'), info.path).toBe(`"${info.etag}"`);
      if (info.lfs) {
        expect(hubMeta.location.startsWith(hub.cdnUrl)).toBe(true); // the Hub redirects to its CDN…
        expect([header(fromEdge, 'x-linked-etag'), header(fromEdge, 'x-linked-size')]).toEqual([`"${info.sha256}"`, String(info.size)]);
      } else {
        expect(header(fromEdge, 'etag')).toBe(header(fromHub, 'etag'));
        expect(header(fromEdge, 'x-linked-etag')).toBeUndefined();
      }
      // …the edge never passes a redirect on (clients would leave the mirror), nor a Xet hint.
      expect(header(fromEdge, 'location'), info.path).toBeUndefined();
      expect(Object.keys(fromEdge.headers).filter((h) => h.startsWith('x-xet-')), info.path).toEqual([]);
    }

    // huggingface_hub's next step: GET the URL its HEAD named (the edge's own), through both tiers.
    const first = await download(hfMetadata(await download(fileUrl(edge.url, REPO, big.path), { method: 'HEAD' }), fileUrl(edge.url, REPO, big.path)).location, { keepBody: false });
    expect([first.status, first.complete, first.sha256]).toEqual([200, true, big.sha256]);
    expect([header(first, 'x-repo-commit'), header(first, 'etag'), header(first, 'x-linked-etag'), header(first, 'x-linked-size'), header(first, 'content-length')]).toEqual([
      commit,
      `"${big.sha256}"`,
      `"${big.sha256}"`,
      String(big.size),
      String(big.size),
    ]);
    expect(header(first, 'location')).toBeUndefined();
    // The regular file with @huggingface/hub (its Range probe, then the plain GET).
    const probe = await fileDownloadInfo({ repo: REPO.id, path: small.path, hubUrl: edge.url });
    expect(probe && { size: probe.size, etag: probe.etag, onEdge: probe.url.startsWith(edge.url), xet: probe.xet }).toEqual({ size: small.size, etag: `"${small.gitSha1}"`, onEdge: true, xet: undefined });
    const blob = await downloadFile({ repo: REPO.id, path: small.path, hubUrl: edge.url });
    expect(blob && Buffer.from(await blob.arrayBuffer()).equals(small.content)).toBe(true);

    await settled(core, big.sha256, 'the core to commit the LFS file');
    await settled(edge, big.sha256, 'the edge to commit the LFS file');
    await settled(edge, small.gitSha1, 'the edge to commit config.json');
    // Each tier fetched the LFS body with several ranged GETs (segmented), each byte once: on the
    // Hub's side only a few MiB may be in a GET's socket when the fill cuts it short (demand first).
    const { gets, bytes } = cdnBody(big.sha256);
    expect(gets).toBeGreaterThan(1);
    expect(bytes).toBeGreaterThanOrEqual(big.size);
    expect(bytes).toBeLessThanOrEqual(big.size + (gets - 1) * 6 * MiB);
    // The regular file's body crossed once; @huggingface/hub's two `bytes=0-0` probes of it (one
    // per call above) were passed up as one-byte ranges while it was cold, as a direct client's.
    const smallGets = hub.requests.filter((r) => r.server === 'hub' && r.method === 'GET' && r.path.includes(`/${REPO.id}/resolve/${commit}/config.json`));
    expect(smallGets.map((r) => [r.headers.range, r.bytesSent])).toEqual([['bytes=0-0', 1], ['bytes=0-0', 1], [undefined, small.size]]);
    const edgeRanges = (await coreRequests()).filter((l) => l.method === 'GET' && l.path?.endsWith(big.path));
    expect(edgeRanges.length).toBeGreaterThan(1); // the edge fill was segmented too

    // Second downloads: hits at the edge, not a request to the core nor to the Hub.
    const hubBefore = hub.requests.length;
    const coreBefore = (await coreRequests()).length;
    const again = await curlSha256(fileUrl(edge.url, REPO, big.path));
    expect([again.exitCode, again.sha256]).toEqual([0, big.sha256]);
    const againSmall = await download(fileUrl(edge.url, REPO, small.path));
    expect([againSmall.status, againSmall.body.equals(small.content), header(againSmall, 'x-mirror-cache')]).toEqual([200, true, 'hit']);
    const againHead = await download(fileUrl(edge.url, REPO, big.path), { method: 'HEAD' });
    expect([againHead.status, header(againHead, 'x-repo-commit'), header(againHead, 'x-linked-size')]).toEqual([200, commit, String(big.size)]);
    expect((await coreRequests()).length).toBe(coreBefore);
    expect(hub.requests.length).toBe(hubBefore);
    const edgeGets = () => requestLines(edge).filter((l) => l.method === 'GET' && l.path === `/${REPO.id}/resolve/main/${big.path}`);
    await waitFor(() => edgeGets().length === 2, { what: "the edge's log line of the second download" });
    expect(edgeGets().map((l) => l.cache)).toEqual(['miss', 'hit']);
  });

  it('a herd of 8 clients on one cold file: the Hub sends its body once, every client gets the right bytes', async () => {
    const info = hub.fileInfo(REPO, 'herd.bin');
    // Hold the Hub's body a third of the way, until every client of the edge has asked.
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: info.sha256 }, { kind: 'barrier', atBytes: Math.floor(info.size / 3) });
    try {
      const herd = Array.from({ length: 8 }, () => curlSha256(fileUrl(edge.url, REPO, info.path)));
      await barrier.reached;
      await waitFor(async () => (await fillReaders(edge, info.size)) === 8, { what: "all 8 clients to be reading the edge's fill" });
      barrier.release();
      const results = await Promise.all(herd);
      for (const r of results) expect([r.exitCode, r.sha256, r.stderr]).toEqual([0, info.sha256, '']);
    } finally {
      barrier.remove();
    }
    expect(cdnBody(info.sha256)).toEqual({ gets: 1, bytes: info.size });
    const edgeFetches = (await coreRequests()).filter((l) => l.method === 'GET' && l.path?.endsWith(`/${info.path}`));
    expect(edgeFetches.length).toBe(1); // one fill at the edge, so one GET of the core
  });

  it('ranges through two tiers on a cold file: right bytes, 206 and Content-Range; the Hub sends the file once plus the small ranges', async () => {
    const info = hub.fileInfo(REPO, 'ranges.bin');
    const url = fileUrl(edge.url, REPO, info.path);
    const at60 = Math.floor(info.size * 0.6);
    const cases: Array<{ range: string; start: number; end: number }> = [
      { range: 'bytes=-500', start: info.size - 500, end: info.size - 1 },
      { range: 'bytes=1000-1999', start: 1000, end: 1999 },
      { range: `bytes=${at60}-`, start: at60, end: info.size - 1 },
    ];
    const check = async (c: (typeof cases)[number]) => {
      const d = await download(url, { headers: { range: c.range } });
      expect([c.range, d.status, header(d, 'content-range'), header(d, 'content-length')]).toEqual([c.range, 206, `bytes ${c.start}-${c.end}/${info.size}`, String(c.end - c.start + 1)]);
      expect(d.body.equals(info.content.subarray(c.start, c.end + 1)), c.range).toBe(true);
      expect(header(d, 'etag')).toBe(`"${info.sha256}"`);
      return d;
    };
    // Cold: the two small ranges are fetched as ranges at both tiers (nothing stored, no fill); the big one fills.
    for (const c of cases.slice(0, 2)) await check(c);
    expect([stored(core, info.sha256), stored(edge, info.sha256), await metric(core, 'hubcache_fills_in_progress'), await metric(edge, 'hubcache_fills_in_progress')]).toEqual([false, false, 0, 0]);
    expect(cdnBody(info.sha256)).toEqual({ gets: 2, bytes: 1500 });
    await check(cases[2]!);
    await settled(core, info.sha256, 'the core to commit ranges.bin');
    await settled(edge, info.sha256, 'the edge to commit ranges.bin');
    // The fill's bytes once: a reader at 60 % may have the fill fetch its part first (demand
    // first), which wastes at most what the stream it cuts short had in its socket.
    const upstream = cdnBody(info.sha256);
    expect(upstream.bytes - 1500).toBeGreaterThanOrEqual(info.size);
    expect(upstream.bytes - 1500).toBeLessThanOrEqual(info.size + (upstream.gets - 3) * 6 * MiB);
    // Warm: the same ranges are hits at the edge, and nothing more crosses any tier.
    const hubBefore = hub.requests.length;
    const coreBefore = (await coreRequests()).length;
    for (const c of cases) expect(header(await check(c), 'x-mirror-cache')).toBe('hit');
    expect((await coreRequests()).length).toBe(coreBefore);
    expect(hub.requests.length).toBe(hubBefore);
  });

  it('HEAD and the API through the edge answer what the Hub answers', async () => {
    const commit = hub.head(REPO);
    const normalise = (body: Buffer) => stripXet(JSON.parse(body.toString('utf8')));
    for (const p of [`/api/models/${REPO.id}`, `/api/models/${REPO.id}/revision/main`, `/api/models/${REPO.id}/revision/main?blobs=true`, `/api/models/${REPO.id}/tree/main/sub?recursive=false`]) {
      const viaEdge = await download(`${edge.url}${p}`);
      const direct = await download(`${hub.url}${p}`);
      expect([p, viaEdge.status]).toEqual([p, direct.status]);
      expect(normalise(viaEdge.body), p).toEqual(normalise(direct.body));
      expect(header(viaEdge, 'content-type'), p).toBe(header(direct, 'content-type'));
      expect(viaEdge.body.toString('utf8'), p).not.toContain(core.url);
      expect(viaEdge.body.toString('utf8'), p).not.toContain(hub.url);
    }
    // A paginated listing: the same pages, each Link on the edge's own origin.
    const pages = async (base: string): Promise<{ entries: unknown[]; links: string[] }> => {
      const entries: unknown[] = [];
      const links: string[] = [];
      let next: string | undefined = `${base}/api/models/${REPO.id}/tree/${commit}?recursive=true&expand=false`;
      while (next) {
        const page = await download(next);
        expect([next, page.status]).toEqual([next, 200]);
        entries.push(...(stripXet(JSON.parse(page.body.toString('utf8'))) as unknown[]));
        const link = header(page, 'link');
        if (link) links.push(link);
        next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
      }
      return { entries, links };
    };
    const viaEdge = await pages(edge.url);
    const direct = await pages(hub.url);
    expect(viaEdge.entries).toEqual(direct.entries);
    expect(viaEdge.links.length).toBe(direct.links.length);
    expect(viaEdge.links.length).toBeGreaterThanOrEqual(3);
    for (const l of viaEdge.links) expect(l.startsWith(`<${edge.url}/api/models/${REPO.id}/tree/`), l).toBe(true);
    // The JS client's listing through the edge stays on the edge.
    const rec = recordingFetch();
    const listed: unknown[] = [];
    for await (const e of listFiles({ repo: REPO.id, recursive: true, hubUrl: edge.url, fetch: rec.fetch })) listed.push(e);
    const listedDirect: unknown[] = [];
    for await (const e of listFiles({ repo: REPO.id, recursive: true, hubUrl: hub.url })) listedDirect.push(e);
    expect(stripXet(listed)).toEqual(stripXet(listedDirect));
    expect(rec.seen.every((s) => s.url.startsWith(edge.url))).toBe(true);

    // HEAD on a missing file and a missing revision: the Hub's error codes and commit.
    const missing = await download(fileUrl(edge.url, REPO, 'nope.json'), { method: 'HEAD' });
    const missingDirect = await download(fileUrl(hub.url, REPO, 'nope.json'), { method: 'HEAD' });
    expect([missing.status, header(missing, 'x-error-code'), header(missing, 'x-repo-commit')]).toEqual([missingDirect.status, header(missingDirect, 'x-error-code'), header(missingDirect, 'x-repo-commit')]);
    const noRev = await download(fileUrl(edge.url, REPO, 'config.json', 'no-such-branch'), { method: 'HEAD' });
    const noRevDirect = await download(fileUrl(hub.url, REPO, 'config.json', 'no-such-branch'), { method: 'HEAD' });
    expect([noRev.status, header(noRev, 'x-error-code')]).toEqual([noRevDirect.status, header(noRevDirect, 'x-error-code')]);
    // Regular files' HEAD headers match the Hub's one for one.
    for (const file of ['tokenizer.json', 'sub/dir/b.txt']) {
      const viaEdgeHead = await download(fileUrl(edge.url, REPO, file), { method: 'HEAD' });
      const directHead = await download(fileUrl(hub.url, REPO, file), { method: 'HEAD' });
      for (const h of ['x-repo-commit', 'etag', 'content-length', 'content-type']) expect([file, h, header(viaEdgeHead, h)]).toEqual([file, h, header(directHead, h)]);
    }
  });

  it('gated content: refused to a client without the token at every tier, served to one with it; the token goes edge → core → Hub only', async () => {
    const info = hub.fileInfo(GATED, 'w.safetensors');
    const url = fileUrl(edge.url, GATED, info.path);
    const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
    const refused = async (headers: Record<string, string>, status: number) => {
      for (const method of ['HEAD', 'GET'] as const) {
        const d = await download(url, { method, headers });
        expect([method, d.status, header(d, 'x-error-code')]).toEqual([method, status, 'GatedRepo']);
        expect(d.body.includes(info.content.subarray(0, 64))).toBe(false);
        expect(header(d, 'x-linked-size')).toBeUndefined();
      }
      const ranged = await download(url, { headers: { ...headers, range: 'bytes=0-1023' } });
      expect([ranged.status, header(ranged, 'x-error-code')]).toEqual([status, 'GatedRepo']);
    };
    await refused({}, 401);

    const hubFrom = hub.requests.length;
    const ok = await download(url, { headers: bearer(TOKEN) });
    expect([ok.status, ok.complete, ok.sha256, header(ok, 'x-linked-etag')]).toEqual([200, true, info.sha256, `"${info.sha256}"`]);
    const fromGranted = hub.requests.slice(hubFrom);
    expect(fromGranted.filter((r) => r.server === 'cdn').length).toBe(1);
    for (const r of fromGranted) {
      // The Hub's origin gets the client's token, carried by both tiers; its CDN never does.
      if (r.server === 'hub') expect([r.method, r.path, r.headers.authorization]).toEqual([r.method, r.path, `Bearer ${TOKEN}`]);
      else expect(r.hasAuthorization).toBe(false);
    }
    await settled(edge, info.sha256, 'the edge to commit the gated file');

    // Cached at both tiers now, and still not served to anyone upstream would refuse.
    await refused({}, 401);
    await refused(bearer(OTHER), 403);
    const coreAnon = await download(fileUrl(core.url, GATED, info.path));
    expect([coreAnon.status, header(coreAnon, 'x-error-code')]).toEqual([401, 'GatedRepo']);
    const again = await download(url, { headers: bearer(TOKEN) });
    expect([again.status, again.sha256]).toEqual([200, info.sha256]);
    expect(cdnBody(info.sha256).gets).toBe(1);

    // Never logged, never stored, at either tier.
    for (const m of [edge, core]) {
      expect(m.logs.join('\n')).not.toContain(TOKEN);
      for (const name of fs.readdirSync(m.dataDir).filter((n) => n.startsWith('index.sqlite'))) {
        expect(fs.readFileSync(path.join(m.dataDir, name)).includes(TOKEN), name).toBe(false);
      }
    }
  });
});

describe('private content through both tiers', () => {
  it('is answered only to the token the Hub grants, API and files, with the Hub\'s error codes otherwise', async () => {
    const repo: RepoRef = { id: 'org/tiered-private' };
    const secret = Buffer.from('{"private": "tiered"}\n');
    hub.addRepo({ ...repo, files: { 'config.json': secret, 'w.bin': makeContent(512 * 1024 + 9, 1407) }, private: { allowedTokens: [TOKEN] } });
    const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
    const info = `/api/models/${repo.id}/revision/main`;
    const files = [fileUrl(edge.url, repo, 'config.json'), fileUrl(edge.url, repo, 'w.bin')];
    // The Hub's answers: 401 (bare) to no token, 404 RepoNotFound to a token without access. The
    // mirrors keep the status and name the code on the 401 too (Python needs it on http://).
    const refusedAll = async () => {
      for (const [headers, status] of [[{}, 401], [bearer(OTHER), 404]] as const) {
        expect((await download(fileUrl(hub.url, repo, 'config.json'), { headers })).status).toBe(status);
        for (const target of [`${edge.url}${info}`, `${edge.url}/api/models/${repo.id}/tree/main`, ...files]) {
          const d = await download(target, { headers });
          expect([target, d.status, header(d, 'x-error-code')]).toEqual([target, status, 'RepoNotFound']);
          expect(d.body.includes(secret)).toBe(false);
        }
      }
    };
    await refusedAll();
    const viaEdge = await download(`${edge.url}${info}`, { headers: bearer(TOKEN) });
    const direct = await download(`${hub.url}${info}`, { headers: bearer(TOKEN) });
    expect(viaEdge.status).toBe(200);
    expect(stripXet(JSON.parse(viaEdge.body.toString('utf8')))).toEqual(stripXet(JSON.parse(direct.body.toString('utf8'))));
    const got = await download(files[0]!, { headers: bearer(TOKEN) });
    expect([got.status, got.body.equals(secret)]).toEqual([200, true]);
    const big = await download(files[1]!, { headers: bearer(TOKEN) });
    expect([big.status, big.sha256]).toEqual([200, hub.fileInfo(repo, 'w.bin').sha256]);
    // Cached at both tiers now: still nobody else's.
    await refusedAll();
  });
});

describe('the Hub, then the core, goes away', () => {
  it('the edge serves what the core holds while the Hub is down, and what it holds itself once the core is down too (within the refs TTL and, past it, from its last known commit); a cold file is a clean 503, not a hang', async () => {
    const clock = new TestClock();
    const coreDown = await startMirror(hub.url);
    const edgeAlone = await startMirror(coreDown.url, EDGE, { clock });
    try {
      const repo: RepoRef = { id: 'org/tiered-offline' };
      const content = {
        'config.json': Buffer.from('{"offline": true}\n'),
        'model.safetensors': makeContent(3 * MiB + 1, 1405),
        'cold.bin': makeContent(2 * MiB, 1406),
        'core-only.bin': makeContent(MiB + 5, 1408),
      };
      hub.addRepo({ ...repo, files: content });
      const commit = hub.head(repo);
      const revision = `/api/models/${repo.id}/revision/main`;
      const online = await download(`${edgeAlone.url}${revision}`);
      expect(online.status).toBe(200);
      for (const file of ['config.json', 'model.safetensors']) {
        const d = await download(fileUrl(edgeAlone.url, repo, file));
        expect([file, d.status, d.sha256]).toEqual([file, 200, sha256Hex(content[file as keyof typeof content])]);
      }
      await settled(edgeAlone, hub.fileInfo(repo, 'model.safetensors').sha256, 'the edge to commit model.safetensors');
      // A file only the core holds (another edge fetched it).
      const coreOnly = hub.fileInfo(repo, 'core-only.bin');
      expect((await download(fileUrl(coreDown.url, repo, coreOnly.path))).sha256).toBe(coreOnly.sha256);
      await settled(coreDown, coreOnly.sha256, 'the core to commit core-only.bin');

      // The Hub unreachable, the core up: the edge gets from the core what the core holds, and a
      // clean error for what nobody holds.
      await hub.stop();
      try {
        const fromCore = await within(download(fileUrl(edgeAlone.url, repo, coreOnly.path)), { what: 'core-only.bin with the Hub down' });
        expect([fromCore.status, fromCore.sha256, header(fromCore, 'x-repo-commit')]).toEqual([200, coreOnly.sha256, commit]);
        const nowhere = await within(download(fileUrl(edgeAlone.url, repo, 'cold.bin')), { what: 'cold.bin with the Hub down' });
        expect([nowhere.status, header(nowhere, 'x-error-code')]).toEqual([503, 'UpstreamUnavailable']);
      } finally {
        await hub.restart();
      }

      await coreDown.close();
      const servedOffline = async (expectCache: string[]) => {
        for (const file of ['config.json', 'model.safetensors'] as const) {
          for (const method of ['HEAD', 'GET'] as const) {
            const d = await within(download(fileUrl(edgeAlone.url, repo, file), { method }), { what: `${method} ${file} with the core down` });
            expect([file, method, d.status, header(d, 'x-repo-commit')]).toEqual([file, method, 200, commit]);
            if (method === 'GET') expect(d.sha256, file).toBe(sha256Hex(content[file]));
            expect(expectCache, `${file} ${method}`).toContain(header(d, 'x-mirror-cache'));
          }
        }
        const rev = await within(download(`${edgeAlone.url}${revision}`), { what: 'revision/main with the core down' });
        expect([rev.status, (JSON.parse(rev.body.toString('utf8')) as { sha: string }).sha]).toEqual([200, commit]);
        return rev;
      };
      // Within the refs TTL: straight from the edge's index.
      expect(header(await servedOffline(['hit']), 'x-mirror-cache')).toBe('hit');
      // Past it: the edge must ask, cannot, and answers from the last commit it knew.
      clock.advance((edgeAlone.config.refsTtlSeconds + edgeAlone.config.authTtlSeconds) * 1000 + 1);
      expect(header(await servedOffline(['hit', 'stale']), 'x-mirror-cache')).toBe('stale');

      for (const [what, target] of [
        ['a cold file', fileUrl(edgeAlone.url, repo, 'cold.bin')],
        ['a cold file at the commit', fileUrl(edgeAlone.url, repo, 'cold.bin', commit)],
        ['a cold range', fileUrl(edgeAlone.url, repo, 'cold.bin')],
        ['an unknown revision', `${edgeAlone.url}/api/models/${repo.id}/revision/other`],
      ] as const) {
        const d = await within(download(target, what === 'a cold range' ? { headers: { range: 'bytes=0-99' } } : {}), { what: `${what} with the core down` });
        expect([what, d.status]).toEqual([what, 503]);
        expect(header(d, 'x-error-code'), what).toMatch(/^[A-Za-z]+$/);
        expect(header(d, 'x-error-message'), what).toMatch(/unreachable/i);
      }
    } finally {
      await edgeAlone.destroy();
      await coreDown.destroy();
    }
  });
});

/** JSON without `xetHash` keys (the mirror strips them: no Xet hint reaches its clients). */
function stripXet(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stripXet);
  if (typeof value === 'object' && value !== null) return Object.fromEntries(Object.entries(value).filter(([k]) => k !== 'xetHash').map(([k, v]) => [k, stripXet(v)]));
  return value;
}

/** Clients reading the running fill of a `size`-byte file at `m` (the dashboard's view of it). */
async function fillReaders(m: TestMirror, size: number): Promise<number> {
  const status = (await (await fetch(`${m.url}/_/status`)).json()) as { fills: Array<{ size: number; readers: number }> };
  return status.fills.find((f) => f.size === size)?.readers ?? 0;
}
