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
import { PostgresCacheIndex } from '../../src/storage/postgres-cache-index.js';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror-process.js';
import { postgresSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { startMirror } from '../support/start-mirror.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';
import { startTcpRelay } from '../support/tcp-relay.js';
import { waitFor } from '../support/wait-for.js';

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

  function s3Config(bucket: string): Partial<Config> {
    return {
      storage: 's3',
      s3Endpoint: swift.endpoint,
      s3Bucket: bucket,
      s3Region: swift.region,
      s3Prefix: PREFIX,
      s3ForcePathStyle: true,
      s3AccessKeyId: swift.accessKeyId,
      s3SecretAccessKey: swift.secretAccessKey,
    };
  }

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
    const s3 = s3Config(bucket);

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

  it('while the database is unreachable the replica keeps serving: index reads are misses, writes land once it is back', async () => {
    const bucket = await swift.bucket('outage');
    const dbUrl = await pgServer.createDatabase('outage');
    const gate = await startTcpRelay(Number(new URL(dbUrl).port));
    const viaRelay = new URL(dbUrl);
    viaRelay.port = String(gate.port);
    const [early, late] = [makeContent(200_000, 51), makeContent(300_000, 52)];
    hub.addRepo({ id: 'org/outage', files: { 'early.bin': early, 'late.bin': late } });
    const m = await startMirror(hub.url, { ...s3Config(bucket), dataDir: tempDir(), index: 'postgres', indexUrl: viaRelay.toString() });
    try {
      const url = (f: string) => `${m.url}/org/outage/resolve/main/${f}`;
      expect((await download(url('early.bin'), { keepBody: false })).sha256).toBe(sha256Hex(early));

      gate.cut();
      // A file the index would have to be asked about: a miss, fetched upstream, not a 500.
      const during = await download(url('late.bin'), { keepBody: false });
      expect([during.status, during.complete, during.sha256]).toEqual([200, true, sha256Hex(late)]);
      // The file fetched before: still a hit (its answer and blob row are in memory).
      const hit = await download(url('early.bin'), { keepBody: false });
      expect([hit.status, header(hit, 'x-mirror-cache'), hit.sha256]).toEqual([200, 'hit', sha256Hex(early)]);
      expect(m.logs.some((l) => l.includes('writes deferred'))).toBe(true);
      expect(m.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
      // Degraded, not down: a load balancer keeps every replica while their shared database is away.
      const health = await fetch(`${m.url}/healthz`);
      expect([health.status, await health.json()]).toEqual([200, { status: 'degraded', index: false, dataDirWritable: true }]);

      gate.restore();
      await waitFor(() => m.logs.some((l) => l.includes('index: deferred writes landed')), { what: 'the deferred index writes to land' });
      // What the replica learnt during the outage is in the shared database now.
      const direct = await PostgresCacheIndex.open({ url: dbUrl });
      try {
        expect(await direct.getBlob(`sha256:${sha256Hex(late)}`)).toMatchObject({ size: late.length });
        expect((await direct.inventory.files({ type: 'model', id: 'org/outage' })).map((f) => [f.path, f.cached])).toEqual([
          ['early.bin', true],
          ['late.bin', true],
        ]);
      } finally {
        await direct.close();
      }
    } finally {
      await m.close();
      await gate.close();
    }
  });
});
