/**
 * `hubcache verify`: re-hashes every stored blob (its local copy when there is one, else the
 * store's object). A blob whose bytes no longer match its key (disk corruption, tampering) is
 * moved to `quarantine/` (its local copy; an object store's copy is removed) and forgotten by the
 * index, so it is never served again and the next request refetches it; a missing one is forgotten.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { BlobKey } from './blob-layout.js';
import type { BlobStore } from './blob-store-contract.js';
import { isNotFound } from './blob-store.js';
import type { CacheIndex } from './cache-index-contract.js';
import { digestOfStream } from './reconcile.js';

export interface VerifyReport {
  verified: number;
  bytes: number;
  corrupt: Array<{ key: BlobKey; quarantinedAs: string }>;
  missing: BlobKey[];
}

export interface VerifyProgress {
  done: number;
  total: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface VerifyOptions {
  onProgress?: (p: VerifyProgress) => void;
  /** Each blob's outcome, as it is known. */
  onBlob?: (key: BlobKey, outcome: 'ok' | 'corrupt' | 'missing', size: number) => void;
  /** Stops between blobs (the report then covers the blobs checked so far). */
  signal?: AbortSignal;
}

/** Safe while the server runs: a blob committed meanwhile is simply not checked this time. */
export async function verifyBlobs(store: BlobStore, index: CacheIndex, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const { onProgress, onBlob, signal } = opts;
  const rows = await index.allBlobs();
  const bytesTotal = rows.reduce((n, r) => n + r.size, 0);
  const report: VerifyReport = { verified: 0, bytes: 0, corrupt: [], missing: [] };
  await fsp.mkdir(store.layout.quarantineDir, { recursive: true });
  let done = 0;
  for (const row of rows) {
    if (signal?.aborted) break;
    const st = await store.stat(row.blobKey);
    if (!st) {
      await index.forgetBlob(row.blobKey);
      report.missing.push(row.blobKey);
      onBlob?.(row.blobKey, 'missing', row.size);
    } else {
      const bytes = st.size > 0 ? store.openRead(row.blobKey, 0, st.size - 1) : Readable.from([]);
      const digest = await digestOfStream(bytes, row.blobKey, st.size);
      if (st.size !== row.size || digest !== row.blobKey.slice(row.blobKey.indexOf(':') + 1)) {
        const target = path.join(store.layout.quarantineDir, `${row.blobKey.replace(':', '-')}-${Date.now()}`);
        await index.forgetBlob(row.blobKey);
        const quarantined = await fsp.rename(store.pathOf(row.blobKey), target).then(
          () => true,
          (err: unknown) => {
            if (isNotFound(err)) return false; // no local copy: the corrupt bytes were the store's
            throw err;
          },
        );
        await store.remove(row.blobKey);
        report.corrupt.push({ key: row.blobKey, quarantinedAs: quarantined ? target : 'removed from the blob store' });
        onBlob?.(row.blobKey, 'corrupt', row.size);
      } else {
        report.verified++;
        report.bytes += st.size;
        onBlob?.(row.blobKey, 'ok', st.size);
      }
    }
    done++;
    onProgress?.({ done, total: rows.length, bytesDone: report.bytes, bytesTotal });
  }
  return report;
}
