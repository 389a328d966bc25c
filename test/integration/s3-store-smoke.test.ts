/**
 * The S3 test harness and the SDK settings against a real S3-compatible store (OpenStack Swift
 * with s3api, started from Debian's packages by scripts/swift-s3.sh): every operation a blob
 * store driver needs, with bytes, sizes and digests checked, and the limits of Swift 2.30 that
 * such a driver must work around pinned down, so an upgrade that changes them is noticed.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { addContentMd5ToDeleteObjects, startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';

const MiB = 1 << 20;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

/** A stream that yields `data` in `chunk`-byte pieces (as a body read from the network would). */
function chunked(data: Buffer, chunk: number): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  return Readable.from(pieces);
}

/** The error an S3 call fails with: its name (S3 error code) and HTTP status. */
async function failure(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: e.name, status: e.$metadata?.httpStatusCode, message: e.message };
  }
  throw new Error('expected the S3 call to fail');
}

async function body(s3: S3Client, Bucket: string, Key: string, Range?: string) {
  const r = await s3.send(new GetObjectCommand({ Bucket, Key, Range }));
  const bytes = Buffer.from(await r.Body!.transformToByteArray());
  return { bytes, status: r.$metadata.httpStatusCode, contentRange: r.ContentRange, contentLength: r.ContentLength, etag: r.ETag };
}

describe.skipIf(swiftS3SkipReason !== undefined)(`S3 store smoke test on Swift s3api${swiftS3SkipReason ? ` (skipped: ${swiftS3SkipReason})` : ''}`, () => {
  let swift: SwiftS3;
  let s3: S3Client;

  beforeAll(async () => {
    swift = await startSwiftS3();
    s3 = swift.client();
  }, 120_000);
  afterAll(async () => {
    s3?.destroy();
    await swift?.stop();
  });

  it('puts (Buffer and stream), heads, gets whole and ranged, copies, lists with continuation, deletes', async () => {
    const bucket = await swift.bucket('smoke');
    expect((await s3.send(new HeadBucketCommand({ Bucket: bucket }))).$metadata.httpStatusCode).toBe(200);
    const data = makeContent(MiB + 123, 1301);

    const put = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'blobs/a', Body: data, ContentType: 'application/octet-stream', Metadata: { sha256: sha256(data) } }));
    expect(put.ETag).toBe(`"${md5(data)}"`);
    const streamed = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'blobs/b', Body: chunked(data, 64 * 1024), ContentLength: data.length }));
    expect(streamed.ETag).toBe(`"${md5(data)}"`);

    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(head.ContentLength).toBe(data.length);
    expect(head.ContentType).toBe('application/octet-stream');
    expect(head.Metadata).toEqual({ sha256: sha256(data) });

    for (const key of ['blobs/a', 'blobs/b']) {
      const whole = await body(s3, bucket, key);
      expect(whole.status).toBe(200);
      expect(sha256(whole.bytes)).toBe(sha256(data));
    }
    const size = data.length;
    const ranges: [string, number, number][] = [
      ['bytes=100-199', 100, 199],
      ['bytes=0-0', 0, 0],
      [`bytes=${size - 10}-`, size - 10, size - 1],
      ['bytes=-7', size - 7, size - 1],
      [`bytes=${size - 5}-${size + 1000}`, size - 5, size - 1], // clipped at the end
    ];
    for (const [range, first, last] of ranges) {
      const r = await body(s3, bucket, 'blobs/a', range);
      expect({ range, status: r.status, contentRange: r.contentRange, contentLength: r.contentLength }).toEqual({ range, status: 206, contentRange: `bytes ${first}-${last}/${size}`, contentLength: last - first + 1 });
      expect(r.bytes.equals(data.subarray(first, last + 1))).toBe(true);
    }
    expect(await failure(body(s3, bucket, 'blobs/a', `bytes=${size}-`))).toMatchObject({ name: 'InvalidRange', status: 416 });

    const copy = await s3.send(new CopyObjectCommand({ Bucket: bucket, Key: 'blobs/c', CopySource: `${bucket}/blobs/a` }));
    expect(copy.CopyObjectResult?.ETag).toBe(`"${md5(data)}"`);
    expect((await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/c' }))).Metadata).toEqual({ sha256: sha256(data) });

    for (const key of ['blobs/d', 'blobs/e', 'other/x']) await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Buffer.from(key) }));
    const listed: string[] = [];
    let token: string | undefined;
    let pages = 0;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'blobs/', MaxKeys: 2, ContinuationToken: token }));
      pages++;
      listed.push(...(page.Contents ?? []).map((c) => `${c.Key}:${c.Size}`));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    expect(pages).toBe(3);
    expect(listed).toEqual([`blobs/a:${size}`, `blobs/b:${size}`, `blobs/c:${size}`, 'blobs/d:7', 'blobs/e:7']);

    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'blobs/a' }));
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: 'blobs/a' })))).toMatchObject({ name: 'NotFound', status: 404 });
    expect(await failure(body(s3, bucket, 'blobs/a'))).toMatchObject({ name: 'NoSuchKey', status: 404 });
    // Deleting a key that is not there is a success, as on AWS.
    expect((await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: 'blobs/a' }))).$metadata.httpStatusCode).toBe(204);

    // DeleteObjects needs Content-MD5 on Swift 2.30; with it, missing keys count as deleted.
    const plain = await failure(s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: 'blobs/b' }] } })));
    expect(plain).toMatchObject({ name: 'InvalidRequest', status: 400 });
    expect(plain.message).toContain('Content-MD5');
    const withMd5 = swift.client();
    addContentMd5ToDeleteObjects(withMd5);
    const deleted = await withMd5.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: ['blobs/b', 'blobs/c', 'blobs/never'].map((Key) => ({ Key })) } }));
    withMd5.destroy();
    expect(deleted.Errors ?? []).toEqual([]);
    expect((deleted.Deleted ?? []).map((d) => d.Key).sort()).toEqual(['blobs/b', 'blobs/c', 'blobs/never']);
    const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
    expect((left.Contents ?? []).map((c) => c.Key)).toEqual(['blobs/d', 'blobs/e', 'other/x']);
  });

  it('uploads 3 x 5 MiB + 1 MiB in parts (one streamed), with S3 part and object ETags, and reads across part boundaries', async () => {
    const bucket = await swift.bucket('multipart');
    const key = 'blobs/big';
    const data = makeContent(3 * 5 * MiB + MiB, 1302);
    const bounds = [0, 5 * MiB, 10 * MiB, 15 * MiB, data.length];
    const parts = bounds.slice(1).map((end, i) => data.subarray(bounds[i], end));

    const created = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/octet-stream', Metadata: { sha256: sha256(data) } }));
    const UploadId = created.UploadId!;
    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      // Part 2 arrives as a stream of 64 KiB chunks with its length given up front.
      const Body = i === 1 ? chunked(part, 64 * 1024) : part;
      const r = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body, ContentLength: part.length }));
      expect(r.ETag).toBe(`"${md5(part)}"`);
      etags.push(r.ETag!);
    }
    const listedParts = await s3.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId }));
    expect((listedParts.Parts ?? []).map((p) => [p.PartNumber, p.Size, p.ETag])).toEqual(parts.map((p, i) => [i + 1, p.length, etags[i]]));
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((uploads.Uploads ?? []).map((u) => [u.Key, u.UploadId])).toEqual([[key, UploadId]]);

    const done = await s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    const binaryMd5s = Buffer.concat(parts.map((p) => createHash('md5').update(p).digest()));
    const multipartEtag = `"${md5(binaryMd5s)}-${parts.length}"`;
    expect(done.ETag).toBe(multipartEtag);

    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect({ length: head.ContentLength, etag: head.ETag, type: head.ContentType, meta: head.Metadata }).toEqual({ length: data.length, etag: multipartEtag, type: 'application/octet-stream', meta: { sha256: sha256(data) } });
    const whole = await body(s3, bucket, key);
    expect(whole.bytes.length).toBe(data.length);
    expect(sha256(whole.bytes)).toBe(sha256(data));
    const first = 10 * MiB - 3;
    const across = await body(s3, bucket, key, `bytes=${first}-${first + 9}`);
    expect({ status: across.status, contentRange: across.contentRange, contentLength: across.contentLength }).toEqual({ status: 206, contentRange: `bytes ${first}-${first + 9}/${data.length}`, contentLength: 10 });
    expect(across.bytes.equals(data.subarray(first, first + 10))).toBe(true);
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);

    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })))).toMatchObject({ status: 404 });
  });

  it('refuses to complete an upload with a part under 5 MiB before the last, and aborts it', async () => {
    const bucket = await swift.bucket('abort');
    const key = 'blobs/small-parts';
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/octet-stream' }));
    const parts = [makeContent(MiB, 1303), makeContent(MiB, 1304)];
    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      // Accepted here: the minimum part size is only checked on completion.
      const r = await s3.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: i + 1, Body: part }));
      etags.push(r.ETag!);
    }
    const complete = () => s3.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) } }));
    expect(await failure(complete())).toMatchObject({ name: 'EntityTooSmall', status: 400 });
    expect(await failure(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })))).toMatchObject({ status: 404 });
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.map((u) => u.UploadId)).toEqual([UploadId]);

    expect((await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId }))).$metadata.httpStatusCode).toBe(204);
    expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    expect(await failure(s3.send(new ListPartsCommand({ Bucket: bucket, Key: key, UploadId })))).toMatchObject({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId })))).toMatchObject({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(complete())).toMatchObject({ name: 'NoSuchUpload', status: 404 });
    expect((await s3.send(new ListObjectsV2Command({ Bucket: bucket }))).KeyCount).toBe(0);
  });

  it('checks signed payloads and Content-MD5, and refuses wrong keys, other regions, conditional PUTs, aws-chunked and part numbers over 1000', async () => {
    const bucket = await swift.bucket('limits');
    const data = makeContent(4096, 1305);

    // A Buffer body is signed (x-amz-content-sha256 is its SHA-256) and Swift checks it.
    const tampering = swift.client();
    tampering.middlewareStack.add(
      (next) => async (args) => {
        (args.request as { body: unknown }).body = Buffer.alloc(data.length, 7);
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'tamperAfterSigning' },
    );
    expect(await failure(tampering.send(new PutObjectCommand({ Bucket: bucket, Key: 'tampered', Body: data })))).toMatchObject({ name: 'BadDigest', status: 400 });
    tampering.destroy();
    // A stream body is UNSIGNED-PAYLOAD; Content-MD5 is what protects it.
    const wrongMd5 = createHash('md5').update('something else').digest('base64');
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'md5', Body: Readable.from([data]), ContentLength: data.length, ContentMD5: wrongMd5 })))).toMatchObject({ name: 'BadDigest', status: 400 });
    const rightMd5 = createHash('md5').update(data).digest('base64');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'md5', Body: Readable.from([data]), ContentLength: data.length, ContentMD5: rightMd5 }));
    // x-amz-checksum-* is not checked (nor stored): a wrong one is accepted.
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'checksum', Body: data, ChecksumSHA256: Buffer.alloc(32).toString('base64') }));
    expect(sha256((await body(s3, bucket, 'checksum')).bytes)).toBe(sha256(data));
    expect((await s3.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents?.map((c) => c.Key)).toEqual(['checksum', 'md5']);

    const wrongKey = swift.client({ credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: 'wrong' } });
    expect(await failure(wrongKey.send(new GetObjectCommand({ Bucket: bucket, Key: 'md5' })))).toMatchObject({ name: 'SignatureDoesNotMatch', status: 403 });
    wrongKey.destroy();
    const otherRegion = swift.client({ region: 'eu-west-1' });
    expect(await failure(otherRegion.send(new GetObjectCommand({ Bucket: bucket, Key: 'md5' })))).toMatchObject({ name: 'AuthorizationHeaderMalformed', status: 400 });
    otherRegion.destroy();

    // No create-only write: If-None-Match is refused whether the key exists or not.
    for (const key of ['md5', 'new']) {
      expect(await failure(s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data, IfNoneMatch: '*' })))).toMatchObject({ name: 'NotImplemented', status: 501 });
    }
    // The SDK's default checksum mode sends a stream aws-chunked, which Swift 2.30 refuses.
    const defaults = swift.client({ requestChecksumCalculation: 'WHEN_SUPPORTED', responseChecksumValidation: 'WHEN_SUPPORTED' });
    expect(await failure(defaults.send(new PutObjectCommand({ Bucket: bucket, Key: 'chunked', Body: Readable.from([data]), ContentLength: data.length })))).toMatchObject({ name: 'NotImplemented', status: 501 });
    defaults.destroy();

    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: 'parts', ContentType: 'application/octet-stream' }));
    expect(await failure(s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'parts', UploadId, PartNumber: 1001, Body: data })))).toMatchObject({ name: 'InvalidArgument', status: 400 });
    expect((await s3.send(new UploadPartCommand({ Bucket: bucket, Key: 'parts', UploadId, PartNumber: 1000, Body: data }))).ETag).toBe(`"${md5(data)}"`);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: 'parts', UploadId }));
  });
});
