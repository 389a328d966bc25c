/**
 * The PostgreSQL cache index's schema: ordered steps recorded one row each in
 * `schema_migrations`, applied by {@link migratePostgresIndex} in one transaction under an
 * advisory lock of its own, so that N replicas starting at once migrate once (the others wait
 * for the lock, then find nothing to do). Never edit a shipped step: append a new one.
 *
 * The tables and columns are those of the SQLite index (migrations.ts, as of its last step):
 * times in ms since epoch and sizes as BIGINT, bodies as BYTEA, JSON as TEXT (headers: kept byte
 * for byte) or JSONB (job params and progress), booleans as BOOLEAN. Keys compare bytewise
 * (`COLLATE "C"`, as SQLite does), whatever the database's locale: the eviction cursor and every
 * listing order depend on it. One addition: `jobs.item_seq`, the last item number handed out, so
 * that numbering a job's items is one atomic statement on a shared server.
 * Every name here differs from the fill leases' (`fill_lease*`), which share the database.
 */
import type pg from 'pg';

/** The advisory lock taken while migrating ("hubcache cache index"; the fill leases use another). */
export const INDEX_MIGRATION_LOCK_KEY = '7413205118220101002';

export const POSTGRES_MIGRATIONS: readonly string[] = [
  // 1: everything the SQLite index has after its step 5.
  `
  CREATE TABLE refs (
    repo_type   text COLLATE "C" NOT NULL,
    repo_id     text COLLATE "C" NOT NULL,
    revision    text COLLATE "C" NOT NULL,
    commit_sha  text NOT NULL,
    checked_at  bigint NOT NULL,              -- ms since epoch of the upstream answer
    scope       text NOT NULL DEFAULT 'anonymous',
    PRIMARY KEY (repo_type, repo_id, revision)
  );
  CREATE INDEX refs_by_checked ON refs (checked_at);

  CREATE TABLE files (
    repo_type    text COLLATE "C" NOT NULL,
    repo_id      text COLLATE "C" NOT NULL,
    commit_sha   text COLLATE "C" NOT NULL,
    view         text COLLATE "C" NOT NULL,   -- 'resolve' | 'raw'
    path         text COLLATE "C" NOT NULL,
    blob_key     text COLLATE "C" NOT NULL,
    size         bigint NOT NULL,
    etag         text NOT NULL,
    is_lfs       boolean NOT NULL,
    content_type text NOT NULL,
    scope        text,                        -- NULL: learnt with a client's token (never read back)
    checked_at   bigint NOT NULL,
    PRIMARY KEY (repo_type, repo_id, commit_sha, view, path)
  );
  CREATE INDEX files_by_blob ON files (blob_key);

  CREATE TABLE blobs (
    blob_key         text COLLATE "C" PRIMARY KEY,
    size             bigint NOT NULL,
    stored_at        bigint NOT NULL,
    last_accessed_at bigint NOT NULL,
    hits             bigint NOT NULL DEFAULT 0
  );
  CREATE INDEX blobs_by_access ON blobs (last_accessed_at, blob_key);
  CREATE INDEX blobs_by_size ON blobs (size, blob_key);

  CREATE TABLE api_responses (
    repo_type    text COLLATE "C" NOT NULL,
    repo_id      text COLLATE "C" NOT NULL,
    commit_sha   text COLLATE "C" NOT NULL,
    request_key  text COLLATE "C" NOT NULL,
    status       integer NOT NULL,
    headers      text NOT NULL,               -- JSON object of the few headers kept
    next_page    text,
    body         bytea NOT NULL,
    stored_at    bigint NOT NULL,
    scope        text NOT NULL DEFAULT 'anonymous',
    PRIMARY KEY (repo_type, repo_id, commit_sha, request_key)
  );
  CREATE INDEX api_responses_by_stored ON api_responses (stored_at);

  CREATE TABLE counters (
    name   text COLLATE "C" PRIMARY KEY,
    value  bigint NOT NULL
  );

  CREATE TABLE jobs (
    id          text COLLATE "C" PRIMARY KEY,
    kind        text NOT NULL,
    state       text NOT NULL,
    params      jsonb NOT NULL,               -- what was asked (never a token)
    progress    jsonb NOT NULL,
    message     text,
    created_at  bigint NOT NULL,
    started_at  bigint,
    finished_at bigint,
    item_seq    integer NOT NULL DEFAULT 0    -- the last job_items.seq handed out
  );
  CREATE INDEX jobs_by_created ON jobs (created_at);

  CREATE TABLE job_items (
    job_id   text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq      integer NOT NULL,
    item     text NOT NULL,
    outcome  text NOT NULL,
    ok       boolean NOT NULL,
    bytes    bigint NOT NULL,
    message  text,
    PRIMARY KEY (job_id, seq)
  );
  `,
];

/**
 * Brings the index's tables to the latest version (a no-op when they are). Throws when the
 * database was migrated by a newer hubcache than this one.
 */
export async function migratePostgresIndex(pool: pg.Pool): Promise<void> {
  await inLockedTransaction(pool, INDEX_MIGRATION_LOCK_KEY, async (client) => {
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer PRIMARY KEY,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const row = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM schema_migrations');
    const current = row.rows[0]?.version ?? 0;
    if (current > POSTGRES_MIGRATIONS.length) {
      throw new Error(`cache index: the database has schema version ${current}, newer than this hubcache knows (${POSTGRES_MIGRATIONS.length}); upgrade hubcache`);
    }
    for (let v = current; v < POSTGRES_MIGRATIONS.length; v++) {
      await client.query(POSTGRES_MIGRATIONS[v]!);
      await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [v + 1]);
    }
  });
}

/**
 * Runs `work` in one transaction holding the advisory lock `lockKey` (released at its end): how
 * every schema of ours is migrated, so that N replicas starting at once migrate once. A
 * connection that cannot even roll back is not given back to the pool.
 */
export async function inLockedTransaction(pool: pg.Pool, lockKey: string, work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [lockKey]);
    await work(client);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch((e: Error) => (broken = e));
    throw err;
  } finally {
    client.release(broken);
  }
}
