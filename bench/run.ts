/**
 * hubcache benchmark: `npm run bench [-- <phase>…]` (see bench/README.md).
 *
 * Measures the mirror against the real limit of this machine: nginx with sendfile for warm GETs
 * and HEADs (hey), direct downloads from the fake hub for cold paths, the ideal (size ÷ cap) for
 * capped herds, absolute goals for memory, event-loop delay and upstream traffic. Rounds are
 * interleaved A/B; each row prints medians, min–max, the ratio mirror ÷ reference, which way is
 * better, and its goal with pass/miss. Goals are information: exit status 1 means a correctness
 * failure (a wrong status, length, byte or sha256, a failed download), 2 a bad setting or a
 * missing tool for a phase that was asked for by name.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startClientPool, type ClientPool } from './lib/clients.js';
import { BenchContext, Cleanup } from './lib/context.js';
import { run } from './lib/external.js';
import { startJanitor } from './lib/janitor.js';
import { Report } from './lib/report.js';
import { postgresSkipReason } from '../test/support/postgres.js';
import { parseSettings, PHASE_TOOLS, type Phase, type Settings } from './lib/settings.js';
import { fmt, fmtSize } from './lib/stats.js';
import { findTool, missingTools } from './lib/tools.js';
import { coldPhase } from './phases/cold.js';
import { diskPhase } from './phases/disk.js';
import { headPhase } from './phases/head.js';
import { herd100Phase, herdPhase } from './phases/herd.js';
import { replicasPhase } from './phases/replicas.js';
import { s3Phase } from './phases/s3.js';
import { aria2Phase, curlPhase, rangesPhase } from './phases/segmented.js';
import { warmPhase } from './phases/warm.js';

const PHASE_FN: Record<Phase, (ctx: BenchContext) => Promise<void>> = {
  warm: warmPhase,
  head: headPhase,
  cold: coldPhase,
  herd: herdPhase,
  herd100: herd100Phase,
  aria2: aria2Phase,
  curl: curlPhase,
  ranges: rangesPhase,
  s3: s3Phase,
  replicas: replicasPhase,
  disk: diskPhase,
};

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const RESULTS_FILE = path.join(BENCH_DIR, 'results', 'latest.json');

/** Phases that can run, and why the others cannot (missing tool, not root). */
function runnable(s: Settings): { run: Phase[]; skipped: { phase: Phase; reason: string }[] } {
  const out: Phase[] = [];
  const skipped: { phase: Phase; reason: string }[] = [];
  for (const p of s.phases) {
    const { missing, install } = missingTools(PHASE_TOOLS[p]);
    if (missing.length > 0) skipped.push({ phase: p, reason: `needs ${missing.join(', ')}: ${install}` });
    else if (p === 'replicas' && postgresSkipReason) skipped.push({ phase: p, reason: postgresSkipReason });
    else if (p === 'disk' && process.getuid?.() !== 0) skipped.push({ phase: p, reason: 'needs root (mkfs.ext4, mount -o loop, drop_caches)' });
    else out.push(p);
  }
  return { run: out, skipped };
}

async function main(): Promise<number> {
  const s = parseSettings(process.argv.slice(2), process.env);
  const { run: phases, skipped } = runnable(s);
  if (skipped.length > 0) {
    for (const k of skipped) console.error(`bench: ${k.phase}: ${k.reason}`);
    const { install } = missingTools([...new Set(s.phases.flatMap((p) => PHASE_TOOLS[p]))]);
    if (install) console.error(`bench: to run every phase asked for: ${install}`);
    if (s.explicit) {
      console.error('bench: a phase asked for by name cannot run; no ratio against a missing or weaker reference (exit 2)');
      return 2;
    }
  }
  const nginxVersion = findTool('nginx') ? (await run(findTool('nginx')!, ['-v'])).stderr.trim() : 'nginx not installed';
  const cpus = os.cpus();
  const load0 = os.loadavg();
  console.log(
    [
      `# hubcache benchmark — ${new Date().toISOString()}`,
      '',
      `- machine: ${cpus.length} × ${cpus[0]?.model ?? 'unknown CPU'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ${os.platform()} ${os.release()}, node ${process.version}; ` +
        `load average at start ${load0.map((x) => x.toFixed(2)).join(' ')} (other work on the machine makes every figure noisier: compare ratios within one run)`,
      `- phases ${phases.join(', ')}; ${s.rounds} interleaved rounds per row (order alternates), medians (min–max); ratio = median over rounds of mirror ÷ reference in that round`,
      `- processes: fake hub + CDN (this process), mirror (child, fresh data dir per phase, config defaults + ${JSON.stringify(s.mirrorConfig)}), ` +
        `${s.clientProcs} client processes (raw sockets, every body byte compared with the source), nginx (${nginxVersion}, ${s.nginxWorkers} worker, sendfile on), hey, aria2c, curl`,
      `- warm sizes ${s.warmSizes.map(fmtSize).join(', ')}, clients ${s.warmClients.join('/')}, time box ${s.warmMaxSeconds} s; HEAD hey -n ${s.headRequests} -c ${s.headConcurrency}; ` +
        `cold ${s.coldSizes.map(fmtSize).join(', ')}; herd ${s.herdClients} × ${fmtSize(s.herdSize)} at ${s.herdCapMiBps} MiB/s per connection and uncapped; ` +
        `herd ${s.herd100Clients} × ${fmtSize(s.herd100Size)} at ${s.herd100CapMiBps} MiB/s; aria2/curl ${fmtSize(s.segSize)} at ${s.segCapMiBps} MiB/s; ranges ${fmtSize(s.rangeSize)} at ${s.rangeCapMiBps} MiB/s; s3 ${fmtSize(s.s3Size)}; ` +
        `replicas ${s.replicasClients} × ${fmtSize(s.replicasSize)} over ${s.replicasCount} vs 1 at ${s.replicasCapMiBps} MiB/s`,
      '- MB = 10^6 bytes, MiB = 2^20. A benchmark: goals are information; exit status 1 means a correctness failure.',
      ...(s.rounds < 3 ? ['- fewer than 3 rounds: the ratios are indicative only'] : []),
      ...(s.profDir ? [`- profiling to ${s.profDir}: figures are not comparable with unprofiled runs`] : []),
    ].join('\n'),
  );
  console.log('');

  const report = new Report();
  for (const k of skipped) report.skip(k.phase, k.reason);
  const cleanup = new Cleanup(startJanitor());
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-bench-'));
  cleanup.push('temp dir', () => fs.rmSync(tmp, { recursive: true, force: true }), { kind: 'rm', path: tmp });
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    console.error(`\nbench: ${sig}: cleaning up (children, nginx, mounts, temp files)`);
    void cleanup
      .runAll()
      .then(() => cleanup.janitor?.close())
      .finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let clients: ClientPool | undefined;
  let ctx: BenchContext | undefined;
  const phaseLog: { phase: Phase; seconds: number; loadBefore: number[]; loadAfter: number[] }[] = [];
  try {
    clients = await startClientPool(s.clientProcs);
    const pool = clients;
    cleanup.push(
      'client processes',
      () => pool.close(),
      pool.pids.map((pid) => ({ kind: 'kill', pid })),
    );
    ctx = new BenchContext(s, report, clients, tmp, cleanup);
    for (const p of phases) {
      const t = performance.now();
      const loadBefore = os.loadavg();
      try {
        await PHASE_FN[p](ctx);
      } catch (err) {
        ctx.fail(`${p}: the phase stopped: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      phaseLog.push({ phase: p, seconds: (performance.now() - t) / 1000, loadBefore, loadAfter: os.loadavg() });
      ctx.progress(`${p} done in ${fmt((performance.now() - t) / 1000, 0)} s (load average ${os.loadavg()[0]!.toFixed(2)})`);
    }
  } finally {
    await cleanup.runAll();
    cleanup.janitor?.close();
  }
  if (interrupted) return 130;

  const failures = ctx?.failures ?? [];
  console.log(report.render());
  console.log('');
  console.log(`load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`correctness: ${failures.length === 0 ? 'every status, length, byte and sha256 OK' : `${failures.length} FAILURE(S)`}`);
  for (const f of failures) console.log(`  - ${f.split('\n')[0]}`);

  const json = {
    date: new Date().toISOString(),
    machine: { cpus: cpus.length, model: cpus[0]?.model, totalMemGiB: os.totalmem() / 2 ** 30, node: process.version, platform: `${os.platform()} ${os.release()}`, nginx: nginxVersion },
    settings: s,
    phases: phaseLog,
    rows: report.rows,
    skipped: report.skipped,
    details: ctx?.details ?? {},
    failures,
    durationSeconds: ctx ? (performance.now() - ctx.t0) / 1000 : 0,
  };
  fs.mkdirSync(path.dirname(RESULTS_FILE), { recursive: true });
  fs.writeFileSync(RESULTS_FILE, `${JSON.stringify(json, (_k, v: unknown) => (v === Infinity ? 'Infinity' : v), 2)}\n`);
  console.log(`\nresults written to ${path.relative(process.cwd(), RESULTS_FILE)} (run took ${fmt(json.durationSeconds / 60, 1)} min)`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
