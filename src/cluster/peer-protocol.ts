/**
 * The replica-to-replica blob protocol: one internal endpoint on every replica that has a
 * `clusterSecret`, `GET|HEAD /internal/v1/blobs/<blobKey>`, read by the other replicas of the
 * cluster (PeerClient) and served by routes/peer.ts. Both sides take their names from here.
 *
 * Request: `Authorization: Bearer <clusterSecret>`, optionally one `Range: bytes=a-b` (and
 * `If-Range` with the ETag of an earlier answer). Answer: 200 or 206 (one span, exact
 * `Content-Range`), with the blob's key and size in `X-Blob-Key` / `X-Blob-Size`, `ETag` `"<key>"`
 * (strong: the key is the content's digest), and `X-Peer-Source` saying whether the bytes come from
 * the stored blob or from a fill still running there. 404: the replica neither holds nor fills the
 * blob (the caller must not wait for it). 401/403: no or another secret.
 */
import type { BlobKey } from '../storage/blob-layout.js';

export const PEER_BLOBS_PREFIX = '/internal/v1/blobs/';

export const PEER_HEADERS = {
  key: 'x-blob-key',
  size: 'x-blob-size',
  source: 'x-peer-source',
} as const;

/** `stored`: the committed blob. `filling`: a fill running on that replica (its verified prefix, the last byte after the commit). */
export type PeerSourceKind = 'stored' | 'filling';

/** The peer answers' strong validator of a blob: its key (the content's digest). */
export function peerEtag(key: BlobKey): string {
  return `"${key}"`;
}

/** Where a replica serves a blob, below its base URL. */
export function peerBlobPath(key: BlobKey): string {
  return PEER_BLOBS_PREFIX + key;
}

/** A peer base URL: http(s), no credentials, query or fragment (they would be sent nowhere useful). */
export function parsePeerUrl(text: string): URL {
  const url = new URL(text);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`peer URL must be http:// or https://, got ${url.protocol}`);
  if (url.username || url.password || url.search || url.hash) throw new TypeError('peer URL must not carry credentials, a query or a fragment');
  return url;
}
