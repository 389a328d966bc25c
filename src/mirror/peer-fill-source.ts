/**
 * PeerFillSource: a fill's bytes read from another replica of the cluster (the one that owns the
 * blob's fill, or holds it), through its internal endpoint (cluster/peer-protocol.ts), with a
 * fallback FillSource (the upstream) for when the peer can no longer give them.
 *
 * The peer's answers are judged like an upstream's by the Fill (status, exact Content-Range and
 * length, a strong ETag, the digest at the commit); this source adds what only it knows: the
 * answer must name the fill's blob and size (`X-Blob-Key`, `X-Blob-Size`), and any other answer
 * (404: the peer neither holds nor fills it any more; 401/403: another secret; 5xx; a blob of
 * another key or size) means "this peer cannot serve the fill": it is thrown as a failing-source
 * error (isUnhealthy), so the Fill calls `failover`, as it does when a peer cannot be reached, or
 * when its body stalls.
 *
 * Failover: the first one moves the fill to the fallback, once the fallback names the same blob
 * and size (a HEAD upstream); the Fill then continues at the bytes it holds, adopting the
 * fallback's own validator with its first answer (Range without If-Range), exactly as for a switch
 * between upstreams. Later failovers are the fallback's own (the next upstream). A plain drop of
 * the peer's body is first resumed on the peer (maxResumes), like any drop: a resume that finds
 * the peer dead (connection refused) or no longer filling (404) fails over.
 */
import { MirrorError } from '../errors.js';
import type { Interval } from '../model/span-set.js';
import type { BlobKey } from '../storage/blob-layout.js';
import type { PeerClient } from '../cluster/peer-client.js';
import { PEER_HEADERS } from '../cluster/peer-protocol.js';
import { discardBody, type UpstreamBody } from '../upstream/hub-client.js';
import { headerValue, isUnhealthy } from '../upstream/upstream-errors.js';
import { rangeHeader, type FillSource } from './fill-source.js';

/** A source a fill may be handed over to, once it confirms it has the same blob. */
export interface FallbackSource extends FillSource {
  /** Whether the source answering now has the fill's blob (digest and size); throws when it cannot tell. */
  namesSameBlob(): Promise<boolean>;
}

export interface PeerFillSourceOptions {
  client: PeerClient;
  /** The peer replica's base URL. */
  peer: URL;
  key: BlobKey;
  size: number;
  /** Created when the fill first fails over (the upstream's state is taken then, not at the start). */
  fallback: () => FallbackSource;
  /** A hand-over to `upstream` was refused (why), for the log. */
  onRefused?: (upstream: string, reason: string) => void;
}

/** The reason a peer's answer cannot be used; behind a failing-source MirrorError. */
class PeerUnusable extends Error {
  override name = 'PeerUnusable';
}

export class PeerFillSource implements FillSource {
  readonly #opts: PeerFillSourceOptions;
  #fallback: FallbackSource | undefined;
  /** Handed over to the fallback: every request goes there. */
  #over = false;

  constructor(opts: PeerFillSourceOptions) {
    this.#opts = opts;
  }

  get fromPeer(): boolean {
    return this.#over && this.#fallback ? this.#fallback.fromPeer === true : true;
  }

  /** `peer <origin>` while the peer serves, then the fallback's upstream. */
  get upstream(): string {
    return this.#over && this.#fallback ? this.#fallback.upstream : `peer ${this.#opts.peer.origin}`;
  }

  async openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    if (this.#over && this.#fallback) return this.#fallback.openFirst(span, signal);
    const extra: Record<string, string> = span ? { range: rangeHeader(span, this.#opts.size) } : {};
    return this.#judge(await this.#opts.client.openBlob(this.#opts.peer, this.#opts.key, extra, signal));
  }

  async open(span: Interval, validator: string | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    if (this.#over && this.#fallback) return this.#fallback.open(span, validator, signal);
    const extra: Record<string, string> = { range: rangeHeader(span, this.#opts.size) };
    if (validator !== undefined) extra['if-range'] = validator;
    return this.#judge(await this.#opts.client.openBlob(this.#opts.peer, this.#opts.key, extra, signal));
  }

  async failover(reason: string): Promise<boolean> {
    if (this.#over && this.#fallback) return this.#fallback.failover(reason);
    const fallback = (this.#fallback ??= this.#opts.fallback());
    let same: boolean;
    try {
      same = await fallback.namesSameBlob();
    } catch (err) {
      // The first upstream is failing too: the fallback moves on to the next one that has the blob, if any.
      if (!isUnhealthy(err) || !(await fallback.failover((err as Error).message))) {
        this.#opts.onRefused?.(fallback.upstream, (err as Error).message);
        return false;
      }
      same = true;
    }
    if (!same) {
      this.#opts.onRefused?.(fallback.upstream, 'it names another blob or size for this file');
      return false;
    }
    this.#over = true;
    return true;
  }

  /** A 200/206 naming the fill's blob and size goes to the Fill; anything else is a failing source. */
  #judge(res: UpstreamBody): UpstreamBody {
    const { key, size, peer } = this.#opts;
    const where = `peer ${peer.origin}`;
    if (res.statusCode !== 200 && res.statusCode !== 206) {
      discardBody(res.body);
      const code = headerValue(res.headers, 'x-error-code');
      throw unusable(`${where} answered ${res.statusCode}${code ? ` (${code})` : ''} for blob ${key}`);
    }
    const named = headerValue(res.headers, PEER_HEADERS.key);
    const namedSize = headerValue(res.headers, PEER_HEADERS.size);
    if (named !== key || namedSize !== String(size)) {
      discardBody(res.body);
      throw unusable(`${where} answered for blob ${named ?? '(none)'} of ${namedSize ?? '?'} bytes, expected ${key} of ${size}`);
    }
    return res;
  }
}

function unusable(message: string): MirrorError {
  return new MirrorError('UpstreamUnavailable', message, { cause: new PeerUnusable(message) });
}
