/**
 * Prints the top frames of V8 CPU profiles, e.g. the mirror's per-row profiles of a
 * `BENCH_PROF_DIR=/tmp/prof npm run bench -- warm` run:
 *
 *   npx tsx bench/prof-top.ts /tmp/prof/mirror-warm-1024MiB-c8.cpuprofile [more files] [--top 25] [--total]
 *
 * Self time (default) or total time (`--total`), in ms and as a share of the busy (non-idle) time.
 */
import fs from 'node:fs';
import { summarizeProfile, type CpuProfile } from './lib/cpuprofile.js';

const args = process.argv.slice(2);
const files = args.filter((a, i) => !a.startsWith('--') && args[i - 1] !== '--top');
const topAt = args.indexOf('--top');
const top = topAt >= 0 ? Number(args[topAt + 1]) : 20;
const byTotal = args.includes('--total');
if (files.length === 0 || !Number.isInteger(top) || top < 1) {
  console.error('usage: npx tsx bench/prof-top.ts <file.cpuprofile>… [--top N] [--total]');
  process.exit(2);
}
for (const file of files) {
  const s = summarizeProfile(JSON.parse(fs.readFileSync(file, 'utf8')) as CpuProfile);
  const key = byTotal ? 'totalMs' : 'selfMs';
  const rows = [...s.frames].sort((a, b) => b[key] - a[key]).slice(0, top);
  console.log(`${file}: ${(s.wallMs / 1000).toFixed(1)} s profiled, ${(s.busyMs / 1000).toFixed(1)} s busy (not idle); top ${rows.length} by ${byTotal ? 'total' : 'self'} time`);
  console.log(`${'ms'.padStart(9)} ${'% busy'.padStart(7)}  frame`);
  for (const r of rows) console.log(`${r[key].toFixed(0).padStart(9)} ${((100 * r[key]) / s.busyMs).toFixed(1).padStart(6)}%  ${r.frame}`);
  console.log('');
}
