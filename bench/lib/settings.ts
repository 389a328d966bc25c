/**
 * What a bench run measures: phases from the command line (`npm run bench -- warm head`) or
 * BENCH_PHASES, every other setting from BENCH_* environment variables. An invalid value stops
 * the run with exit code 2 and one message listing every problem.
 */
import os from 'node:os';
import type { Config } from '../../src/config/config.js';
import type { ToolName } from './tools.js';

export const PHASES = ['warm', 'head', 'cold', 'herd', 'herd100', 'aria2', 'curl', 'ranges', 's3', 'replicas', 'disk'] as const;
export type Phase = (typeof PHASES)[number];

/**
 * Run by default: all but `disk` (root, a loop-mounted scratch filesystem), `s3` (starts an
 * OpenStack Swift; about 2 minutes on the busy 2-core VM) and `replicas` (Swift and PostgreSQL,
 * four mirrors): ask for them.
 */
const DEFAULT_PHASES: Phase[] = PHASES.filter((p) => p !== 'disk' && p !== 's3' && p !== 'replicas');
const GROUPS: Record<string, Phase[]> = { all: [...PHASES], default: DEFAULT_PHASES, segmented: ['aria2', 'curl', 'ranges'], herds: ['herd', 'herd100'] };

/** Tools a phase cannot run without (its reference or its client). */
export const PHASE_TOOLS: Record<Phase, ToolName[]> = {
  warm: ['nginx'],
  head: ['nginx', 'hey'],
  cold: [],
  herd: [],
  herd100: [],
  aria2: ['aria2c'],
  curl: ['curl'],
  ranges: [],
  s3: ['swift-proxy-server', 'swift-object-server', 'swift-container-server', 'swift-account-server', 'python3'],
  // And PostgreSQL's server binaries (not on PATH: run.ts asks test/support/postgres.ts).
  replicas: ['swift-proxy-server', 'swift-object-server', 'swift-container-server', 'swift-account-server', 'python3'],
  disk: ['mkfs.ext4', 'filefrag', 'mount', 'umount', 'dd', 'curl'],
};

export interface Settings {
  phases: Phase[];
  /** The phases were named explicitly (command line or BENCH_PHASES). */
  explicit: boolean;
  rounds: number;
  warmSizes: number[];
  warmClients: number[];
  warmMaxSeconds: number;
  headRequests: number;
  headConcurrency: number;
  coldSizes: number[];
  herdClients: number;
  herdSize: number;
  herdCapMiBps: number;
  herd100Clients: number;
  herd100Size: number;
  herd100CapMiBps: number;
  segSize: number;
  segCapMiBps: number;
  aria2Connections: number;
  rangeSize: number;
  rangeCapMiBps: number;
  rangeDeadlineSeconds: number;
  s3Size: number;
  replicasClients: number;
  replicasSize: number;
  replicasCapMiBps: number;
  replicasCount: number;
  diskShards: number;
  diskShardSize: number;
  diskImageGiB: number;
  clientProcs: number;
  nginxWorkers: number;
  proxyCache: boolean;
  recyclePages: boolean;
  mirrorConfig: Partial<Config>;
  profDir: string | undefined;
}

export const SETTINGS_DOC: [string, string, string][] = [
  ['BENCH_PHASES', DEFAULT_PHASES.join(','), `phases (or as arguments: npm run bench -- warm head); also ${Object.keys(GROUPS).join(', ')}`],
  ['BENCH_ROUNDS', '3', 'interleaved rounds per row (fewer than 3: indicative only)'],
  ['BENCH_WARM_SIZES_MIB', '256,1024', 'warm file sizes'],
  ['BENCH_WARM_CLIENTS', '1,8,64', 'concurrent warm clients per row'],
  ['BENCH_WARM_MAX_SECONDS', '10', 'a warm run ends when all clients are done or after this long (aggregate over the run)'],
  ['BENCH_HEAD_REQUESTS', '20000', 'HEADs per hey run'],
  ['BENCH_HEAD_CONCURRENCY', '16', 'hey -c'],
  ['BENCH_COLD_SIZES_MIB', '256,1024', 'cold file sizes'],
  ['BENCH_HERD_CLIENTS', '11', 'herd size'],
  ['BENCH_HERD_SIZE_MIB', '1024', 'herd file size'],
  ['BENCH_HERD_CAP_MIBPS', '100', 'per-connection upstream cap of the capped herd'],
  ['BENCH_HERD100_CLIENTS', '100', 'clients of the big herd'],
  ['BENCH_HERD100_SIZE_MIB', '1024', 'file size of the big herd'],
  ['BENCH_HERD100_CAP_MIBPS', '200', 'per-connection upstream cap of the big herd'],
  ['BENCH_SEG_SIZE_MIB', '512', 'file size of the aria2 and curl rows'],
  ['BENCH_SEG_CAP_MIBPS', '50', 'per-connection upstream cap of the aria2 and curl rows'],
  ['BENCH_ARIA2_CONNECTIONS', '16', 'aria2c -x/-s'],
  ['BENCH_RANGE_SIZE_MIB', '1024', 'file size of the range rows'],
  ['BENCH_RANGE_CAP_MIBPS', '16', 'per-connection upstream cap while the range rows run (a slow fill)'],
  ['BENCH_RANGE_DEADLINE_SECONDS', '90', 'longest wait for a range answer'],
  ['BENCH_S3_SIZE_MIB', '256', 's3 phase: size of the cold file (a fresh one per round) and of the warm file'],
  ['BENCH_REPLICAS_CLIENTS', '11', 'replicas phase: herd size'],
  ['BENCH_REPLICAS_SIZE_MIB', '512', 'replicas phase: the cold file of each herd (1024 compares with herd; 8.4 min on the busy VM)'],
  ['BENCH_REPLICAS_CAP_MIBPS', '100', 'replicas phase: per-connection upstream cap'],
  ['BENCH_REPLICAS_COUNT', '3', 'replicas phase: replicas the herd is spread over (against 1)'],
  ['BENCH_DISK_SHARDS', '15', 'files pulled at once in the disk phase'],
  ['BENCH_DISK_SHARD_MIB', '256', 'size of each'],
  ['BENCH_DISK_IMAGE_GIB', '8', 'size of the loop-mounted ext4 image (preallocated with fallocate, else sparse)'],
  ['BENCH_CLIENT_PROCS', 'max(2, cores)', 'client processes'],
  ['BENCH_NGINX_WORKERS', '1', 'nginx worker_processes (1 = like the one mirror process)'],
  ['BENCH_PROXY_CACHE', '1', '0 = no nginx proxy_cache (info) rows'],
  ['BENCH_RECYCLE_PAGES', '1', '0 = no scratch write before each run that stores a file (bench/lib/pages.ts: why)'],
  ['BENCH_MIRROR_CONFIG', '{}', 'JSON config overrides for the mirror, e.g. {"maxConcurrentFills":32}'],
  ['BENCH_MIRROR_NODE_ARGS', 'unset', 'extra node flags for the mirror process only, space-separated, e.g. --trace-gc (its stderr is the bench\'s)'],
  ['BENCH_PROF_DIR', 'unset', 'V8 CPU profiles: --cpu-prof per child, plus one profile of the mirror per row (mirror-<row>.cpuprofile)'],
];

export function parseSettings(argv: string[], env: NodeJS.ProcessEnv): Settings {
  const problems: string[] = [];
  const num = (name: string, def: number, opts: { integer?: boolean; min?: number } = {}): number => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || n < (opts.min ?? 0)) {
      problems.push(`${name}: invalid value ${JSON.stringify(raw)} (a ${opts.integer ? 'whole ' : ''}number ≥ ${opts.min ?? 0})`);
      return def;
    }
    return n;
  };
  const list = (name: string, def: number[], opts: { integer?: boolean; min?: number } = {}): number[] => {
    const raw = env[name];
    if (raw === undefined || raw.trim() === '') return def;
    const xs = raw.split(',').map((x) => Number(x.trim()));
    if (xs.some((n) => !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || n < (opts.min ?? 0))) {
      problems.push(`${name}: invalid list ${JSON.stringify(raw)}`);
      return def;
    }
    return xs;
  };
  const mib = (n: number): number => Math.round(n * (1 << 20));

  const named = [...argv.filter((a) => !a.startsWith('-')), ...(env.BENCH_PHASES ?? '').split(',')].map((p) => p.trim()).filter(Boolean);
  const phases = new Set<Phase>();
  for (const p of named) {
    if (GROUPS[p]) GROUPS[p].forEach((x) => phases.add(x));
    else if ((PHASES as readonly string[]).includes(p)) phases.add(p as Phase);
    else problems.push(`unknown phase ${JSON.stringify(p)} (known: ${PHASES.join(', ')}; groups: ${Object.keys(GROUPS).join(', ')})`);
  }
  let mirrorConfig: Partial<Config> = {};
  if (env.BENCH_MIRROR_CONFIG?.trim()) {
    try {
      const v: unknown = JSON.parse(env.BENCH_MIRROR_CONFIG);
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
      mirrorConfig = v;
    } catch (err) {
      problems.push(`BENCH_MIRROR_CONFIG: not a JSON object (${(err as Error).message})`);
    }
  }
  const s: Settings = {
    phases: phases.size > 0 ? PHASES.filter((p) => phases.has(p)) : DEFAULT_PHASES,
    explicit: phases.size > 0,
    rounds: num('BENCH_ROUNDS', 3, { integer: true, min: 1 }),
    warmSizes: list('BENCH_WARM_SIZES_MIB', [256, 1024], { min: 1 / 16 }).map(mib),
    warmClients: list('BENCH_WARM_CLIENTS', [1, 8, 64], { integer: true, min: 1 }),
    warmMaxSeconds: num('BENCH_WARM_MAX_SECONDS', 10, { min: 0.5 }),
    headRequests: num('BENCH_HEAD_REQUESTS', 20_000, { integer: true, min: 100 }),
    headConcurrency: num('BENCH_HEAD_CONCURRENCY', 16, { integer: true, min: 1 }),
    coldSizes: list('BENCH_COLD_SIZES_MIB', [256, 1024], { min: 1 / 16 }).map(mib),
    herdClients: num('BENCH_HERD_CLIENTS', 11, { integer: true, min: 2 }),
    herdSize: mib(num('BENCH_HERD_SIZE_MIB', 1024, { min: 1 })),
    herdCapMiBps: num('BENCH_HERD_CAP_MIBPS', 100, { min: 0.1 }),
    herd100Clients: num('BENCH_HERD100_CLIENTS', 100, { integer: true, min: 2 }),
    herd100Size: mib(num('BENCH_HERD100_SIZE_MIB', 1024, { min: 1 })),
    herd100CapMiBps: num('BENCH_HERD100_CAP_MIBPS', 200, { min: 0.1 }),
    segSize: mib(num('BENCH_SEG_SIZE_MIB', 512, { min: 16 })),
    segCapMiBps: num('BENCH_SEG_CAP_MIBPS', 50, { min: 0.1 }),
    aria2Connections: num('BENCH_ARIA2_CONNECTIONS', 16, { integer: true, min: 1 }),
    rangeSize: mib(num('BENCH_RANGE_SIZE_MIB', 1024, { min: 16 })),
    rangeCapMiBps: num('BENCH_RANGE_CAP_MIBPS', 16, { min: 0.1 }),
    rangeDeadlineSeconds: num('BENCH_RANGE_DEADLINE_SECONDS', 90, { min: 1 }),
    s3Size: mib(num('BENCH_S3_SIZE_MIB', 256, { min: 1 })),
    replicasClients: num('BENCH_REPLICAS_CLIENTS', 11, { integer: true, min: 2 }),
    replicasSize: mib(num('BENCH_REPLICAS_SIZE_MIB', 512, { min: 1 })),
    replicasCapMiBps: num('BENCH_REPLICAS_CAP_MIBPS', 100, { min: 0.1 }),
    replicasCount: num('BENCH_REPLICAS_COUNT', 3, { integer: true, min: 2 }),
    diskShards: num('BENCH_DISK_SHARDS', 15, { integer: true, min: 1 }),
    diskShardSize: mib(num('BENCH_DISK_SHARD_MIB', 256, { min: 1 })),
    diskImageGiB: num('BENCH_DISK_IMAGE_GIB', 8, { min: 1 }),
    clientProcs: num('BENCH_CLIENT_PROCS', Math.max(2, os.cpus().length), { integer: true, min: 1 }),
    nginxWorkers: num('BENCH_NGINX_WORKERS', 1, { integer: true, min: 1 }),
    proxyCache: num('BENCH_PROXY_CACHE', 1, { integer: true }) !== 0,
    recyclePages: num('BENCH_RECYCLE_PAGES', 1, { integer: true }) !== 0,
    mirrorConfig,
    profDir: env.BENCH_PROF_DIR?.trim() || undefined,
  };
  // Each disk pass gets a fresh filesystem; the mirror keeps minFreeBytes (1 GiB by default) free.
  if (s.phases.includes('disk') && s.diskShards * s.diskShardSize + 2 ** 30 > s.diskImageGiB * 2 ** 30 * 0.9) {
    problems.push('BENCH_DISK_IMAGE_GIB: too small for BENCH_DISK_SHARDS × BENCH_DISK_SHARD_MIB plus 1 GiB free');
  }
  if (argv.includes('-h') || argv.includes('--help')) {
    printHelp();
    process.exit(0);
  }
  if (problems.length > 0) {
    console.error(`bench: invalid settings:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    process.exit(2);
  }
  return s;
}

function printHelp(): void {
  console.log('usage: npm run bench [-- <phase>…]   phases: ' + PHASES.join(', ') + '\n');
  for (const [name, def, doc] of SETTINGS_DOC) console.log(`  ${name.padEnd(30)} ${def.padEnd(16)} ${doc}`);
}
