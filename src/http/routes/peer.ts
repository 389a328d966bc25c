/**
 * The replicas' internal endpoint, `GET|HEAD /internal/v1/blobs/<blobKey>` (cluster/peer-protocol.ts):
 * another replica of the cluster reads a blob this one holds, or is filling now, as its bytes
 * become durable here (the last byte only after this replica verified the blob, so a reader
 * that reaches the end has verified bytes). Mounted only when `clusterSecret` is configured (else
 * the path is unknown: 404), before CORS and the access keys: no web page is told it may read it,
 * and no client token or access key is involved.
 *
 * Authentication: `Authorization: Bearer <clusterSecret>`, compared in constant time (digests);
 * none → 401 ClusterSecretRequired, another → 403 ClusterSecretRejected. The secret is never
 * logged (the request log never shows Authorization).
 *
 * Access to gated or private content: this route serves any blob it has to any holder of the
 * secret, by content key, without asking upstream. The replica that asks does its client's access
 * check first (FileResolver: the Hub's grant of that file to that client's token), exactly as it
 * would before serving the blob from its own cache, and only then reads from here; so a client
 * never gets bytes through a peer that upstream would refuse it. The secret must therefore stay
 * with the replicas (it opens every blob of the cache).
 *
 * It never starts a fill and never contacts upstream: 404 when this replica neither holds nor
 * fills the blob (the caller goes upstream, it must not wait here). One `Range` is honoured
 * (206 with the exact Content-Range; `If-Range` with another validator: the whole blob, 200);
 * several ranges are refused (416).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono, type Context } from 'hono';
import { MirrorError } from '../../errors.js';
import { PEER_BLOBS_PREFIX, PEER_HEADERS, peerEtag, type PeerSourceKind } from '../../cluster/peer-protocol.js';
import type { Mirror } from '../../mirror/mirror.js';
import { isBlobKey, type BlobKey } from '../../storage/blob-layout.js';
import type { AppEnv } from '../app-env.js';
import { requestHeader } from '../request-target.js';
import { planBytes, writeBlobResponse, type ResponsePlan } from '../send-blob.js';

export interface PeerRoutesDeps {
  mirror: Mirror;
  /** Config `clusterSecret` (non-empty). */
  secret: string;
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

export function peerRoutes(deps: PeerRoutesDeps): Hono<AppEnv> {
  if (deps.secret === '') throw new Error('peerRoutes needs the cluster secret');
  const app = new Hono<AppEnv>();
  const expected = digest(deps.secret);
  app.use('/internal/*', authenticate(expected));

  app.on(['GET', 'HEAD'], `${PEER_BLOBS_PREFIX}:key`, async (c) => {
    const key = c.req.param('key');
    if (!isBlobKey(key)) throw new MirrorError('InvalidRequest', 'not a blob key: expected sha256:<64 hex> or gitsha1:<40 hex>');
    const found = await deps.mirror.peerSource(key);
    if (!found) throw new MirrorError('NotFound', `This replica neither holds nor is filling blob ${key}`);
    const { source, from } = found;
    const { incoming, outgoing } = c.env;
    try {
      const plan = planPeerResponse(key, source.size, from, requestHeader(c, 'range'), requestHeader(c, 'if-range'));
      // Bytes for the request log; no cache status, so they never count as bytes served to clients.
      const transfer = { bytes: 0, completed: false, headersAt: performance.now() };
      c.set('transfer', transfer);
      await writeBlobResponse(incoming, outgoing, plan, incoming.method === 'HEAD' || plan.status === 416 ? null : source, transfer);
    } finally {
      source.release();
    }
    return RESPONSE_ALREADY_SENT;
  });
  return app;
}

/** The answer to one request for a blob of `size` bytes: 200, 206 (one span) or 416. */
export function planPeerResponse(key: BlobKey, size: number, from: PeerSourceKind, range: string | undefined, ifRange: string | undefined): ResponsePlan {
  const etag = peerEtag(key);
  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    etag,
    'accept-ranges': 'bytes',
    'cache-control': 'no-store',
    [PEER_HEADERS.key]: key,
    [PEER_HEADERS.size]: String(size),
    [PEER_HEADERS.source]: from,
  };
  const plan = planBytes(headers, size, etag, { range, ifRange });
  if (plan.status === 416) headers['x-error-message'] ??= 'Range not satisfiable';
  return plan;
}

function authenticate(expected: Buffer) {
  return async (c: Context<AppEnv>, next: () => Promise<void>): Promise<void> => {
    const header = c.req.header('authorization');
    if (header === undefined || header.trim() === '') {
      throw new MirrorError('ClusterSecretRequired', 'The internal endpoint needs the cluster secret: Authorization: Bearer <clusterSecret>', {
        headers: { 'WWW-Authenticate': 'Bearer realm="hubcache-cluster"' },
      });
    }
    const presented = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
      throw new MirrorError('ClusterSecretRejected', 'The cluster secret presented is not this replica\'s');
    }
    await next();
  };
}
