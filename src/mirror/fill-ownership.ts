/**
 * Who fetches a blob when several replicas share the store and the index (fill leases in
 * cluster/): the vocabulary the mirror uses, whatever keeps the leases.
 *
 * A fill that owns its blob's lease holds a CommitFence: it publishes its progress, checks the
 * fence right before it records the blob in the shared index (a stale owner, taken over while it
 * was unreachable, must not record), ends the lease as finished once the blob is recorded (which
 * wakes the replicas waiting on it), and gives the lease up when it fails (so another replica
 * takes over at once instead of after the expiry). A fill fed by another replica holds no fence
 * until it takes the fill over (FillOwnership.fence is set then).
 */
import type { BlobKey } from '../storage/blob-layout.js';

export interface CommitFence {
  /** Bytes durable in the staging file so far (published with the next renewal). */
  progress(bytesDurable: number): void;
  /** Whether the lease is still this fill's: asked after the store commit, before the index write. */
  confirm(): Promise<boolean>;
  /** The blob is recorded: the lease ends as finished. */
  finish(): Promise<void>;
  /** The fill failed, or will not run: the lease ends as released. */
  release(): Promise<void>;
}

export type FillClaim =
  /** This replica fetches the blob from upstream. */
  | { owner: 'self'; fence: CommitFence }
  /** Another replica does: stream its in-flight bytes from `url` (the holder's lease `token`). */
  | { owner: 'peer'; url: URL; token: bigint | undefined };

export interface FillCoordinator {
  /**
   * Who fetches `key`. `supersede`: the token of a holder this replica found unable to serve the
   * fill (its endpoint refused, vanished or stalled): its lease is taken over now, not at expiry.
   * Rejects when the coordinator cannot tell (database unreachable).
   */
  claim(key: BlobKey, supersede?: bigint): Promise<FillClaim>;
}

/** A fill's fence, set when it starts as the owner or later when it takes a peer's fill over. */
export interface FillOwnership {
  fence: CommitFence | undefined;
}
