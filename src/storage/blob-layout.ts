/**
 * The on-disk layout of a data directory. This is the only module that builds paths inside it.
 *
 * ```
 * <dataDir>/
 *   index.sqlite            CacheIndex (plus -wal, -shm): names → blobs; see cache-index.ts
 *   blobs-v1/               verified, immutable, content-addressed blobs (layout version in the name)
 *     sha256/ab/cd/<64 hex>      LFS files, by the sha256 of their content
 *     gitsha1/ab/cd/<40 hex>     regular files, by their git blob id: sha1("blob <size>\0" + content)
 *   staging/                fills in progress: <random>.part, never read as a finished blob
 *   quarantine/             blobs `hubcache verify` found corrupt: <algorithm>-<hex>-<time>, never served
 *   lock.sqlite             held exclusively by the running process (one process per data dir)
 * ```
 *
 * A file exists under `blobs-v1/` only after its size and digest were verified and it was fsynced
 * (see BlobWriter.commit). Keys are validated hex, so a key can never name a path outside the tree.
 */
import path from 'node:path';

export type DigestAlgorithm = 'sha256' | 'gitsha1';

/** `sha256:<64 hex>` or `gitsha1:<40 hex>`: the digest of the content is its address. */
export type BlobKey = `${DigestAlgorithm}:${string}`;

const KEY_RE = /^(?:sha256:[0-9a-f]{64}|gitsha1:[0-9a-f]{40})$/;

export function isBlobKey(text: string): text is BlobKey {
  return KEY_RE.test(text);
}

export function parseBlobKey(key: BlobKey): { algorithm: DigestAlgorithm; hex: string } {
  if (!isBlobKey(key)) throw new TypeError(`not a blob key: ${JSON.stringify(key)}`);
  const [algorithm, hex] = key.split(':') as [DigestAlgorithm, string];
  return { algorithm, hex };
}

export function blobKey(algorithm: DigestAlgorithm, hex: string): BlobKey | null {
  const key = `${algorithm}:${hex.toLowerCase()}`;
  return isBlobKey(key) ? key : null;
}

export const LAYOUT_VERSION_DIR = 'blobs-v1';

export class BlobLayout {
  readonly root: string;

  constructor(dataDir: string) {
    this.root = path.resolve(dataDir);
  }

  get indexPath(): string {
    return path.join(this.root, 'index.sqlite');
  }

  get blobsDir(): string {
    return path.join(this.root, LAYOUT_VERSION_DIR);
  }

  get stagingDir(): string {
    return path.join(this.root, 'staging');
  }

  blobPath(key: BlobKey): string {
    const { algorithm, hex } = parseBlobKey(key);
    return path.join(this.blobsDir, algorithm, hex.slice(0, 2), hex.slice(2, 4), hex);
  }

  get quarantineDir(): string {
    return path.join(this.root, 'quarantine');
  }

  get lockPath(): string {
    return path.join(this.root, 'lock.sqlite');
  }

  /** Where the serving process records the address it listens on (read by `hubcache health`). */
  get listeningPath(): string {
    return path.join(this.root, 'listening.json');
  }

  stagingPath(name: string): string {
    if (!/^[A-Za-z0-9._-]+\.part$/.test(name)) throw new TypeError(`bad staging name ${name}`);
    return path.join(this.stagingDir, name);
  }
}
