/**
 * LeaseCoordinator: the FillCoordinator of replicas that share an index in PostgreSQL, over the
 * fill leases (cluster/fill-leases.ts).
 *
 * claim(): takes the blob's lease (owner: this replica, with a CommitFence over the lease), or
 * names the live holder's peer URL. It never waits for a holder: the caller streams the holder's
 * in-flight bytes at once, and claims again (superseding the holder's token) only if that peer
 * cannot serve them (ClaimingFallback). A row naming this replica as the holder is a leftover of
 * an earlier process with the same replica id (this process has no fill of the blob: claims are
 * made inside the process's one flight per blob), so it is superseded at once.
 */
import type { FillLeases, Lease } from '../cluster/fill-leases.js';
import { parsePeerUrl } from '../cluster/peer-protocol.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { CommitFence, FillClaim, FillCoordinator } from './fill-ownership.js';

export class LeaseCoordinator implements FillCoordinator {
  readonly #leases: FillLeases;

  constructor(leases: FillLeases) {
    this.#leases = leases;
  }

  async claim(key: BlobKey, supersede?: bigint): Promise<FillClaim> {
    let claim = await this.#leases.acquire(key, supersede === undefined ? {} : { supersede });
    if (!claim.owned && claim.holder.ownerId === this.#leases.replicaId) {
      claim.cancel();
      claim = await this.#leases.acquire(key, { supersede: claim.holder.token });
    }
    if (claim.owned) return { owner: 'self', fence: fenceOf(this.#leases, claim.lease) };
    claim.cancel(); // the caller streams from the holder rather than waiting for it
    return { owner: 'peer', url: parsePeerUrl(claim.holder.url), token: claim.holder.token };
  }
}

function fenceOf(leases: FillLeases, lease: Lease): CommitFence {
  return {
    progress: (bytes) => lease.progress(bytes),
    confirm: () => (lease.lost ? Promise.resolve(false) : leases.confirm(lease.blobKey, lease.token)),
    finish: async () => {
      await lease.finish();
    },
    release: async () => {
      await lease.release();
    },
  };
}
