/**
 * Cold GET, one client, upstream uncapped: each round a fresh file, fetched through the mirror
 * (a miss: one fill, streamed as it lands) and straight from the fake hub (302 followed to the
 * CDN), in alternating order; with BENCH_PROXY_CACHE, also through nginx proxy_cache (info).
 *
 * With curl installed, also a direct download stored to a file on the mirror's filesystem
 * (`curl -L -o`, info): a cache has to write every byte of a cold file once, and on some machines
 * that write, not the network, is the limit (a VM whose fresh page-cache pages fault in from the
 * host costs several CPU-seconds per GB; every run that stores gets just-freed pages first, see
 * lib/pages.ts). The mirror ÷ that ratio says how far the mirror is from the best any cache could
 * do here; the direct (discarding) download stays the goal's reference.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BenchContext, World } from '../lib/context.js';
import type { GetOutcome } from '../lib/http-get.js';
import { startNginx, type Nginx, type NginxOptions } from '../lib/nginx.js';
import { fmt, fmtSize, mbps, median } from '../lib/stats.js';
import { curlToFile } from '../lib/stored.js';
import { findTool } from '../lib/tools.js';

/** nginx proxy_cache in front of this world's hub, or null (not installed, or turned off). */
export async function maybeProxyCache(
  ctx: BenchContext,
  w: World,
  name: string,
  upstream: Pick<NginxOptions, 'proxyCacheUpstream' | 'sliceCacheUpstream' | 'sliceBytes'> = { proxyCacheUpstream: w.hub.url },
): Promise<{ nginx: Nginx; stop: () => Promise<void> } | null> {
  const bin = findTool('nginx');
  if (!ctx.s.proxyCache || !bin) return null;
  try {
    const nginx = await startNginx({ bin, dir: path.join(ctx.tmp, `nginx-proxy-${name}`), workers: ctx.s.nginxWorkers, ...upstream });
    return { nginx, stop: ctx.cleanup.push(`nginx proxy_cache (${name})`, () => nginx.stop(), { kind: 'kill', pid: nginx.pid }) };
  } catch (err) {
    console.error(`  note: nginx proxy_cache did not start, its info rows are left out: ${(err as Error).message}`);
    return null;
  }
}

export const elapsed = (o: GetOutcome): number => o.endMs - o.startMs;

export async function coldPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  ctx.progress(`cold: 1 client, fresh file per round, mirror vs direct (hub → 302 → CDN); sizes ${s.coldSizes.map(fmtSize).join(', ')}; ${s.rounds} rounds`);
  await ctx.world('cold', async (w: World) => {
    const pc = await maybeProxyCache(ctx, w, 'cold');
    const curl = findTool('curl');
    const storedDir = path.join(ctx.tmp, 'cold-stored');
    fs.mkdirSync(storedDir, { recursive: true });
    try {
      const details: Record<string, unknown> = {};
      // Warm the direct path's code and connections once (not measured).
      const warm = w.addFiles('cold-warmup', 1, 16 << 20)[0]!;
      await ctx.clients.gets([{ url: w.hubUrl(warm), followRedirects: true }]);
      await ctx.clients.gets([{ url: w.mirrorUrl(warm) }]);
      for (const size of s.coldSizes) {
        const fig = { mirror: [] as number[], direct: [] as number[], proxy: [] as number[], stored: [] as number[], ttfbMs: [] as number[], lastByteWaitMs: [] as number[], upstreamRatio: [] as number[], mirrorCpuSecondsPerGB: [] as number[] };
        await ctx.profiled(w.mirror, `cold-${size >> 20}MiB`, async () => {
          for (let r = 0; r < s.rounds; r++) {
            const f = w.addFiles(`cold-${size >> 20}-r${r}`, 1, size)[0]!;
            const runs: [string, () => Promise<void>][] = [
              [
                'mirror',
                async () => {
                  await ctx.freshPages(size);
                  const up0 = w.upstream(f).bytes;
                  const c0 = w.mirror.cpu();
                  const o = (await ctx.clients.gets([{ url: w.mirrorUrl(f), expect: f.ref }])).outcomes[0]!;
                  const c1 = w.mirror.cpu();
                  if (c0 && c1) fig.mirrorCpuSecondsPerGB.push((c1.user + c1.system - c0.user - c0.system) / (size / 1e9));
                  ctx.checkGet(`mirror cold ${f.path}`, o, { size, cache: 'miss' });
                  fig.mirror.push(mbps(o.bytes, elapsed(o)));
                  fig.ttfbMs.push(o.headersMs - o.startMs);
                  fig.lastByteWaitMs.push(o.endMs - o.allButLastMs);
                  fig.upstreamRatio.push((w.upstream(f).bytes - up0) / size);
                },
              ],
              [
                'direct',
                async () => {
                  const o = (await ctx.clients.gets([{ url: w.hubUrl(f), followRedirects: true, expect: f.ref }])).outcomes[0]!;
                  ctx.checkGet(`direct ${f.path}`, o, { size });
                  if (o.redirects !== 1) ctx.fail(`direct ${f.path}: expected one redirect to the CDN, saw ${o.redirects}`);
                  fig.direct.push(mbps(o.bytes, elapsed(o)));
                },
              ],
            ];
            if (curl) {
              runs.push([
                'direct, stored',
                async () => {
                  await ctx.freshPages(size);
                  const r = await curlToFile(ctx, curl, 'direct stored', w.hubUrl(f), path.join(storedDir, f.path.replaceAll('/', '_')), f);
                  fig.stored.push(r.bytes / 1e6 / r.seconds);
                },
              ]);
            }
            if (pc) {
              runs.push([
                'proxy_cache',
                async () => {
                  await ctx.freshPages(size);
                  const o = (await ctx.clients.gets([{ url: `${pc.nginx.proxyUrl}/${f.repo}/resolve/main/${f.path}`, expect: f.ref }])).outcomes[0]!;
                  ctx.checkGet(`nginx proxy_cache cold ${f.path}`, o, { size });
                  fig.proxy.push(mbps(o.bytes, elapsed(o)));
                },
              ]);
            }
            // Rotate the order every round.
            for (let k = 0; k < runs.length; k++) await runs[(k + r) % runs.length]![1]();
            await ctx.verifySha(`mirror ${f.path}`, w.mirrorUrl(f), f, 'hit');
          }
        });
        const label = `cold GET ${fmtSize(size)}, 1 client`;
        ctx.report.add({
          phase: 'cold',
          label,
          unit: 'MB/s',
          better: 'higher',
          mirror: fig.mirror,
          reference: fig.direct,
          referenceName: 'direct (hub → 302 → CDN)',
          goals: [{ on: 'ratio', op: '>=', value: 0.9 }],
          digits: 0,
          note:
            `mirror ttfb ${fmt(median(fig.ttfbMs), 1)} ms, wait for the last byte ${fmt(median(fig.lastByteWaitMs), 1)} ms ` +
            `(held until the fill is verified), upstream ${fmt(median(fig.upstreamRatio), 3)}× the file, ` +
            `mirror CPU ${fmt(median(fig.mirrorCpuSecondsPerGB), 2)} s per GB`,
        });
        if (curl && fig.stored.length === fig.mirror.length) {
          ctx.report.add({
            phase: 'cold',
            label: `${label}: mirror vs a direct download stored to a file`,
            unit: 'MB/s',
            better: 'higher',
            mirror: fig.mirror,
            reference: fig.stored,
            referenceName: 'direct, curl -o on the mirror\'s filesystem',
            goals: [],
            digits: 0,
            info: true,
            note: `direct, discarding the body: ${fmt(median(fig.direct), 0)} MB/s; storing it costs what the cache must pay too`,
          });
        }
        if (pc && fig.proxy.length === fig.direct.length) {
          ctx.report.add({
            phase: 'cold',
            label: `${label}: nginx proxy_cache in the mirror's place`,
            unit: 'MB/s',
            better: 'higher',
            mirror: fig.proxy,
            reference: fig.direct,
            referenceName: 'direct',
            goals: [],
            digits: 0,
            info: true,
            note: 'the "mirror" column is nginx proxy_cache here',
          });
        }
        details[label] = fig;
        ctx.progress(`   ${label}: mirror ${fig.mirror.map((x) => fmt(x, 0)).join('/')} MB/s, direct ${fig.direct.map((x) => fmt(x, 0)).join('/')}${curl ? `, direct stored ${fig.stored.map((x) => fmt(x, 0)).join('/')}` : ''}${pc ? `, proxy_cache ${fig.proxy.map((x) => fmt(x, 0)).join('/')}` : ''}`);
      }
      ctx.details.cold = details;
    } finally {
      await pc?.stop();
      fs.rmSync(storedDir, { recursive: true, force: true });
    }
  });
}
