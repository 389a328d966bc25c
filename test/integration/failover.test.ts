/**
 * Several upstreams (`upstream: [A, B]`): metadata from the first healthy one, a failing one
 * skipped for a cool-down, and a fill whose upstream dies continuing from the next one at the
 * bytes it already holds, only when that upstream names the same blob and size. Two fake hubs;
 * asserted on their request and byte counters and on what clients get.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
let seed = 12_000;
const cleanup: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function hubs(): Promise<[FakeHub, FakeHub]> {
  const a = await startFakeHub();
  const b = await startFakeHub();
  cleanup.push(() => a.stop(), () => b.stop());
  return [a, b];
}

async function mirrorOf(upstreams: string[], overrides: Parameters<typeof startMirror>[1] = {}): Promise<TestMirror> {
  const m = await startMirror(upstreams, overrides);
  cleanup.push(() => m.destroy());
  return m;
}

/** The same repo and file on every hub given (same commit: commits are derived from the content). */
function sameFile(on: FakeHub[], size: number) {
  const id = `org/failover-${seed}`;
  const content = makeContent(size, seed++);
  for (const h of on) h.addRepo({ id, files: { 'model.safetensors': content } });
  const sha256 = on[0]!.fileInfo({ id }, 'model.safetensors').sha256;
  return { id, size, content, sha256, cdn: { server: 'cdn' as const, method: 'GET', pathIncludes: sha256 }, path: `/${id}/resolve/main/model.safetensors` };
}

/** Waits for `cond` (polled, bounded by wait-for's deadline). */
const until = (what: string, cond: () => boolean): Promise<true> => waitFor(() => cond() || undefined, { what });

const stagingFiles = (m: TestMirror) => fs.readdirSync(path.join(m.dataDir, 'staging'));
const stored = (m: TestMirror, sha256: string) => fs.existsSync(path.join(m.dataDir, 'blobs-v1', 'sha256', sha256.slice(0, 2), sha256.slice(2, 4), sha256));

describe('several upstreams', () => {
  it('upstream A dies at 40 % of a segmented fill: the fill completes from B, which serves only the rest; the client sees one download', async () => {
    const [a, b] = await hubs();
    const m = await mirrorOf([a.url, b.url]);
    const f = sameFile([a, b], 256 * MiB);
    a.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 15e6 });
    const got = download(`${m.url}${f.path}`, { keepBody: false });
    await until('40 % from A', () => a.bytesSent(f.cdn) >= 0.4 * f.size);
    await a.stop(); // every connection to A is cut, and nothing answers there any more
    const fromA = a.bytesSent(f.cdn);
    const r = await got;
    expect([r.status, r.complete, r.sha256, header(r, 'x-mirror-cache')]).toEqual([200, true, f.sha256, 'miss']);
    expect(stored(m, f.sha256)).toBe(true);

    const fromB = b.bytesSent(f.cdn);
    const cdnGets = (h: FakeHub) => h.requests.filter((q) => q.server === 'cdn' && q.method === 'GET' && q.path.includes(f.sha256));
    const start = (range: unknown) => Number(/^bytes=(\d+)-/.exec(String(range))?.[1] ?? NaN);
    // B was asked for ranges only, none from the start of the file, and each of A's cut connections
    // was continued on B after the bytes the mirror had from it, not from its segment's start.
    const fromBStarts = cdnGets(b).map((q) => start(q.headers.range));
    expect(fromBStarts.length).toBeGreaterThan(0);
    for (const x of fromBStarts) expect(x).toBeGreaterThan(0);
    // (A connection whose bytes were all still in flight when A died is continued at its start:
    // the mirror had none of them. At least one continues past its start.)
    // A connection cut just as A stopped may first be resumed on A itself (a pooled connection to A
    // can still be open for a moment), and continued on B from there.
    let continuedPastStart = 0;
    const aGets = cdnGets(a);
    for (const q of aGets) {
      const s = start(q.headers.range);
      if (q.bytesSent === 0 || s + q.bytesSent >= f.size) continue;
      const starts = [...fromBStarts, ...aGets.filter((o) => o !== q).map((o) => start(o.headers.range))];
      expect(starts.some((x) => x >= s && x <= s + q.bytesSent), `continuation of ${String(q.headers.range)}`).toBe(true);
      if (starts.some((x) => x > s && x <= s + q.bytesSent)) continuedPastStart++;
    }
    expect(continuedPastStart).toBeGreaterThan(0);
    // In bytes: A's share plus B's is the file, plus what was in flight on A's connections when
    // they were cut (lost with them) and the usual end-game split overlap.
    expect(fromA).toBeGreaterThanOrEqual(0.4 * f.size);
    expect(fromA + fromB).toBeGreaterThanOrEqual(f.size);
    expect(fromA + fromB).toBeLessThanOrEqual(1.03 * f.size);
    expect(fromB).toBeLessThanOrEqual(f.size - 0.4 * f.size + 0.03 * f.size);
    // B was checked for the same blob before the switch (a HEAD of the file at the fill's commit).
    expect(b.count({ server: 'hub', method: 'HEAD', pathIncludes: `${f.id}/resolve/` })).toBe(1);
    expect(m.logs.some((l) => l.includes('fill continues from the next upstream') && l.includes(b.url))).toBe(true);
    expect(m.logs.some((l) => l.includes('upstream down') && l.includes(a.url))).toBe(true);
  });

  it('B does not have the blob: the switch is refused and the fill fails cleanly, nothing stored', async () => {
    const [a, b] = await hubs();
    const m = await mirrorOf([a.url, b.url], { maxResumes: 1 });
    const f = sameFile([a], 96 * MiB);
    // Same repo and path on B, other content: another commit, so B cannot confirm the fill's blob.
    b.addRepo({ id: f.id, files: { 'model.safetensors': makeContent(f.size, seed++) } });
    a.setFault({ server: 'cdn', pathIncludes: f.sha256 }, { kind: 'throttle', bytesPerSecond: 10e6 });
    const got = download(`${m.url}${f.path}`, { keepBody: false });
    await until('some bytes from A', () => a.bytesSent(f.cdn) >= 0.3 * f.size);
    await a.stop();
    const r = await got;
    expect(r.status === 200 && r.complete).toBe(false);
    await until('the staging file to go', () => stagingFiles(m).length === 0);
    expect(stored(m, f.sha256)).toBe(false);
    expect(b.count({ server: 'cdn', method: 'GET' })).toBe(0);
    expect(m.logs.some((l) => l.includes('fill cannot continue from this upstream') && l.includes(b.url))).toBe(true);
    expect(m.logs.some((l) => l.includes('fill failed') && l.includes(f.sha256))).toBe(true);
  });

  it('metadata from the first healthy upstream; a failing one is skipped during its cool-down, not asked on every request', async () => {
    const [a, b] = await hubs();
    const m = await mirrorOf([a.url, b.url], { upstreamRetries: 0 });
    const one = sameFile([a, b], 4096);
    const two = sameFile([a, b], 4096);
    a.setFault({ server: 'hub' }, { kind: 'status', status: 503 });
    const r1 = await download(`${m.url}${one.path}`);
    expect([r1.status, r1.complete, r1.body.equals(one.content)]).toEqual([200, true, true]);
    const askedA = a.count({ server: 'hub' });
    expect(askedA).toBe(1); // the one HEAD that found A failing
    const r2 = await download(`${m.url}${two.path}`);
    expect([r2.status, r2.complete, r2.body.equals(two.content)]).toEqual([200, true, true]);
    expect(a.count({ server: 'hub' })).toBe(askedA);
    expect(b.count({ server: 'hub', method: 'HEAD' })).toBe(2);
    expect(m.logs.filter((l) => l.includes('upstream down') && l.includes(a.url))).toHaveLength(1);
  });

  it('a 4xx of the first upstream is an answer: not asked elsewhere', async () => {
    const [a, b] = await hubs();
    const m = await mirrorOf([a.url, b.url]);
    const f = sameFile([b], 4096); // only B has it
    const r = await download(`${m.url}${f.path}`);
    expect(r.status).toBe(401); // the Hub's answer for a repo it does not show an anonymous client
    expect(header(r, 'x-error-code')).toBe('RepoNotFound');
    expect(b.count({ server: 'hub' })).toBe(0);
  });
});
