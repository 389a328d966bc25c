/**
 * hubcache benchmark: `npm run bench`.
 *
 * One run starts the fake hub (in this process) and the mirror + a plain static-file server
 * (each in its own child process by default, BENCH_SERVERS=inproc for all-in-one), all on
 * 127.0.0.1, and measures:
 *   1. cold single-client GET through the mirror vs the same bytes straight from the fake hub;
 *   2. warm GET, 1 and N concurrent clients, mirror vs the static server;
 *   3. a thundering herd of cold clients on a throttled upstream: time and upstream bytes;
 *   4. HEAD latency, warm (index) and cold (needs one upstream HEAD).
 * It prints a markdown table and writes bench/results/latest.json. It asserts correctness (status,
 * length, sha256), never timings: exit 1 only on a correctness failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Agent } from 'undici';
import { makeContent, sha256Hex } from '../test/support/content.js';
import { startFakeHub, type FakeHub } from '../test/support/fake-hub.js';
import { get, head, header, newAgent, runPool, sha256OfChunks, type GetResult, type HeadResult } from './lib/client.js';
import { startBaselineServer, startMirrorServer, type BenchServer, type ServerMode } from './lib/servers.js';
import { fmt, mbps, median, percentile } from './lib/stats.js';

// ------------------------------------------------------------------------------------ settings

function envNumber(name: string, def: number, opts: { integer?: boolean; min?: number } = {}): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return def;
  const n = Number(raw);
  if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || n < (opts.min ?? 0)) {
    console.error(`${name}: invalid value ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return n;
}

const MiB = 1 << 20;
const SIZE_MIB = envNumber('BENCH_SIZE_MIB', 256, { min: 1 / 16 });
const SIZE = Math.round(SIZE_MIB * MiB);
const HERD = envNumber('BENCH_HERD', 11, { integer: true, min: 1 });
const THROTTLE_MBPS = envNumber('BENCH_THROTTLE_MBPS', 50, { min: 0.1 });
const HEAD_REQUESTS = envNumber('BENCH_HEAD_REQUESTS', 2000, { integer: true, min: 1 });
const WARM_CLIENTS = envNumber('BENCH_WARM_CLIENTS', 8, { integer: true, min: 2 });
const REPEATS = envNumber('BENCH_REPEATS', 3, { integer: true, min: 1 });
const COLD_HEADS = envNumber('BENCH_COLD_HEADS', 200, { integer: true, min: 1 });
const HEAD_CONCURRENCY = envNumber('BENCH_HEAD_CONCURRENCY', 16, { integer: true, min: 1 });
const SEQ_COLD_HEADS = 20;
const ALL_PHASES = ['cold', 'warm', 'herd', 'head'] as const;
const PHASES = new Set((process.env.BENCH_PHASES ?? ALL_PHASES.join(',')).split(',').map((p) => p.trim()));
for (const p of PHASES) {
  if (!(ALL_PHASES as readonly string[]).includes(p)) {
    console.error(`BENCH_PHASES: unknown phase ${JSON.stringify(p)} (known: ${ALL_PHASES.join(', ')})`);
    process.exit(2);
  }
}
const modeEnv = process.env.BENCH_SERVERS ?? 'child';
if (modeEnv !== 'child' && modeEnv !== 'inproc') {
  console.error(`BENCH_SERVERS: expected child or inproc, got ${JSON.stringify(modeEnv)}`);
  process.exit(2);
}
const MODE: ServerMode = modeEnv;

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const RESULTS_FILE = path.join(BENCH_DIR, 'results', 'latest.json');

// ------------------------------------------------------------------------------------ output

const failures: string[] = [];
function fail(msg: string): void {
  failures.push(msg);
  console.error(`  FAIL: ${msg}`);
}
function progress(msg: string): void {
  console.error(`[bench ${((performance.now() - T0) / 1000).toFixed(1)}s] ${msg}`);
}
const T0 = performance.now();

interface Row {
  measure: string;
  unit: string;
  mirror: number | null;
  baseline: number | null;
  baselineName: string;
  ratio: number | null;
  /** Printed digits. */
  digits: number;
  note?: string;
}
const rows: Row[] = [];
function row(measure: string, unit: string, mirror: number | null, baseline: number | null, baselineName: string, digits = 1, note?: string): void {
  const ratio = mirror !== null && baseline !== null && baseline !== 0 && Number.isFinite(mirror) && Number.isFinite(baseline) ? mirror / baseline : null;
  rows.push({ measure, unit, mirror, baseline, baselineName, ratio, digits, ...(note ? { note } : {}) });
}
const details: Record<string, unknown> = {};

// ------------------------------------------------------------------------------------ helpers

const REPO = 'bench/big';
const HEADS_REPO = 'bench/heads';

interface BigFile {
  path: string;
  sha256: string;
}

function checkGet(what: string, r: GetResult, expectedSize: number, cache?: string): void {
  if (r.status !== 200) fail(`${what}: status ${r.status}`);
  else if (r.bytes !== expectedSize) fail(`${what}: got ${r.bytes} bytes, expected ${expectedSize}`);
  const cl = header(r.headers, 'content-length');
  if (r.status === 200 && cl !== String(expectedSize)) fail(`${what}: content-length ${String(cl)}, expected ${expectedSize}`);
  if (cache !== undefined) {
    const got = header(r.headers, 'x-mirror-cache');
    if (got !== cache) console.error(`  note: ${what}: x-mirror-cache ${String(got)}, expected ${cache}`);
  }
}

/** Hashes the kept chunks (outside the timed part) and drops them. */
function verifySha(what: string, r: GetResult, expected: string): boolean {
  const chunks = r.chunks;
  if (!chunks) throw new Error('verifySha needs kept chunks');
  const got = sha256OfChunks(chunks);
  r.chunks = undefined;
  if (got !== expected) {
    fail(`${what}: sha256 ${got}, expected ${expected}`);
    return false;
  }
  return true;
}

async function cpuDelta<T>(server: BenchServer, fn: () => Promise<T>): Promise<{ value: T; cpuMs: number | null }> {
  const c0 = await server.cpuMicros();
  const value = await fn();
  const c1 = await server.cpuMicros();
  return { value, cpuMs: c0 !== null && c1 !== null ? (c1 - c0) / 1000 : null };
}

/** n concurrent full GETs; aggregate MB/s from the first start to the last end. */
async function concurrentGets(agent: Agent, url: string, n: number): Promise<{ mbps: number; ms: number; results: GetResult[] }> {
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: n }, () => get(agent, url)));
  const t1 = Math.max(...results.map((r) => r.endedAt));
  return { mbps: mbps(n * SIZE, t1 - t0), ms: t1 - t0, results };
}

async function headLoad(agent: Agent, urls: (i: number) => URL, total: number, concurrency: number): Promise<{ results: HeadResult[]; ms: number }> {
  const t0 = performance.now();
  const results = await runPool(total, concurrency, (i) => head(agent, urls(i)));
  return { results, ms: performance.now() - t0 };
}

function cpuPerGB(cpuMs: number | null, bytes: number): number | null {
  return cpuMs === null ? null : cpuMs / 1000 / (bytes / 1e9);
}

interface Ctx {
  hub: FakeHub;
  mirror: BenchServer;
  baseline: BenchServer;
  hubAgent: Agent;
  mirrorAgent: Agent;
  staticAgent: Agent;
  coldFiles: BigFile[];
  herdSingle: BigFile;
  herdFile: BigFile;
  headSha: string[];
  headsCommit: string;
  mirrorFileUrl(p: string): string;
  hubFileUrl(p: string): string;
  /** The file of the warm and HEAD phases (cold-0.bin), through the mirror and the static server. */
  warmMirrorUrl: string;
  warmStaticUrl: string;
}

// ---------------------------------------------------------------- 1. cold single client
async function coldPhase(ctx: Ctx): Promise<void> {
  const { hub, mirror, hubAgent, mirrorAgent, coldFiles } = ctx;
  progress('1. cold single client: direct (hub → 302 → CDN) vs mirror (fresh file each time)');
  // Warm the direct path's code and connection once (not measured).
  checkGet('direct warm-up', await get(hubAgent, ctx.hubFileUrl(coldFiles[0]!.path), { followRedirects: true }), SIZE);
  const directMbps: number[] = [];
  const coldMbps: number[] = [];
  const coldTtfb: number[] = [];
  const coldTail: number[] = [];
  const coldCpuPerGB: number[] = [];
  const coldUpstreamRatio: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const f = coldFiles[i]!;
    // direct: the same bytes straight from the hub (redirect followed)
    const d = await get(hubAgent, ctx.hubFileUrl(f.path), { followRedirects: true, keep: true, expectedSize: SIZE });
    checkGet(`direct ${f.path}`, d, SIZE);
    if (d.redirects !== 1) fail(`direct ${f.path}: expected one redirect to the CDN, saw ${d.redirects}`);
    verifySha(`direct ${f.path}`, d, f.sha256);
    directMbps.push(mbps(d.bytes, d.endedAt - d.startedAt));

    const cdn0 = hub.bytesSent({ server: 'cdn' });
    const { value: m, cpuMs } = await cpuDelta(mirror, () => get(mirrorAgent, ctx.mirrorFileUrl(f.path), { keep: true, expectedSize: SIZE }));
    checkGet(`mirror cold ${f.path}`, m, SIZE, 'miss');
    verifySha(`mirror cold ${f.path}`, m, f.sha256);
    coldMbps.push(mbps(m.bytes, m.endedAt - m.startedAt));
    coldTtfb.push(m.headersAt - m.startedAt);
    coldTail.push(m.endedAt - m.allButLastAt);
    const pg = cpuPerGB(cpuMs, SIZE);
    if (pg !== null) coldCpuPerGB.push(pg);
    coldUpstreamRatio.push((hub.bytesSent({ server: 'cdn' }) - cdn0) / SIZE);
    progress(
      `   rep ${i + 1}: direct ${fmt(directMbps.at(-1))} MB/s, mirror cold ${fmt(coldMbps.at(-1))} MB/s ` +
        `(ttfb ${fmt(coldTtfb.at(-1))} ms, wait for the last byte ${fmt(coldTail.at(-1))} ms)`,
    );
  }
  row('cold GET, 1 client (MB/s)', 'MB/s', median(coldMbps), median(directMbps), 'direct from hub (302 → CDN)');
  row('cold GET: wait for the last byte (ms)', 'ms', median(coldTail), null, '—', 1, 'held back until the fill is verified + fsynced');
  if (MODE === 'child') row('mirror CPU per GB, cold fill + serve (s/GB)', 's/GB', median(coldCpuPerGB), null, '—', 2);
  details.cold = {
    directMbps,
    mirrorMbps: coldMbps,
    mirrorTtfbMs: coldTtfb,
    mirrorLastByteWaitMs: coldTail,
    mirrorCpuSecondsPerGB: coldCpuPerGB,
    upstreamBytesPerFileSize: coldUpstreamRatio,
  };
}

// ---------------------------------------------------------------- 2. warm
async function warmPhase(ctx: Ctx): Promise<void> {
  const { mirror, baseline, mirrorAgent, staticAgent, coldFiles, warmMirrorUrl, warmStaticUrl } = ctx;
  progress(`2. warm: mirror vs static, 1 and ${WARM_CLIENTS} clients`);
  // Warm-up (code, connections, page cache) with the untimed sha256 pass, then one counted GET each.
  const m = await get(mirrorAgent, warmMirrorUrl, { keep: true });
  checkGet('mirror warm verify', m, SIZE, PHASES.has('cold') ? 'hit' : 'miss');
  verifySha('mirror warm verify', m, coldFiles[0]!.sha256);
  const s = await get(staticAgent, warmStaticUrl, { keep: true });
  checkGet('static warm verify', s, SIZE);
  verifySha('static warm verify', s, coldFiles[0]!.sha256);
  checkGet('mirror warm-up', await get(mirrorAgent, warmMirrorUrl), SIZE, 'hit');
  checkGet('static warm-up', await get(staticAgent, warmStaticUrl), SIZE);

  type Target = { name: 'mirror' | 'static'; server: BenchServer; agent: Agent; url: string };
  const targets: Target[] = [
    { name: 'mirror', server: mirror, agent: mirrorAgent, url: warmMirrorUrl },
    { name: 'static', server: baseline, agent: staticAgent, url: warmStaticUrl },
  ];
  const newSeries = () => ({ one: [] as number[], many: [] as number[], cpuOne: [] as number[], cpuMany: [] as number[] });
  const warm = { mirror: newSeries(), static: newSeries() };
  for (let rep = 0; rep < REPEATS; rep++) {
    const order = rep % 2 === 0 ? targets : [...targets].reverse();
    for (const clients of [1, WARM_CLIENTS]) {
      for (const t of order) {
        const { value, cpuMs } = await cpuDelta(t.server, () => concurrentGets(t.agent, t.url, clients));
        for (const r of value.results) checkGet(`${t.name} warm ${clients} client(s)`, r, SIZE, t.name === 'mirror' ? 'hit' : undefined);
        const series = warm[t.name];
        (clients === 1 ? series.one : series.many).push(value.mbps);
        const pg = cpuPerGB(cpuMs, SIZE * clients);
        if (pg !== null) (clients === 1 ? series.cpuOne : series.cpuMany).push(pg);
      }
    }
    progress(
      `   rep ${rep + 1}: 1 client mirror ${fmt(warm.mirror.one.at(-1))} / static ${fmt(warm.static.one.at(-1))} MB/s; ` +
        `${WARM_CLIENTS} clients mirror ${fmt(warm.mirror.many.at(-1))} / static ${fmt(warm.static.many.at(-1))} MB/s`,
    );
  }
  row('warm GET, 1 client (MB/s)', 'MB/s', median(warm.mirror.one), median(warm.static.one), 'static file server');
  row(`warm GET, ${WARM_CLIENTS} clients aggregate (MB/s)`, 'MB/s', median(warm.mirror.many), median(warm.static.many), 'static file server');
  if (MODE === 'child') {
    row('server CPU per GB served, warm 1 client (s/GB)', 's/GB', median(warm.mirror.cpuOne), median(warm.static.cpuOne), 'static file server', 2);
    row(`server CPU per GB served, warm ${WARM_CLIENTS} clients (s/GB)`, 's/GB', median(warm.mirror.cpuMany), median(warm.static.cpuMany), 'static file server', 2);
  }
  details.warm = warm;
}

// ---------------------------------------------------------------- 3. herd
async function herdPhase(ctx: Ctx): Promise<void> {
  const { hub, mirrorAgent, herdSingle, herdFile } = ctx;
  progress(`3. herd: upstream throttled to ${THROTTLE_MBPS} MB/s; 1 cold client, then ${HERD} concurrent cold clients`);
  const fault = hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: THROTTLE_MBPS * 1e6 });
  let single: GetResult;
  let herd: GetResult[];
  let herdT0: number;
  let herdUpstreamBytes: number;
  let herdUpstreamGets: number;
  try {
    single = await get(mirrorAgent, ctx.mirrorFileUrl(herdSingle.path), { keep: true, expectedSize: SIZE });
    const cdnBytes0 = hub.bytesSent({ server: 'cdn' });
    const cdnGets0 = hub.count({ server: 'cdn', method: 'GET' });
    herdT0 = performance.now();
    herd = await Promise.all(Array.from({ length: HERD }, () => get(mirrorAgent, ctx.mirrorFileUrl(herdFile.path), { keep: true, expectedSize: SIZE })));
    herdUpstreamBytes = hub.bytesSent({ server: 'cdn' }) - cdnBytes0;
    herdUpstreamGets = hub.count({ server: 'cdn', method: 'GET' }) - cdnGets0;
  } finally {
    fault.remove();
  }
  checkGet('herd single', single, SIZE, 'miss');
  verifySha('herd single', single, herdSingle.sha256);
  const singleMs = single.endedAt - single.startedAt;
  const herdMs = herd.map((r) => r.endedAt - herdT0);
  const cacheCounts: Record<string, number> = {};
  herd.forEach((r, i) => {
    checkGet(`herd client ${i}`, r, SIZE);
    verifySha(`herd client ${i}`, r, herdFile.sha256);
    const c = header(r.headers, 'x-mirror-cache') ?? 'none';
    cacheCounts[c] = (cacheCounts[c] ?? 0) + 1;
  });
  const lastMs = Math.max(...herdMs);
  const upstreamRatio = herdUpstreamBytes / SIZE;
  if ((cacheCounts.miss ?? 0) !== 1) console.error(`  note: herd cache statuses ${JSON.stringify(cacheCounts)} (expected 1 miss, the rest joined)`);
  row(`herd of ${HERD}: last client time (s)`, 's', lastMs / 1000, singleMs / 1000, '1 cold client alone', 2);
  row(`herd of ${HERD}: upstream body bytes ÷ file size`, '×', upstreamRatio, 1, 'ideal', 2, `${herdUpstreamGets} upstream CDN GET(s)`);
  details.herd = {
    throttleMBps: THROTTLE_MBPS,
    singleSeconds: singleMs / 1000,
    singleIdealSeconds: SIZE / (THROTTLE_MBPS * 1e6),
    clientSeconds: herdMs.map((ms) => ms / 1000),
    firstClientSeconds: Math.min(...herdMs) / 1000,
    lastClientSeconds: lastMs / 1000,
    lastOverSingle: lastMs / singleMs,
    upstreamBytes: herdUpstreamBytes,
    upstreamBytesPerFileSize: upstreamRatio,
    upstreamCdnGets: herdUpstreamGets,
    cacheStatuses: cacheCounts,
  };
  progress(
    `   single ${fmt(singleMs / 1000, 2)} s; herd first ${fmt(Math.min(...herdMs) / 1000, 2)} s, last ${fmt(lastMs / 1000, 2)} s; ` +
      `upstream ${fmt(upstreamRatio, 2)} × size in ${herdUpstreamGets} GET(s); cache ${JSON.stringify(cacheCounts)}`,
  );
}

// ---------------------------------------------------------------- 4. HEAD
async function headPhase(ctx: Ctx): Promise<void> {
  const { hub, mirror, hubAgent, mirrorAgent, staticAgent, coldFiles, headSha, headsCommit } = ctx;
  progress(`4. HEAD latency: warm (branch URL, index) ${HEAD_REQUESTS} × at concurrency ${HEAD_CONCURRENCY}; cold (commit URL, needs upstream)`);
  const warmHeadMirror = new URL(ctx.warmMirrorUrl);
  const warmHeadStatic = new URL(ctx.warmStaticUrl);
  const expectEtag = `"${coldFiles[0]!.sha256}"`;
  const checkHeads = (what: string, rs: HeadResult[], check: (r: HeadResult, i: number) => string | null): void => {
    let bad = 0;
    rs.forEach((r, i) => {
      const problem = check(r, i);
      if (problem && bad++ < 3) fail(`${what} #${i}: ${problem}`);
    });
    if (bad > 3) fail(`${what}: ${bad} bad answers in all`);
  };
  const warmMirrorCheck = (r: HeadResult): string | null =>
    r.status !== 200
      ? `status ${r.status}`
      : header(r.headers, 'etag') !== expectEtag
        ? `etag ${String(header(r.headers, 'etag'))}`
        : header(r.headers, 'content-length') !== String(SIZE)
          ? `content-length ${String(header(r.headers, 'content-length'))}`
          : null;
  // Warm-up: code paths, connections, and the branch → commit answer (refs TTL).
  await headLoad(mirrorAgent, () => warmHeadMirror, Math.min(200, HEAD_REQUESTS), HEAD_CONCURRENCY);
  await headLoad(staticAgent, () => warmHeadStatic, Math.min(200, HEAD_REQUESTS), HEAD_CONCURRENCY);
  const hubHeads0 = hub.count({ server: 'hub', method: 'HEAD' });
  const hm = await headLoad(mirrorAgent, () => warmHeadMirror, HEAD_REQUESTS, HEAD_CONCURRENCY);
  const warmHeadUpstream = hub.count({ server: 'hub', method: 'HEAD' }) - hubHeads0;
  checkHeads('mirror warm HEAD', hm.results, warmMirrorCheck);
  const hs = await headLoad(staticAgent, () => warmHeadStatic, HEAD_REQUESTS, HEAD_CONCURRENCY);
  checkHeads('static warm HEAD', hs.results, (r) => (r.status === 200 ? null : `status ${r.status}`));
  const hmMs = hm.results.map((r) => r.ms);
  const hsMs = hs.results.map((r) => r.ms);
  row(`HEAD warm p50 (ms), c=${HEAD_CONCURRENCY}`, 'ms', percentile(hmMs, 50), percentile(hsMs, 50), 'static file server', 2);
  row(`HEAD warm p99 (ms), c=${HEAD_CONCURRENCY}`, 'ms', percentile(hmMs, 99), percentile(hsMs, 99), 'static file server', 2);
  row(`HEAD warm throughput (req/s), c=${HEAD_CONCURRENCY}`, 'req/s', HEAD_REQUESTS / (hm.ms / 1000), HEAD_REQUESTS / (hs.ms / 1000), 'static file server', 0);

  // Cold: files whose metadata the mirror never saw, URLs pinned to the commit (one upstream HEAD each).
  const headPath = (i: number): string => `h/${String(i).padStart(5, '0')}.bin`;
  const coldHeadCheck = (r: HeadResult, i: number): string | null =>
    r.status !== 200 ? `status ${r.status}` : header(r.headers, 'etag') !== `"${headSha[i]}"` ? `etag ${String(header(r.headers, 'etag'))}` : null;
  const mirrorHeadUrl = (i: number): URL => new URL(`${mirror.url}/${HEADS_REPO}/resolve/${headsCommit}/${headPath(i)}`);
  const hubHeadUrl = (i: number): URL => new URL(`${hub.url}/${HEADS_REPO}/resolve/${headsCommit}/${headPath(i)}`);
  // Baseline first (the hub keeps no state), then the mirror on the same files.
  const hubSeq = await headLoad(hubAgent, (i) => hubHeadUrl(COLD_HEADS + i), SEQ_COLD_HEADS, 1);
  const mirSeq = await headLoad(mirrorAgent, (i) => mirrorHeadUrl(COLD_HEADS + i), SEQ_COLD_HEADS, 1);
  checkHeads('mirror cold HEAD (sequential)', mirSeq.results, (r, i) => coldHeadCheck(r, COLD_HEADS + i));
  const hubCold = await headLoad(hubAgent, hubHeadUrl, COLD_HEADS, HEAD_CONCURRENCY);
  const hubHeads1 = hub.count({ server: 'hub', method: 'HEAD' });
  const mirCold = await headLoad(mirrorAgent, mirrorHeadUrl, COLD_HEADS, HEAD_CONCURRENCY);
  const coldHeadUpstream = hub.count({ server: 'hub', method: 'HEAD' }) - hubHeads1;
  checkHeads('mirror cold HEAD', mirCold.results, coldHeadCheck);
  checkHeads('hub cold HEAD', hubCold.results, (r) => (r.status === 302 ? null : `status ${r.status}`));
  const mirSeqMs = mirSeq.results.map((r) => r.ms);
  const hubSeqMs = hubSeq.results.map((r) => r.ms);
  const mirColdMs = mirCold.results.map((r) => r.ms);
  const hubColdMs = hubCold.results.map((r) => r.ms);
  row('HEAD cold, 1 at a time, p50 (ms)', 'ms', percentile(mirSeqMs, 50), percentile(hubSeqMs, 50), 'direct HEAD on the hub', 2);
  row(`HEAD cold p50 (ms), c=${HEAD_CONCURRENCY}`, 'ms', percentile(mirColdMs, 50), percentile(hubColdMs, 50), 'direct HEAD on the hub', 2);
  row(`HEAD cold p99 (ms), c=${HEAD_CONCURRENCY}`, 'ms', percentile(mirColdMs, 99), percentile(hubColdMs, 99), 'direct HEAD on the hub', 2);
  const summary = (ms: number[]) => ({ p50: percentile(ms, 50), p90: percentile(ms, 90), p99: percentile(ms, 99), max: Math.max(...ms) });
  details.head = {
    warm: {
      mirror: { ...summary(hmMs), reqPerSec: HEAD_REQUESTS / (hm.ms / 1000), upstreamHeads: warmHeadUpstream },
      static: { ...summary(hsMs), reqPerSec: HEAD_REQUESTS / (hs.ms / 1000) },
    },
    coldSequential: { n: SEQ_COLD_HEADS, mirror: summary(mirSeqMs), hub: summary(hubSeqMs) },
    coldConcurrent: { n: COLD_HEADS, mirror: summary(mirColdMs), hub: summary(hubColdMs), upstreamHeads: coldHeadUpstream },
  };
  progress(
    `   warm mirror p50 ${fmt(percentile(hmMs, 50), 2)} ms p99 ${fmt(percentile(hmMs, 99), 2)} ms (${warmHeadUpstream} upstream HEADs); ` +
      `cold p50 ${fmt(percentile(mirColdMs, 50), 2)} ms (${coldHeadUpstream} upstream HEADs for ${COLD_HEADS} files)`,
  );
}

// ------------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const cpus = os.cpus();
  const headerLines = [
    `# hubcache benchmark — ${new Date().toISOString()}`,
    '',
    `- machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.platform()} ${os.release()}, node ${process.version}`,
    `- file size ${SIZE_MIB} MiB (${SIZE} bytes); herd ${HERD}; upstream throttle for the herd ${THROTTLE_MBPS} MB/s; warm clients 1 and ${WARM_CLIENTS}; ${REPEATS} repeats (median); HEAD ${HEAD_REQUESTS} requests at concurrency ${HEAD_CONCURRENCY}; phases ${[...PHASES].join(',')}`,
    MODE === 'child'
      ? `- topology: fake hub + CDN and all clients (undici, keep-alive) in the bench process; the mirror and the static baseline server each in their own child process (same loader, same fork). All three processes share this machine's ${cpus.length} cores.`
      : '- topology: fake hub + CDN, all clients (undici, keep-alive), the mirror AND the static baseline server in ONE process (BENCH_SERVERS=inproc): every figure is one event loop\'s CPU split between client and server.',
    '- MB = 10^6 bytes. Throughput figures count bytes only; sha256 is verified in a separate, untimed pass (chunks kept and hashed after the clock stopped, or one extra GET).',
    '- mirror logLevel=warn; static baseline = node:http + fs.createReadStream piped with Content-Length (like serve-static); its file is in the same temp dir (same disk) as the mirror data dir.',
    '- This is a benchmark: nothing here asserts timings; exit status 1 means a correctness failure.',
  ];
  console.log(headerLines.join('\n'));
  console.log('');

  const benchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-bench-'));
  const mirrorDataDir = path.join(benchDir, 'mirror-data');
  const staticRoot = path.join(benchDir, 'static');
  fs.mkdirSync(mirrorDataDir);
  fs.mkdirSync(staticRoot);

  let hub: FakeHub | undefined;
  let mirror: BenchServer | undefined;
  let baseline: BenchServer | undefined;
  const agents: Agent[] = [];
  const agent = (): Agent => {
    const a = newAgent();
    agents.push(a);
    return a;
  };

  try {
    progress('generating content and starting servers');
    hub = await startFakeHub();
    const coldFiles: BigFile[] = [];
    const bigFiles: Record<string, Buffer> = {};
    for (let i = 0; i < REPEATS; i++) {
      const buf = makeContent(SIZE, 100 + i);
      bigFiles[`cold-${i}.bin`] = buf;
      coldFiles.push({ path: `cold-${i}.bin`, sha256: sha256Hex(buf) });
    }
    const herdSingleBuf = makeContent(SIZE, 200);
    const herdBuf = makeContent(SIZE, 201);
    bigFiles['herd-single.bin'] = herdSingleBuf;
    bigFiles['herd.bin'] = herdBuf;
    hub.addRepo({ id: REPO, files: bigFiles });

    const smallBase = makeContent(4096, 300);
    const headFiles: Record<string, Buffer> = {};
    const headSha: string[] = [];
    for (let i = 0; i < COLD_HEADS + SEQ_COLD_HEADS; i++) {
      const buf = Buffer.concat([Buffer.from(`head file ${i}\n`), smallBase]);
      headFiles[`h/${String(i).padStart(5, '0')}.bin`] = buf;
      headSha.push(sha256Hex(buf));
    }
    const { commit: headsCommit } = hub.addRepo({ id: HEADS_REPO, files: headFiles });

    // The static server's copy of cold-0.bin, fsynced so it is clean in the page cache like the mirror's blob.
    const fd = fs.openSync(path.join(staticRoot, 'cold-0.bin'), 'w');
    fs.writeSync(fd, bigFiles['cold-0.bin']!);
    fs.fsyncSync(fd);
    fs.closeSync(fd);

    mirror = await startMirrorServer(MODE, hub.url, mirrorDataDir);
    baseline = await startBaselineServer(MODE, staticRoot);
    const m = mirror;
    const h = hub;
    const ctx: Ctx = {
      hub,
      mirror,
      baseline,
      hubAgent: agent(),
      mirrorAgent: agent(),
      staticAgent: agent(),
      coldFiles,
      herdSingle: { path: 'herd-single.bin', sha256: sha256Hex(herdSingleBuf) },
      herdFile: { path: 'herd.bin', sha256: sha256Hex(herdBuf) },
      headSha,
      headsCommit,
      mirrorFileUrl: (p) => `${m.url}/${REPO}/resolve/main/${p}`,
      hubFileUrl: (p) => `${h.url}/${REPO}/resolve/main/${p}`,
      warmMirrorUrl: `${m.url}/${REPO}/resolve/main/cold-0.bin`,
      warmStaticUrl: `${baseline.url}/cold-0.bin`,
    };
    progress(`hub ${hub.url}, cdn ${hub.cdnUrl}, mirror ${mirror.url}, static ${baseline.url}`);

    if (PHASES.has('cold')) await coldPhase(ctx);
    if (PHASES.has('warm')) await warmPhase(ctx);
    if (PHASES.has('herd')) await herdPhase(ctx);
    if (PHASES.has('head')) await headPhase(ctx);
  } finally {
    progress('cleaning up');
    await Promise.allSettled(agents.map((a) => a.close()));
    await Promise.allSettled([mirror?.close(), baseline?.close()]);
    await hub?.stop();
    fs.rmSync(benchDir, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- report
  const lines = ['| measure | mirror | baseline | ratio |', '|---|---:|---:|---:|'];
  for (const r of rows) {
    const base = r.baseline === null ? '—' : `${fmt(r.baseline, r.digits)} (${r.baselineName})`;
    const note = r.note ? ` — ${r.note}` : '';
    lines.push(`| ${r.measure} | ${fmt(r.mirror, r.digits)}${note} | ${base} | ${r.ratio === null ? '—' : fmt(r.ratio, 2)} |`);
  }
  console.log(lines.join('\n'));
  console.log('');
  console.log('ratio = mirror ÷ baseline (throughput: higher is better; times, latencies and CPU: lower is better).');
  console.log(`correctness: ${failures.length === 0 ? 'all statuses, lengths and sha256 digests OK' : `${failures.length} FAILURE(S)`}`);
  for (const f of failures) console.log(`  - ${f}`);

  const json = {
    date: new Date().toISOString(),
    machine: { cpus: cpus.length, model: cpus[0]?.model, totalMemGiB: os.totalmem() / 2 ** 30, node: process.version, platform: `${os.platform()} ${os.release()}` },
    settings: { sizeMiB: SIZE_MIB, sizeBytes: SIZE, herd: HERD, throttleMBps: THROTTLE_MBPS, headRequests: HEAD_REQUESTS, headConcurrency: HEAD_CONCURRENCY, warmClients: WARM_CLIENTS, repeats: REPEATS, coldHeads: COLD_HEADS, servers: MODE },
    rows: rows.map(({ digits: _digits, ...r }) => r),
    details,
    failures,
    durationSeconds: (performance.now() - T0) / 1000,
  };
  fs.mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  fs.writeFileSync(RESULTS_FILE, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), RESULTS_FILE)} (${fmt(json.durationSeconds, 0)} s)`);
}

main().then(
  () => process.exit(failures.length > 0 ? 1 : 0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
