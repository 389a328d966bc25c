/**
 * HEAD on a cached file: `hey -n N -c 16 -m HEAD` against the mirror's branch URL (answered from
 * its index while the refs TTL holds) and against nginx's static copy of the same blob. Rounds
 * alternate which goes first. Rows: requests per second, p99 and p50, each mirror ÷ nginx.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { BenchContext, World } from '../lib/context.js';
import { heyHead } from '../lib/external.js';
import { startNginx } from '../lib/nginx.js';
import { fmt, median, MiB } from '../lib/stats.js';
import { mustTool } from '../lib/tools.js';
import { exposeToNginx } from './warm.js';

export async function headPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const hey = mustTool('hey');
  ctx.progress(`head: hey -n ${s.headRequests} -c ${s.headConcurrency} -m HEAD, mirror (branch URL of a cached file) vs nginx; ${s.rounds} rounds`);
  await ctx.world('head', async (w: World) => {
    const f = w.addFiles('head', 1, 16 * MiB)[0]!;
    const b = await ctx.clients.gets([{ url: w.mirrorUrl(f), expect: f.ref, hash: true }]);
    ctx.checkGet('head: fill', b.outcomes[0]!, { size: f.size, sha256: f.sha256 });
    const root = path.join(ctx.tmp, 'nginx-head-root');
    fs.mkdirSync(root, { recursive: true });
    exposeToNginx(ctx, w.mirror, f, root, f.path);
    const nginx = await startNginx({ bin: mustTool('nginx'), dir: path.join(ctx.tmp, 'nginx-head'), workers: s.nginxWorkers, staticRoot: root });
    const stopNginx = ctx.cleanup.push('nginx (head)', () => nginx.stop(), { kind: 'kill', pid: nginx.pid });
    try {
      const targets = [
        { name: 'mirror' as const, url: w.mirrorUrl(f) },
        { name: 'nginx' as const, url: `${nginx.staticUrl}/${f.path}` },
      ];
      // What a HEAD answers (hey only counts statuses): status, ETag, length.
      const heads = await ctx.clients.gets(targets.map((t) => ({ url: t.url, method: 'HEAD' as const })));
      const [mh, nh] = heads.outcomes;
      if (mh!.status !== 200 || mh!.headers.etag !== `"${f.sha256}"` || mh!.headers['content-length'] !== String(f.size)) {
        ctx.fail(`mirror HEAD: status ${mh!.status}, etag ${String(mh!.headers.etag)}, content-length ${String(mh!.headers['content-length'])}`);
      }
      if (nh!.status !== 200 || nh!.headers['content-length'] !== String(f.size)) ctx.fail(`nginx HEAD: status ${nh!.status}`);
      for (const t of targets) await heyHead(hey, t.url, Math.min(2000, s.headRequests), s.headConcurrency); // warm-up

      const runs = { mirror: [] as Awaited<ReturnType<typeof heyHead>>[], nginx: [] as Awaited<ReturnType<typeof heyHead>>[] };
      const hubHeads0 = w.hub.count({ server: 'hub', method: 'HEAD' });
      let upstreamHeads = 0;
      // The mirror's CPU seconds per 1,000 HEADs: far less sensitive to other load than req/s.
      const mirrorCpu: number[] = [];
      await ctx.profiled(w.mirror, `head-c${s.headConcurrency}`, async () => {
        for (let r = 0; r < s.rounds; r++) {
          for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
            const before = w.hub.count({ server: 'hub', method: 'HEAD' });
            const c0 = t.name === 'mirror' ? w.mirror.cpu() : null;
            const res = await heyHead(hey, t.url, s.headRequests, s.headConcurrency);
            const c1 = t.name === 'mirror' ? w.mirror.cpu() : null;
            if (c0 && c1) mirrorCpu.push((c1.user - c0.user + c1.system - c0.system) / (s.headRequests / 1000));
            if (t.name === 'mirror') upstreamHeads += w.hub.count({ server: 'hub', method: 'HEAD' }) - before;
            // hey sends n ÷ c requests per worker, rounded down.
            const sent = Math.floor(s.headRequests / s.headConcurrency) * s.headConcurrency;
            const ok = res.statuses['200'] ?? 0;
            if (ok !== sent) ctx.fail(`${t.name} HEAD (hey): ${ok} of ${sent} answered 200 (${JSON.stringify(res.statuses)}; ${res.errors.slice(0, 3).join('; ')})`);
            runs[t.name].push(res);
          }
        }
      });
      const m = runs.mirror;
      const g = runs.nginx;
      const base = { phase: 'head', referenceName: 'nginx', digits: 2 } as const;
      ctx.report.add({
        ...base,
        label: `HEAD cached file, c=${s.headConcurrency}: requests/s`,
        unit: 'req/s',
        better: 'higher',
        mirror: m.map((x) => x.reqPerSec),
        reference: g.map((x) => x.reqPerSec),
        goals: [{ on: 'ratio', op: '>=', value: 0.6 }],
        digits: 0,
        note:
          `hey -n ${s.headRequests}, hey itself ${fmt(100 * median(m.map((x) => x.heyCpuSeconds / x.wallSeconds)), 0)}% (mirror runs) / ` +
          `${fmt(100 * median(g.map((x) => x.heyCpuSeconds / x.wallSeconds)), 0)}% (nginx runs) of a core; ${upstreamHeads} upstream HEADs during the mirror's runs; ` +
          `mirror CPU ${fmt(median(mirrorCpu), 3)} s per 1,000 HEADs`,
      });
      ctx.report.add({
        ...base,
        label: `HEAD cached file, c=${s.headConcurrency}: p99`,
        unit: 'ms',
        better: 'lower',
        mirror: m.map((x) => x.p99Ms),
        reference: g.map((x) => x.p99Ms),
        goals: [{ on: 'ratio', op: '<=', value: 2 }],
        note: 'hey reports latencies in 0.1 ms steps',
      });
      ctx.report.add({
        ...base,
        label: `HEAD cached file, c=${s.headConcurrency}: p50`,
        unit: 'ms',
        better: 'lower',
        mirror: m.map((x) => x.p50Ms),
        reference: g.map((x) => x.p50Ms),
        goals: [],
        info: true,
      });
      ctx.details.head = { requests: s.headRequests, concurrency: s.headConcurrency, mirror: m, nginx: g, mirrorCpuSecondsPer1000: mirrorCpu, upstreamHeadsDuringMirrorRuns: upstreamHeads, hubHeadsTotal: w.hub.count({ server: 'hub', method: 'HEAD' }) - hubHeads0 };
      ctx.progress(`   mirror ${m.map((x) => fmt(x.reqPerSec, 0)).join('/')} req/s p99 ${m.map((x) => fmt(x.p99Ms, 1)).join('/')} ms; nginx ${g.map((x) => fmt(x.reqPerSec, 0)).join('/')} req/s p99 ${g.map((x) => fmt(x.p99Ms, 1)).join('/')} ms`);
    } finally {
      await stopNginx();
    }
  });
}
