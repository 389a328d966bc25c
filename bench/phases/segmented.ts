/**
 * The rows that measure today's baseline for segmented fills (several upstream connections per
 * file). Upstream is capped per connection (the fake hub paces each response), so one upstream
 * connection per fill is visibly the limit.
 *
 * - `aria2`: aria2c -x16 -s16 -k1M of a cold 512 MiB file, through the mirror vs straight from
 *   the hub (302 → CDN, then 16 ranged connections), cap 50 MiB/s per connection. Time and
 *   upstream bytes ÷ file size. The downloaded file's sha256 is checked. For information, the
 *   same through nginx proxy_cache with the slice module in front of the CDN (slices of the
 *   mirror's segment size; BENCH_PROXY_CACHE=0 leaves it out): a C proxy that stores every byte
 *   once, i.e. what storing the file on its way costs on this machine.
 * - `curl`: one `curl` of a cold 512 MiB file through the mirror on the same cap: MiB/s vs the
 *   cap. The goal is 0.8 × connections × cap, connections = the mirror's upstreamConnections.
 *   For information, the same through
 *   the mirror with the bench's own client, which compares every byte and stores none: the
 *   mirror's rate without the page-cache writes of curl's output file competing for the CPU.
 * - `ranges`: first-byte latency of `bytes=-500` and `bytes=<60 %>-` on a 1 GiB file whose fill
 *   is running (started by another client that read 8 MiB and left), cap 16 MiB/s per
 *   connection so the fill is slow.
 */
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_CONFIG, type Config } from '../../src/config/config.js';
import { segmentSize } from '../../src/mirror/segment-plan.js';
import type { BenchContext, BenchFile, World } from '../lib/context.js';
import { run } from '../lib/external.js';
import { checkFile, curlToFile } from '../lib/stored.js';
import { fmt, fmtSize, median, MiB } from '../lib/stats.js';
import { mustTool } from '../lib/tools.js';
import { maybeProxyCache } from './cold.js';

export async function aria2Phase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const aria2c = mustTool('aria2c');
  const k = s.aria2Connections;
  ctx.progress(`aria2: aria2c -x${k} -s${k} -k1M, cold ${fmtSize(s.segSize)}, ${s.segCapMiBps} MiB/s per connection, mirror vs direct; ${s.rounds} rounds`);
  const out = path.join(ctx.tmp, 'aria2-out');
  fs.mkdirSync(out, { recursive: true });
  await ctx.world('aria2', async (w: World) => {
    const sliceBytes = segmentSize(s.segSize, connectionsOf(s.mirrorConfig));
    const slices = await maybeProxyCache(ctx, w, 'aria2-slice', { sliceCacheUpstream: w.hub.cdnUrl, sliceBytes });
    const fault = w.hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: s.segCapMiBps * MiB });
    const fig = { mirror: [] as number[], direct: [] as number[], slice: [] as number[], sliceUpstreamRatio: [] as number[], upstreamRatio: [] as number[], upstreamGets: [] as number[], mirrorCpuSecondsPerGB: [] as number[] };
    try {
      const aria = async (what: string, url: string, f: BenchFile): Promise<number> => {
        const name = `${what}-${f.path}`;
        const r = await run(aria2c, [
          `-x${k}`, `-s${k}`, '-k1M', '--file-allocation=none', '--allow-overwrite=true', '--auto-file-renaming=false',
          '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', '-d', out, '-o', name, url,
        ]);
        if (r.code !== 0) ctx.fail(`aria2c ${what} ${f.path}: exit ${r.code ?? r.signal}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
        await checkFile(ctx, `aria2c ${what} ${f.path}`, path.join(out, name), f);
        return r.ms / 1000;
      };
      await ctx.profiled(w.mirror, `aria2-x${k}`, async () => {
        for (let r = 0; r < s.rounds; r++) {
          const f = w.addFiles(`aria2-r${r}`, 1, s.segSize)[0]!;
          const runs = [
            async () => {
              await ctx.freshPages(2 * f.size); // the mirror's copy and aria2c's
              const u0 = w.upstream(f);
              const c0 = w.mirror.cpu();
              fig.mirror.push(await aria('mirror', w.mirrorUrl(f), f));
              const c1 = w.mirror.cpu();
              if (c0 && c1) fig.mirrorCpuSecondsPerGB.push((c1.user + c1.system - c0.user - c0.system) / (f.size / 1e9));
              const u1 = w.upstream(f);
              fig.upstreamRatio.push((u1.bytes - u0.bytes) / f.size);
              fig.upstreamGets.push(u1.gets - u0.gets);
            },
            async () => {
              await ctx.freshPages(f.size);
              fig.direct.push(await aria('direct', w.hubUrl(f), f));
            },
          ];
          if (slices) {
            // A fresh file of its own: nginx caches what it fetched, and the mirror's run must be cold too.
            const g = w.addFiles(`aria2-slice-r${r}`, 1, s.segSize)[0]!;
            runs.push(async () => {
              await ctx.freshPages(2 * g.size); // nginx's copy and aria2c's
              const u0 = w.upstream(g);
              fig.slice.push(await aria('nginx-slice', slices.nginx.sliceUrl + (await cdnPathOf(w, g)), g));
              fig.sliceUpstreamRatio.push((w.upstream(g).bytes - u0.bytes) / g.size);
            });
          }
          for (let j = 0; j < runs.length; j++) await runs[(j + r) % runs.length]!();
          ctx.progress(
            `   round ${r + 1}: mirror ${fmt(fig.mirror.at(-1), 2)} s (upstream ${fmt(fig.upstreamRatio.at(-1), 3)}× in ${fig.upstreamGets.at(-1)} GETs), direct ${fmt(fig.direct.at(-1), 2)} s` +
              (slices ? `, nginx slice ${fmt(fig.slice.at(-1), 2)} s (upstream ${fmt(fig.sliceUpstreamRatio.at(-1), 3)}×)` : ''),
          );
        }
      });
    } finally {
      fault.remove();
      await slices?.stop();
    }
    const label = `aria2c -x${k} cold ${fmtSize(s.segSize)}, ${s.segCapMiBps} MiB/s per connection`;
    ctx.report.add({ phase: 'aria2', label: `${label}: time`, unit: 's', better: 'lower', mirror: fig.mirror, reference: fig.direct, referenceName: 'direct aria2c', goals: [{ on: 'ratio', op: '<=', value: 1.2 }], digits: 2, note: `mirror CPU ${fmt(median(fig.mirrorCpuSecondsPerGB), 2)} s per GB` });
    if (fig.slice.length === fig.direct.length && fig.slice.length > 0) {
      ctx.report.add({
        phase: 'aria2',
        label: `${label}: nginx proxy_cache + slice in the mirror's place, time`,
        unit: 's',
        better: 'lower',
        mirror: fig.slice,
        reference: fig.direct,
        referenceName: 'direct aria2c',
        goals: [],
        digits: 2,
        info: true,
        note: `slices of ${fmtSize(sliceBytes)}, the mirror's segment size; upstream ${fig.sliceUpstreamRatio.map((x) => fmt(x, 3)).join('/')}× the file`,
      });
    }
    ctx.report.add({
      phase: 'aria2',
      label: `${label}: upstream body bytes ÷ file size`,
      unit: '×',
      better: 'lower',
      mirror: fig.upstreamRatio,
      reference: null,
      referenceName: '',
      goals: [{ on: 'mirror', op: '<=', value: 1.01 }],
      digits: 3,
      note: `upstream CDN GETs: ${fig.upstreamGets.join('/')}`,
    });
    ctx.details.aria2 = { connections: k, size: s.segSize, capMiBps: s.segCapMiBps, ...fig };
  });
  fs.rmSync(out, { recursive: true, force: true });
}

/** The mirror's upstreamConnections under the bench's config. */
function connectionsOf(mirrorConfig: Partial<Config>): number {
  return mirrorConfig.upstreamConnections ?? DEFAULT_CONFIG.upstreamConnections;
}

/** The path and query of the CDN URL the hub redirects a file's download to (a fresh signature). */
async function cdnPathOf(w: World, f: BenchFile): Promise<string> {
  const res = await fetch(w.hubUrl(f), { method: 'HEAD', redirect: 'manual' });
  const location = res.headers.get('location');
  if (res.status !== 302 || !location) throw new Error(`hub HEAD ${f.path}: expected a 302 to the CDN, got ${res.status}`);
  const u = new URL(location, w.hubUrl(f));
  return u.pathname + u.search;
}

export async function curlPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const curl = mustTool('curl');
  const connections = connectionsOf(s.mirrorConfig);
  ctx.progress(`curl: one curl, cold ${fmtSize(s.segSize)} through the mirror, ${s.segCapMiBps} MiB/s per connection; ${s.rounds} rounds`);
  const out = path.join(ctx.tmp, 'curl-out');
  fs.mkdirSync(out, { recursive: true });
  await ctx.world('curl', async (w: World) => {
    const fault = w.hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: s.segCapMiBps * MiB });
    const fig = { mirror: [] as number[], direct: [] as number[], unstored: [] as number[], mirrorCpuSecondsPerGB: [] as number[] };
    try {
      const get = async (what: string, url: string, f: BenchFile): Promise<number> => {
        const r = await curlToFile(ctx, curl, what, url, path.join(out, `${what}-${f.path}`), f);
        return r.bytes / MiB / r.seconds;
      };
      await ctx.profiled(w.mirror, 'curl', async () => {
        for (let r = 0; r < s.rounds; r++) {
          const f = w.addFiles(`curl-r${r}`, 1, s.segSize)[0]!;
          const runs = [
            async () => {
              await ctx.freshPages(2 * f.size); // the mirror's copy and curl's
              const c0 = w.mirror.cpu();
              fig.mirror.push(await get('mirror', w.mirrorUrl(f), f));
              const c1 = w.mirror.cpu();
              if (c0 && c1) fig.mirrorCpuSecondsPerGB.push((c1.user + c1.system - c0.user - c0.system) / (f.size / 1e9));
            },
            async () => {
              await ctx.freshPages(f.size);
              fig.direct.push(await get('direct', w.hubUrl(f), f));
            },
            async () => {
              const g = w.addFiles(`curl-unstored-r${r}`, 1, s.segSize)[0]!;
              await ctx.freshPages(g.size);
              const o = (await ctx.clients.gets([{ url: w.mirrorUrl(g), expect: g.ref }])).outcomes[0]!;
              ctx.checkGet(`mirror cold (bench client) ${g.path}`, o, { size: g.size, cache: 'miss' });
              fig.unstored.push(o.bytes / MiB / ((o.endMs - o.startMs) / 1000));
            },
          ];
          for (let j = 0; j < runs.length; j++) await runs[(j + r) % runs.length]!();
          ctx.progress(`   round ${r + 1}: mirror ${fmt(fig.mirror.at(-1), 1)} MiB/s, direct ${fmt(fig.direct.at(-1), 1)} MiB/s, mirror to a client that stores nothing ${fmt(fig.unstored.at(-1), 1)} MiB/s`);
        }
      });
    } finally {
      fault.remove();
    }
    const label = `one curl, cold ${fmtSize(s.segSize)} through the mirror, ${s.segCapMiBps} MiB/s per connection`;
    ctx.report.add({
      phase: 'curl',
      label,
      unit: 'MiB/s',
      better: 'higher',
      mirror: fig.mirror,
      reference: fig.mirror.map(() => s.segCapMiBps),
      referenceName: 'the cap',
      goals: [{ on: 'ratio', op: '>=', value: 0.8 * connections }],
      digits: 1,
      note: `ratio = × the cap; goal 0.8 × ${connections} connections (upstreamConnections = ${connections}); mirror CPU ${fmt(median(fig.mirrorCpuSecondsPerGB), 2)} s per GB`,
    });
    ctx.report.add({
      phase: 'curl',
      label: `one client that stores nothing (the bench's), cold ${fmtSize(s.segSize)} through the mirror, same cap`,
      unit: 'MiB/s',
      better: 'higher',
      mirror: fig.unstored,
      reference: fig.unstored.map(() => s.segCapMiBps),
      referenceName: 'the cap',
      goals: [],
      digits: 1,
      info: true,
      note: `ratio = × the cap; what curl's row would be without curl writing its file on the same CPUs (goal there ${fmt(0.8 * connections, 1)}×)`,
    });
    ctx.report.add({ phase: 'curl', label: 'one curl, straight from the hub, same cap', unit: 'MiB/s', better: 'higher', mirror: fig.direct, reference: fig.direct.map(() => s.segCapMiBps), referenceName: 'the cap', goals: [], digits: 1, info: true, note: 'the "mirror" column is the direct curl here' });
    ctx.details.curl = { size: s.segSize, capMiBps: s.segCapMiBps, connections, ...fig };
  });
  fs.rmSync(out, { recursive: true, force: true });
}

export async function rangesPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const size = s.rangeSize;
  const from = Math.floor(size * 0.6);
  ctx.progress(`ranges: bytes=-500 and bytes=${from}- on a filling ${fmtSize(size)} file (fill at ${s.rangeCapMiBps} MiB/s); ${s.rounds} rounds`);
  await ctx.world('ranges', async (w: World) => {
    const fault = w.hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: s.rangeCapMiBps * MiB });
    const fig = { suffix: [] as number[], from60: [] as number[], fillRunning: [] as boolean[], upstreamGets: [] as number[], timedOut: 0 };
    const deadlineMs = s.rangeDeadlineSeconds * 1000;
    try {
      await ctx.profiled(w.mirror, 'ranges', async () => {
        for (let r = 0; r < s.rounds; r++) {
          const f = w.addFiles(`ranges-r${r}`, 1, size)[0]!;
          // Start the fill: a client reads the first 8 MiB and leaves; the fill goes on.
          const starter = await ctx.clients.gets([{ url: w.mirrorUrl(f), expect: f.ref, maxBodyBytes: 8 * MiB }]);
          ctx.checkGet(`ranges starter ${f.path}`, starter.outcomes[0]!, { size, stoppedOk: true, cache: 'miss' });
          const gets0 = w.upstream(f).gets;
          const b = await ctx.clients.gets([
            { url: w.mirrorUrl(f), headers: { range: 'bytes=-500' }, expect: f.ref, deadlineMs },
            { url: w.mirrorUrl(f), headers: { range: `bytes=${from}-` }, expect: f.ref, maxBodyBytes: 64 * 1024, deadlineMs },
          ]);
          fig.upstreamGets.push(w.upstream(f).gets - gets0);
          const [suffix, tail] = b.outcomes;
          const firstByte = (o: typeof suffix, what: string, start: number, bodyLength: number, stoppedOk: boolean): number => {
            if (o!.error === 'deadline') {
              fig.timedOut++;
              console.error(`  note: ${what}: no answer within ${s.rangeDeadlineSeconds} s`);
              return Infinity;
            }
            if (ctx.checkGet(what, o!, { size, status: 206, bodyLength, stoppedOk })) {
              const want = `bytes ${start}-${size - 1}/${size}`;
              if (o!.headers['content-range'] !== want) ctx.fail(`${what}: content-range ${String(o!.headers['content-range'])}, expected ${want}`);
            }
            return (o!.firstByteMs - o!.startMs) / 1000;
          };
          fig.suffix.push(firstByte(suffix, `bytes=-500 ${f.path}`, size - 500, 500, false));
          fig.from60.push(firstByte(tail, `bytes=${from}- ${f.path}`, from, size - from, true));
          // Was the fill still running when the ranges were asked? (fake hub times are this process's performance.now())
          const fill = w.hub.requests.filter((q) => q.server === 'cdn' && q.method === 'GET' && q.path.startsWith(f.cdnPath)).sort((a, c) => c.bytesSent - a.bytesSent)[0];
          const asked = Math.min(suffix!.startMs, tail!.startMs) - performance.timeOrigin;
          fig.fillRunning.push(fill !== undefined && (fill.endedAt === undefined || fill.endedAt > asked));
          ctx.progress(`   round ${r + 1}: bytes=-500 first byte ${fmt(fig.suffix.at(-1), 2)} s, bytes=${from}- ${fmt(fig.from60.at(-1), 2)} s; fill still running: ${fig.fillRunning.at(-1)}`);
        }
      });
    } finally {
      fault.remove();
    }
    const label = `on a filling ${fmtSize(size)} file (fill at ${s.rangeCapMiBps} MiB/s)`;
    const note = `extra upstream GETs for the ranges: ${fig.upstreamGets.join('/')}; fill still running when the ranges were asked: ${fig.fillRunning.filter(Boolean).length}/${fig.fillRunning.length}${fig.timedOut ? `; ${fig.timedOut} answers timed out (∞)` : ''}`;
    const base = { phase: 'ranges', unit: 's', better: 'lower', reference: null, referenceName: '', goals: [{ on: 'mirror', op: '<=', value: 1.5 }], digits: 2 } as const;
    ctx.report.add({ ...base, goals: [...base.goals], label: `bytes=-500 ${label}: first byte`, mirror: fig.suffix, note });
    ctx.report.add({ ...base, goals: [...base.goals], label: `bytes=<60 %>- ${label}: first byte`, mirror: fig.from60 });
    ctx.details.ranges = { size, from, capMiBps: s.rangeCapMiBps, ...fig };
  });
}
