/**
 * The data directory must be on a local filesystem: SQLite's WAL mode relies on shared memory and
 * POSIX locks that network filesystems do not provide reliably (sqlite.org/wal.html,
 * howtocorrupt.html), and the one-process lock would not hold across hosts. The type comes from
 * statfs(2); the magic numbers are Linux's (linux/magic.h).
 */
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';

const NETWORK_FILESYSTEMS: ReadonlyMap<number, string> = new Map([
  [0x6969, 'NFS'],
  [0x517b, 'SMB'],
  [0xff534d42, 'CIFS'],
  [0xfe534d42, 'SMB2'],
  [0x0bd00bd0, 'Lustre'],
  [0x47504653, 'GPFS'],
  [0x00c36400, 'CephFS'],
  [0x013111a8, 'IBRIX'],
  [0x6b414653, 'AFS'],
  [0x5346414f, 'OpenAFS'],
]);

/** The network filesystem a statfs type stands for, or undefined for a local one. */
export function networkFilesystemName(type: number): string | undefined {
  return NETWORK_FILESYSTEMS.get(type >>> 0);
}

/** Throws a clear error when `dir` is on a network filesystem. */
export async function assertLocalFilesystem(dir: string): Promise<void> {
  const { type } = await fsp.statfs(dir);
  const name = networkFilesystemName(type);
  if (name) {
    throw new MirrorError('Internal', `The data directory ${dir} is on a network filesystem (${name}): SQLite's WAL mode and the process lock need a local filesystem; use a local disk`);
  }
}
