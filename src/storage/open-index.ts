/**
 * Opens the cache index the configuration names: SQLite in the data dir (`index: sqlite`, the
 * default) or the shared PostgreSQL database (`index: postgres`, `indexUrl`), with the index's
 * write problems logged the same way for both. The PostgreSQL driver's modules are loaded only
 * when it is chosen.
 */
import type { Config } from '../config/config.js';
import type { Logger } from '../observability/logger.js';
import type { BlobLayout } from './blob-layout.js';
import type { CacheIndex, WriteProblemListener } from './cache-index-contract.js';
import { SqliteCacheIndex } from './sqlite-cache-index.js';

export type IndexConfig = Pick<Config, 'index' | 'indexUrl'>;

export async function openCacheIndex(config: IndexConfig, layout: BlobLayout, log: Logger): Promise<CacheIndex> {
  const onWriteProblem: WriteProblemListener = (event, detail) => {
    if (event === 'caught-up') log.info(detail, 'index: deferred writes landed');
    else if (event === 'dropped') log.error(detail, 'index: deferred writes dropped (metadata is asked again, blobs are adopted at the next start)');
    else log.warn(detail, `index ${config.index === 'postgres' ? 'unreachable' : 'busy or full'}: writes deferred, the mirror keeps serving`);
  };
  if (config.index === 'sqlite') return SqliteCacheIndex.open(layout.indexPath, { onWriteProblem });
  const { PostgresCacheIndex } = await import('./postgres-cache-index.js');
  const { redactUrl } = await import('./postgres-errors.js');
  const index = await PostgresCacheIndex.open({ url: config.indexUrl, log, onWriteProblem });
  // Where, never with what password.
  log.info({ index: 'postgres', database: redactUrl(config.indexUrl) }, 'the index is in PostgreSQL, shared with the other replicas');
  return index;
}
