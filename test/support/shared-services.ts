/**
 * Vitest global setup of the integration project: ONE throwaway OpenStack Swift (s3api) and ONE
 * throwaway PostgreSQL for every test file, instead of one of each per file. Starting a Swift costs
 * about 8 CPU-seconds (four Python daemons) and a PostgreSQL cluster about 2 (initdb), on a 2-core
 * machine where the suite is CPU-bound; five files use Swift and four PostgreSQL.
 *
 * They are handed to the test workers the way an operator would hand existing ones: through
 * HUBCACHE_TEST_S3_* and HUBCACHE_TEST_PG_URL (set here, before the workers start; the workers
 * inherit this process's environment), which startSwiftS3 and startPostgres reuse and leave running.
 * Files stay independent: each takes buckets and databases of its own, with random names. A test that
 * needs a store nobody else uses (to stop it, to count its processes) asks for
 * `startSwiftS3({ reuse: false })`. Variables already set (a store of the caller's) are left alone,
 * and nothing is started where the binaries are missing outside CI (those files skip, saying why).
 */
import { postgresSkipReason, startPostgres, type TestPostgres } from './postgres.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from './swift-s3.js';

const S3_VARIABLES = ['HUBCACHE_TEST_S3_ENDPOINT', 'HUBCACHE_TEST_S3_ACCESS_KEY_ID', 'HUBCACHE_TEST_S3_SECRET_ACCESS_KEY', 'HUBCACHE_TEST_S3_REGION'] as const;

export default async function setup(): Promise<() => Promise<void>> {
  const env = process.env;
  const wantSwift = !env.HUBCACHE_TEST_S3_ENDPOINT && swiftS3SkipReason === undefined;
  const wantPostgres = !env.HUBCACHE_TEST_PG_URL && postgresSkipReason === undefined;
  const [swiftStart, postgresStart] = await Promise.allSettled([wantSwift ? startSwiftS3({ reuse: false }) : undefined, wantPostgres ? startPostgres() : undefined]);
  const swift = swiftStart.status === 'fulfilled' ? swiftStart.value : undefined;
  const postgres = postgresStart.status === 'fulfilled' ? postgresStart.value : undefined;
  if (swiftStart.status === 'rejected' || postgresStart.status === 'rejected') {
    await Promise.all([swift?.stop(), postgres?.stop()]);
    throw swiftStart.status === 'rejected' ? swiftStart.reason : (postgresStart as PromiseRejectedResult).reason;
  }
  if (swift) publishSwift(swift);
  if (postgres) publishPostgres(postgres);
  return async () => {
    if (swift) for (const name of S3_VARIABLES) delete env[name];
    if (postgres) delete env.HUBCACHE_TEST_PG_URL;
    await Promise.all([swift?.stop(), postgres?.stop()]);
  };
}

function publishSwift(s: SwiftS3): void {
  process.env.HUBCACHE_TEST_S3_ENDPOINT = s.endpoint;
  process.env.HUBCACHE_TEST_S3_ACCESS_KEY_ID = s.accessKeyId;
  process.env.HUBCACHE_TEST_S3_SECRET_ACCESS_KEY = s.secretAccessKey;
  process.env.HUBCACHE_TEST_S3_REGION = s.region;
}

function publishPostgres(p: TestPostgres): void {
  process.env.HUBCACHE_TEST_PG_URL = p.adminUrl;
}
