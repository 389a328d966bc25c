/**
 * The fill leases of a replica, on their own small pool of the shared PostgreSQL (indexUrl): the
 * leases' queries are short and must not queue behind the index's.
 */
import os from 'node:os';
import pg from 'pg';
import type { Config } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import { FillLeases } from './fill-leases.js';

export interface OpenedLeases {
  leases: FillLeases;
  /** Stops listening and ends the pool (after the mirror closed: its fills released their leases). */
  close(): Promise<void>;
}

/** The replica id when none is configured: the host name, reduced to the id's characters. */
export function defaultReplicaId(): string {
  return os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64) || 'replica';
}

export async function openFillLeases(config: Pick<Config, 'indexUrl' | 'peerUrl' | 'replicaId' | 'fillLeaseTtlSeconds'>, log: Logger): Promise<OpenedLeases> {
  const pool = new pg.Pool({ connectionString: config.indexUrl, max: 4, application_name: 'hubcache-leases', connectionTimeoutMillis: 5_000 });
  // An idle client's connection dropping (database restart) must not crash the process.
  pool.on('error', (err) => log.warn({ err: { message: err.message } }, 'fill leases: a database connection dropped'));
  try {
    const leases = await FillLeases.open({
      pool,
      replicaId: config.replicaId || defaultReplicaId(),
      peerUrl: config.peerUrl,
      leaseTtlMs: Math.round(config.fillLeaseTtlSeconds * 1000),
      logger: log,
    });
    return {
      leases,
      close: async () => {
        await leases.close();
        await pool.end();
      },
    };
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new Error(`fill leases in PostgreSQL: ${(err as Error).message}`);
  }
}
