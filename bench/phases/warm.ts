/**
 * Warm GET: a file the mirror has cached, through the mirror and through nginx (sendfile) serving
 * the mirror's own blob file (hard link: same inode, same page cache, same disk). For every size
 * and client count: rounds of A/B (which goes first alternates), each run = N concurrent full GETs
 * (raw-socket clients that memcmp every byte against the source), ending when all are done or at
 * the time box. Figure: aggregate MB/s over the run. Also reported: server CPU per GB and the
 * busiest client process's share of a core (if it nears 100 %, the client may be the limit).
 */
import fs from 'node:fs';
import path from 'node:path';
import { findBlob, type BenchContext, type BenchFile, type World } from '../lib/context.js';
import type { GetSpec } from '../lib/http-get.js';
import type { MirrorUnderTest } from '../lib/mirror.js';
import { startNginx, type Nginx } from '../lib/nginx.js';
import { fmt, fmtSize, mbps, median } from '../lib/stats.js';
import { mustTool } from '../lib/tools.js';

interface Target {
  name: 'mirror' | 'nginx';
  url: string;
  cpu(): { user: number; system: number } | null;
}

interface RunFigures {
  mbps: number;
  cpuPerGB: number | null;
  busiestClient: number;
  stopped: number;
}

/** Links (or, across filesystems, copies) the mirror's blob of `f` into nginx's root as `name`. */
export function exposeToNginx(ctx: BenchContext, mirror: MirrorUnderTest, f: BenchFile, root: string, name: string): boolean {
  const blob = findBlob(mirror.dataDir, f.sha256);
  if (!blob) {
    ctx.fail(`no blob file for ${f.path} (sha256 ${f.sha256}) in the mirror's data dir`);
    return false;
  }
  const dest = path.join(root, name);
  try {
    fs.linkSync(blob, dest);
  } catch {
    fs.copyFileSync(blob, dest);
    console.error(`  note: ${name}: copied (hard link impossible), so nginx reads another copy on the same disk`);
  }
  return true;
}

export async function warmPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  ctx.progress(`warm: mirror vs nginx sendfile; sizes ${s.warmSizes.map(fmtSize).join(', ')}; clients ${s.warmClients.join(', ')}; ${s.rounds} rounds`);
  await ctx.world('warm', async (w: World) => {
    const files = s.warmSizes.map((size, i) => w.addFiles(`warm${i}`, 1, size)[0]!);
    const root = path.join(ctx.tmp, 'nginx-warm-root');
    fs.mkdirSync(root, { recursive: true });
    // Fill the mirror (a verified cold GET), then the sha256 pass through it.
    for (const f of files) {
      const b = await ctx.clients.gets([{ url: w.mirrorUrl(f), expect: f.ref }]);
      ctx.checkGet(`warm fill ${f.path}`, b.outcomes[0]!, { size: f.size, cache: 'miss' });
      await ctx.verifySha(`mirror ${f.path}`, w.mirrorUrl(f), f, 'hit');
      exposeToNginx(ctx, w.mirror, f, root, f.path);
    }
    const nginx: Nginx = await startNginx({ bin: mustTool('nginx'), dir: path.join(ctx.tmp, 'nginx-warm'), workers: s.nginxWorkers, staticRoot: root });
    const stopNginx = ctx.cleanup.push('nginx (warm)', () => nginx.stop(), { kind: 'kill', pid: nginx.pid });
    try {
      for (const f of files) await ctx.verifySha(`nginx ${f.path}`, `${nginx.staticUrl}/${f.path}`, f);
      const details: Record<string, unknown> = {};
      for (const f of files) {
        const targets: Target[] = [
          { name: 'mirror', url: w.mirrorUrl(f), cpu: () => w.mirror.cpu() },
          { name: 'nginx', url: `${nginx.staticUrl}/${f.path}`, cpu: () => nginx.cpu() },
        ];
        // Warm-up: code paths, page cache, TCP.
        for (const t of targets) await ctx.clients.gets([{ url: t.url, expect: f.ref }]);
        for (const n of s.warmClients) {
          const label = `warm ${fmtSize(f.size)} ${n} client${n > 1 ? 's' : ''}`;
          const figures = { mirror: [] as RunFigures[], nginx: [] as RunFigures[] };
          await ctx.profiled(w.mirror, `warm-${f.size >> 20}MiB-c${n}`, async () => {
            for (let r = 0; r < s.rounds; r++) {
              const order = r % 2 === 0 ? targets : [...targets].reverse();
              for (const t of order) figures[t.name].push(await warmRun(ctx, t, f, n));
            }
          });
          const m = figures.mirror;
          const g = figures.nginx;
          const busiest = Math.max(...m.map((x) => x.busiestClient), ...g.map((x) => x.busiestClient));
          const cut = [...m, ...g].reduce((a, x) => a + x.stopped, 0);
          ctx.report.add({
            phase: 'warm',
            label: `${label}${n > 1 ? ' aggregate' : ''}`,
            unit: 'MB/s',
            better: 'higher',
            mirror: m.map((x) => x.mbps),
            reference: g.map((x) => x.mbps),
            referenceName: 'nginx sendfile',
            goals: [{ on: 'ratio', op: '>=', value: 0.9 }],
            digits: 0,
            note:
              `CPU s/GB mirror ${fmt(median(m.map((x) => x.cpuPerGB ?? NaN)), 2)}, nginx ${fmt(median(g.map((x) => x.cpuPerGB ?? NaN)), 2)}; ` +
              `busiest client process ${fmt(100 * busiest, 0)}% of a core` +
              (busiest > 0.85 ? ' (client may limit)' : '') +
              (cut > 0 ? `; ${cut} GETs cut at the ${s.warmMaxSeconds} s time box` : ''),
          });
          details[label] = figures;
          ctx.progress(
            `   ${label}: mirror ${m.map((x) => fmt(x.mbps, 0)).join('/')} MB/s, nginx ${g.map((x) => fmt(x.mbps, 0)).join('/')} MB/s`,
          );
        }
      }
      ctx.details.warm = details;
    } finally {
      await stopNginx();
    }
  });
}

async function warmRun(ctx: BenchContext, t: Target, f: BenchFile, n: number): Promise<RunFigures> {
  const specs: GetSpec[] = Array.from({ length: n }, () => ({ url: t.url, expect: f.ref }));
  const c0 = t.cpu();
  const b = await ctx.clients.gets(specs, { stopAfterMs: ctx.s.warmMaxSeconds * 1000 });
  const c1 = t.cpu();
  let bytes = 0;
  let stopped = 0;
  b.outcomes.forEach((o, i) => {
    ctx.checkGet(`${t.name} warm ${f.path} client ${i}/${n}`, o, { size: f.size, stoppedOk: true, ...(t.name === 'mirror' ? { cache: 'hit' } : {}) });
    bytes += o.bytes;
    if (o.stopped) stopped++;
  });
  const cpu = c0 && c1 ? c1.user - c0.user + (c1.system - c0.system) : null;
  return { mbps: mbps(bytes, b.wallMs), cpuPerGB: cpu === null ? null : cpu / (bytes / 1e9), busiestClient: b.busiestClientShare, stopped };
}
