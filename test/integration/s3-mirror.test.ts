/**
 * The mirror with `storage: s3` on a real S3-compatible store (OpenStack Swift with s3api): the
 * storage-relevant checks of the filesystem store, once more through the object store. A herd
 * makes one upstream GET and one object; a dropped upstream body is resumed; kill -9 before,
 * during and after the upload leaves nothing wrong visible; a restart with the local copies gone
 * answers from the bucket, offline and with upstream down; a store that is down or hangs gives 503 StorageUnavailable for
 * blobs without a local copy while local copies keep flowing. The parts of a big blob reach the
 * store while it downloads; a download of the wrong bytes leaves neither an object nor an upload.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListPartsCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { deadEndpoint } from '../support/dead-endpoint.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirrorProcess } from '../support/mirror-process.js';
import { startMirror } from '../support/start-mirror.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
const PREFIX = 'hub/';

describe.skipIf(swiftS3SkipReason !== undefined)(`mirror with storage: s3${swiftS3SkipReason ? ` (skipped: ${swiftS3SkipReason})` : ''}`, () => {
  let hub: FakeHub;
  let swift: SwiftS3;
  let s3: S3Client;
  const tmpDirs: string[] = [];
  let repoCount = 0;

  beforeAll(async () => {
    [hub, swift] = await Promise.all([startFakeHub(), startSwiftS3()]);
    s3 = swift.client();
  }, 120_000);
  afterAll(async () => {
    s3?.destroy();
    await Promise.all([hub?.stop(), swift?.stop()]);
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  function tempDir(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-s3-mirror-'));
    tmpDirs.push(d);
    return d;
  }

  /** A repo of its own: a multipart-sized shard and a small config file. */
  function addRepo(): { id: string; shard: Buffer; config: Buffer; sha: string } {
    const id = `org/s3-${repoCount++}`;
    const shard = makeContent(13 * MiB + repoCount, 2000 + repoCount);
    const config = Buffer.from(`{"repo": "${id}"}\n`);
    hub.addRepo({ id, files: { 'model.safetensors': shard, 'config.json': config } });
    return { id, shard, config, sha: sha256Hex(shard) };
  }

  function s3Config(bucket: string, extra: Partial<Config> = {}): Partial<Config> {
    return { storage: 's3', s3Endpoint: swift.endpoint, s3Bucket: bucket, s3Region: swift.region, s3Prefix: PREFIX, s3ForcePathStyle: true, s3AccessKeyId: swift.accessKeyId, s3SecretAccessKey: swift.secretAccessKey, ...extra };
  }

  /** The same settings as `hubcache serve` takes them from the environment. */
  function s3Env(bucket: string): Record<string, string> {
    return {
      HUBCACHE_STORAGE: 's3',
      HUBCACHE_S3_ENDPOINT: swift.endpoint,
      HUBCACHE_S3_BUCKET: bucket,
      HUBCACHE_S3_REGION: swift.region,
      HUBCACHE_S3_PREFIX: PREFIX,
      HUBCACHE_S3_FORCE_PATH_STYLE: 'true',
      HUBCACHE_S3_ACCESS_KEY_ID: swift.accessKeyId,
      HUBCACHE_S3_SECRET_ACCESS_KEY: swift.secretAccessKey,
    };
  }

  const objectKey = (sha: string) => `${PREFIX}blobs-v1/sha256/${sha}`;
  const localCopy = (dataDir: string, sha: string) => path.join(dataDir, 'blobs-v1', 'sha256', sha.slice(0, 2), sha.slice(2, 4), sha);
  const cdnGets = (sha: string) => hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha });

  /** Size and sha256 of an object, or null when the bucket has none. */
  async function object(bucket: string, sha: string): Promise<{ size: number; sha256: string } | null> {
    try {
      await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: objectKey(sha) }));
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return null;
      throw err;
    }
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: objectKey(sha) }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    return { size: bytes.length, sha256: sha256Hex(bytes) };
  }

  it('a herd of clients makes one upstream GET and one verified object; later requests are hits', async () => {
    const bucket = await swift.bucket('herd');
    const repo = addRepo();
    const m = await startMirror(hub.url, s3Config(bucket));
    try {
      const url = `${m.url}/${repo.id}/resolve/main/model.safetensors`;
      const herd = await Promise.all(Array.from({ length: 8 }, () => download(url, { keepBody: false })));
      for (const d of herd) expect([d.status, d.complete, d.sha256]).toEqual([200, true, repo.sha]);
      expect(cdnGets(repo.sha)).toBe(1);
      expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
      const again = await download(url, { keepBody: false });
      expect([header(again, 'x-mirror-cache'), again.sha256]).toEqual(['hit', repo.sha]);
      expect(cdnGets(repo.sha)).toBe(1);
      // Where the blobs are is logged, the credentials never.
      expect(m.logs.some((l) => l.includes(bucket))).toBe(true);
      expect(m.logs.filter((l) => l.includes(swift.secretAccessKey))).toEqual([]);
    } finally {
      await m.destroy();
    }
  });

  it('evicting a blob drops only its local copy: the object and the index rows stay, the next GET is a hit from the bucket', async () => {
    const bucket = await swift.bucket('evict');
    const repo = addRepo();
    const dataDir = tempDir();
    const admin = 'admin-secret-s3-evict-0123';
    const m = await startMirror(hub.url, s3Config(bucket, { dataDir, adminToken: admin, evictionGraceSeconds: 0 }));
    try {
      const url = `${m.url}/${repo.id}/resolve/main/model.safetensors`;
      expect((await download(url, { keepBody: false })).sha256).toBe(repo.sha);
      expect(fs.existsSync(localCopy(dataDir, repo.sha))).toBe(true);
      const r = await fetch(`${m.url}/admin/evict`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ repo: repo.id }) });
      const report = (await r.json()) as { blobs: Array<{ blob: string; outcome: string }> };
      expect(report.blobs).toContainEqual(expect.objectContaining({ blob: `sha256:${repo.sha}`, outcome: 'evicted' }));
      expect(fs.existsSync(localCopy(dataDir, repo.sha))).toBe(false);
      expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
      // Still cached: served from the bucket, whole and ranged, with no upstream download.
      const again = await download(url, { keepBody: false });
      expect([again.status, header(again, 'x-mirror-cache'), again.sha256]).toEqual([200, 'hit', repo.sha]);
      const ranged = await download(url, { keepBody: true, headers: { range: 'bytes=1000-1999' } });
      expect([ranged.status, ranged.body.equals(repo.shard.subarray(1000, 2000))]).toEqual([206, true]);
      expect(cdnGets(repo.sha)).toBe(1);
    } finally {
      await m.destroy();
    }
  });

  it('the disk budget counts the local copies, not the bucket: more blobs than the budget are fetched once each, the oldest copies leave the disk, and stay hits', async () => {
    const bucket = await swift.bucket('budget');
    const repos = [addRepo(), addRepo(), addRepo(), addRepo()]; // 4 x 13 MiB shards
    const dataDir = tempDir();
    const budget = 30 * MiB; // two local copies fit, the bucket holds all four
    const m = await startMirror(hub.url, s3Config(bucket, { dataDir, maxCacheBytes: String(budget), evictionGraceSeconds: 0, minFreeBytes: 0 }));
    try {
      for (const repo of repos) {
        const d = await download(`${m.url}/${repo.id}/resolve/main/model.safetensors`, { keepBody: false });
        expect([repo.id, d.status, header(d, 'x-mirror-cache'), d.complete, d.sha256]).toEqual([repo.id, 200, 'miss', true, repo.sha]);
      }
      const local = repos.filter((r) => fs.existsSync(localCopy(dataDir, r.sha)));
      expect(local.reduce((n, r) => n + r.shard.length, 0)).toBeLessThanOrEqual(budget);
      expect(local.map((r) => r.id)).toContain(repos[3]!.id); // the newest stays on the disk
      expect(fs.existsSync(localCopy(dataDir, repos[0]!.sha))).toBe(false); // the oldest left it
      for (const repo of repos) expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
      // The first one is still cached: a hit from the bucket, no second upstream download.
      const again = await download(`${m.url}/${repos[0]!.id}/resolve/main/model.safetensors`, { keepBody: false });
      expect([again.status, header(again, 'x-mirror-cache'), again.sha256]).toEqual([200, 'hit', repos[0]!.sha]);
      for (const repo of repos) expect(cdnGets(repo.sha)).toBe(1);
    } finally {
      await m.destroy();
    }
  });

  /** The multipart uploads in progress for a blob, each with its parts as [number, size] (one aborted between the two listings is gone). */
  async function uploadsOf(bucket: string, sha: string): Promise<Array<Array<[number, number]>>> {
    const { Uploads = [] } = await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: objectKey(sha) }));
    const found = await Promise.all(
      Uploads.map(async (u) => {
        const listed = await s3.send(new ListPartsCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId })).catch((err: unknown) => {
          if ((err as { name?: string }).name === 'NoSuchUpload') return null;
          throw err;
        });
        return listed && (listed.Parts ?? []).map((part): [number, number] => [part.PartNumber ?? 0, part.Size ?? 0]);
      }),
    );
    return found.filter((parts) => parts !== null);
  }

  it('the parts of a big blob reach the store while it downloads, before the last upstream byte; the object appears only once it is complete', async () => {
    const bucket = await swift.bucket('stream');
    const id = `org/s3-stream-${repoCount++}`;
    const shard = makeContent(40 * MiB, 4000); // five parts of 8 MiB
    const sha = sha256Hex(shard);
    hub.addRepo({ id, files: { 'model.safetensors': shard } });
    // Upstream holds back the very last byte until released.
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'barrier', atBytes: shard.length - 1, times: 1 });
    const m = await startMirror(hub.url, s3Config(bucket));
    try {
      const pending = download(`${m.url}/${id}/resolve/main/model.safetensors`, { keepBody: true });
      await barrier.reached;
      // Every part wholly written (all but the last) is uploaded while the download waits for its last byte.
      const parts = await waitFor(async () => {
        const uploads = await uploadsOf(bucket, sha);
        return uploads.length === 1 && uploads[0]!.length === 4 ? uploads[0] : null;
      }, { what: 'parts 1-4 of the blob in its multipart upload' });
      expect(parts).toEqual([1, 2, 3, 4].map((n) => [n, 8 * MiB]));
      expect(hub.bytesSent({ server: 'cdn', pathIncludes: sha })).toBe(shard.length - 1);
      expect(await object(bucket, sha)).toBeNull(); // an unfinished upload is invisible
      barrier.release();
      const d = await pending;
      expect([d.status, d.complete, d.body.length, d.body.equals(shard)]).toEqual([200, true, shard.length, true]);
      expect(await object(bucket, sha)).toEqual({ size: shard.length, sha256: sha });
      expect(await uploadsOf(bucket, sha)).toEqual([]);
      expect(cdnGets(sha)).toBe(1);
    } finally {
      barrier.release();
      await m.destroy();
    }
  });

  it('a download whose bytes do not match the digest aborts its upload: no object, no multipart upload left', async () => {
    const bucket = await swift.bucket('wrong');
    const repo = addRepo(); // two parts: the first is uploaded while the second is held back
    hub.setFault({ server: 'cdn', pathIncludes: repo.sha }, { kind: 'wrongBytes', times: 1 });
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: repo.sha }, { kind: 'barrier', atBytes: repo.shard.length - 1, times: 1 });
    const m = await startMirror(hub.url, s3Config(bucket));
    try {
      const pending = download(`${m.url}/${repo.id}/resolve/main/model.safetensors`, { keepBody: false });
      await barrier.reached;
      await waitFor(async () => JSON.stringify(await uploadsOf(bucket, repo.sha)) === JSON.stringify([[[1, 8 * MiB]]]), { what: 'the first part of the wrong bytes in the store' });
      barrier.release();
      const bad = await pending;
      expect(bad.status === 200 && bad.complete).toBe(false);
      await waitFor(async () => (await uploadsOf(bucket, repo.sha)).length === 0, { what: 'the multipart upload to be aborted' });
      expect(await object(bucket, repo.sha)).toBeNull();
      expect(fs.readdirSync(path.join(m.dataDir, 'staging'))).toEqual([]);
      // The next request downloads it again (the fault is spent) and stores the right bytes.
      const good = await download(`${m.url}/${repo.id}/resolve/main/model.safetensors`, { keepBody: false });
      expect([good.status, good.complete, good.sha256]).toEqual([200, true, repo.sha]);
      expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
      expect(await uploadsOf(bucket, repo.sha)).toEqual([]);
    } finally {
      barrier.release();
      await m.destroy();
    }
  });

  it('a dropped upstream body is resumed and the object holds the whole verified blob', async () => {
    const bucket = await swift.bucket('resume');
    const repo = addRepo();
    hub.setFault({ server: 'cdn', pathIncludes: repo.sha }, { kind: 'drop', afterBytes: 6 * MiB, times: 1 });
    const m = await startMirror(hub.url, s3Config(bucket));
    try {
      const d = await download(`${m.url}/${repo.id}/resolve/main/model.safetensors`, { keepBody: false });
      expect([d.status, d.complete, d.sha256]).toEqual([200, true, repo.sha]);
      expect(cdnGets(repo.sha)).toBe(2); // the first GET, cut, and its resume
      expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
    } finally {
      await m.destroy();
    }
  });

  it.each([
    // Before the upload: nothing in the bucket; fetched again.
    ['after-staging-fsync', false, 2],
    // After the first part: an unfinished multipart upload, invisible; fetched again.
    ['during-upload', false, 2],
    // After the object was completed, before the local copy and the index row: adopted from the bucket.
    ['after-upload', true, 1],
  ] as const)('kill -9 at %s leaves nothing wrong visible; the restart serves the right bytes', async (point, stored, expectedGets) => {
    const bucket = await swift.bucket('crash');
    const repo = addRepo();
    const dataDir = tempDir();
    const doomed = await startMirrorProcess(hub.url, dataDir, { ...s3Env(bucket), HUBCACHE_TEST_CRASH_AT: point });
    const cut = await download(`${doomed.url}/${repo.id}/resolve/main/model.safetensors`, { keepBody: false });
    expect(cut.status === 200 && cut.complete).toBe(false); // the last byte waits for the commit
    expect((await doomed.exited).signal).toBe('SIGKILL');
    expect(await object(bucket, repo.sha)).toEqual(stored ? { size: repo.shard.length, sha256: repo.sha } : null);
    if (point === 'during-upload') expect((await s3.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads?.length).toBe(1);

    const next = await startMirrorProcess(hub.url, dataDir, s3Env(bucket));
    try {
      expect(fs.readdirSync(path.join(dataDir, 'staging'))).toEqual([]);
      const url = `${next.url}/${repo.id}/resolve/main/model.safetensors`;
      const first = await download(url, { keepBody: false });
      expect([first.status, first.complete, first.sha256, header(first, 'x-mirror-cache')]).toEqual([200, true, repo.sha, stored ? 'hit' : 'miss']);
      const second = await download(url, { keepBody: false });
      expect([header(second, 'x-mirror-cache'), second.sha256]).toEqual(['hit', repo.sha]);
    } finally {
      await next.kill('SIGTERM');
    }
    expect(cdnGets(repo.sha)).toBe(expectedGets);
    expect(await object(bucket, repo.sha)).toEqual({ size: repo.shard.length, sha256: repo.sha });
  });

  it.each(['offline', 'upstream down'] as const)('%s, with the local copies gone, a restart answers from the bucket (whole and ranged)', async (mode) => {
    const bucket = await swift.bucket('offline');
    const repo = addRepo();
    const dataDir = tempDir();
    const first = await startMirror(hub.url, s3Config(bucket, { dataDir }));
    for (const name of ['model.safetensors', 'config.json']) {
      const d = await download(`${first.url}/${repo.id}/resolve/main/${name}`, { keepBody: false });
      expect(d.status).toBe(200);
    }
    await first.close();
    fs.rmSync(path.join(dataDir, 'blobs-v1'), { recursive: true }); // evicted, or a fresh disk
    const gets = hub.count({ server: 'cdn' });
    // Offline: told not to ask upstream. Upstream down: a port nothing listens on (refused at once).
    const dead = await deadEndpoint('refuses');
    const m = mode === 'offline' ? await startMirror(hub.url, s3Config(bucket, { dataDir, offline: true })) : await startMirror(dead.endpoint, s3Config(bucket, { dataDir }));
    try {
      const base = `${m.url}/${repo.id}/resolve/main`;
      const whole = await download(`${base}/model.safetensors`, { keepBody: false });
      expect([whole.status, whole.complete, whole.sha256, header(whole, 'x-mirror-cache')]).toEqual([200, true, repo.sha, 'hit']);
      const start = 8 * MiB - 5; // across the first part boundary of the upload
      const ranged = await download(`${base}/model.safetensors`, { headers: { range: `bytes=${start}-${start + 99}` } });
      expect([ranged.status, header(ranged, 'content-range')]).toEqual([206, `bytes ${start}-${start + 99}/${repo.shard.length}`]);
      expect(ranged.body.equals(repo.shard.subarray(start, start + 100))).toBe(true);
      const config = await download(`${base}/config.json`);
      expect([config.status, config.body.toString()]).toEqual([200, repo.config.toString()]);
      expect(hub.count({ server: 'cdn' })).toBe(gets);
    } finally {
      await m.destroy();
      await dead.close();
    }
  });

  it.each(['hangs', 'is down'] as const)('when the object store %s: 503 StorageUnavailable without a local copy, local copies still served', async (mode) => {
    const bucket = await swift.bucket('down');
    const repo = addRepo();
    const dataDir = tempDir();
    const first = await startMirror(hub.url, s3Config(bucket, { dataDir }));
    for (const name of ['model.safetensors', 'config.json']) expect((await download(`${first.url}/${repo.id}/resolve/main/${name}`, { keepBody: false })).status).toBe(200);
    await first.close();
    fs.rmSync(localCopy(dataDir, repo.sha)); // the shard only in the bucket, config.json also local
    const { commit } = hub.commit({ id: repo.id }, { 'new.json': Buffer.from('{"new": true}\n') });
    const dead = await deadEndpoint(mode === 'hangs' ? 'hangs' : 'refuses');
    const m = await startMirror(hub.url, s3Config(bucket, { dataDir, s3Endpoint: dead.endpoint, s3TimeoutSeconds: 1, fillStartWaitMs: 9000 }));
    try {
      expect(m.logs.some((l) => l.includes('blob store unreachable at startup'))).toBe(true);
      const base = `${m.url}/${repo.id}/resolve/main`;
      const local = await download(`${base}/config.json`);
      expect([local.status, local.body.toString(), header(local, 'x-mirror-cache')]).toEqual([200, repo.config.toString(), 'hit']);
      const remote = await download(`${base}/model.safetensors`, { keepBody: false });
      expect([remote.status, header(remote, 'x-error-code')]).toEqual([503, 'StorageUnavailable']);
      // A miss is fetched upstream, but cannot be stored: a clean 503, nothing cached.
      const miss = await download(`${m.url}/${repo.id}/resolve/${commit}/new.json`);
      expect([miss.status, header(miss, 'x-error-code')]).toEqual([503, 'StorageUnavailable']);
      expect(fs.readdirSync(path.join(dataDir, 'staging'))).toEqual([]);
    } finally {
      await m.destroy();
      await dead.close();
    }
  });
});
