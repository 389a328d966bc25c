/**
 * The BlobStore contract: where verified blobs live, whatever holds them (the local filesystem,
 * an S3-compatible object store). Every driver runs the same conformance suite
 * (test/integration/blob-store-contract.test.ts).
 *
 * The local data dir is always the staging area: a fill writes its bytes into a staging file
 * under `layout.stagingDir` exactly as it would without any object store (readers of the fill
 * stream from that file), checks size and digest, and then hands the file to `commit`. A remote
 * store may upload parts of the file while it is written (told by a StageListener), as long as
 * nothing becomes visible before `commit`.
 *
 * Guarantees every driver gives:
 * - A committed blob is complete and verified: `commit` refuses (IntegrityError) a staged file
 *   whose size or digest is not the key's, and a blob is visible to `stat`, `openRead` and
 *   `list` only once `commit` has resolved.
 * - Nothing partial is ever visible: a crash, a failed upload or a refused commit at any point
 *   leaves either no blob or the whole verified blob, never a prefix or other bytes.
 * - `commit` takes the staged file over: on success it becomes the blob (or its local copy), on
 *   failure it is removed. Committing a key that is already stored is harmless (same bytes).
 * - `remove` is idempotent: removing a missing blob succeeds. After it resolves the blob is no
 *   longer visible.
 * - `list` yields committed blobs only (never staging files, uploads in progress or stray names),
 *   each once, with its size.
 * - Blobs are immutable: a key always names the same bytes.
 * - A store that cannot be reached (an object store down or slow) fails the call within a bounded
 *   time with `StorageUnavailable` (503), never a hang.
 */
import type { Readable } from 'node:stream';
import type { BlobKey, BlobLayout } from './blob-layout.js';
import type { BlobFile, RemoteBlob } from './blob-store.js';
import type { StagedBlob } from './staged-blob.js';

/** What the caller that hashed a staged file found: its byte count and hex digest (the key's algorithm). */
export interface VerifiedBlob {
  size: number;
  digest: string;
}

export interface StoredBlob {
  key: BlobKey;
  size: number;
}

/** How a blob is staged. */
export interface StageOptions {
  /**
   * The bytes are a copy of a blob another replica is storing in the same shared store (a fill
   * fed by that replica): a store that uploads while the blob is written (S3) does not, and at
   * the commit uploads only if the object is still absent. A local store ignores it.
   */
  peerCopy?: boolean;
}

export interface BlobStore {
  /** `fs` or `s3`: for logs and the startup line. */
  readonly kind: 'fs' | 's3';
  /** The local data dir: staging files, and the local copies of committed blobs. */
  readonly layout: BlobLayout;

  /** Prepares the store (directories, a reachable bucket) and removes staging leftovers of an earlier process. */
  init(): Promise<void>;

  /**
   * Stages a write: a fresh staging file under the data dir, written at any offsets and hashed as
   * its prefix grows. Its `commit()` checks size and digest, then calls this store's `commit`.
   */
  stage(key: BlobKey, size: number, opts?: StageOptions): Promise<StagedBlob>;

  /**
   * Makes a verified staged file durable in the store (see the guarantees above). The local
   * copy of the blob, if the driver keeps one, is then at `pathOf(key)`.
   */
  commit(key: BlobKey, stagedPath: string, verified: VerifiedBlob): Promise<void>;

  /** Size of a committed blob, or null when the store does not hold it. */
  stat(key: BlobKey): Promise<{ size: number } | null>;

  /**
   * Bytes [start, end] (inclusive) of a committed blob: from the local copy when there is one,
   * else from the store. Errors (including StorageUnavailable) surface on the stream.
   */
  openRead(key: BlobKey, start: number, end: number): Readable;

  /**
   * Opens a committed blob of `size` bytes for the hit path: its local file (a BlobFile, read by
   * positional reads) when there is one, else (a driver with a remote store) a RemoteBlob read
   * by ranged requests. `null` when the store does not hold it with that size (the caller forgets
   * it and fetches it again). The caller releases it.
   */
  openBlob(key: BlobKey, size: number): Promise<BlobFile | RemoteBlob | null>;

  /** Where the local copy of a committed blob is (or would be) on disk. */
  pathOf(key: BlobKey): string;

  /** Removes a blob (and its local copy). Idempotent. */
  remove(key: BlobKey): Promise<void>;

  /**
   * Removes only the local copy of a blob, to make room on the local disk. With `fs` the local
   * copy is the blob (the same as `remove`); with a remote store the blob stays stored and
   * visible (read remotely from then on). Idempotent.
   */
  dropLocal(key: BlobKey): Promise<void>;

  /**
   * Whether `dropLocal` keeps the blob stored (a remote store): then evicting the local copy must
   * not forget the blob's index rows.
   */
  readonly localCopiesAreCache: boolean;

  /**
   * With a remote store (`localCopiesAreCache`), its local copies: what the disk budget counts and
   * what eviction can free, since the bucket may hold far more than the disk. Undefined for a
   * store whose local files are the blobs (the index's stored bytes are then the disk's).
   */
  readonly localCopies?: LocalCopies;

  /** Every committed blob, for reconciliation with the index and for eviction. */
  list(): AsyncIterable<StoredBlob>;

  /**
   * Whether a listed blob the index does not know may be adopted without re-reading it. An
   * object store only ever shows objects whose upload completed after verification (true); a
   * file on a local disk may have been changed by hand (false: the caller re-hashes it first).
   */
  readonly listedBlobsAreVerified: boolean;

  /** Releases connections. */
  close(): Promise<void>;
}

/** The local copies in front of a remote store, as this process made, found or removed them. */
export interface LocalCopies {
  /** Bytes of all local copies. */
  bytes(): number;
  has(key: BlobKey): boolean;
}
