/**
 * `GET /healthz`: 200 when the index answers and the data directory is writable, else 503. A
 * shared index (PostgreSQL) that does not answer is `degraded`, still 200: the replica keeps
 * serving (index reads become misses, writes wait in memory), and a load balancer that took every
 * replica out at once because their shared database restarted would turn a degraded cluster into
 * an outage.
 */
import fsp from 'node:fs/promises';
import { constants } from 'node:fs';
import { Hono } from 'hono';
import type { CacheIndex } from '../../storage/cache-index-contract.js';

export interface HealthDeps {
  index: CacheIndex;
  dataDir: string;
}

export function healthRoutes(deps: HealthDeps): Hono {
  const app = new Hono();
  app.get('/healthz', async (c) => {
    const indexOk = await deps.index.ping();
    const writable = await fsp.access(deps.dataDir, constants.W_OK).then(
      () => true,
      () => false,
    );
    const serving = writable && (indexOk || deps.index.kind === 'postgres');
    const status = !serving ? 'unavailable' : indexOk ? 'ok' : 'degraded';
    return c.json({ status, index: indexOk, dataDirWritable: writable }, serving ? 200 : 503);
  });
  return app;
}
