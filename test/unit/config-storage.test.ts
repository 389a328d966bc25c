/**
 * The storage options (`storage`, `s3*`): read from HUBCACHE_S3_* like every option, checked
 * together (a bucket for `storage: s3`, both halves of a key pair), and secrets never echoed.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/load-config.js';

const load = (env: Record<string, string>) => loadConfig({ env, flags: {} });

describe('storage config', () => {
  it('defaults to the filesystem and reads every S3 option from HUBCACHE_S3_*', () => {
    expect(DEFAULT_CONFIG.storage).toBe('fs');
    const result = load({
      HUBCACHE_STORAGE: 's3',
      HUBCACHE_S3_ENDPOINT: 'http://127.0.0.1:9000/',
      HUBCACHE_S3_BUCKET: 'hub-blobs',
      HUBCACHE_S3_REGION: 'eu-west-1',
      HUBCACHE_S3_PREFIX: 'team/hubcache',
      HUBCACHE_S3_FORCE_PATH_STYLE: 'true',
      HUBCACHE_S3_ACCESS_KEY_ID: 'test:tester',
      HUBCACHE_S3_SECRET_ACCESS_KEY: 'testing',
      HUBCACHE_S3_TIMEOUT_SECONDS: '2.5',
      HUBCACHE_S3_ABANDONED_UPLOAD_HOURS: '48',
    });
    expect(result.ok && result.config).toMatchObject({
      storage: 's3',
      s3Endpoint: 'http://127.0.0.1:9000',
      s3Bucket: 'hub-blobs',
      s3Region: 'eu-west-1',
      s3Prefix: 'team/hubcache/',
      s3ForcePathStyle: true,
      s3AccessKeyId: 'test:tester',
      s3SecretAccessKey: 'testing',
      s3TimeoutSeconds: 2.5,
      s3AbandonedUploadHours: 48,
    });
  });

  it('reports every storage problem at once, without showing a secret', () => {
    const result = load({
      HUBCACHE_STORAGE: 's3',
      HUBCACHE_S3_ENDPOINT: 'ftp://store',
      HUBCACHE_S3_PREFIX: '/abs/../x',
      HUBCACHE_S3_SECRET_ACCESS_KEY: 'top secret value',
      HUBCACHE_S3_TIMEOUT_SECONDS: '0',
      HUBCACHE_S3_ABANDONED_UPLOAD_HOURS: '0.5',
    });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    const text = result.errors.join('\n');
    expect(text).toMatch(/s3Endpoint \(from environment\): must be an http:\/\/ or https:\/\/ URL/);
    expect(text).toMatch(/s3Prefix \(from environment\): must be segments separated by "\/"/);
    expect(text).toMatch(/s3SecretAccessKey \(from environment\): must be visible ASCII/);
    expect(text).toMatch(/s3TimeoutSeconds \(from environment\): must be between/);
    expect(text).toMatch(/storage \(from environment\): "s3" needs s3Bucket/);
    expect(text).toMatch(/s3AbandonedUploadHours \(from environment\): /);
    expect(text).not.toContain('top secret');
    expect(result.errors).toHaveLength(6);
  });

  it('wants both halves of an S3 key pair, or neither', () => {
    const half = load({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_S3_ACCESS_KEY_ID: 'AKIA' });
    expect(half.ok ? [] : half.errors).toEqual([expect.stringMatching(/s3AccessKeyId \(from environment\): s3AccessKeyId and s3SecretAccessKey go together/)]);
    expect(load({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1' }).ok).toBe(true);
    const badBucket = load({ HUBCACHE_S3_BUCKET: 'Bad_Bucket' });
    expect(badBucket.ok ? [] : badBucket.errors).toEqual([expect.stringMatching(/s3Bucket \(from environment\): not an S3 bucket name/)]);
  });

  it('index: sqlite by default; postgres reads indexUrl from HUBCACHE_INDEX_URL and needs storage s3', () => {
    expect([DEFAULT_CONFIG.index, DEFAULT_CONFIG.indexUrl]).toEqual(['sqlite', '']);
    const url = 'postgresql://hubcache:secret-pw@db.internal:5432/hubcache?sslmode=require';
    const ok = load({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_INDEX: 'postgres', HUBCACHE_INDEX_URL: url });
    expect(ok.ok && [ok.config.index, ok.config.indexUrl]).toEqual(['postgres', url]);
    expect(load({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_INDEX: 'postgres', HUBCACHE_INDEX_URL: 'postgres://db/hubcache' }).ok).toBe(true);
  });

  it('reports index problems: postgres without a URL or without s3, a URL without postgres, a URL of another kind, never with its password', () => {
    const errors = (env: Record<string, string>): string[] => {
      const r = load(env);
      return r.ok ? [] : r.errors;
    };
    expect(errors({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_INDEX: 'postgres' })).toEqual([expect.stringMatching(/^index \(from environment\): "postgres" needs indexUrl$/)]);
    expect(errors({ HUBCACHE_INDEX: 'postgres', HUBCACHE_INDEX_URL: 'postgres://u:hidden-pw@db/x' })).toEqual([
      expect.stringMatching(/^index \(from environment\): "postgres" \(an index shared by replicas\) needs storage "s3" .*got storage "fs" \(from default\)$/),
    ]);
    expect(errors({ HUBCACHE_INDEX_URL: 'postgres://u:hidden-pw@db/x' })).toEqual([expect.stringMatching(/^indexUrl \(from environment\): only used with index "postgres" \(index is "sqlite", from default\)$/)]);
    const wrong = errors({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_INDEX: 'postgres', HUBCACHE_INDEX_URL: 'mysql://u:hidden-pw@db/x' });
    expect(wrong).toEqual([expect.stringMatching(/^indexUrl \(from environment\): must be a postgres:\/\/ or postgresql:\/\/ URL, got "mysql:\/\/u:\*\*\*@db\/x"$/)]);
    const garbage = errors({ HUBCACHE_STORAGE: 's3', HUBCACHE_S3_BUCKET: 'b-1', HUBCACHE_INDEX: 'postgres', HUBCACHE_INDEX_URL: 'hidden-pw at db' });
    expect(garbage).toEqual([expect.stringMatching(/^indexUrl \(from environment\): not a valid URL \(the value is not shown/)]);
    expect(errors({ HUBCACHE_INDEX: 'mysql' })).toEqual([expect.stringMatching(/^index \(from environment\): must be one of sqlite, postgres/)]);
    expect([...wrong, ...garbage].join('\n')).not.toContain('hidden-pw');
  });
});
