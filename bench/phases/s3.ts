/**
 * `storage: s3` against `storage: fs`: one fake hub, two mirrors side by side (same config but the
 * storage), the s3 one on a throwaway OpenStack Swift with s3api (scripts/swift-s3.sh through
 * test/support/swift-s3.ts, a bucket of its own). Rounds alternate which mirror goes first.
 *
 * - cold: a fresh file per round through each mirror (a miss: one fill; with s3 the last byte
 *   waits until the object store holds the verified object). After the s3 GET a HEAD of the
 *   object is polled until it answers: how long after the client's last byte the blob was in the
 *   bucket.
 * - warm, local copy present: the same cached file through each mirror.
 * - warm, local copy dropped: before each s3 GET the blob's local copy is evicted with the admin
 *   API (`POST /admin/evict`; the object and the index rows stay), so the GET is answered from the
 *   bucket (a ranged GET of the object) while the mirror copies it back into its local cache in the
 *   background; the run then waits (untimed) until a dry-run eviction lists the local copy again.
 *   Reference: the fs mirror's warm GET.
 */
import { HeadObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../src/config/config.js';
import { startSwiftS3, type SwiftS3 } from '../../test/support/swift-s3.js';
import { sleep, type BenchContext, type BenchFile, type HubWorld, type World } from '../lib/context.js';
import type { GetOutcome } from '../lib/http-get.js';
import type { JanitorStep } from '../lib/janitor.js';
import { cpuSecondsOf } from '../lib/proc.js';
import { fmt, fmtSize, mbps, median } from '../lib/stats.js';
import { elapsed } from './cold.js';

const PREFIX = 'bench/';
const ADMIN_TOKEN = 'bench-s3-admin-token-0123456789';
/** Longest wait for the object to show in the bucket, or for the local copy to come back. */
const WAIT_MS = 120_000;
/** Least duration of one warm run with the local copy present (GETs back to back). */
const LOCAL_RUN_MS = 2000;

type Target = 's3' | 'fs';

interface Stores {
  w: { s3: World; fs: World };
  swift: SwiftS3;
  s3: S3Client;
  bucket: string;
}

const epochNow = (): number => performance.timeOrigin + performance.now();
const objectKey = (f: BenchFile): string => `${PREFIX}blobs-v1/sha256/${f.sha256}`;

export async function s3Phase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  ctx.progress(`s3: storage s3 (OpenStack Swift s3api on 127.0.0.1) vs storage fs, 1 client; ${fmtSize(s.s3Size)}; ${s.rounds} rounds`);
  const t0 = performance.now();
  const swift = await startSwiftS3({ reuse: false });
  // The janitor kills the daemons and the watchdog and removes the store's directory if the bench
  // dies first (steps run newest first: the directory goes last). The script's own watchdog would
  // stop it too, within a second of this process being gone.
  const backstop: JanitorStep[] = [...(swift.dir ? [{ kind: 'rm' as const, path: swift.dir }] : []), ...swift.pids().map((pid) => ({ kind: 'kill' as const, pid }))];
  const stopSwift = ctx.cleanup.push('swift s3api store', () => swift.stop(), backstop);
  const swiftStartSeconds = (performance.now() - t0) / 1000;
  ctx.progress(`   swift started in ${fmt(swiftStartSeconds, 1)} s (${swift.endpoint})`);
  try {
    const bucket = await swift.bucket('hubcache-bench');
    const s3 = swift.client({ maxAttempts: 3 });
    try {
      await ctx.hubWorld('s3', async (h) => {
        const fsDir = path.join(ctx.tmp, 's3-fs-data');
        const s3Dir = path.join(ctx.tmp, 's3-s3-data');
        const removeData = ctx.cleanup.push('data dirs (s3)', () => {
          for (const d of [fsDir, s3Dir]) fs.rmSync(d, { recursive: true, force: true });
        });
        try {
          // The same settings for both but the storage: the admin API (eviction) and no grace
          // period, so a blob read a moment ago can be evicted.
          const common: Partial<Config> = { adminToken: ADMIN_TOKEN, evictionGraceSeconds: 0 };
          const s3Config: Partial<Config> = {
            ...common,
            storage: 's3',
            s3Endpoint: swift.endpoint,
            s3Bucket: bucket,
            s3Region: swift.region,
            s3Prefix: PREFIX,
            s3ForcePathStyle: true,
            s3AccessKeyId: swift.accessKeyId,
            s3SecretAccessKey: swift.secretAccessKey,
          };
          await ctx.withMirror(
            h,
            's3-fs',
            fsDir,
            (fsW) => ctx.withMirror(h, 's3-s3', s3Dir, (s3W) => measure(ctx, h, { w: { s3: s3W, fs: fsW }, swift, s3, bucket }, swiftStartSeconds), s3Config),
            { ...common, storage: 'fs' },
          );
        } finally {
          await removeData();
        }
      });
    } finally {
      s3.destroy();
    }
  } finally {
    await stopSwift();
  }
}

async function measure(ctx: BenchContext, h: HubWorld, st: Stores, swiftStartSeconds: number): Promise<void> {
  const { s } = ctx;
  const size = s.s3Size;
  const swiftCpu = (): number => {
    const c = cpuSecondsOf(st.swift.pids());
    return c ? c.user + c.system : NaN;
  };
  const mirrorCpu = (t: Target): number => {
    const c = st.w[t].mirror.cpu();
    return c ? c.user + c.system : NaN;
  };
  const order = (r: number): Target[] => (r % 2 === 0 ? ['s3', 'fs'] : ['fs', 's3']);

  // Warm-up (not measured): code paths, connections to the hub and to the store.
  const warmup = h.addFiles('s3-warmup', 1, 16 << 20)[0]!;
  for (const t of ['s3', 'fs'] as const) {
    const o = (await ctx.clients.gets([{ url: st.w[t].mirrorUrl(warmup), expect: warmup.ref }])).outcomes[0]!;
    ctx.checkGet(`${t} warm-up ${warmup.path}`, o, { size: warmup.size, cache: 'miss' });
  }

  // ---- cold
  const cold = {
    s3: [] as number[],
    fs: [] as number[],
    ttfbMs: { s3: [] as number[], fs: [] as number[] },
    lastByteWaitMs: { s3: [] as number[], fs: [] as number[] },
    upstreamRatio: { s3: [] as number[], fs: [] as number[] },
    mirrorCpuSecondsPerGB: { s3: [] as number[], fs: [] as number[] },
    swiftCpuSecondsPerGB: [] as number[],
    /** ms from the client's last byte until a HEAD of the object answered 200. */
    inBucketAfterMs: [] as number[],
    /** HEADs it took (1: the object was there at the first look). */
    heads: [] as number[],
  };
  await ctx.profiled(st.w.s3.mirror, `s3-cold-${size >> 20}MiB`, async () => {
    for (let r = 0; r < s.rounds; r++) {
      const f = h.addFiles(`s3-cold-r${r}`, 1, size)[0]!;
      for (const t of order(r)) {
        const w = st.w[t];
        const up0 = h.upstream(f).bytes;
        const c0 = mirrorCpu(t);
        const sw0 = swiftCpu();
        const o = (await ctx.clients.gets([{ url: w.mirrorUrl(f), expect: f.ref }])).outcomes[0]!;
        if (t === 's3') {
          const seen = await untilInBucket(st, f, o);
          if (seen) {
            cold.inBucketAfterMs.push(seen.afterMs);
            cold.heads.push(seen.heads);
          } else ctx.fail(`s3 cold ${f.path}: the object ${objectKey(f)} was not in the bucket ${WAIT_MS / 1000} s after the last byte`);
          cold.swiftCpuSecondsPerGB.push((swiftCpu() - sw0) / (size / 1e9));
        }
        cold.mirrorCpuSecondsPerGB[t].push((mirrorCpu(t) - c0) / (size / 1e9));
        ctx.checkGet(`${t} cold ${f.path}`, o, { size, cache: 'miss' });
        cold[t].push(mbps(o.bytes, elapsed(o)));
        cold.ttfbMs[t].push(o.headersMs - o.startMs);
        cold.lastByteWaitMs[t].push(o.endMs - o.allButLastMs);
        cold.upstreamRatio[t].push((h.upstream(f).bytes - up0) / size);
      }
      for (const t of ['s3', 'fs'] as const) await ctx.verifySha(`${t} mirror ${f.path}`, st.w[t].mirrorUrl(f), f, 'hit');
    }
  });
  const coldLabel = `cold GET ${fmtSize(size)}, 1 client`;
  ctx.report.add({
    phase: 's3',
    label: coldLabel,
    unit: 'MB/s',
    better: 'higher',
    mirror: cold.s3,
    reference: cold.fs,
    referenceName: 'storage: fs',
    goals: [],
    info: true,
    digits: 0,
    note:
      `"mirror" = storage: s3. Wait for the last byte s3 ${fmt(median(cold.lastByteWaitMs.s3), 0)} ms, fs ${fmt(median(cold.lastByteWaitMs.fs), 0)} ms ` +
      `(held until the blob is committed: with s3, uploaded); object in the bucket ${fmt(median(cold.inBucketAfterMs), 0)} ms after the last byte ` +
      `(HEADs needed: ${cold.heads.join('/')}); ttfb s3 ${fmt(median(cold.ttfbMs.s3), 1)} ms, fs ${fmt(median(cold.ttfbMs.fs), 1)} ms; ` +
      `upstream s3 ${fmt(median(cold.upstreamRatio.s3), 3)}×, fs ${fmt(median(cold.upstreamRatio.fs), 3)}× the file (ratio ${fmt(median(cold.upstreamRatio.s3) / median(cold.upstreamRatio.fs), 3)}); ` +
      `CPU s/GB mirror s3 ${fmt(median(cold.mirrorCpuSecondsPerGB.s3), 2)}, fs ${fmt(median(cold.mirrorCpuSecondsPerGB.fs), 2)}, Swift ${fmt(median(cold.swiftCpuSecondsPerGB), 2)}`,
  });
  ctx.progress(`   ${coldLabel}: s3 ${cold.s3.map((x) => fmt(x, 0)).join('/')} MB/s, fs ${cold.fs.map((x) => fmt(x, 0)).join('/')}`);

  // ---- warm: one file cached by both mirrors
  const f = h.addFiles('s3-warm', 1, size)[0]!;
  for (const t of ['s3', 'fs'] as const) {
    const o = (await ctx.clients.gets([{ url: st.w[t].mirrorUrl(f), expect: f.ref }])).outcomes[0]!;
    ctx.checkGet(`${t} warm fill ${f.path}`, o, { size, cache: 'miss' });
    await ctx.verifySha(`${t} mirror ${f.path}`, st.w[t].mirrorUrl(f), f, 'hit');
  }
  if (!(await untilInBucket(st, f, null))) ctx.fail(`s3 warm fill ${f.path}: no object ${objectKey(f)} in the bucket`);
  for (const t of ['s3', 'fs'] as const) await ctx.clients.gets([{ url: st.w[t].mirrorUrl(f), expect: f.ref }]); // warm-up

  const oneGet = async (t: Target, what: string): Promise<{ mbps: number; cpuPerGB: number; o: GetOutcome }> => {
    const c0 = mirrorCpu(t);
    const o = (await ctx.clients.gets([{ url: st.w[t].mirrorUrl(f), expect: f.ref }])).outcomes[0]!;
    ctx.checkGet(`${t} ${what} ${f.path}`, o, { size, cache: 'hit' });
    return { mbps: mbps(o.bytes, elapsed(o)), cpuPerGB: (mirrorCpu(t) - c0) / (size / 1e9), o };
  };

  // A run: back-to-back GETs for at least LOCAL_RUN_MS (one GET of a cached file is a fraction
  // of a second: alone, the load of the machine decides the ratio).
  const local = { s3: [] as number[], fs: [] as number[], getsPerRun: { s3: [] as number[], fs: [] as number[] }, cpuPerGB: { s3: [] as number[], fs: [] as number[] } };
  await ctx.profiled(st.w.s3.mirror, `s3-warm-local-${size >> 20}MiB`, async () => {
    for (let r = 0; r < s.rounds; r++) {
      for (const t of order(r)) {
        const c0 = mirrorCpu(t);
        const start = performance.now();
        let gets = 0;
        do {
          await oneGet(t, 'warm (local copy)');
          gets++;
        } while (performance.now() - start < LOCAL_RUN_MS);
        const ms = performance.now() - start;
        local[t].push(mbps(gets * size, ms));
        local.getsPerRun[t].push(gets);
        local.cpuPerGB[t].push((mirrorCpu(t) - c0) / ((gets * size) / 1e9));
      }
    }
  });
  const localLabel = `warm GET ${fmtSize(size)}, local copy present, 1 client`;
  ctx.report.add({
    phase: 's3',
    label: localLabel,
    unit: 'MB/s',
    better: 'higher',
    mirror: local.s3,
    reference: local.fs,
    referenceName: 'storage: fs',
    goals: [{ on: 'ratio', op: '>=', value: 0.9 }],
    digits: 0,
    note:
      `"mirror" = storage: s3, served from its local copy; a run is back-to-back GETs for ${LOCAL_RUN_MS / 1000} s (${local.getsPerRun.s3.join('/')} and ${local.getsPerRun.fs.join('/')} GETs); ` +
      `CPU s/GB mirror s3 ${fmt(median(local.cpuPerGB.s3), 2)}, fs ${fmt(median(local.cpuPerGB.fs), 2)}`,
  });
  ctx.progress(`   ${localLabel}: s3 ${local.s3.map((x) => fmt(x, 0)).join('/')} MB/s, fs ${local.fs.map((x) => fmt(x, 0)).join('/')}`);

  // ---- warm: the s3 mirror's local copy dropped before each of its GETs
  const bucketRead = {
    s3: [] as number[],
    fs: [] as number[],
    ttfbMs: [] as number[],
    cpuPerGB: { s3: [] as number[], fs: [] as number[] },
    swiftCpuSecondsPerGB: [] as number[],
    /** s from the client's last byte until the local copy was back (the background copy). */
    localBackAfterS: [] as number[],
    upstreamGets: 0,
  };
  const dropLocal = async (what: string): Promise<boolean> => {
    const report = await evict(st.w.s3, f, false);
    const mine = report.blobs.find((b) => b.blob === `sha256:${f.sha256}`);
    if (mine?.outcome !== 'evicted') {
      ctx.fail(`${what}: POST /admin/evict did not evict the local copy of ${f.path}: ${JSON.stringify(report)}`);
      return false;
    }
    return true;
  };
  const waitLocalBack = async (what: string, since: number): Promise<number> => {
    const deadline = performance.now() + WAIT_MS;
    while (performance.now() < deadline) {
      const report = await evict(st.w.s3, f, true);
      if (report.blobs.some((b) => b.blob === `sha256:${f.sha256}` && b.outcome === 'would-evict')) return (epochNow() - since) / 1000;
      await sleep(50);
    }
    ctx.fail(`${what}: the local copy of ${f.path} was not back ${WAIT_MS / 1000} s after the GET from the bucket`);
    return NaN;
  };
  const upGets0 = h.upstream(f).gets;
  await ctx.profiled(st.w.s3.mirror, `s3-warm-bucket-${size >> 20}MiB`, async () => {
    for (let r = 0; r < s.rounds; r++) {
      for (const t of order(r)) {
        if (t === 'fs') {
          const g = await oneGet('fs', 'warm (reference for the bucket read)');
          bucketRead.fs.push(g.mbps);
          bucketRead.cpuPerGB.fs.push(g.cpuPerGB);
          continue;
        }
        const what = `s3 warm from the bucket, round ${r + 1}`;
        if (!(await dropLocal(what))) {
          bucketRead.s3.push(NaN);
          continue;
        }
        const sw0 = swiftCpu();
        const g = await oneGet('s3', 'warm (from the bucket)');
        bucketRead.s3.push(g.mbps);
        bucketRead.ttfbMs.push(g.o.headersMs - g.o.startMs);
        bucketRead.cpuPerGB.s3.push(g.cpuPerGB);
        // Untimed: until the background copy back into the local cache has landed (it reads the
        // object once more from Swift while the client's GET runs), so it does not overlap the
        // next run.
        bucketRead.localBackAfterS.push(await waitLocalBack(what, g.o.endMs));
        bucketRead.swiftCpuSecondsPerGB.push((swiftCpu() - sw0) / (size / 1e9));
      }
    }
  });
  // The sha256 pass of a body from the bucket (untimed).
  if (await dropLocal('s3 sha256 pass from the bucket')) {
    await ctx.verifySha(`s3 mirror from the bucket ${f.path}`, st.w.s3.mirrorUrl(f), f, 'hit');
    await waitLocalBack('s3 sha256 pass from the bucket', epochNow());
  }
  bucketRead.upstreamGets = h.upstream(f).gets - upGets0;
  const bucketLabel = `warm GET ${fmtSize(size)}, local copy dropped (read from the bucket), 1 client`;
  ctx.report.add({
    phase: 's3',
    label: bucketLabel,
    unit: 'MB/s',
    better: 'higher',
    mirror: bucketRead.s3,
    reference: bucketRead.fs,
    referenceName: 'storage: fs (local file)',
    goals: [],
    info: true,
    digits: 0,
    note:
      `"mirror" = storage: s3 after POST /admin/evict (local copy dropped, object kept): a ranged GET of the object, while the mirror copies it back in the background ` +
      `(local copy back ${fmt(median(bucketRead.localBackAfterS), 1)} s after the last byte); ttfb ${fmt(median(bucketRead.ttfbMs), 1)} ms; ` +
      `CPU s/GB mirror s3 ${fmt(median(bucketRead.cpuPerGB.s3), 2)}, fs ${fmt(median(bucketRead.cpuPerGB.fs), 2)}, Swift ${fmt(median(bucketRead.swiftCpuSecondsPerGB), 2)} (both reads of the object); ` +
      `upstream GETs ${bucketRead.upstreamGets}`,
  });
  ctx.progress(`   ${bucketLabel}: s3 ${bucketRead.s3.map((x) => fmt(x, 0)).join('/')} MB/s, fs ${bucketRead.fs.map((x) => fmt(x, 0)).join('/')}`);
  if (bucketRead.upstreamGets > 0) console.error(`  note: s3: the reads from the bucket made ${bucketRead.upstreamGets} upstream GET(s) of ${f.path}`);

  ctx.details.s3 = { swiftStartSeconds, endpoint: st.swift.endpoint, bucket: st.bucket, prefix: PREFIX, size, [coldLabel]: cold, [localLabel]: local, [bucketLabel]: bucketRead };
}

/**
 * Polls a HEAD of the blob's object until it answers 200 (at most WAIT_MS): how long after the
 * client's last byte (`o.endMs`, epoch ms) that was, and how many HEADs it took; null if never.
 */
async function untilInBucket(st: Stores, f: BenchFile, o: GetOutcome | null): Promise<{ afterMs: number; heads: number } | null> {
  const deadline = performance.now() + WAIT_MS;
  for (let heads = 1; performance.now() < deadline; heads++) {
    try {
      await st.s3.send(new HeadObjectCommand({ Bucket: st.bucket, Key: objectKey(f) }), { abortSignal: AbortSignal.timeout(10_000) });
      return { afterMs: o ? Math.max(0, epochNow() - o.endMs) : 0, heads };
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) throw err;
    }
    await sleep(10);
  }
  return null;
}

interface EvictReport {
  blobs: { blob: string; outcome: string }[];
}

/** `POST /admin/evict {repo}` on the mirror (dryRun: only what would go). */
async function evict(w: World, f: BenchFile, dryRun: boolean): Promise<EvictReport> {
  const res = await fetch(`${w.mirror.url}/admin/evict`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ repo: f.repo, dryRun }),
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST /admin/evict: ${res.status} ${text}`);
  return JSON.parse(text) as EvictReport;
}
