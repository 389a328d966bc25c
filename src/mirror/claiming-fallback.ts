/**
 * ClaimingFallback: where a peer-fed fill goes when its peer can no longer serve it (the owner
 * died, restarted, gave up, or stalls), with replicas coordinated by fill leases.
 *
 * Not straight to upstream: every replica streaming from the dead owner would then fetch the rest
 * of the blob from upstream. It claims the blob again, superseding the dead holder's token:
 * exactly one replica wins and continues from upstream at its current offsets (it now holds the
 * lease: FillOwnership.fence, so it publishes progress and records the blob); every other one
 * continues from the winner's endpoint, which it reaches like any peer. Which one applies is
 * decided in namesSameBlob(), which PeerFillSource awaits before any byte is taken from here.
 */
import type { Interval } from '../model/span-set.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { UpstreamBody } from '../upstream/hub-client.js';
import type { FillCoordinator, FillOwnership } from './fill-ownership.js';
import type { FillSource } from './fill-source.js';
import type { FallbackSource } from './peer-fill-source.js';

export interface ClaimingFallbackOptions {
  coordinator: FillCoordinator;
  key: BlobKey;
  /** The lease token of the peer that failed (undefined: not known, nothing is superseded). */
  failedToken: bigint | undefined;
  ownership: FillOwnership;
  /** The upstream source, created when this replica wins the fill. */
  upstream: () => FallbackSource;
  /** A source reading another peer (the winner), created when another replica wins. */
  peer: (url: URL, token: bigint | undefined) => FillSource;
}

export class ClaimingFallback implements FallbackSource {
  readonly #opts: ClaimingFallbackOptions;
  #target: FillSource | undefined;

  constructor(opts: ClaimingFallbackOptions) {
    this.#opts = opts;
  }

  get fromPeer(): boolean {
    return this.#target?.fromPeer === true;
  }

  get upstream(): string {
    return this.#target?.upstream ?? 'cluster';
  }

  async namesSameBlob(): Promise<boolean> {
    const { coordinator, key, failedToken, ownership } = this.#opts;
    let claim;
    try {
      claim = await coordinator.claim(key, failedToken);
    } catch {
      // The leases cannot be read (database unreachable): upstream, without a lease. At worst
      // another replica downloads the rest too; the bytes are verified either way.
      const upstream = this.#opts.upstream();
      this.#target = upstream;
      return upstream.namesSameBlob();
    }
    if (claim.owner === 'peer') {
      // The peer endpoint names the blob and size with every answer, and the commit verifies it.
      this.#target = this.#opts.peer(claim.url, claim.token);
      return true;
    }
    ownership.fence = claim.fence;
    const upstream = this.#opts.upstream();
    this.#target = upstream;
    return upstream.namesSameBlob();
  }

  openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    return this.#require().openFirst(span, signal);
  }

  open(span: Interval, validator: string | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    return this.#require().open(span, validator, signal);
  }

  failover(reason: string): Promise<boolean> {
    return this.#target ? this.#target.failover(reason) : Promise.resolve(false);
  }

  #require(): FillSource {
    if (!this.#target) throw new Error('ClaimingFallback used before namesSameBlob()');
    return this.#target;
  }
}
