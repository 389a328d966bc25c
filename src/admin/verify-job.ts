/**
 * The `verify` job: `hubcache verify` while the server runs. Re-hashes every stored blob in the
 * background (storage/verify.ts): a corrupt one is moved to `quarantine/` and forgotten, so the
 * next request downloads it again; a missing one is forgotten. Only those are recorded as items;
 * good blobs are counted. A resumed verify starts over.
 */
import type { BlobStore } from '../storage/blob-store-contract.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { verifyBlobs } from '../storage/verify.js';
import type { JobContext, JobRunner } from './jobs.js';

export class VerifyRunner implements JobRunner {
  readonly #store: BlobStore;
  readonly #index: CacheIndex;

  constructor(store: BlobStore, index: CacheIndex) {
    this.#store = store;
    this.#index = index;
  }

  async run(ctx: JobContext): Promise<void> {
    const totals = await this.#index.inventory.blobTotals();
    ctx.setTotals(totals.blobs, totals.bytes);
    await verifyBlobs(this.#store, this.#index, {
      signal: ctx.signal,
      onBlob: (key, outcome, size) => {
        if (outcome === 'ok') ctx.tally(true, size);
        else if (outcome === 'corrupt') ctx.item(key).finish('corrupt', false, 0, 'moved to quarantine/ and forgotten: the next request downloads it again');
        else ctx.item(key).finish('missing', false, 0, 'not on disk: forgotten');
      },
    });
  }
}
