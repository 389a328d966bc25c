/**
 * Free space on the cache disk (test-plan F7/T26, nginx `min_free`): how many bytes this process may
 * still write under the data directory, and the one translation of "disk full" errors.
 *
 * The guard itself lives in the Mirror, which knows what fills in progress still need; this module
 * only asks the filesystem. Concurrent questions share one `statfs` call.
 */
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';

export type StatFs = (dir: string) => Promise<{ bavail: number; bsize: number; blocks?: number }>;

export class DiskSpace {
  readonly dir: string;
  /** Bytes always left free (config `minFreeBytes`). */
  readonly minFreeBytes: number;
  readonly #statfs: StatFs;
  #inFlight: Promise<number> | null = null;

  constructor(dir: string, minFreeBytes: number, statfs: StatFs = (d) => fsp.statfs(d)) {
    this.dir = dir;
    this.minFreeBytes = minFreeBytes;
    this.#statfs = statfs;
  }

  /** Size of the filesystem of `dir` in bytes (`statfs` blocks × bsize). */
  async total(): Promise<number> {
    const st = await this.#statfs(this.dir);
    return (st.blocks ?? 0) * st.bsize;
  }

  /** Bytes available to unprivileged writers on the filesystem of `dir` (`statfs` bavail × bsize). */
  available(): Promise<number> {
    this.#inFlight ??= this.#statfs(this.dir)
      .then((st) => st.bavail * st.bsize)
      .finally(() => {
        this.#inFlight = null;
      });
    return this.#inFlight;
  }
}

/** A maxCacheBytes value: bytes, or a fraction of the filesystem's size. Throws an Error saying what is wrong. */
export function parseCacheBudget(text: string): { bytes: number } | { fraction: number } {
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(text.trim());
  if (pct) {
    const p = Number(pct[1]);
    if (!(p > 0 && p <= 100)) throw new Error(`a percentage must be above 0 and at most 100, got ${JSON.stringify(text)}`);
    return { fraction: p / 100 };
  }
  if (/^\d+$/.test(text.trim()) && Number.isSafeInteger(Number(text))) return { bytes: Number(text) };
  throw new Error(`expected a number of bytes or a percentage of the filesystem such as "90%", got ${JSON.stringify(text)}`);
}

/**
 * The cache budget in bytes for config `maxCacheBytes` (see parseCacheBudget): bytes as given, a
 * percentage of the filesystem's size, or (empty) the filesystem's size minus minFreeBytes.
 */
export async function cacheBudget(maxCacheBytes: string, diskSpace: DiskSpace): Promise<number> {
  const parsed = maxCacheBytes === '' ? null : parseCacheBudget(maxCacheBytes);
  if (parsed && 'bytes' in parsed) return parsed.bytes;
  const total = await diskSpace.total();
  return parsed ? Math.floor(total * parsed.fraction) : Math.max(0, total - diskSpace.minFreeBytes);
}

/** ENOSPC and EDQUOT become InsufficientStorage (507); any other error is returned unchanged. */
export function diskFullError(err: unknown, what: string): unknown {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new MirrorError('InsufficientStorage', `The cache disk is full (${code}) while storing ${what}`, { cause: err });
  }
  return err;
}

/** `1.5 GiB`-style sizes for messages. */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} bytes` : `${v.toFixed(1)} ${units[u]}`;
}
