/**
 * Adopts a file from outside the data directory as a blob (`hubcache import`), with the same
 * guarantee as a fill: the blob becomes visible only after its size and digest were verified.
 *
 * - Same filesystem: a hard link into `staging/`, hashed there, fsynced, then committed by the
 *   store (renamed into place; with an object store, uploaded first). No
 *   byte is copied and the source is left as it was (its link count aside); the blob shares the
 *   source's inode, so the source must not be modified in place afterwards (Hugging Face clients
 *   never do: they write a new file and rename it).
 * - Otherwise (another filesystem, or links not allowed), or when asked: a copy through the
 *   store's staged blob, which hashes, verifies, fsyncs and commits.
 * A digest that does not match the key fails with IntegrityError and leaves nothing behind.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';
import { parseBlobKey, type BlobKey } from './blob-layout.js';
import type { BlobStore } from './blob-store-contract.js';
import { diskFullError } from './disk-space.js';
import { digestOf } from './reconcile.js';

export type AdoptMode = 'linked' | 'copied';

export interface AdoptOptions {
  /** Copy even when a hard link would do. */
  copy?: boolean;
  /** Called before copying (not before linking): may throw to refuse (e.g. not enough free space). */
  beforeCopy?: (size: number) => Promise<void>;
  /** Bytes copied so far (copies only). */
  onBytes?: (n: number) => void;
  signal?: AbortSignal;
}

/** Link errors after which a copy is the way: another filesystem, or one without hard links. */
const LINK_UNSUPPORTED = new Set(['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'ENOSYS']);

export async function adoptFile(store: BlobStore, key: BlobKey, source: string, opts: AdoptOptions = {}): Promise<AdoptMode> {
  const size = (await fsp.stat(source)).size;
  if (!opts.copy && (await linkIn(store, key, source, size))) return 'linked';
  await opts.beforeCopy?.(size);
  await copyIn(store, key, source, size, opts);
  return 'copied';
}

/** Hard-links, verifies and commits; false when this filesystem cannot link it here. */
async function linkIn(store: BlobStore, key: BlobKey, source: string, size: number): Promise<boolean> {
  const staging = store.layout.stagingPath(`${randomBytes(12).toString('hex')}.part`);
  try {
    await fsp.link(source, staging);
  } catch (err) {
    if (LINK_UNSUPPORTED.has((err as NodeJS.ErrnoException).code ?? '')) return false;
    throw diskFullError(err, key);
  }
  try {
    const digest = await digestOf(staging, key, size);
    if (digest !== parseBlobKey(key).hex) throw new MirrorError('IntegrityError', `content does not hash to ${key} (it hashes to ${digest})`);
    const handle = await fsp.open(staging, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await store.commit(key, staging, { size, digest });
    return true;
  } catch (err) {
    await fsp.rm(staging, { force: true });
    throw diskFullError(err, key);
  }
}

async function copyIn(store: BlobStore, key: BlobKey, source: string, size: number, opts: AdoptOptions): Promise<void> {
  const writer = await store.stage(key, size);
  try {
    const input = fs.createReadStream(source, { highWaterMark: 1024 * 1024, signal: opts.signal });
    let offset = 0;
    for await (const chunk of input) {
      await writer.write(offset, [chunk as Buffer]);
      offset += (chunk as Buffer).length;
      opts.onBytes?.((chunk as Buffer).length);
    }
    await writer.commit();
    writer.dispose();
  } catch (err) {
    await writer.abort();
    if (err instanceof MirrorError && err.code === 'IntegrityError') throw new MirrorError('IntegrityError', `content does not hash to ${key} (${err.message})`);
    throw err;
  }
}
