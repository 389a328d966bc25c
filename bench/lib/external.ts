/**
 * External clients the bench drives: `hey` (HEAD load), `aria2c` (segmented download), `curl`
 * (one stream), `dd` (read-back), `filefrag` (extents). Always asynchronous: the fake hub shares
 * this process's event loop and must keep answering while they run.
 */
import { spawn } from 'node:child_process';

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Wall time of the process, ms. */
  ms: number;
}

export function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 15 * 60_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
}

// ------------------------------------------------------------------------------------ hey

export interface HeyResult {
  requests: number;
  reqPerSec: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  slowestMs: number;
  /** status code → responses */
  statuses: Record<string, number>;
  errors: string[];
}

/**
 * `hey -n N -c C -m HEAD url`, parsed, plus hey's own CPU seconds (bash's `times` after it: the
 * load generator shares the machine's cores with the server). Throws if hey fails.
 */
export async function heyHead(bin: string, url: string, requests: number, concurrency: number): Promise<HeyResult & { heyCpuSeconds: number; wallSeconds: number }> {
  const r = await run('bash', ['-c', '"$0" "$@"; rc=$?; times >&2; exit $rc', bin, '-n', String(requests), '-c', String(concurrency), '-m', 'HEAD', url]);
  if (r.code !== 0) throw new Error(`hey exited ${r.code ?? r.signal}: ${r.stderr.trim() || r.stdout.trim()}`);
  // `times`: the shell's user/sys, then its children's: "0m1.234s 0m0.567s".
  const t = [...r.stderr.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  const heyCpuSeconds = t.length >= 4 ? t[2]! + t[3]! : NaN;
  return { ...parseHey(r.stdout, requests), heyCpuSeconds, wallSeconds: r.ms / 1000 };
}

export function parseHey(out: string, requests: number): HeyResult {
  const num = (re: RegExp): number => {
    const m = re.exec(out);
    if (!m) throw new Error(`hey output without ${re.source}:\n${out}`);
    return Number(m[1]);
  };
  const pct = (p: number): number => num(new RegExp(`^\\s*${p}% in ([\\d.]+) secs`, 'm')) * 1000;
  const statuses: Record<string, number> = {};
  for (const m of out.matchAll(/^\s*\[(\d{3})\]\s+(\d+) responses/gm)) statuses[m[1]!] = Number(m[2]);
  const errors: string[] = [];
  const errSection = out.split('Error distribution:')[1];
  if (errSection) for (const line of errSection.split('\n')) if (line.trim()) errors.push(line.trim());
  return {
    requests,
    reqPerSec: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: pct(50),
    p90Ms: pct(90),
    p99Ms: pct(99),
    slowestMs: num(/Slowest:\s+([\d.]+) secs/) * 1000,
    statuses,
    errors,
  };
}

// ------------------------------------------------------------------------------------ filefrag, dd

/** Extents of a file (`filefrag`: "<file>: N extents found"). */
export async function extents(bin: string, file: string): Promise<number> {
  const r = await run(bin, [file]);
  const m = /: (\d+) extents? found/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`filefrag ${file}: ${r.stderr.trim() || r.stdout.trim()}`);
  return Number(m[1]);
}

/** Reads a file with O_DIRECT (`dd iflag=direct bs=4M`); returns bytes and seconds. */
export async function directRead(bin: string, file: string): Promise<{ bytes: number; seconds: number }> {
  const r = await run(bin, [`if=${file}`, 'of=/dev/null', 'bs=4M', 'iflag=direct']);
  // "268435456 bytes (268 MB, 256 MiB) copied, 0.25 s, 1.1 GB/s"
  const m = /^(\d+) bytes .* copied, ([\d.e+-]+) s/m.exec(r.stderr);
  if (r.code !== 0 || !m) throw new Error(`dd ${file}: ${r.stderr.trim()}`);
  return { bytes: Number(m[1]), seconds: Number(m[2]) };
}
