/**
 * One blob's multipart upload to an S3-compatible store, fed while its staging file is being
 * written (s3-blob-store.ts creates one per staged blob bigger than one part), and the sweep of
 * multipart uploads that a killed process left behind.
 *
 * Contract of MultipartUpload:
 * - `written(to)`: the staging file's contiguous written prefix reaches `to` bytes. Every whole
 *   part inside it may now be uploaded in the background, in order, at most `parallel` at once
 *   and within the store's shared `budget` of part bytes in memory. It never throws and never
 *   waits: the fill does not depend on the store. The first background failure (the store down,
 *   slow or refusing) stops the background uploads of this blob; `finish` retries what is missing.
 * - `finish()`: called only after the caller verified the whole staged file's size and digest.
 *   Waits for the background uploads in flight, uploads every part that is not uploaded yet
 *   (a fresh multipart upload if the background one could not be created or was lost), then
 *   CompleteMultipartUpload: only then does the object exist. On any failure the upload is
 *   aborted and the error thrown.
 * - `abort()`: the fill failed, the digest was refused, or the object is already stored: stops
 *   the requests in flight and sends AbortMultipartUpload (best effort, bounded by `timeoutMs`).
 *   Idempotent, harmless after `finish`.
 *
 * Why a part may be uploaded before the digest is verified: an unfinished multipart upload is
 * invisible (no GET, HEAD or LIST shows it) until CompleteMultipartUpload, which only `finish`
 * sends. And the bytes a part carries are the bytes that get hashed: a part is read only once it
 * lies wholly inside the contiguous written prefix, and a byte of a staging file is written
 * exactly once (runs never overlap, a failed write never enters the coverage, a resumed fill only
 * writes bytes outside it) and never changes afterwards; the hasher reads that same prefix of
 * the same file. So the completed object is byte for byte the file whose digest was checked.
 */
import fsp from 'node:fs/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListMultipartUploadsCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { MirrorError } from '../errors.js';
import { crashPoint } from './crash-points.js';

/**
 * Part bytes the background uploads of all blobs of one store hold in memory at once (one part
 * always fits, however big). `finish` does not use it: a commit is bounded by its own `parallel`.
 */
export class PartBudget {
  readonly #total: number;
  #free: number;
  readonly #watchers = new Set<() => void>();

  constructor(bytes: number) {
    this.#total = bytes;
    this.#free = bytes;
  }

  tryTake(bytes: number): boolean {
    if (bytes > this.#free && this.#free < this.#total) return false;
    this.#free -= bytes;
    return true;
  }

  give(bytes: number): void {
    this.#free += bytes;
    for (const wake of [...this.#watchers]) wake();
  }

  /** Calls `wake` whenever bytes are given back; returns the unwatch. */
  watch(wake: () => void): () => void {
    this.#watchers.add(wake);
    return () => this.#watchers.delete(wake);
  }
}

export interface UploadTarget {
  s3: S3Client;
  bucket: string;
  objectKey: string;
  /** The blob key, for messages. */
  label: string;
  /** The staging file the parts are read from. */
  file: string;
  size: number;
  partSize: number;
  /** Parts uploaded at once by this upload. */
  parallel: number;
  budget: PartBudget;
  timeoutMs: number;
}

export class MultipartUpload {
  readonly #t: UploadTarget;
  readonly #count: number;
  readonly #etags: Array<string | undefined>;
  /** Aborted by `abort`: the part uploads in flight stop. */
  readonly #stop = new AbortController();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #unwatch: () => void;
  #written = 0;
  /** The next part the background may start (they start in order). */
  #next = 0;
  /** Background uploads allowed: until the first failure, `finish` or `abort`. */
  #background = true;
  #uploadId: Promise<string> | null = null;
  #handle: Promise<fsp.FileHandle> | null = null;
  #completed = false;
  #aborted: Promise<void> | null = null;

  constructor(target: UploadTarget) {
    this.#t = target;
    this.#count = Math.ceil(target.size / target.partSize);
    // Not `new Array(n)`: its holes would be skipped by flatMap and map.
    this.#etags = Array.from({ length: this.#count }, () => undefined);
    this.#unwatch = target.budget.watch(() => this.#pump());
  }

  written(to: number): void {
    if (to > this.#written) this.#written = to;
    this.#pump();
  }

  async finish(): Promise<void> {
    this.#background = false;
    this.#unwatch();
    try {
      await this.#settle();
      if (this.#aborted) throw new MirrorError('StorageUnavailable', `the upload of ${this.#t.label} was aborted`);
      const todo = this.#etags.flatMap((etag, i) => (etag === undefined ? [i] : []));
      let k = 0;
      const worker = async (): Promise<void> => {
        while (k < todo.length) await this.#uploadPart(todo[k++]!);
      };
      await Promise.all(Array.from({ length: Math.min(this.#t.parallel, todo.length) }, worker));
      const { s3, bucket: Bucket, objectKey: Key, label } = this.#t;
      const UploadId = await this.#id();
      const Parts = this.#etags.map((ETag, i) => {
        if (ETag === undefined) throw new MirrorError('StorageUnavailable', `part ${i + 1} of ${label} was not uploaded`);
        return { ETag, PartNumber: i + 1 };
      });
      await s3.send(new CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts } }));
      this.#completed = true;
    } catch (err) {
      await this.abort();
      throw err;
    } finally {
      await this.#closeFile();
    }
  }

  abort(): Promise<void> {
    this.#aborted ??= (async () => {
      this.#background = false;
      this.#unwatch();
      this.#stop.abort();
      await this.#settle();
      const UploadId = await this.#uploadId?.catch(() => null);
      if (UploadId && !this.#completed) {
        const { s3, bucket: Bucket, objectKey: Key, timeoutMs } = this.#t;
        await s3.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId }), { abortSignal: AbortSignal.timeout(timeoutMs) }).catch(() => undefined);
      }
      await this.#closeFile();
    })();
    return this.#aborted;
  }

  #partLength(i: number): number {
    return Math.min(this.#t.partSize, this.#t.size - i * this.#t.partSize);
  }

  /** Starts the background uploads of the parts now wholly written, as far as the limits allow. */
  #pump(): void {
    while (this.#background && this.#inFlight.size < this.#t.parallel && this.#next < this.#count) {
      const i = this.#next;
      const length = this.#partLength(i);
      if (i * this.#t.partSize + length > this.#written || !this.#t.budget.tryTake(length)) return;
      this.#next++;
      const job: Promise<void> = this.#uploadPart(i)
        .catch((err: unknown) => {
          this.#background = false; // the rest (this part included) is uploaded by finish
          if (httpStatus(err) === 404) this.#lost(); // NoSuchUpload: aborted by someone else
        })
        .finally(() => {
          this.#inFlight.delete(job);
          this.#t.budget.give(length);
        });
      this.#inFlight.add(job);
    }
  }

  /** The upload is gone from the store: `finish` starts a fresh one with every part. */
  #lost(): void {
    this.#uploadId = null;
    this.#etags.fill(undefined);
  }

  async #settle(): Promise<void> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
  }

  /** The upload's id, created on first use (again after a failed creation). */
  #id(): Promise<string> {
    const { s3, bucket: Bucket, objectKey: Key, timeoutMs, label } = this.#t;
    const created = (this.#uploadId ??= s3
      .send(new CreateMultipartUploadCommand({ Bucket, Key, ContentType: 'application/octet-stream' }), { abortSignal: AbortSignal.timeout(timeoutMs) })
      .then(({ UploadId }) => {
        if (!UploadId) throw new MirrorError('StorageUnavailable', `the object store started no multipart upload for ${label}`);
        return UploadId;
      }));
    created.catch(() => {
      if (this.#uploadId === created) this.#uploadId = null;
    });
    return created;
  }

  async #uploadPart(i: number): Promise<void> {
    const { s3, bucket: Bucket, objectKey: Key, partSize, label } = this.#t;
    const upload = this.#id();
    const UploadId = await upload;
    this.#handle ??= fsp.open(this.#t.file, 'r');
    const Body = await readPart(await this.#handle, i * partSize, this.#partLength(i));
    // The part's bytes are signed (a Buffer body: x-amz-content-sha256), so the store refuses a changed one.
    const part = await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body, ContentLength: Body.length }), { abortSignal: this.#stop.signal });
    if (!part.ETag) throw new MirrorError('StorageUnavailable', `the object store gave no ETag for part ${i + 1} of ${label}`);
    if (this.#uploadId !== upload) throw new MirrorError('StorageUnavailable', `the multipart upload of ${label} was lost`);
    this.#etags[i] = part.ETag;
    crashPoint('during-upload');
  }

  async #closeFile(): Promise<void> {
    const handle = this.#handle;
    this.#handle = null;
    await handle?.then((h) => h.close()).catch(() => undefined);
  }
}

export async function readPart(handle: fsp.FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) throw new MirrorError('IntegrityError', `the staged file ended at ${offset + done} bytes`);
    done += bytesRead;
  }
  return buf;
}

/**
 * Aborts the multipart uploads under `prefix` initiated more than `olderThanMs` before `now`
 * (by the store's clock, `Initiated`): what a process killed during an upload left behind.
 * Younger ones may be uploads in progress of another mirror on the same bucket, and keys outside
 * `prefix` are not ours: both are left alone. Returns how many were aborted and how many aborts
 * failed; a failed listing throws.
 */
export async function abortAbandonedUploads(s3: S3Client, o: { bucket: string; prefix: string; olderThanMs: number; now: number; timeoutMs: number }): Promise<{ aborted: number; failed: number }> {
  let aborted = 0;
  let failed = 0;
  let KeyMarker: string | undefined;
  let UploadIdMarker: string | undefined;
  do {
    const page = await s3.send(new ListMultipartUploadsCommand({ Bucket: o.bucket, Prefix: o.prefix, KeyMarker, UploadIdMarker }), { abortSignal: AbortSignal.timeout(o.timeoutMs) });
    for (const u of page.Uploads ?? []) {
      // The store was asked for the prefix; checked again in case one ignores it.
      if (!u.Key?.startsWith(o.prefix) || !u.UploadId || !u.Initiated || o.now - u.Initiated.getTime() <= o.olderThanMs) continue;
      try {
        await s3.send(new AbortMultipartUploadCommand({ Bucket: o.bucket, Key: u.Key, UploadId: u.UploadId }), { abortSignal: AbortSignal.timeout(o.timeoutMs) });
        aborted++;
      } catch (err) {
        if (httpStatus(err) === 404) continue; // aborted or completed meanwhile
        failed++;
      }
    }
    const more = page.IsTruncated === true && (page.NextKeyMarker !== KeyMarker || page.NextUploadIdMarker !== UploadIdMarker);
    KeyMarker = more ? page.NextKeyMarker : undefined;
    UploadIdMarker = more ? page.NextUploadIdMarker : undefined;
  } while (KeyMarker !== undefined);
  return { aborted, failed };
}

export function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}
