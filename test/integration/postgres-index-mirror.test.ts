/**
 * Replicas sharing one index: the mirror with `storage: s3` (a real Swift s3api) and
 * `index: postgres` (a real PostgreSQL). One replica downloads a file twice (the second a hit, one
 * upstream GET); a second replica, another `hubcache serve` process with its own data dir on the
 * same bucket and database, serves the file as a hit without asking upstream for the file (its
 * ref, metadata or bytes): the ref, the file row and the blob row it needs are the first one's,
 * read from the shared index.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config/config.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror-process.js';
import { postgresSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { startMirror } from '../support/start-mirror.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';

const skip = postgresSkipReason ?? swiftS3SkipReason;
const PREFIX = 'hub/';

describe.skipIf(skip !== undefined)(`replicas on index: postgres + storage: s3${skip ? ` (skipped: ${skip})` : ''}`, () => {
  let hub: FakeHub;
  let swift: SwiftS3;
  let pgServer: TestPostgres;
  const tmpDirs: string[] = [];
  const processes: MirrorProcess[] = [];

  beforeAll(async () => {
    [hub, swift, pgServer] = await Promise.all([startFakeHub(), startSwiftS3(), startPostgres()]);
  }, 120_000);
  afterAll(async () => {
    for (const p of processes) await p.kill();
    await Promise.all([hub?.stop(), swift?.stop(), pgServer?.stop()]);
    for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
  });

  function tempDir(): string {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-pg-mirror-'));
    tmpDirs.push(d);
    return d;
  }

  it('a file one replica downloaded is a hit on another, which asks upstream nothing about the file', async () => {
    const bucket = await swift.bucket('shared');
    // A password in the URL (trust auth ignores it): it must appear in no log line.
    const dbUrl = new URL(await pgServer.createDatabase('mirror'));
    dbUrl.password = 'pw-never-logged-4711';
    const indexUrl = dbUrl.toString();
    const shard = makeContent(3 * 1024 * 1024 + 17, 4711);
    const sha = sha256Hex(shard);
    hub.addRepo({ id: 'org/shared', files: { 'model.safetensors': shard } });
    const s3: Partial<Config> = {
      storage: 's3',
      s3Endpoint: swift.endpoint,
      s3Bucket: bucket,
      s3Region: swift.region,
      s3Prefix: PREFIX,
      s3ForcePathStyle: true,
      s3AccessKeyId: swift.accessKeyId,
      s3SecretAccessKey: swift.secretAccessKey,
    };

    const first = await startMirror(hub.url, { ...s3, dataDir: tempDir(), index: 'postgres', indexUrl });
    try {
      const url = (base: string) => `${base}/org/shared/resolve/main/model.safetensors`;
      const cold = await download(url(first.url), { keepBody: false });
      expect([cold.status, cold.complete, cold.sha256]).toEqual([200, true, sha]);
      const warm = await download(url(first.url), { keepBody: false });
      expect([warm.status, header(warm, 'x-mirror-cache'), warm.sha256]).toEqual([200, 'hit', sha]);
      expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha })).toBe(1);
      expect(first.logs.some((l) => l.includes('the index is in PostgreSQL'))).toBe(true);
      expect(first.logs.filter((l) => l.includes('pw-never-logged'))).toEqual([]);

      const before = hub.requests.length;
      const second = await startMirrorProcess(hub.url, tempDir(), {
        HUBCACHE_STORAGE: 's3',
        HUBCACHE_S3_ENDPOINT: swift.endpoint,
        HUBCACHE_S3_BUCKET: bucket,
        HUBCACHE_S3_REGION: swift.region,
        HUBCACHE_S3_PREFIX: PREFIX,
        HUBCACHE_S3_FORCE_PATH_STYLE: 'true',
        HUBCACHE_S3_ACCESS_KEY_ID: swift.accessKeyId,
        HUBCACHE_S3_SECRET_ACCESS_KEY: swift.secretAccessKey,
        HUBCACHE_INDEX: 'postgres',
        HUBCACHE_INDEX_URL: indexUrl,
      });
      processes.push(second);
      const there = await download(url(second.url), { keepBody: false });
      expect([there.status, header(there, 'x-mirror-cache'), there.sha256]).toEqual([200, 'hit', sha]);
      // Neither the ref, nor the file's metadata, nor its bytes were asked upstream: only the
      // repo's publicity, which each replica checks for itself before it serves a recording
      // (hub/access-policy.ts, once per repo and authTtlSeconds).
      expect(hub.requests.slice(before).map((r) => `${r.server} ${r.method} ${r.path}`)).toEqual(['hub GET /api/models/org/shared']);
      expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha })).toBe(1);
      expect(second.output.filter((l) => l.includes('pw-never-logged'))).toEqual([]);
      expect(second.output.some((l) => l.includes('postgres://hubcache:***@127.0.0.1'))).toBe(true);
    } finally {
      await first.close();
    }
  });
});
