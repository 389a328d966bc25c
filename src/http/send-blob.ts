/**
 * Turns a FileEntry (+ a BlobSource for GET) and the request's conditional and Range headers into
 * the response the Hub would give: 200, 206, 304 or 416, with the headers clients read
 * (hf-protocol §4.3, §4.5). Planning is pure; `writeBlobResponse` does the I/O on Node's response
 * directly, so bytes go from the file to the socket without web-stream conversions.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { FileEntry } from '../hub/file-resolver.js';
import type { BlobSource, CacheStatus } from '../mirror/mirror.js';
import { parseRange, resolveRange, type ByteSpan } from './byte-range.js';
import type { TransferStats } from './request-log.js';

export interface ConditionalHeaders {
  range: string | undefined;
  ifRange: string | undefined;
  ifNoneMatch: string | undefined;
}

export interface ResponsePlan {
  status: 200 | 206 | 304 | 416;
  headers: Record<string, string>;
  /** Bytes to send (none for 304/416 and for empty files). */
  span: ByteSpan | null;
}

/** Header names a browser client may read (the Hub's list). */
const EXPOSE_HEADERS =
  'X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag';

export function planBlobResponse(entry: FileEntry, conditional: ConditionalHeaders, cacheStatus: CacheStatus | 'none'): ResponsePlan {
  const size = entry.size;
  const etag = `"${entry.etag}"`;
  const headers: Record<string, string> = {
    'content-type': entry.contentType,
    etag,
    'x-repo-commit': entry.commit,
    'accept-ranges': 'bytes',
    'content-disposition': contentDisposition(entry.request.path),
    'access-control-expose-headers': EXPOSE_HEADERS,
  };
  if (entry.isLfs) {
    headers['x-linked-etag'] = etag;
    headers['x-linked-size'] = String(size);
  }
  if (cacheStatus !== 'none') headers['x-mirror-cache'] = cacheStatus;

  if (conditional.ifNoneMatch !== undefined && etagListMatches(conditional.ifNoneMatch, entry.etag)) {
    return { status: 304, headers, span: null };
  }
  // If-Range: honour Range only when the validator is our strong ETag (dates and weak tags → full body).
  const rangeAllowed = conditional.ifRange === undefined || conditional.ifRange.trim() === etag;
  const resolved = rangeAllowed ? resolveRange(parseRange(conditional.range), size) : ({ type: 'full' } as const);
  if (resolved.type === 'unsatisfiable') {
    headers['content-range'] = `bytes */${size}`;
    headers['content-length'] = '0';
    return { status: 416, headers, span: null };
  }
  if (resolved.type === 'partial') {
    const { start, end } = resolved.span;
    headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = String(end - start + 1);
    return { status: 206, headers, span: resolved.span };
  }
  headers['content-length'] = String(size);
  return { status: 200, headers, span: size > 0 ? { start: 0, end: size - 1 } : null };
}

/** `If-None-Match` uses weak comparison: `*`, or any listed tag equal to ours with or without `W/`. */
function etagListMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${etag}"`);
}

/** `inline; filename*=UTF-8''<pct-encoded>; filename="<ascii fallback>"`, like the Hub, injection-proof. */
export function contentDisposition(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `inline; filename*=UTF-8''${encoded}; filename="${ascii}";`;
}

/**
 * Writes the planned response. For GET with a body, streams `source` [span] to the socket; resolves
 * when the response is finished or the client went away. If the source fails mid-body the
 * connection is cut (the client sees a short body, never a complete wrong one).
 */
export async function writeBlobResponse(
  req: IncomingMessage,
  res: ServerResponse,
  plan: ResponsePlan,
  source: BlobSource | null,
  stats: TransferStats = { bytes: 0, completed: false },
): Promise<TransferStats> {
  res.writeHead(plan.status, plan.headers);
  if (req.method === 'HEAD' || !plan.span || !source) {
    res.end();
    stats.completed = true;
    return stats;
  }
  // A fill's bytes may be seconds away (queued, upstream slow, a range far ahead of the fill):
  // the headers go out now, as promised by fillStartWaitMs, not with the first byte. Hits and
  // bypasses have their bytes at hand and send both together.
  if (source.cacheStatus === 'miss' || source.cacheStatus === 'joined') res.flushHeaders();
  const reader = source.createReader(plan.span.start, plan.span.end);
  reader.on('data', (chunk: Buffer) => {
    stats.bytes += chunk.length;
  });
  try {
    await pipeline(reader, res);
    stats.completed = true;
  } catch {
    // Client gone, or the fill failed: pipeline destroyed both ends; the socket is closed short.
    stats.completed = false;
  }
  return stats;
}
