/**
 * Startup reconciliation of the index with the blob store (after a crash, a power cut, or hands
 * in the data dir or the bucket). After it:
 * - every `blobs` row names a blob the store lists with the recorded size (rows of missing or
 *   resized blobs are forgotten, so the next request refetches);
 * - every blob the store lists is recorded: an orphan (verified before it was committed; only the
 *   index row was lost) is adopted, after re-hashing it when the store cannot vouch for it (a
 *   local file), or removed when its content does not hash to its name;
 * - under the local `blobs-v1/` there is nothing but local copies of listed blobs (stray names,
 *   and local copies of blobs the object store no longer holds, are removed).
 * When the store cannot be reached (an object store down at startup), the index and the local
 * copies are left as they are: the rows are checked again at the next start.
 * A shared index (`index: postgres`) requires `storage: s3` (config.ts): the store listed is then
 * the bucket every replica writes, never this box's local copies, so no row of a blob another
 * replica stored is forgotten for want of a local copy.
 * Staging files are removed by the store's init (a partial fill is simply started again).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { Writable, type Readable } from 'node:stream';
import { isMirrorError } from '../errors.js';
import { parseBlobKey, type BlobKey } from './blob-layout.js';
import type { BlobStore } from './blob-store-contract.js';
import { localFiles, newHasher } from './blob-store.js';
import type { CacheIndex } from './cache-index-contract.js';

export interface ReconcileReport {
  checked: number;
  forgotten: BlobKey[];
  adopted: BlobKey[];
  removed: string[];
  /** Why the store could not be listed (nothing was forgotten or adopted then). */
  storeUnavailable?: string;
}

/** Hashes a stored file the way its key says (sha256 or git blob sha1). */
export async function digestOf(file: string, key: BlobKey, size: number): Promise<string> {
  return digestOfStream(fs.createReadStream(file, { highWaterMark: 1024 * 1024 }), key, size);
}

/** Hashes the bytes of `stream` the way `key` says. */
export async function digestOfStream(stream: Readable, key: BlobKey, size: number): Promise<string> {
  const hasher = newHasher(key, size);
  await pipeline(
    stream,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        hasher.update(chunk);
        cb();
      },
    }),
  );
  return hasher.digest('hex');
}

export async function reconcile(store: BlobStore, index: CacheIndex): Promise<ReconcileReport> {
  const report: ReconcileReport = { checked: 0, forgotten: [], adopted: [], removed: [] };
  // The rows are read before the store is listed: on a shared index (PostgreSQL, several replicas
  // over one bucket) another replica records blobs meanwhile, always after their object is
  // committed, so every row read here names an object the later listing includes unless it is
  // really gone. Read the other way round, a blob committed between the two would be forgotten.
  const rows = await index.allBlobs();
  let held: Map<BlobKey, number> | null = new Map();
  try {
    for await (const blob of store.list()) held.set(blob.key, blob.size);
  } catch (err) {
    if (!isMirrorError(err) || err.code !== 'StorageUnavailable') throw err;
    held = null;
    report.storeUnavailable = err.message;
  }
  const known = new Set<BlobKey>();
  if (held) {
    for (const row of rows) {
      report.checked++;
      if (held.get(row.blobKey) === row.size) known.add(row.blobKey);
      else {
        await index.forgetBlob(row.blobKey);
        report.forgotten.push(row.blobKey);
      }
    }
    for (const [key, size] of held) {
      if (known.has(key)) continue;
      if (store.listedBlobsAreVerified || (await digestOf(store.pathOf(key), key, size)) === parseBlobKey(key).hex) {
        await index.recordBlob(key, size);
        report.adopted.push(key);
        known.add(key);
      } else {
        await store.remove(key);
        report.removed.push(store.pathOf(key));
      }
    }
  }
  for (const { file, key } of await localFiles(store.layout)) {
    // Local copies land only after their blob was committed: keep them while the store is unreachable.
    if (key && (held === null || known.has(key))) continue;
    await fsp.rm(file, { force: true });
    report.removed.push(file);
  }
  return report;
}
