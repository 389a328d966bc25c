/**
 * Startup reconciliation of the index with the disk (after a crash, a power cut, or hands in the
 * data dir). After it:
 * - every `blobs` row names a file of the recorded size (rows of missing or resized files are
 *   forgotten, so the next request refetches);
 * - every file under `blobs-v1/` is either recorded (an orphan whose content hashes to its name is
 *   adopted: it was verified before its rename, and only the index commit was lost) or removed;
 * - nothing else is under `blobs-v1/` (stray names are removed).
 * Staging files are removed by FsBlobStore.init (a partial fill is simply started again).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { blobKey, type BlobKey, type DigestAlgorithm } from './blob-layout.js';
import { newHasher, type FsBlobStore } from './blob-store.js';
import type { CacheIndex } from './cache-index.js';

export interface ReconcileReport {
  checked: number;
  forgotten: BlobKey[];
  adopted: BlobKey[];
  removed: string[];
}

/** Hashes a stored file the way its key says (sha256 or git blob sha1). */
export async function digestOf(file: string, key: BlobKey, size: number): Promise<string> {
  const hasher = newHasher(key, size);
  await pipeline(
    fs.createReadStream(file, { highWaterMark: 1024 * 1024 }),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        hasher.update(chunk);
        cb();
      },
    }),
  );
  return hasher.digest('hex');
}

export async function reconcile(store: FsBlobStore, index: CacheIndex): Promise<ReconcileReport> {
  const report: ReconcileReport = { checked: 0, forgotten: [], adopted: [], removed: [] };
  const known = new Set<string>();
  for (const row of index.allBlobs()) {
    report.checked++;
    const st = await store.stat(row.blobKey);
    if (!st || st.size !== row.size) {
      index.forgetBlob(row.blobKey);
      report.forgotten.push(row.blobKey);
    } else known.add(row.blobKey);
  }
  const root = store.layout.blobsDir;
  for (const entry of await fsp.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const rel = path.relative(root, file).split(path.sep);
    const algorithm = rel[0] as DigestAlgorithm;
    const key = rel.length === 4 && (algorithm === 'sha256' || algorithm === 'gitsha1') ? blobKey(algorithm, entry.name) : null;
    if (key && store.pathOf(key) === file && known.has(key)) continue;
    if (key && store.pathOf(key) === file) {
      const size = (await fsp.stat(file)).size;
      if ((await digestOf(file, key, size)) === key.slice(key.indexOf(':') + 1)) {
        index.recordBlob(key, size);
        report.adopted.push(key);
        continue;
      }
    }
    await fsp.rm(file, { force: true });
    report.removed.push(file);
  }
  return report;
}
