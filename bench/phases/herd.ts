/**
 * Herds: N clients ask for the same cold file at the same moment.
 *
 * - `herd`: 11 × 1 GiB (BENCH_HERD_*). Capped: every CDN connection paced at 100 MiB/s (the fake
 *   hub's throttle is per response, i.e. per connection), compared with the ideal (size ÷ cap)
 *   and, for information, with one direct client on the same cap. Uncapped: compared with N
 *   direct GETs in parallel (the goal: what the machine does for the same N clients without a
 *   mirror, the "direct from the hub" figure of the herd rows in the issue that set the goals) and,
 *   for information, with one direct GET (the herd moves N times its bytes to clients, so on one
 *   box that ratio is about N at best). Upstream bytes ÷ file size from the fake CDN's counters.
 *   A fresh file each round; the order of the runs rotates.
 * - `herd100`: 100 × 1 GiB on a 200 MiB/s cap, once: the mirror's RSS above idle (sampled from
 *   /proc every 100 ms), its event-loop delay p99 (monitorEventLoopDelay inside the mirror child),
 *   and the number of upstream GETs.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { BenchContext, BenchFile, World } from '../lib/context.js';
import { sleep } from '../lib/context.js';
import type { GetSpec } from '../lib/http-get.js';
import { sampleRss } from '../lib/proc.js';
import { fmt, fmtSize, median, MiB } from '../lib/stats.js';
import { maybeProxyCache } from './cold.js';

interface HerdRun {
  doneS: number;
  upstreamRatio: number;
  upstreamGets: number;
  statuses: Record<string, number>;
  busiestClient: number;
  /** Event-loop delay p99 of this process (the fake hub: its pacer must tick on time). */
  hubLoopP99Ms: number;
  /** The mirror process's CPU seconds (user + system) over the run, per GB of file (not of bytes served). */
  mirrorCpuSecondsPerGB: number | null;
}

async function herdRun(ctx: BenchContext, w: World, what: string, url: string, f: BenchFile, n: number, follow = false): Promise<HerdRun> {
  const up0 = w.upstream(f);
  const specs: GetSpec[] = Array.from({ length: n }, () => ({ url, expect: f.ref, followRedirects: follow }));
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const c0 = w.mirror.cpu();
  const b = await ctx.clients.gets(specs);
  const c1 = w.mirror.cpu();
  loop.disable();
  const up1 = w.upstream(f);
  const statuses: Record<string, number> = {};
  b.outcomes.forEach((o, i) => {
    ctx.checkGet(`${what} client ${i}/${n}`, o, { size: f.size });
    const c = o.headers['x-mirror-cache'] ?? String(o.status);
    statuses[c] = (statuses[c] ?? 0) + 1;
  });
  return { doneS: b.wallMs / 1000, upstreamRatio: (up1.bytes - up0.bytes) / f.size, upstreamGets: up1.gets - up0.gets, statuses, busiestClient: b.busiestClientShare, hubLoopP99Ms: loop.percentile(99) / 1e6, mirrorCpuSecondsPerGB: c0 && c1 ? (c1.user + c1.system - c0.user - c0.system) / (f.size / 1e9) : null };
}

export async function herdPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const n = s.herdClients;
  const size = s.herdSize;
  const cap = s.herdCapMiBps * MiB;
  ctx.progress(`herd: ${n} × ${fmtSize(size)}, capped at ${s.herdCapMiBps} MiB/s per connection and uncapped; ${s.rounds} rounds`);
  for (const capped of [true, false]) {
    const kind = capped ? 'capped' : 'uncapped';
    await ctx.world(`herd-${kind}`, async (w: World) => {
      const pc = await maybeProxyCache(ctx, w, `herd-${kind}`);
      try {
        const fig = { mirror: [] as HerdRun[], direct1: [] as HerdRun[], directN: [] as HerdRun[], proxy: [] as HerdRun[] };
        const fault = capped ? w.hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: cap }) : null;
        try {
          await ctx.profiled(w.mirror, `herd${n}-${kind}`, async () => {
            for (let r = 0; r < s.rounds; r++) {
              const f = w.addFiles(`herd-${kind}-r${r}`, 1, size)[0]!;
              const runs: (() => Promise<void>)[] = [
                async () => {
                  await ctx.freshPages(size);
                  fig.mirror.push(await herdRun(ctx, w, `mirror herd (${kind}) ${f.path}`, w.mirrorUrl(f), f, n));
                },
                async () => void fig.direct1.push(await herdRun(ctx, w, `direct (${kind}) ${f.path}`, w.hubUrl(f), f, 1, true)),
              ];
              if (!capped) runs.push(async () => void fig.directN.push(await herdRun(ctx, w, `${n} direct (${kind}) ${f.path}`, w.hubUrl(f), f, n, true)));
              if (pc) {
                runs.push(async () => {
                  await ctx.freshPages(size);
                  fig.proxy.push(await herdRun(ctx, w, `proxy_cache herd (${kind}) ${f.path}`, `${pc.nginx.proxyUrl}/${f.repo}/resolve/main/${f.path}`, f, n));
                });
              }
              for (let k = 0; k < runs.length; k++) await runs[(k + r) % runs.length]!();
              await ctx.verifySha(`mirror herd ${f.path}`, w.mirrorUrl(f), f, 'hit');
              const m = fig.mirror.at(-1)!;
              ctx.progress(
                `   ${kind} round ${r + 1}: mirror ${fmt(m.doneS, 2)} s (upstream ${fmt(m.upstreamRatio, 3)}× in ${m.upstreamGets} GET(s), ${JSON.stringify(m.statuses)}, mirror CPU ${fmt(m.mirrorCpuSecondsPerGB ?? NaN, 2)} s per GB of file, fake hub loop p99 ${fmt(m.hubLoopP99Ms, 0)} ms), ` +
                  `1 direct ${fmt(fig.direct1.at(-1)?.doneS, 2)} s` +
                  (capped ? '' : `, ${n} direct ${fmt(fig.directN.at(-1)?.doneS, 2)} s`) +
                  (pc ? `, proxy_cache ${fmt(fig.proxy.at(-1)?.doneS, 2)} s (upstream ${fmt(fig.proxy.at(-1)?.upstreamRatio, 2)}×)` : ''),
              );
            }
          });
        } finally {
          fault?.remove();
        }
        const label = `herd ${n} × ${fmtSize(size)}, ${capped ? `upstream ${s.herdCapMiBps} MiB/s per connection` : 'uncapped'}: everyone done`;
        const done = fig.mirror.map((x) => x.doneS);
        const ideal = size / cap;
        const busiest = Math.max(...fig.mirror.map((x) => x.busiestClient));
        if (capped) {
          ctx.report.add({
            phase: 'herd',
            label,
            unit: 's',
            better: 'lower',
            mirror: done,
            reference: done.map(() => ideal),
            referenceName: 'ideal (size ÷ cap)',
            goals: [{ on: 'ratio', op: '<=', value: 1.1 }],
            digits: 2,
            note: `busiest client process ${fmt(100 * busiest, 0)}% of a core; mirror CPU ${fmt(median(fig.mirror.map((x) => x.mirrorCpuSecondsPerGB ?? NaN)), 2)} s per GB of file`,
          });
          ctx.report.add({ phase: 'herd', label: `${label}, vs one direct client`, unit: 's', better: 'lower', mirror: done, reference: fig.direct1.map((x) => x.doneS), referenceName: '1 direct client, same cap', goals: [], digits: 2, info: true });
        } else {
          ctx.report.add({
            phase: 'herd',
            label,
            unit: 's',
            better: 'lower',
            mirror: done,
            reference: fig.directN.map((x) => x.doneS),
            referenceName: `${n} direct GETs in parallel`,
            goals: [{ on: 'ratio', op: '<=', value: 1.2 }],
            digits: 2,
            note: `busiest client process ${fmt(100 * busiest, 0)}% of a core; mirror CPU ${fmt(median(fig.mirror.map((x) => x.mirrorCpuSecondsPerGB ?? NaN)), 2)} s per GB of file`,
          });
          ctx.report.add({ phase: 'herd', label: `${label}, vs one direct GET`, unit: 's', better: 'lower', mirror: done, reference: fig.direct1.map((x) => x.doneS), referenceName: '1 direct GET', goals: [], digits: 2, info: true });
        }
        ctx.report.add({
          phase: 'herd',
          label: `herd ${n}, ${kind}: upstream body bytes ÷ file size`,
          unit: '×',
          better: 'lower',
          mirror: fig.mirror.map((x) => x.upstreamRatio),
          reference: null,
          referenceName: '',
          goals: [{ on: 'mirror', op: '<=', value: 1.005 }],
          digits: 3,
          note: `upstream CDN GETs per herd: ${fig.mirror.map((x) => x.upstreamGets).join('/')}`,
        });
        if (pc && fig.proxy.length === done.length) {
          ctx.report.add({
            phase: 'herd',
            label: `herd ${n}, ${kind}: nginx proxy_cache in the mirror's place, everyone done`,
            unit: 's',
            better: 'lower',
            mirror: fig.proxy.map((x) => x.doneS),
            reference: capped ? done.map(() => ideal) : fig.directN.map((x) => x.doneS),
            referenceName: capped ? 'ideal' : `${n} direct GETs in parallel`,
            goals: [],
            digits: 2,
            info: true,
            note: `proxy_cache_lock on (timeout 600 s); upstream ${fig.proxy.map((x) => fmt(x.upstreamRatio, 2)).join('/')}× the file`,
          });
        }
        ctx.details[`herd-${kind}`] = { clients: n, size, capMiBps: capped ? s.herdCapMiBps : null, idealSeconds: capped ? ideal : null, ...fig };
      } finally {
        await pc?.stop();
      }
    });
  }
}

export async function herd100Phase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const n = s.herd100Clients;
  const size = s.herd100Size;
  ctx.progress(`herd100: ${n} × ${fmtSize(size)}, upstream ${s.herd100CapMiBps} MiB/s per connection, once: mirror RSS, event-loop delay, upstream GETs`);
  await ctx.world('herd100', async (w: World) => {
    const f = w.addFiles('herd100', 1, size)[0]!;
    // Idle: after start-up, a small request, and a quiet moment.
    const warm = w.addFiles('herd100-warmup', 1, MiB)[0]!;
    await ctx.clients.gets([{ url: w.mirrorUrl(warm) }]);
    await sleep(1000);
    const idle = w.mirror.rss();
    const fault = w.hub.setFault({ server: 'cdn' }, { kind: 'throttle', bytesPerSecond: s.herd100CapMiBps * MiB });
    let run: HerdRun;
    let peak: number | null;
    let loop;
    try {
      await w.mirror.loopDelay(true);
      const rss = sampleRss(w.mirror.pid, 100);
      const c0 = w.mirror.cpu();
      run = await ctx.profiled(w.mirror, `herd${n}`, () => herdRun(ctx, w, `mirror herd of ${n} ${f.path}`, w.mirrorUrl(f), f, n));
      const c1 = w.mirror.cpu();
      peak = rss.stop().peakBytes;
      loop = await w.mirror.loopDelay(true);
      ctx.details.herd100 = { clients: n, size, capMiBps: s.herd100CapMiBps, idleRssBytes: idle, peakRssBytes: peak, loop, ...run, mirrorCpuSeconds: c0 && c1 ? c1.user - c0.user + c1.system - c0.system : null };
    } finally {
      fault.remove();
    }
    await ctx.verifySha(`mirror herd100 ${f.path}`, w.mirrorUrl(f), f, 'hit');
    const above = idle !== null && peak !== null ? (peak - idle) / 1e6 : NaN;
    const base = { phase: 'herd100', reference: null, referenceName: '', digits: 1 } as const;
    const label = `herd ${n} × ${fmtSize(size)}, ${s.herd100CapMiBps} MiB/s per connection`;
    ctx.report.add({ ...base, label: `${label}: mirror RSS above idle (peak)`, unit: 'MB', better: 'lower', mirror: [above], goals: [{ on: 'mirror', op: '<=', value: 200 }], note: `idle ${fmt((idle ?? NaN) / 1e6, 0)} MB` });
    ctx.report.add({ ...base, label: `${label}: mirror event-loop delay p99`, unit: 'ms', better: 'lower', mirror: [loop.p99Ms], goals: [{ on: 'mirror', op: '<=', value: 50 }], note: `max ${fmt(loop.maxMs, 0)} ms` });
    ctx.report.add({ ...base, label: `${label}: upstream GETs`, unit: 'GETs', better: 'lower', mirror: [run.upstreamGets], goals: [{ on: 'mirror', op: '<=', value: 1 }], digits: 0, note: `upstream bytes ${fmt(run.upstreamRatio, 3)}× the file` });
    ctx.report.add({ ...base, label: `${label}: everyone done`, unit: 's', better: 'lower', mirror: [run.doneS], goals: [], digits: 1, info: true, note: `ideal fill ${fmt(size / (s.herd100CapMiBps * MiB), 1)} s; busiest client process ${fmt(100 * run.busiestClient, 0)}% of a core` });
    ctx.progress(`   done ${fmt(run.doneS, 1)} s; RSS idle ${fmt((idle ?? NaN) / 1e6, 0)} MB, peak ${fmt((peak ?? NaN) / 1e6, 0)} MB; loop p99 ${fmt(loop.p99Ms, 1)} ms, max ${fmt(loop.maxMs, 0)} ms; ${run.upstreamGets} upstream GET(s)`);
  });
}
