/**
 * The fill leases' own tables in PostgreSQL, with a schema version of their own
 * (`fill_lease_schema_version`), so that they share a database with the PostgreSQL cache index
 * (which has its own migrations and version) without either knowing the other. Every name here
 * starts with `fill_lease`.
 *
 * Migrating is idempotent and safe from any number of replicas at once: one transaction, under a
 * transaction-scoped advisory lock of its own ({@link MIGRATION_LOCK_KEY}), reads the version and
 * applies the steps after it. Never edit a shipped step: append a new one.
 */
import type pg from 'pg';
import { inLockedTransaction } from '../storage/postgres-migrations.js';

/**
 * The advisory lock taken while migrating (an arbitrary constant: "hubcache fill leases"). The
 * cache index uses another key, so the two migrate independently.
 */
export const MIGRATION_LOCK_KEY = '7413205118220101001';

export const FILL_LEASE_MIGRATIONS: readonly string[] = [
  // 1: one row per blob being filled somewhere. Rows go when the fill is released or finished;
  // a dead owner's row stays expired until another replica takes it over or a sweep removes it.
  `
  CREATE SEQUENCE fill_lease_tokens AS bigint;

  CREATE TABLE fill_leases (
    blob_key       text PRIMARY KEY,
    owner_id       text NOT NULL,          -- replica id of the owner
    owner_url      text NOT NULL,          -- where other replicas stream the in-flight bytes (no credentials)
    token          bigint NOT NULL,        -- fencing token, from fill_lease_tokens
    nonce          uuid NOT NULL,          -- random per acquire: tells the acquirer it won
    previous_token bigint,                 -- the token this one took over from (NULL: a fresh lease)
    acquired_at    timestamptz NOT NULL,   -- database clock
    expires_at     timestamptz NOT NULL,   -- database clock, never a replica's
    bytes_durable  bigint                  -- progress the owner publishes (NULL: none yet)
  );
  CREATE INDEX fill_leases_by_expiry ON fill_leases (expires_at);
  `,
];

/** Brings the fill-lease tables to the latest version (no-op when they are). */
export async function migrateFillLeases(pool: pg.Pool): Promise<void> {
  await inLockedTransaction(pool, MIGRATION_LOCK_KEY, async (client) => {
    await client.query(`CREATE TABLE IF NOT EXISTS fill_lease_schema_version (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      version   integer NOT NULL
    )`);
    const row = await client.query<{ version: number }>('SELECT version FROM fill_lease_schema_version');
    const current = row.rows[0]?.version ?? 0;
    if (current > FILL_LEASE_MIGRATIONS.length) {
      throw new Error(`fill leases: the database has schema version ${current}, newer than this hubcache knows (${FILL_LEASE_MIGRATIONS.length}); upgrade hubcache`);
    }
    for (let v = current; v < FILL_LEASE_MIGRATIONS.length; v++) await client.query(FILL_LEASE_MIGRATIONS[v]!);
    if (current < FILL_LEASE_MIGRATIONS.length) {
      await client.query(
        `INSERT INTO fill_lease_schema_version (version) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version`,
        [FILL_LEASE_MIGRATIONS.length],
      );
    }
  });
}
