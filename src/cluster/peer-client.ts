/**
 * PeerClient: reads blobs from other replicas' internal endpoint (peer-protocol.ts) over one
 * keep-alive undici pool of its own (never the upstream's pools: peers are not the Hub, and a
 * client's Hub token never goes to a peer). Every request carries the cluster secret; no error
 * message or log names it, only the peer's origin.
 *
 * Answers are returned as they are (status, headers, body); PeerFillSource judges them.
 * Network failures become the same MirrorErrors as upstream ones (fromNetworkError), so a peer
 * that cannot be reached counts as a failing source and the fill fails over.
 */
import { Agent } from 'undici';
import type { BlobKey } from '../storage/blob-layout.js';
import type { UpstreamBody } from '../upstream/hub-client.js';
import { fromNetworkError } from '../upstream/upstream-errors.js';
import { peerBlobPath } from './peer-protocol.js';

export { parsePeerUrl } from './peer-protocol.js';

export interface PeerClientOptions {
  /** Config `clusterSecret`. */
  secret: string;
  connectTimeoutMs: number;
  /** Longest wait for a peer's response headers. */
  headersTimeoutMs: number;
  /** Longest silence inside a peer's body (a fill waiting on its own upstream counts too). */
  bodyIdleTimeoutMs: number;
  /** Connections per peer (default 64). */
  connectionsPerPeer?: number;
  userAgent?: string;
}

export class PeerClient {
  readonly #agent: Agent;
  readonly #authorization: string;
  readonly #userAgent: string;

  constructor(opts: PeerClientOptions) {
    this.#authorization = `Bearer ${opts.secret}`;
    this.#userAgent = opts.userAgent ?? 'hubcache-peer';
    this.#agent = new Agent({
      connect: { timeout: opts.connectTimeoutMs },
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: opts.connectionsPerPeer ?? 64,
    });
  }

  /**
   * `GET <peer>/internal/v1/blobs/<key>` with `extra` headers (Range, If-Range). `peer` is the
   * replica's base URL; only its origin is used.
   */
  async openBlob(peer: URL, key: BlobKey, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody> {
    const url = new URL(peerBlobPath(key), peer.origin);
    try {
      const res = await this.#agent.request({
        origin: url.origin,
        path: url.pathname,
        method: 'GET',
        headers: { 'user-agent': this.#userAgent, accept: '*/*', 'accept-encoding': 'identity', ...extra, authorization: this.#authorization },
        signal,
      });
      return { statusCode: res.statusCode, headers: res.headers, body: res.body, url };
    } catch (err) {
      throw fromNetworkError(err, `blob ${key} on peer ${url.origin}`);
    }
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

