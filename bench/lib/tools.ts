/**
 * The external programs the bench measures against or with. None is installed silently: a missing
 * one skips the rows that need it, with the exact command that installs it (Debian package names).
 */
import fs from 'node:fs';
import path from 'node:path';

export type ToolName =
  | 'nginx'
  | 'hey'
  | 'aria2c'
  | 'curl'
  | 'mkfs.ext4'
  | 'filefrag'
  | 'mount'
  | 'umount'
  | 'dd'
  | 'fallocate'
  | 'swift-proxy-server'
  | 'swift-object-server'
  | 'swift-container-server'
  | 'swift-account-server'
  | 'python3';

/** Debian package of each tool. */
export const PACKAGE: Record<ToolName, string> = {
  nginx: 'nginx',
  hey: 'hey',
  aria2c: 'aria2',
  curl: 'curl',
  'mkfs.ext4': 'e2fsprogs',
  filefrag: 'e2fsprogs',
  mount: 'mount',
  umount: 'mount',
  dd: 'coreutils',
  fallocate: 'util-linux',
  // OpenStack Swift for the s3 phase (scripts/swift-s3.sh runs /usr/bin/swift-*-server with /usr/bin/python3).
  'swift-proxy-server': 'swift-proxy',
  'swift-object-server': 'swift-object',
  'swift-container-server': 'swift-container',
  'swift-account-server': 'swift-account',
  python3: 'python3',
};

const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

const found = new Map<ToolName, string | null>();

/** Absolute path of the tool, or null: PATH first, then the usual sbin directories (nginx, mkfs live there). */
export function findTool(name: ToolName): string | null {
  if (found.has(name)) return found.get(name) ?? null;
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_DIRS];
  let hit: string | null = null;
  for (const dir of dirs) {
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      hit = p;
      break;
    } catch {
      // not here
    }
  }
  found.set(name, hit);
  return hit;
}

export function mustTool(name: ToolName): string {
  const p = findTool(name);
  if (!p) throw new Error(`${name} not found (apt-get install ${PACKAGE[name]})`);
  return p;
}

/** The tools of `names` that are missing, and the one apt-get line that installs all of them. */
export function missingTools(names: readonly ToolName[]): { missing: ToolName[]; install: string } {
  const missing = names.filter((n) => findTool(n) === null);
  const pkgs = [...new Set(missing.map((n) => PACKAGE[n]))];
  return { missing, install: pkgs.length > 0 ? `apt-get install ${pkgs.join(' ')}` : '' };
}
