/**
 * The S3 driver of the BlobStore contract (blob-store-contract.ts): blobs live as objects of an
 * S3-compatible store (AWS S3, Ceph RGW, OpenStack Swift s3api, MinIO), and the local data dir is
 * the staging area and a read cache in front of it.
 *
 * - Objects: `<prefix>blobs-v1/<algorithm>/<hex>`, content-addressed like the local layout.
 * - Upload while the fill runs: a blob bigger than one part gets a multipart upload
 *   (s3-upload.ts) whose parts are uploaded in the background as soon as the staging file's
 *   contiguous written prefix covers them (bytes that never change again: the bytes hashed).
 *   commit (the staged file already verified by its writer) uploads the parts still missing and
 *   completes the upload; a blob of one part is one PutObject at commit. Only after the object
 *   store confirmed the whole object (PutObject, or CompleteMultipartUpload, then a HEAD of the
 *   right size) does the staged file become the local copy (rename under `blobs-v1/`) and the
 *   commit resolve. An object appears in S3 only when its upload completes, which happens only
 *   after verification, so nothing partial or unverified is ever visible; a fill that fails, a
 *   refused digest or a failed upload aborts the multipart upload. An object already stored under
 *   the key with the right size (another mirror sharing the bucket committed it) is not uploaded
 *   again (the streamed parts are aborted).
 * - Parts of at least `partSize` (8 MiB; S3 wants ≥ 5 MiB for every part but the last) and at
 *   most 1000 parts (Swift's limit; AWS allows 10000), a few in parallel. Parts are sent as
 *   Buffers, so the SDK signs their SHA-256 and the store checks it: a corrupted part is refused,
 *   never stored. A background part that fails is uploaded again at commit.
 * - Abandoned uploads (a process killed during one): at init, multipart uploads under
 *   `<prefix>blobs-v1/` initiated more than `abandonedUploadMs` ago are aborted; younger ones
 *   (another mirror's upload in progress) and other prefixes are left alone.
 * - Reads: the local copy when there is one (hot blobs at local disk speed), else a ranged GET
 *   of the object; a remote read also fetches the whole object into the local cache in the
 *   background, verified against the key before it lands (once per blob at a time).
 * - Every request is bounded (`timeoutMs` to connect and per silence on the socket; HEAD and LIST
 *   also as a whole): an unreachable or slow store fails with StorageUnavailable (503), never a hang.
 * - Requests use `requestChecksumCalculation: WHEN_REQUIRED` (no aws-chunked bodies, which some
 *   S3 implementations refuse) and bodies with a Content-Length.
 * Credentials come from the options or the SDK's usual chain (AWS_ACCESS_KEY_ID, profiles…);
 * they are never logged.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { MirrorError, isMirrorError } from '../errors.js';
import { BlobLayout, blobKey, parseBlobKey, type BlobKey } from './blob-layout.js';
import type { BlobStore, LocalCopies, StageOptions, StoredBlob, VerifiedBlob } from './blob-store-contract.js';
import { FsBlobStore, RemoteBlob, checkStaged, fsyncDir, isNotFound, type BlobFile, type BlobStoreOptions } from './blob-store.js';
import { crashPoint } from './crash-points.js';
import { diskFullError } from './disk-space.js';
import { MultipartUpload, PartBudget, abortAbandonedUploads, httpStatus, readPart } from './s3-upload.js';
import type { StagedBlob } from './staged-blob.js';

const MiB = 1024 * 1024;
/** Most parts in one multipart upload (Swift's limit; AWS S3 allows 10000). */
const MAX_PARTS = 1000;
/** Smallest part S3 accepts for every part but the last. */
const MIN_PART_SIZE = 5 * MiB;
/**
 * Part bytes held in memory at once by one upload at commit (bounds its parallelism), and by the
 * background uploads of all fills of one store together.
 */
const UPLOAD_MEMORY = 64 * MiB;
const HOUR_MS = 3600 * 1000;

export interface S3BlobStoreOptions {
  /** `http(s)://host[:port]`; empty: the SDK's default endpoint for the region (AWS). */
  endpoint: string;
  bucket: string;
  /** Region the requests are signed for; empty: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1. */
  region: string;
  /** Prepended to every object name (`team/hubcache/`); empty: none. */
  prefix: string;
  forcePathStyle: boolean;
  /** Explicit credentials; omitted: the SDK's default chain (AWS_ACCESS_KEY_ID, profiles, …). */
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** Bound on connecting, and on any silence of the socket, per request; HEAD and LIST as a whole. */
  timeoutMs: number;
  /** Smallest part of a multipart upload (default 8 MiB, at least 5 MiB); grown to fit 1000 parts. */
  partSize?: number;
  /** Parts uploaded at once (default 4; fewer when parts are big). */
  uploadConcurrency?: number;
  /** Fill the local cache from the store on a remote read (default true). */
  cacheReads?: boolean;
  /** The local store's options (staging writes, hashing, preallocation). */
  local?: BlobStoreOptions;
  /**
   * At init, multipart uploads under `<prefix>blobs-v1/` initiated longer ago than this are
   * aborted (left by a killed process). Default 24 h (config s3AbandonedUploadHours).
   */
  abandonedUploadMs?: number;
  /** Told how the sweep of abandoned uploads at init went (for the startup log). */
  onAbandonedUploads?: (report: { aborted: number; failed: number; olderThanMs: number } | { error: string }) => void;
  /** Wall clock, compared with the store's `Initiated` times (tests step it). Default Date.now. */
  now?: () => number;
  /** Extra S3 client settings (tests). */
  client?: S3ClientConfig;
}

/** Sizes of the local copies, summed as they come and go. */
class LocalCopySet implements LocalCopies {
  readonly #sizes = new Map<BlobKey, number>();
  #bytes = 0;

  add(key: BlobKey, size: number): void {
    this.delete(key);
    this.#sizes.set(key, size);
    this.#bytes += size;
  }

  delete(key: BlobKey): void {
    const size = this.#sizes.get(key);
    if (size === undefined) return;
    this.#sizes.delete(key);
    this.#bytes -= size;
  }

  bytes(): number {
    return this.#bytes;
  }

  has(key: BlobKey): boolean {
    return this.#sizes.has(key);
  }
}

export class S3BlobStore implements BlobStore {
  readonly kind = 's3';
  readonly layout: BlobLayout;
  readonly listedBlobsAreVerified = true;
  readonly localCopiesAreCache = true;
  readonly #localCopies = new LocalCopySet();
  readonly localCopies: LocalCopies = this.#localCopies;
  readonly #local: FsBlobStore;
  readonly #s3: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #partSize: number;
  readonly #concurrency: number;
  readonly #cacheReads: boolean;
  readonly #abandonedUploadMs: number;
  readonly #onAbandonedUploads: S3BlobStoreOptions['onAbandonedUploads'];
  readonly #now: () => number;
  /** Part bytes in memory for the background uploads of all fills. */
  readonly #budget = new PartBudget(UPLOAD_MEMORY);
  /** Multipart uploads not yet completed or aborted (close aborts them). */
  readonly #uploads = new Set<MultipartUpload>();
  /** Aborts of multipart uploads still being sent (close waits for them). */
  readonly #aborting = new Set<Promise<void>>();
  /** Blobs being copied into the local cache. */
  readonly #caching = new Map<BlobKey, Promise<void>>();
  /** Aborted by close: copies into the local cache stop (a 50 GB copy must not hold up a shutdown). */
  readonly #closing = new AbortController();

  constructor(layout: BlobLayout, opts: S3BlobStoreOptions) {
    this.layout = layout;
    this.#local = new FsBlobStore(layout, opts.local);
    this.#bucket = opts.bucket;
    this.#prefix = opts.prefix === '' || opts.prefix.endsWith('/') ? opts.prefix : `${opts.prefix}/`;
    this.#timeoutMs = opts.timeoutMs;
    this.#partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? 8 * MiB);
    this.#concurrency = Math.max(1, opts.uploadConcurrency ?? 4);
    this.#cacheReads = opts.cacheReads ?? true;
    this.#abandonedUploadMs = opts.abandonedUploadMs ?? 24 * HOUR_MS;
    this.#onAbandonedUploads = opts.onAbandonedUploads;
    this.#now = opts.now ?? Date.now;
    this.#s3 = new S3Client({
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      // The SDK's own region chain fails when nothing is set; S3-compatible stores mostly want us-east-1.
      region: opts.region || (process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1'),
      forcePathStyle: opts.forcePathStyle,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 2,
      requestHandler: { connectionTimeout: opts.timeoutMs, socketTimeout: opts.timeoutMs },
      ...opts.client,
    });
  }

  /** The object name of a blob. */
  objectKey(key: BlobKey): string {
    const { algorithm, hex } = parseBlobKey(key);
    return `${this.#prefix}blobs-v1/${algorithm}/${hex}`;
  }

  /**
   * Local directories, staging leftovers removed, and the bucket checked: a bucket that does not
   * exist or refuses us is a startup error; an unreachable store is not (local copies are served
   * meanwhile, misses get StorageUnavailable). Then multipart uploads of our prefix older than
   * `abandonedUploadMs` (left by a killed process) are aborted; a failure there is only reported.
   */
  async init(): Promise<void> {
    await this.#local.init();
    for await (const b of this.#local.list()) this.#localCopies.add(b.key, b.size);
    try {
      await this.#s3.send(new HeadBucketCommand({ Bucket: this.#bucket }), { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
    } catch (err) {
      const status = httpStatus(err);
      if (status === 404) throw new Error(`S3 bucket ${JSON.stringify(this.#bucket)} does not exist`);
      if (status === 403 || status === 401) throw new Error(`S3 bucket ${JSON.stringify(this.#bucket)}: access denied (check the S3 credentials)`);
      if (status !== undefined && status < 500) throw new Error(`S3 bucket ${JSON.stringify(this.#bucket)}: ${errorName(err)} (status ${status})`);
      return; // unreachable: nothing to sweep now
    }
    const olderThanMs = this.#abandonedUploadMs;
    try {
      const report = await abortAbandonedUploads(this.#s3, { bucket: this.#bucket, prefix: `${this.#prefix}blobs-v1/`, olderThanMs, now: this.#now(), timeoutMs: this.#timeoutMs });
      this.#onAbandonedUploads?.({ ...report, olderThanMs });
    } catch (err) {
      const status = httpStatus(err);
      this.#onAbandonedUploads?.({ error: `${errorName(err)}${status ? ` (status ${status})` : ''}` });
    }
  }

  pathOf(key: BlobKey): string {
    return this.layout.blobPath(key);
  }

  /**
   * A blob of more than one part is uploaded while it is written: its parts go to a multipart
   * upload (s3-upload.ts) as the staging file's contiguous written prefix covers them, and commit
   * uploads what is left and completes it. A fill that fails or is refused aborts the upload.
   */
  async stage(key: BlobKey, size: number, opts: StageOptions = {}): Promise<StagedBlob> {
    // A peer's copy: the peer uploads it; commit uploads only what is still absent then.
    if (size <= this.#partSizeFor(size) || opts.peerCopy) return this.#local.stageWith(key, size, (k, staged, verified) => this.commit(k, staged, verified));
    // The upload reads the staging file, whose path is known once it exists (before any write).
    const streamed: { upload?: MultipartUpload } = {};
    const staged = await this.#local.stageWith(key, size, (k, stagedPath, verified) => this.#commit(k, stagedPath, verified, streamed.upload), {
      written: (to) => streamed.upload?.written(to),
      aborted: () => {
        if (streamed.upload) void this.#abortUpload(streamed.upload);
      },
    });
    streamed.upload = this.#multipart(key, staged.stagingPath, size);
    return staged;
  }

  commit(key: BlobKey, stagedPath: string, verified: VerifiedBlob): Promise<void> {
    return this.#commit(key, stagedPath, verified, undefined);
  }

  /** `streamed`: the multipart upload that took parts of this staged file while it was written. */
  async #commit(key: BlobKey, stagedPath: string, verified: VerifiedBlob, streamed: MultipartUpload | undefined): Promise<void> {
    try {
      await checkStaged(key, stagedPath, verified);
      const stored = await this.#head(key);
      if (stored?.size !== verified.size) {
        await this.#upload(key, stagedPath, verified.size, streamed);
        const uploaded = await this.#head(key);
        if (uploaded?.size !== verified.size) {
          throw new MirrorError('StorageUnavailable', `the object store holds ${uploaded ? `${uploaded.size} bytes` : 'nothing'} for ${key} after its upload of ${verified.size} bytes`);
        }
      } else if (streamed) {
        await this.#abortUpload(streamed); // another mirror stored it: our parts go
      }
      crashPoint('after-upload');
      await this.#landLocally(key, stagedPath, verified.size);
    } catch (err) {
      if (streamed) await this.#abortUpload(streamed);
      await fsp.rm(stagedPath, { force: true });
      throw this.#storageError(err, `storing ${key}`);
    }
  }

  async stat(key: BlobKey): Promise<{ size: number } | null> {
    const local = await this.#local.stat(key);
    if (local) return local;
    return this.#head(key);
  }

  openRead(key: BlobKey, start: number, end: number): Readable {
    return this.#stream(key, start, end, true);
  }

  /**
   * The local copy when it is there with `size` bytes (the filesystem store's fast path), else,
   * when the object store holds the blob with that size, a RemoteBlob read by ranged GETs (which
   * never look at a local file: one of another size must not be served).
   */
  async openBlob(key: BlobKey, size: number): Promise<BlobFile | RemoteBlob | null> {
    const local = await this.#local.openBlob(key, size);
    if (local) return local;
    const stored = await this.#head(key);
    if (stored?.size !== size) return null;
    return new RemoteBlob((start, end) => this.#stream(key, start, end, false));
  }

  /**
   * Only the local copy goes: the object stays in the bucket and the blob stays cached (read
   * from the store until a read copies it back).
   */
  async dropLocal(key: BlobKey): Promise<void> {
    await this.#local.remove(key);
    this.#localCopies.delete(key);
  }

  #stream(key: BlobKey, start: number, end: number, localFirst: boolean): Readable {
    const out = new PassThrough({ highWaterMark: 256 * 1024 });
    const abort = new AbortController();
    out.once('close', () => abort.abort());
    void this.#read(key, start, end, out, abort.signal, localFirst).catch((err: unknown) => {
      if (!out.destroyed) out.destroy(this.#storageError(err, `reading ${key}`));
    });
    return out;
  }

  async remove(key: BlobKey): Promise<void> {
    try {
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.objectKey(key) }), { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
    } catch (err) {
      if (httpStatus(err) !== 404) throw this.#storageError(err, `removing ${key}`);
    }
    await this.#local.remove(key);
    this.#localCopies.delete(key);
  }

  async *list(): AsyncIterable<StoredBlob> {
    const prefix = `${this.#prefix}blobs-v1/`;
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.#s3.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
      } catch (err) {
        throw this.#storageError(err, 'listing blobs');
      }
      for (const object of page.Contents ?? []) {
        const [algorithm, hex, ...rest] = (object.Key ?? '').slice(prefix.length).split('/');
        const key = rest.length === 0 && (algorithm === 'sha256' || algorithm === 'gitsha1') && hex ? blobKey(algorithm, hex) : null;
        // Only names this driver writes (and in their canonical lower-case form) are blobs.
        if (key && this.objectKey(key) === object.Key && object.Size !== undefined) yield { key, size: object.Size };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** Copies into the local cache still running (tests wait for them). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.#caching.values(), ...this.#aborting]);
  }

  async close(): Promise<void> {
    this.#closing.abort();
    for (const upload of this.#uploads) void this.#abortUpload(upload);
    await this.settled();
    while (this.#aborting.size > 0) await Promise.allSettled([...this.#aborting]);
    this.#s3.destroy();
  }

  async #head(key: BlobKey): Promise<{ size: number } | null> {
    try {
      const head = await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: this.objectKey(key) }), { abortSignal: AbortSignal.timeout(this.#timeoutMs) });
      return { size: head.ContentLength ?? 0 };
    } catch (err) {
      if (httpStatus(err) === 404) return null;
      throw this.#storageError(err, `looking up ${key}`);
    }
  }

  async #read(key: BlobKey, start: number, end: number, out: PassThrough, signal: AbortSignal, localFirst: boolean): Promise<void> {
    if (end < start) {
      out.end();
      return;
    }
    const handle = !localFirst
      ? null
      : await fsp.open(this.pathOf(key), 'r').catch((err: unknown) => {
          if (isNotFound(err)) return null;
          throw err;
        });
    if (handle) {
      await pipeline(handle.createReadStream({ start, end, highWaterMark: 256 * 1024 }), out).catch(() => undefined);
      return;
    }
    const res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.objectKey(key), Range: `bytes=${start}-${end}` }), { abortSignal: signal });
    const body = res.Body as Readable | undefined;
    if (!body || res.ContentLength !== end - start + 1) {
      body?.destroy();
      throw new MirrorError('StorageUnavailable', `the object store answered bytes ${start}-${end} of ${key} with ${res.ContentLength ?? 'no'} bytes`);
    }
    if (this.#cacheReads) this.#cacheLocally(key);
    await pipeline(body, out);
  }

  /**
   * Fetches the whole object into the local cache in the background, verified like a fill before
   * it lands (a staged blob of the local store). Its own GET, not a tee of the client's: a slow client never
   * slows it, and a range read warms the whole blob.
   */
  #cacheLocally(key: BlobKey): void {
    if (this.#caching.has(key) || this.#closing.signal.aborted) return;
    const job = (async () => {
      const res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.objectKey(key) }), { abortSignal: this.#closing.signal });
      const body = res.Body as Readable | undefined;
      const size = res.ContentLength;
      if (!body || size === undefined) throw new Error('no body');
      const stop = (): void => {
        body.destroy(new Error('blob store closing'));
      };
      this.#closing.signal.addEventListener('abort', stop, { once: true });
      try {
        const staged = await this.#local.stageWith(key, size, (k, path, verified) => this.#landLocallyChecked(k, path, verified));
        try {
          let offset = 0;
          for await (const chunk of body) {
            await staged.write(offset, [chunk as Buffer]);
            offset += (chunk as Buffer).length;
          }
          await staged.commit();
        } finally {
          await staged.abort(); // after a commit: only closes the staging fd
        }
      } finally {
        this.#closing.signal.removeEventListener('abort', stop);
        body.destroy();
      }
    })()
      .catch(() => undefined) // a cache fill that fails costs nothing: reads go to the store
      .finally(() => this.#caching.delete(key));
    this.#caching.set(key, job);
  }

  async #landLocallyChecked(key: BlobKey, stagedPath: string, verified: VerifiedBlob): Promise<void> {
    try {
      await checkStaged(key, stagedPath, verified);
      await this.#landLocally(key, stagedPath, verified.size);
    } catch (err) {
      await fsp.rm(stagedPath, { force: true });
      throw err;
    }
  }

  /** The verified staged file becomes the local copy. */
  async #landLocally(key: BlobKey, stagedPath: string, size: number): Promise<void> {
    const finalPath = this.pathOf(key);
    await fsp.mkdir(path.dirname(finalPath), { recursive: true });
    await fsp.rename(stagedPath, finalPath);
    this.#localCopies.add(key, size);
    await fsyncDir(path.dirname(finalPath));
  }

  /** The part size for a blob of `size` bytes: `partSize`, grown to fit MAX_PARTS. */
  #partSizeFor(size: number): number {
    return Math.max(this.#partSize, Math.ceil(size / MAX_PARTS / MiB) * MiB);
  }

  #multipart(key: BlobKey, file: string, size: number): MultipartUpload {
    const partSize = this.#partSizeFor(size);
    const parallel = Math.max(1, Math.min(this.#concurrency, Math.floor(UPLOAD_MEMORY / partSize), Math.ceil(size / partSize)));
    const upload = new MultipartUpload({ s3: this.#s3, bucket: this.#bucket, objectKey: this.objectKey(key), label: key, file, size, partSize, parallel, budget: this.#budget, timeoutMs: this.#timeoutMs });
    this.#uploads.add(upload);
    return upload;
  }

  /** Aborts a multipart upload (best effort, bounded by the timeout); close waits for it. */
  #abortUpload(upload: MultipartUpload): Promise<void> {
    this.#uploads.delete(upload);
    const done = upload.abort();
    this.#aborting.add(done);
    void done.finally(() => this.#aborting.delete(done));
    return done;
  }

  /**
   * PutObject for one part's worth, else the rest of the streamed multipart upload (or a whole
   * one when the file was not staged by this store), then CompleteMultipartUpload; aborted if
   * anything fails.
   */
  async #upload(key: BlobKey, stagedPath: string, size: number, streamed: MultipartUpload | undefined): Promise<void> {
    if (size > this.#partSizeFor(size)) {
      const upload = streamed ?? this.#multipart(key, stagedPath, size);
      try {
        await upload.finish();
      } finally {
        this.#uploads.delete(upload);
      }
      return;
    }
    const handle = await fsp.open(stagedPath, 'r');
    try {
      const Body = await readPart(handle, 0, size);
      await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.objectKey(key), Body, ContentLength: size, ContentType: 'application/octet-stream' }));
    } finally {
      await handle.close();
    }
  }

  /** Anything that is not already a MirrorError (or a full local disk) becomes StorageUnavailable. */
  #storageError(err: unknown, what: string): Error {
    if (isMirrorError(err)) return err;
    const disk = diskFullError(err, what);
    if (disk !== err) return disk as Error;
    const status = httpStatus(err);
    return new MirrorError('StorageUnavailable', `The mirror's blob store failed ${what}: ${errorName(err)}${status ? ` (status ${status})` : ''}`, { cause: err });
  }
}

function errorName(err: unknown): string {
  const e = err as { name?: string; message?: string } | null;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `no answer within the timeout (${e.name})`;
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`;
}
