/**
 * hubcache benchmark: `npm run bench`.
 *
 * One run starts, on 127.0.0.1 with port 0: the fake hub + CDN (in this process), the mirror, a
 * plain static-file server, and the clients (each in its own child process by default;
 * BENCH_INPROC=1 puts everything in this one process). It measures:
 *   1. cold single-client GET through the mirror vs the same bytes straight from the fake hub;
 *   2. warm GET, 1 and N concurrent clients, mirror vs the static server;
 *   3. a herd of cold clients on a throttled upstream: time, and upstream bytes ÷ file size;
 *   4. HEAD latency, warm (index) and cold (needs one upstream HEAD).
 * It prints a markdown table and writes bench/results/latest.json. It checks correctness (status,
 * length, bytes, sha256), never timings: exit status 1 only on a correctness failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { makeContent, sha256Hex } from '../test/support/content.js';
import { startFakeHub, type FakeHub } from '../test/support/fake-hub.js';
import type { CpuUsage, LoopDelay } from './lib/child.js';
import { childClients, localClients, type Clients, type ContentRef, type GetOutcome, type HeadOutcome } from './lib/client.js';
import { startBaselineServer, startMirrorServer, type BenchServer } from './lib/servers.js';
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
const INPROC = envNumber('BENCH_INPROC', 0, { integer: true }) !== 0;
const SEQ_COLD_HEADS = 20;
const ALL_PHASES = ['cold', 'warm', 'herd', 'head'] as const;
const PHASES = new Set((process.env.BENCH_PHASES ?? ALL_PHASES.join(',')).split(',').map((p) => p.trim()));
for (const p of PHASES) {
  if (!(ALL_PHASES as readonly string[]).includes(p)) {
    console.error(`BENCH_PHASES: unknown phase ${JSON.stringify(p)} (known: ${ALL_PHASES.join(', ')})`);
    process.exit(2);
  }
}

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const RESULTS_FILE = path.join(BENCH_DIR, 'results', 'latest.json');
const CORES = os.cpus().length;

// ------------------------------------------------------------------------------------ output

const T0 = performance.now();
const failures: string[] = [];
function fail(msg: string): void {
  failures.push(msg);
  console.error(`  FAIL: ${msg}`);
}
function progress(msg: string): void {
  console.error(`[bench ${((performance.now() - T0) / 1000).toFixed(1)}s] ${msg}`);
}

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
  /** makeContent(size, seed): the clients regenerate the bytes from it to compare bodies. */
  ref: ContentRef;
  sha256: string;
}

function checkGet(what: string, r: GetOutcome, cache?: string): void {
  if (r.status !== 200) fail(`${what}: status ${r.status}`);
  else if (r.bytes !== SIZE) fail(`${what}: got ${r.bytes} bytes, expected ${SIZE}`);
  else if (r.contentLength !== String(SIZE)) fail(`${what}: content-length ${String(r.contentLength)}, expected ${SIZE}`);
  if (r.mismatchAt !== null) fail(`${what}: body differs from the source from byte ${r.mismatchAt} on (its sha256 cannot match)`);
  if (cache !== undefined && r.cache !== cache) console.error(`  note: ${what}: x-mirror-cache ${String(r.cache)}, expected ${cache}`);
}

async function getOne(clients: Clients, url: string, opts: { followRedirects?: boolean; expect?: ContentRef; hash?: boolean } = {}): Promise<GetOutcome> {
  const batch = await clients.gets({ url, clients: 1, expectedSize: SIZE, ...opts });
  return batch.results[0]!;
}

/** The untimed sha256 pass: one more full GET, hashed inline. */
async function verifySha(what: string, clients: Clients, url: string, file: BigFile, cache?: string): Promise<void> {
  const r = await getOne(clients, url, { hash: true });
  checkGet(`${what} (sha256 pass)`, r, cache);
  if (r.sha256 !== file.sha256) fail(`${what}: sha256 ${String(r.sha256)}, expected ${file.sha256}`);
}

/** CPU seconds spent by one process. */
interface CpuSpent {
  user: number;
  system: number;
}
const cpuTotal = (c: CpuSpent): number => c.user + c.system;
function cpuSince(c0: CpuUsage | null, c1: CpuUsage | null): CpuSpent | null {
  return c0 && c1 ? { user: (c1.userUs - c0.userUs) / 1e6, system: (c1.systemUs - c0.systemUs) / 1e6 } : null;
}
async function cpuDelta<T>(server: BenchServer, fn: () => Promise<T>): Promise<{ value: T; cpu: CpuSpent | null }> {
  const c0 = await server.cpuUsage();
  const value = await fn();
  return { value, cpu: cpuSince(c0, await server.cpuUsage()) };
}
/** CPU seconds per GB (10^9 bytes) served. */
function cpuPerGB(cpu: CpuSpent | null, bytes: number): CpuSpent | null {
  return cpu && { user: cpu.user / (bytes / 1e9), system: cpu.system / (bytes / 1e9) };
}
/** "user u + sys s" of the median sample. */
function cpuSplit(samples: CpuSpent[]): string {
  const m = median(samples.map(cpuTotal));
  const s = samples.find((c) => cpuTotal(c) === m) ?? samples[0];
  return s ? `user ${fmt(s.user, 2)} + sys ${fmt(s.system, 2)}` : '';
}
function ownCpu(): CpuUsage {
  const u = process.cpuUsage();
  return { userUs: u.user, systemUs: u.system };
}

function loopSummary(h: IntervalHistogram): LoopDelay {
  return { p50Ms: h.percentile(50) / 1e6, p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6 };
}
const fmtLoop = (l: LoopDelay | null): string => (l ? `p99 ${fmt(l.p99Ms, 0)}/max ${fmt(l.maxMs, 0)} ms` : 'n/a');

interface Ctx {
  hub: FakeHub;
  mirror: BenchServer;
  baseline: BenchServer;
  clients: Clients;
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
  const { hub, mirror, clients, coldFiles } = ctx;
  progress('1. cold single client: direct (hub → 302 → CDN) vs mirror (fresh file each time)');
  // Warm the direct path's code and connections once (not measured).
  checkGet('direct warm-up', await getOne(clients, ctx.hubFileUrl(coldFiles[0]!.path), { followRedirects: true }));
  const directMbps: number[] = [];
  const coldMbps: number[] = [];
  const coldTtfb: number[] = [];
  const coldTail: number[] = [];
  const coldCpuPerGB: CpuSpent[] = [];
  const coldUpstreamRatio: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const f = coldFiles[i]!;
    // direct: the same bytes straight from the hub (redirect followed)
    const d = await getOne(clients, ctx.hubFileUrl(f.path), { followRedirects: true, expect: f.ref });
    checkGet(`direct ${f.path}`, d);
    if (d.redirects !== 1) fail(`direct ${f.path}: expected one redirect to the CDN, saw ${d.redirects}`);
    directMbps.push(mbps(d.bytes, d.endMs - d.startMs));

    const cdn0 = hub.bytesSent({ server: 'cdn' });
    const { value: m, cpu } = await cpuDelta(mirror, () => getOne(clients, ctx.mirrorFileUrl(f.path), { expect: f.ref }));
    checkGet(`mirror cold ${f.path}`, m, 'miss');
    coldMbps.push(mbps(m.bytes, m.endMs - m.startMs));
    coldTtfb.push(m.headersMs - m.startMs);
    coldTail.push(m.endMs - m.allButLastMs);
    const pg = cpuPerGB(cpu, SIZE);
    if (pg) coldCpuPerGB.push(pg);
    coldUpstreamRatio.push((hub.bytesSent({ server: 'cdn' }) - cdn0) / SIZE);
    await verifySha(`mirror ${f.path}`, clients, ctx.mirrorFileUrl(f.path), f, 'hit');
    progress(
      `   rep ${i + 1}: direct ${fmt(directMbps.at(-1))} MB/s, mirror cold ${fmt(coldMbps.at(-1))} MB/s ` +
        `(ttfb ${fmt(coldTtfb.at(-1))} ms, wait for the last byte ${fmt(coldTail.at(-1))} ms)`,
    );
  }
  row('cold GET, 1 client (MB/s)', 'MB/s', median(coldMbps), median(directMbps), 'direct from hub (302 → CDN)');
  row('cold GET: wait for the last byte (ms)', 'ms', median(coldTail), null, '—', 1, 'the last byte is held back until the fill is verified and fsynced; ≈0 when the reader lags behind the fill');
  if (coldCpuPerGB.length > 0) {
    row('mirror CPU per GB, cold fill + serve (s/GB)', 's/GB', median(coldCpuPerGB.map(cpuTotal)), null, '—', 2, cpuSplit(coldCpuPerGB));
  }
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
  const { mirror, baseline, clients, coldFiles, warmMirrorUrl, warmStaticUrl } = ctx;
  progress(`2. warm: mirror vs static, 1 and ${WARM_CLIENTS} clients`);
  // Warm-up (code, connections, page cache) with the untimed sha256 pass, then one counted GET each.
  await verifySha('mirror warm', clients, warmMirrorUrl, coldFiles[0]!, PHASES.has('cold') ? 'hit' : 'miss');
  await verifySha('static warm', clients, warmStaticUrl, coldFiles[0]!);
  checkGet('mirror warm-up', await getOne(clients, warmMirrorUrl), 'hit');
  checkGet('static warm-up', await getOne(clients, warmStaticUrl));

  type Target = { name: 'mirror' | 'static'; server: BenchServer; url: string };
  const targets: Target[] = [
    { name: 'mirror', server: mirror, url: warmMirrorUrl },
    { name: 'static', server: baseline, url: warmStaticUrl },
  ];
  const newSeries = () => ({ one: [] as number[], many: [] as number[], cpuOne: [] as CpuSpent[], cpuMany: [] as CpuSpent[] });
  const warm = { mirror: newSeries(), static: newSeries() };
  for (let rep = 0; rep < REPEATS; rep++) {
    const order = rep % 2 === 0 ? targets : [...targets].reverse();
    for (const n of [1, WARM_CLIENTS]) {
      for (const t of order) {
        const { value, cpu } = await cpuDelta(t.server, () => clients.gets({ url: t.url, clients: n }));
        for (const r of value.results) checkGet(`${t.name} warm ${n} client(s)`, r, t.name === 'mirror' ? 'hit' : undefined);
        const series = warm[t.name];
        (n === 1 ? series.one : series.many).push(mbps(n * SIZE, value.wallMs));
        const pg = cpuPerGB(cpu, SIZE * n);
        if (pg) (n === 1 ? series.cpuOne : series.cpuMany).push(pg);
      }
    }
    progress(
      `   rep ${rep + 1}: 1 client mirror ${fmt(warm.mirror.one.at(-1))} / static ${fmt(warm.static.one.at(-1))} MB/s; ` +
        `${WARM_CLIENTS} clients mirror ${fmt(warm.mirror.many.at(-1))} / static ${fmt(warm.static.many.at(-1))} MB/s`,
    );
  }
  row('warm GET, 1 client (MB/s)', 'MB/s', median(warm.mirror.one), median(warm.static.one), 'static file server');
  row(`warm GET, ${WARM_CLIENTS} clients aggregate (MB/s)`, 'MB/s', median(warm.mirror.many), median(warm.static.many), 'static file server');
  const cpuRow = (label: string, m: CpuSpent[], b: CpuSpent[]): void => {
    if (m.length > 0 && b.length > 0) row(label, 's/GB', median(m.map(cpuTotal)), median(b.map(cpuTotal)), `static file server; ${cpuSplit(b)}`, 2, cpuSplit(m));
  };
  cpuRow('server CPU per GB served, warm 1 client (s/GB)', warm.mirror.cpuOne, warm.static.cpuOne);
  cpuRow(`server CPU per GB served, warm ${WARM_CLIENTS} clients (s/GB)`, warm.mirror.cpuMany, warm.static.cpuMany);
  details.warm = warm;
}

// ---------------------------------------------------------------- 3. herd
async function herdPhase(ctx: Ctx): Promise<void> {
  const { hub, mirror, clients, herdSingle, herdFile } = ctx;
  progress(`3. herd: upstream throttled to ${THROTTLE_MBPS} MB/s; 1 cold client, then ${HERD} concurrent cold clients`);
  // Event-loop delay of this process (the fake hub: its throttle ticks every ~10 ms and drops
  // credit held up > 20 ms), of the mirror and of the clients, for the single run and the herd.
  const hubLoop = monitorEventLoopDelay({ resolution: 5 });
  const fault = hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: THROTTLE_MBPS * 1e6 });
  let single: GetOutcome;
  let herd: GetOutcome[];
  let herdWallMs: number;
  let upstreamBytes: number;
  let upstreamGets: number;
  let loops: Record<'single' | 'herd', Record<'hub' | 'mirror' | 'clients', LoopDelay | null>>;
  let cpu: Record<'mirror' | 'clients' | 'hub', CpuSpent | null>;
  try {
    hubLoop.enable();
    await mirror.loopDelay(true);
    await clients.loopDelay(true);
    single = await getOne(clients, ctx.mirrorFileUrl(herdSingle.path), { expect: herdSingle.ref });
    const singleLoops = { hub: loopSummary(hubLoop), mirror: await mirror.loopDelay(true), clients: await clients.loopDelay(true) };
    hubLoop.reset();

    const cdnBytes0 = hub.bytesSent({ server: 'cdn' });
    const cdnGets0 = hub.count({ server: 'cdn', method: 'GET' });
    const [m0, c0, h0] = [await mirror.cpuUsage(), await clients.cpuUsage(), ownCpu()];
    const batch = await clients.gets({ url: ctx.mirrorFileUrl(herdFile.path), clients: HERD, expect: herdFile.ref, expectedSize: SIZE });
    const [m1, c1, h1] = [await mirror.cpuUsage(), await clients.cpuUsage(), ownCpu()];
    herd = batch.results;
    herdWallMs = batch.wallMs;
    cpu = { mirror: cpuSince(m0, m1), clients: cpuSince(c0, c1), hub: cpuSince(h0, h1) };
    upstreamBytes = hub.bytesSent({ server: 'cdn' }) - cdnBytes0;
    upstreamGets = hub.count({ server: 'cdn', method: 'GET' }) - cdnGets0;
    loops = { single: singleLoops, herd: { hub: loopSummary(hubLoop), mirror: await mirror.loopDelay(true), clients: await clients.loopDelay(true) } };
  } finally {
    fault.remove();
    hubLoop.disable();
  }
  checkGet('herd single', single, 'miss');
  const cacheCounts: Record<string, number> = {};
  herd.forEach((r, i) => {
    checkGet(`herd client ${i}`, r);
    const c = r.cache ?? 'none';
    cacheCounts[c] = (cacheCounts[c] ?? 0) + 1;
  });
  if ((cacheCounts.miss ?? 0) !== 1) console.error(`  note: herd cache statuses ${JSON.stringify(cacheCounts)} (expected 1 miss, the rest joined)`);
  await verifySha('herd single', clients, ctx.mirrorFileUrl(herdSingle.path), herdSingle, 'hit');
  await verifySha('herd', clients, ctx.mirrorFileUrl(herdFile.path), herdFile, 'hit');

  const singleMs = single.endMs - single.startMs;
  const herdMs = herd.map((r) => r.endMs);
  const lastMs = Math.max(...herdMs);
  const upstreamRatio = upstreamBytes / SIZE;
  row(`herd of ${HERD}: last client time (s)`, 's', lastMs / 1000, singleMs / 1000, '1 cold client alone', 2);
  row(`herd of ${HERD}: upstream body bytes ÷ file size`, '×', upstreamRatio, 1, 'ideal', 2, `${upstreamGets} upstream CDN GET(s)`);
  const mirrorPerGB = cpuPerGB(cpu.mirror, SIZE * HERD);
  if (mirrorPerGB) row(`mirror CPU per GB served, herd of ${HERD} (s/GB)`, 's/GB', cpuTotal(mirrorPerGB), null, '—', 2, cpuSplit([mirrorPerGB]));
  const cpuSum = [cpu.mirror, cpu.clients, cpu.hub].reduce((sum, c) => sum + (c ? cpuTotal(c) : 0), 0);
  const utilization = cpuSum / ((herdWallMs / 1000) * CORES);
  details.herd = {
    throttleMBps: THROTTLE_MBPS,
    singleSeconds: singleMs / 1000,
    singleIdealSeconds: SIZE / (THROTTLE_MBPS * 1e6),
    clientSeconds: herdMs.map((ms) => ms / 1000),
    firstClientSeconds: Math.min(...herdMs) / 1000,
    lastClientSeconds: lastMs / 1000,
    lastOverSingle: lastMs / singleMs,
    upstreamBytes,
    upstreamBytesPerFileSize: upstreamRatio,
    upstreamCdnGets: upstreamGets,
    cacheStatuses: cacheCounts,
    mirrorCpuSecondsPerGBServed: mirrorPerGB,
    cpuSeconds: cpu,
    machineUtilization: utilization,
    eventLoopDelay: loops,
  };
  const fmtCpu = (c: CpuSpent | null): string => (c ? fmt(cpuTotal(c), 1) : 'n/a');
  progress(
    `   single ${fmt(singleMs / 1000, 2)} s (ideal ${fmt(SIZE / (THROTTLE_MBPS * 1e6), 2)} s); herd first ${fmt(Math.min(...herdMs) / 1000, 2)} s, ` +
      `last ${fmt(lastMs / 1000, 2)} s; upstream ${fmt(upstreamRatio, 2)} × size in ${upstreamGets} GET(s); cache ${JSON.stringify(cacheCounts)}\n` +
      `   herd CPU s: mirror ${fmtCpu(cpu.mirror)}, clients ${fmtCpu(cpu.clients)}, hub ${fmtCpu(cpu.hub)} in ${fmt(herdWallMs / 1000, 1)} s ` +
      `(${fmt(100 * utilization, 0)}% of ${CORES} cores)\n` +
      `   event-loop delay single: hub ${fmtLoop(loops.single.hub)}, mirror ${fmtLoop(loops.single.mirror)}, clients ${fmtLoop(loops.single.clients)}; ` +
      `herd: hub ${fmtLoop(loops.herd.hub)}, mirror ${fmtLoop(loops.herd.mirror)}, clients ${fmtLoop(loops.herd.clients)}`,
  );
}

// ---------------------------------------------------------------- 4. HEAD
interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  reqPerSec: number;
}
function summarize(rs: HeadOutcome[], wallMs: number): LatencySummary {
  const lat = rs.map((r) => r.ms);
  return { p50: percentile(lat, 50), p90: percentile(lat, 90), p99: percentile(lat, 99), max: Math.max(...lat), reqPerSec: rs.length / (wallMs / 1000) };
}
const medianOf = (xs: LatencySummary[], k: keyof LatencySummary): number => median(xs.map((x) => x[k]));

/** The small files of the HEAD repo: REPEATS × COLD_HEADS for the concurrent runs, then REPEATS × SEQ_COLD_HEADS. */
const headPath = (i: number): string => `h/${String(i).padStart(5, '0')}.bin`;
const HEAD_FILES = REPEATS * (COLD_HEADS + SEQ_COLD_HEADS);

async function headPhase(ctx: Ctx): Promise<void> {
  const { hub, mirror, clients, coldFiles, headSha, headsCommit } = ctx;
  progress(`4. HEAD latency: warm (branch URL, index) ${HEAD_REQUESTS} × at concurrency ${HEAD_CONCURRENCY}; cold (commit URL, needs upstream)`);
  const checkHeads = (what: string, rs: HeadOutcome[], check: (r: HeadOutcome, i: number) => string | null): void => {
    let bad = 0;
    rs.forEach((r, i) => {
      const problem = check(r, i);
      if (problem && bad++ < 3) fail(`${what} #${i}: ${problem}`);
    });
    if (bad > 3) fail(`${what}: ${bad} bad answers in all`);
  };
  const expectEtag = `"${coldFiles[0]!.sha256}"`;
  const warmMirrorCheck = (r: HeadOutcome): string | null =>
    r.status !== 200 ? `status ${r.status}` : r.etag !== expectEtag ? `etag ${String(r.etag)}` : r.contentLength !== String(SIZE) ? `content-length ${String(r.contentLength)}` : null;
  const heads = (url: string, total: number, concurrency = HEAD_CONCURRENCY) => clients.heads({ urls: [url], total, concurrency });

  // Warm: the branch URL of a cached file; the index answers while the refs TTL (60 s) holds.
  // Warm-up first: code paths, connections, and the branch → commit answer.
  await heads(ctx.warmMirrorUrl, Math.min(200, HEAD_REQUESTS));
  await heads(ctx.warmStaticUrl, Math.min(200, HEAD_REQUESTS));
  const warmRuns = { mirror: [] as LatencySummary[], static: [] as LatencySummary[] };
  const hubHeads0 = hub.count({ server: 'hub', method: 'HEAD' });
  for (let rep = 0; rep < REPEATS; rep++) {
    for (const name of rep % 2 === 0 ? (['mirror', 'static'] as const) : (['static', 'mirror'] as const)) {
      const b = await heads(name === 'mirror' ? ctx.warmMirrorUrl : ctx.warmStaticUrl, HEAD_REQUESTS);
      checkHeads(`${name} warm HEAD`, b.results, name === 'mirror' ? warmMirrorCheck : (r) => (r.status === 200 ? null : `status ${r.status}`));
      warmRuns[name].push(summarize(b.results, b.wallMs));
    }
  }
  const warmHeadUpstream = hub.count({ server: 'hub', method: 'HEAD' }) - hubHeads0;
  const wm = warmRuns.mirror;
  const ws = warmRuns.static;
  row(`HEAD warm p50 (ms), c=${HEAD_CONCURRENCY}`, 'ms', medianOf(wm, 'p50'), medianOf(ws, 'p50'), 'static file server', 2);
  row(`HEAD warm p99 (ms), c=${HEAD_CONCURRENCY}`, 'ms', medianOf(wm, 'p99'), medianOf(ws, 'p99'), 'static file server', 2);
  row(`HEAD warm throughput (req/s), c=${HEAD_CONCURRENCY}`, 'req/s', medianOf(wm, 'reqPerSec'), medianOf(ws, 'reqPerSec'), 'static file server', 0);

  // Cold: files whose metadata the mirror never saw, URLs pinned to the commit (one upstream HEAD
  // each), fresh files every repeat. Baseline: the same HEADs straight to the hub (it answers 302).
  const mirrorHeadUrl = (i: number): string => `${mirror.url}/${HEADS_REPO}/resolve/${headsCommit}/${headPath(i)}`;
  const hubHeadUrl = (i: number): string => `${hub.url}/${HEADS_REPO}/resolve/${headsCommit}/${headPath(i)}`;
  const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, k) => from + k);
  const coldCheck = (base: number) => (r: HeadOutcome, i: number): string | null =>
    r.status !== 200 ? `status ${r.status}` : r.etag !== `"${headSha[base + i]}"` ? `etag ${String(r.etag)}` : null;
  const hubCheck = (r: HeadOutcome): string | null => (r.status === 302 ? null : `status ${r.status}`);
  const cold = { mirrorSeq: [] as LatencySummary[], hubSeq: [] as LatencySummary[], mirror: [] as LatencySummary[], hub: [] as LatencySummary[] };
  let coldHeadUpstream = 0;
  for (let rep = 0; rep < REPEATS; rep++) {
    const seqBase = REPEATS * COLD_HEADS + rep * SEQ_COLD_HEADS;
    const conBase = rep * COLD_HEADS;
    const run = async (urls: string[], concurrency: number) => clients.heads({ urls, total: urls.length, concurrency });
    const hubSeq = await run(range(seqBase, SEQ_COLD_HEADS).map(hubHeadUrl), 1);
    checkHeads('hub cold HEAD (one at a time)', hubSeq.results, hubCheck);
    const mirSeq = await run(range(seqBase, SEQ_COLD_HEADS).map(mirrorHeadUrl), 1);
    checkHeads('mirror cold HEAD (one at a time)', mirSeq.results, coldCheck(seqBase));
    const hubCon = await run(range(conBase, COLD_HEADS).map(hubHeadUrl), HEAD_CONCURRENCY);
    checkHeads('hub cold HEAD', hubCon.results, hubCheck);
    const before = hub.count({ server: 'hub', method: 'HEAD' });
    const mirCon = await run(range(conBase, COLD_HEADS).map(mirrorHeadUrl), HEAD_CONCURRENCY);
    coldHeadUpstream += hub.count({ server: 'hub', method: 'HEAD' }) - before;
    checkHeads('mirror cold HEAD', mirCon.results, coldCheck(conBase));
    cold.hubSeq.push(summarize(hubSeq.results, hubSeq.wallMs));
    cold.mirrorSeq.push(summarize(mirSeq.results, mirSeq.wallMs));
    cold.hub.push(summarize(hubCon.results, hubCon.wallMs));
    cold.mirror.push(summarize(mirCon.results, mirCon.wallMs));
  }
  row('HEAD cold, one at a time, p50 (ms)', 'ms', medianOf(cold.mirrorSeq, 'p50'), medianOf(cold.hubSeq, 'p50'), 'direct HEAD on the hub', 2);
  row(`HEAD cold p50 (ms), c=${HEAD_CONCURRENCY}`, 'ms', medianOf(cold.mirror, 'p50'), medianOf(cold.hub, 'p50'), 'direct HEAD on the hub', 2);
  row(`HEAD cold p99 (ms), c=${HEAD_CONCURRENCY}`, 'ms', medianOf(cold.mirror, 'p99'), medianOf(cold.hub, 'p99'), 'direct HEAD on the hub', 2);
  details.head = {
    warm: { requestsPerRun: HEAD_REQUESTS, concurrency: HEAD_CONCURRENCY, mirror: wm, static: ws, upstreamHeadsDuringMirrorRuns: warmHeadUpstream },
    cold: { filesPerRun: COLD_HEADS, sequentialFilesPerRun: SEQ_COLD_HEADS, ...cold, upstreamHeadsForMirrorRuns: coldHeadUpstream },
  };
  progress(
    `   warm mirror p50 ${fmt(medianOf(wm, 'p50'), 2)} ms p99 ${fmt(medianOf(wm, 'p99'), 2)} ms (${warmHeadUpstream} upstream HEADs); ` +
      `cold p50 ${fmt(medianOf(cold.mirror, 'p50'), 2)} ms (${coldHeadUpstream} upstream HEADs for ${REPEATS * COLD_HEADS} files)`,
  );
}

// ------------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const cpus = os.cpus();
  const headerLines = [
    `# hubcache benchmark — ${new Date().toISOString()}`,
    '',
    `- machine: ${CORES} × ${cpus[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.platform()} ${os.release()}, node ${process.version}`,
    `- file size ${SIZE_MIB} MiB (${SIZE} bytes); herd ${HERD}; upstream throttle for the herd ${THROTTLE_MBPS} MB/s; warm clients 1 and ${WARM_CLIENTS}; ` +
      `${REPEATS} repeats (median); HEAD ${HEAD_REQUESTS} requests at concurrency ${HEAD_CONCURRENCY}; phases ${[...PHASES].join(',')}`,
    INPROC
      ? '- topology (BENCH_INPROC=1): fake hub + CDN, clients, mirror and static server all in ONE process: every figure is one event loop shared by client, server and upstream.'
      : `- topology: 4 processes on ${CORES} cores, all sharing them: fake hub + CDN (bench process), clients (undici GET / node:http HEAD, keep-alive), ` +
        'the mirror, the static baseline server (each forked the same way with the same tsx loader).',
    '- MB = 10^6 bytes. Timed bodies are counted and compared byte-for-byte with the source as they arrive (memcmp: equal bytes ⇒ equal sha256); ' +
      'sha256 itself is checked by a separate, untimed GET of every file.',
    '- mirror logLevel=warn, other settings default; static baseline = node:http + fs.createReadStream piped with Content-Length (like serve-static), ' +
      'its file in the same temp dir (same disk) as the mirror data dir.',
    '- A benchmark: nothing here asserts timings; exit status 1 means a correctness failure.',
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
  let clients: Clients | undefined;
  try {
    progress('generating content and starting processes');
    hub = await startFakeHub();
    const buffers = new Map<number, Buffer>();
    const bigFile = (p: string, seed: number): BigFile => {
      const buf = makeContent(SIZE, seed);
      buffers.set(seed, buf);
      return { path: p, ref: { seed, size: SIZE }, sha256: sha256Hex(buf) };
    };
    const coldFiles = Array.from({ length: REPEATS }, (_, i) => bigFile(`cold-${i}.bin`, 100 + i));
    const herdSingle = bigFile('herd-single.bin', 200);
    const herdFile = bigFile('herd.bin', 201);
    const files: Record<string, Buffer> = {};
    for (const f of [...coldFiles, herdSingle, herdFile]) files[f.path] = buffers.get(f.ref.seed)!;
    hub.addRepo({ id: REPO, files });

    const smallBase = makeContent(4096, 300);
    const headFiles: Record<string, Buffer> = {};
    const headSha: string[] = [];
    for (let i = 0; i < HEAD_FILES; i++) {
      const buf = Buffer.concat([Buffer.from(`head file ${i}\n`), smallBase]);
      headFiles[headPath(i)] = buf;
      headSha.push(sha256Hex(buf));
    }
    const { commit: headsCommit } = hub.addRepo({ id: HEADS_REPO, files: headFiles });

    // The static server's copy of cold-0.bin, fsynced so it is clean in the page cache like the mirror's blob.
    const fd = fs.openSync(path.join(staticRoot, 'cold-0.bin'), 'w');
    fs.writeSync(fd, buffers.get(coldFiles[0]!.ref.seed)!);
    fs.fsyncSync(fd);
    fs.closeSync(fd);

    mirror = await startMirrorServer(INPROC, hub.url, mirrorDataDir);
    baseline = await startBaselineServer(INPROC, staticRoot);
    clients = INPROC ? localClients((ref) => buffers.get(ref.seed) ?? makeContent(ref.size, ref.seed), HEAD_CONCURRENCY) : await childClients(HEAD_CONCURRENCY);
    const mirrorUrl = mirror.url;
    const hubUrl = hub.url;
    const ctx: Ctx = {
      hub,
      mirror,
      baseline,
      clients,
      coldFiles,
      herdSingle,
      herdFile,
      headSha,
      headsCommit,
      mirrorFileUrl: (p) => `${mirrorUrl}/${REPO}/resolve/main/${p}`,
      hubFileUrl: (p) => `${hubUrl}/${REPO}/resolve/main/${p}`,
      warmMirrorUrl: `${mirrorUrl}/${REPO}/resolve/main/${coldFiles[0]!.path}`,
      warmStaticUrl: `${baseline.url}/${coldFiles[0]!.path}`,
    };
    progress(`hub ${hub.url}, cdn ${hub.cdnUrl}, mirror ${mirror.url}, static ${baseline.url}`);

    if (PHASES.has('cold')) await coldPhase(ctx);
    if (PHASES.has('warm')) await warmPhase(ctx);
    if (PHASES.has('herd')) await herdPhase(ctx);
    if (PHASES.has('head')) await headPhase(ctx);
  } finally {
    progress('cleaning up');
    await Promise.allSettled([clients?.close(), mirror?.close(), baseline?.close()]);
    await hub?.stop();
    fs.rmSync(benchDir, { recursive: true, force: true });
  }

  // ---------------------------------------------------------------- report
  const lines = ['| measure | mirror | baseline | ratio |', '|---|---:|---:|---:|'];
  for (const r of rows) {
    const base = r.baseline === null ? '—' : `${fmt(r.baseline, r.digits)} (${r.baselineName})`;
    const note = r.note ? ` (${r.note})` : '';
    lines.push(`| ${r.measure} | ${fmt(r.mirror, r.digits)}${note} | ${base} | ${r.ratio === null ? '—' : fmt(r.ratio, 2)} |`);
  }
  console.log(lines.join('\n'));
  console.log('');
  console.log('ratio = mirror ÷ baseline (throughput: higher is better; times, latencies and CPU: lower is better).');
  console.log(`correctness: ${failures.length === 0 ? 'all statuses, lengths, bytes and sha256 digests OK' : `${failures.length} FAILURE(S)`}`);
  for (const f of failures) console.log(`  - ${f}`);

  const json = {
    date: new Date().toISOString(),
    machine: { cpus: CORES, model: cpus[0]?.model, totalMemGiB: os.totalmem() / 2 ** 30, node: process.version, platform: `${os.platform()} ${os.release()}` },
    settings: {
      sizeMiB: SIZE_MIB,
      sizeBytes: SIZE,
      herd: HERD,
      throttleMBps: THROTTLE_MBPS,
      headRequests: HEAD_REQUESTS,
      headConcurrency: HEAD_CONCURRENCY,
      warmClients: WARM_CLIENTS,
      repeats: REPEATS,
      coldHeads: COLD_HEADS,
      inproc: INPROC,
      phases: [...PHASES],
    },
    rows: rows.map(({ digits: _digits, ...r }) => r),
    details,
    failures,
    durationSeconds: (performance.now() - T0) / 1000,
  };
  fs.mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  fs.writeFileSync(RESULTS_FILE, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), RESULTS_FILE)} (run took ${fmt(json.durationSeconds, 0)} s)`);
}

main().then(
  () => process.exit(failures.length > 0 ? 1 : 0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
