/** `GET /healthz`: 200 when the index answers and the data directory is writable, else 503. */
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
    const ok = indexOk && writable;
    return c.json({ status: ok ? 'ok' : 'unavailable', index: indexOk, dataDirWritable: writable }, ok ? 200 : 503);
  });
  return app;
}
