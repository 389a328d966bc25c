/**
 * A real S3-compatible object store for tests: OpenStack Swift 2.30 (Debian's packages) with its
 * s3api middleware and tempauth, single node, one replica, on 127.0.0.1, started by
 * `scripts/swift-s3.sh` in a temp dir of its own ({@link startSwiftS3}). When
 * HUBCACHE_TEST_S3_ENDPOINT (with _ACCESS_KEY_ID, _SECRET_ACCESS_KEY, _REGION) is set, that store
 * is used instead and left running. {@link swiftS3SkipReason} says why a suite cannot run here.
 *
 * What Swift 2.30 s3api does with @aws-sdk/client-s3 3.x (checked against this harness; the
 * assertions live in test/integration/s3-store-smoke.test.ts):
 *
 * Client settings ({@link s3ClientConfig}): `endpoint: 'http://127.0.0.1:PORT'`,
 * `forcePathStyle: true` (no virtual-hosted buckets: no storage_domain), `region: 'us-east-1'`
 * (s3api's `location`; a request signed for another region gets 400 AuthorizationHeaderMalformed),
 * `credentials: { accessKeyId: 'test:tester', secretAccessKey: 'testing' }` (tempauth
 * `account:user` and key; a wrong key gets 403 SignatureDoesNotMatch),
 * `requestChecksumCalculation: 'WHEN_REQUIRED'`, `responseChecksumValidation: 'WHEN_REQUIRED'`.
 * With the SDK's default (WHEN_SUPPORTED) a stream body is sent `aws-chunked` with a checksum
 * trailer: 501 NotImplemented "Transfering payloads in multiple chunks using aws-chunked is not
 * supported". Buffer bodies happen to work either way.
 *
 * Works:
 * - CreateBucket (again: 409 BucketAlreadyOwnedByYou), HeadBucket (missing: 404 NotFound),
 *   DeleteBucket (non-empty: 409 BucketNotEmpty). Bucket names must be DNS-compliant.
 * - PutObject with a Buffer (payload signed: x-amz-content-sha256 is the body's SHA-256, and
 *   Swift checks it: a changed body gets 400 BadDigest) or with a stream and an explicit
 *   ContentLength (payload UNSIGNED-PAYLOAD: nothing checks the bytes unless ContentMD5 is
 *   given, which Swift does check: 400 BadDigest). A stream without ContentLength goes out as
 *   Transfer-Encoding: chunked and is accepted, but the SDK warns; give the length.
 *   The ETag of a single PUT is the hex MD5 of the body, in quotes.
 * - Metadata (x-amz-meta-*) round-trips; names come back lower-cased. Content-Type defaults to
 *   application/octet-stream for PutObject.
 * - GetObject with Range: 206, `Content-Range: bytes FIRST-LAST/SIZE`, ContentLength = LAST-FIRST+1;
 *   `bytes=N-` and `bytes=-N` work; a range ending past the end is clipped; a range starting at or
 *   past the end (also any range of an empty object) is 416 InvalidRange. IfMatch (412) and
 *   IfNoneMatch (304) work on GET.
 * - HeadObject (missing: 404 NotFound, no body so no S3 error code); GetObject missing: 404 NoSuchKey.
 * - DeleteObject: 204, also for a key that does not exist (idempotent).
 * - ListObjectsV2: Prefix, Delimiter (CommonPrefixes), StartAfter, MaxKeys with IsTruncated and
 *   NextContinuationToken (base64 of the last key); keys in byte order ("B" < "a" < "a/b" < "é");
 *   at most 1000 per page.
 * - CopyObject (metadata copied), UploadPartCopy.
 * - Multipart: CreateMultipartUpload, UploadPart (Buffer, or stream with ContentLength; the part's
 *   ETag is the MD5 of its bytes, so a streamed part can be checked afterwards),
 *   CompleteMultipartUpload, AbortMultipartUpload (204; again: 404 NoSuchUpload; after Complete:
 *   404 NoSuchKey), ListMultipartUploads, ListParts. Re-uploading a part number replaces it.
 *   The completed object's ETag is S3's: hex MD5 of the concatenated binary part MD5s, "-N".
 *   Ranges across part boundaries work. The object is an SLO manifest over objects in the hidden
 *   container "<bucket>+segments"; DeleteObject removes the segments too.
 *
 * Does not work / differs from AWS:
 * - DeleteObjects: 400 InvalidRequest "Missing required header for this request: Content-MD5".
 *   The SDK sends x-amz-checksum-crc32, Swift 2.30 insists on Content-MD5:
 *   {@link addContentMd5ToDeleteObjects} adds it, then it works (Deleted lists missing keys too).
 * - Conditional PUT: PutObject with IfNoneMatch ('*') is 501 NotImplemented "Conditional object
 *   PUTs are not supported", whether the key exists or not. There is no create-only write.
 * - x-amz-checksum-* (ChecksumSHA256, ChecksumCRC32, ...) are accepted and ignored: a wrong one
 *   is stored without complaint and none is returned. Only Content-MD5 and a signed
 *   x-amz-content-sha256 are verified.
 * - Parts: at most 1000 per upload (PartNumber 1001: 400 InvalidArgument; AWS allows 10000), each
 *   at most 5 GiB (Swift's max_file_size, also the single-PUT limit). So the part size must be at
 *   least ceil(size / 1000); the largest object is 1000 x 5 GiB. Every part but the last must be
 *   at least 5 MiB, checked only at CompleteMultipartUpload (400 EntityTooSmall; the upload stays
 *   and can be aborted). A one-part upload may be smaller.
 * - A multipart object gets the Content-Type given at CreateMultipartUpload; without one it
 *   becomes application/xml (that of the Complete request), not binary/octet-stream.
 * - Object tagging (PutObjectTagging, or Tagging on PutObject): 501 NotImplemented; so are
 *   server-side encryption and website redirects.
 *
 * Only S3 works on this store: Swift's own API would need a memcached for tempauth's tokens
 * (GET /auth/v1.0 is 503); S3 requests are authenticated per request and need none.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT = path.join(ROOT, 'scripts/swift-s3.sh');
const DAEMONS = ['account-server', 'container-server', 'object-server', 'proxy-server'];

export interface SwiftS3 {
  /** `http://127.0.0.1:PORT` (path-style). */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** A new S3 client with the settings that work against Swift ({@link s3ClientConfig}). */
  client(overrides?: S3ClientConfig): S3Client;
  /** Creates a bucket named `<prefix>-<random>` and returns its name. */
  bucket(prefix?: string): Promise<string>;
  /** The directory of the store this call started (SWIFT_DIR); undefined for a reused one. */
  dir: string | undefined;
  /** Pids of its daemons and its watchdog (`run/*.pid`), for a caller's own backstop; [] for a reused one. */
  pids(): number[];
  /** Stops the store this call started (and removes its directory); a reused one is left alone. */
  stop(): Promise<void>;
}

/**
 * Why Swift cannot run here, or undefined when it can (or another store is configured). In CI
 * (CI set) it is always undefined: `.ci/run` installs Swift, so a missing one must fail, not skip.
 */
export const swiftS3SkipReason: string | undefined = (() => {
  if (process.env.HUBCACHE_TEST_S3_ENDPOINT || process.env.CI) return undefined;
  const missing = DAEMONS.map((d) => `/usr/bin/swift-${d}`).filter((f) => !fs.existsSync(f));
  if (missing.length > 0) return `OpenStack Swift is not installed (${missing.join(', ')} missing; Debian: apt-get install --no-install-recommends swift-proxy swift-object swift-container swift-account)`;
  return undefined;
})();

/** The S3 client settings Swift 2.30 s3api needs (see the top of this file for why). */
export function s3ClientConfig(s: Pick<SwiftS3, 'endpoint' | 'accessKeyId' | 'secretAccessKey' | 'region'>): S3ClientConfig {
  return {
    endpoint: s.endpoint,
    forcePathStyle: true,
    region: s.region,
    credentials: { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 1, // a test sees the first answer, not a retried one
  };
}

/**
 * Makes DeleteObjects acceptable to Swift 2.30: sends Content-MD5 of the request body (which
 * Swift requires) instead of the x-amz-checksum-* header the SDK computes.
 */
export function addContentMd5ToDeleteObjects(client: S3Client): void {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers: Record<string, string>; body?: unknown };
      if (context.commandName === 'DeleteObjectsCommand' && typeof request.body === 'string') {
        for (const name of Object.keys(request.headers)) {
          if (name.toLowerCase().startsWith('x-amz-checksum-') || name.toLowerCase() === 'x-amz-sdk-checksum-algorithm') delete request.headers[name];
        }
        request.headers['content-md5'] = crypto.createHash('md5').update(request.body).digest('base64');
      }
      return next(args);
    },
    // After the SDK's checksum middleware, before signing.
    { step: 'build', priority: 'low', name: 'swiftContentMd5' },
  );
}

/** Directories of stores this process started: their daemons are killed when it exits. */
const live = new Set<string>();
process.once('exit', () => {
  for (const dir of live) killNow(dir);
});

/** SIGKILLs every daemon of the store in `dir` and removes the directory (synchronous: runs on exit). */
function killNow(dir: string): void {
  for (const pid of pidsIn(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** The pids in `dir/run/*.pid` (the daemons and the watchdog). */
function pidsIn(dir: string): number[] {
  const run = path.join(dir, 'run');
  const names = fs.existsSync(run) ? fs.readdirSync(run) : [];
  return names.map((name) => Number(fs.readFileSync(path.join(run, name), 'utf8').trim())).filter((pid) => pid > 0);
}

function runScript(command: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn('bash', [SCRIPT, command], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function withHelpers(s: Pick<SwiftS3, 'endpoint' | 'accessKeyId' | 'secretAccessKey' | 'region'>, stop: () => Promise<void>, dir?: string): SwiftS3 {
  const client = (overrides: S3ClientConfig = {}) => new S3Client({ ...s3ClientConfig(s), ...overrides });
  return {
    ...s,
    client,
    bucket: async (prefix = 'test') => {
      const name = `${prefix}-${crypto.randomBytes(6).toString('hex')}`.toLowerCase();
      const c = client();
      try {
        await c.send(new CreateBucketCommand({ Bucket: name }));
      } finally {
        c.destroy();
      }
      return name;
    },
    dir,
    pids: () => (dir ? pidsIn(dir) : []),
    stop,
  };
}

/**
 * Starts a throwaway Swift with S3 (a few seconds on an idle box; give the hook two minutes on a
 * busy one), or returns the one HUBCACHE_TEST_S3_ENDPOINT names (unless `reuse: false`: the
 * bench always measures a store of its own). Its daemons die with this process: on exit here, or
 * by the script's watchdog if this process is killed outright.
 */
export async function startSwiftS3(opts: { reuse?: boolean } = {}): Promise<SwiftS3> {
  const env = process.env;
  if (env.HUBCACHE_TEST_S3_ENDPOINT && opts.reuse !== false) {
    return withHelpers(
      {
        endpoint: env.HUBCACHE_TEST_S3_ENDPOINT,
        accessKeyId: env.HUBCACHE_TEST_S3_ACCESS_KEY_ID ?? 'test:tester',
        secretAccessKey: env.HUBCACHE_TEST_S3_SECRET_ACCESS_KEY ?? 'testing',
        region: env.HUBCACHE_TEST_S3_REGION ?? 'us-east-1',
      },
      async () => {},
    );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-swift-s3-'));
  live.add(dir);
  const scriptEnv = { SWIFT_DIR: dir, SWIFT_S3_WATCH_PID: String(process.pid), SWIFT_S3_START_TIMEOUT: '100' };
  let result: Awaited<ReturnType<typeof runScript>>;
  try {
    result = await runScript('start', scriptEnv);
  } catch (err) {
    killNow(dir);
    live.delete(dir);
    throw err;
  }
  if (result.code !== 0) {
    killNow(dir);
    live.delete(dir);
    throw new Error(`scripts/swift-s3.sh start failed (exit ${result.code}):\n${result.stderr}${result.stdout}`);
  }
  const vars = Object.fromEntries([...result.stdout.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1], m[2]]));
  const need = (name: string) => {
    const value = vars[name];
    if (!value) throw new Error(`scripts/swift-s3.sh start printed no ${name}:\n${result.stdout}`);
    return value;
  };
  return withHelpers(
    {
      endpoint: need('HUBCACHE_TEST_S3_ENDPOINT'),
      accessKeyId: need('HUBCACHE_TEST_S3_ACCESS_KEY_ID'),
      secretAccessKey: need('HUBCACHE_TEST_S3_SECRET_ACCESS_KEY'),
      region: need('HUBCACHE_TEST_S3_REGION'),
    },
    async () => {
      if (!live.has(dir)) return;
      const stopped = await runScript('stop', scriptEnv);
      if (stopped.code !== 0) killNow(dir);
      live.delete(dir);
    },
    dir,
  );
}
