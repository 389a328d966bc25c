/**
 * Turns a FileEntry (+ a BlobSource for GET) and the request's conditional and Range headers into
 * the response the Hub would give: 200, 206, 304 or 416, with the headers clients read
 *. Several ranges get one `multipart/byteranges` 206 (RFC 9110 §14.6).
 * Planning is pure (bar the random boundary); `writeBlobResponse` does the I/O on Node's response
 * directly, so bytes go from the file to the socket without web-stream conversions. CORS headers
 * are set on that response beforehand by the cors middleware.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
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
  /** Bytes of the blob to send, in order (none for 304/416 and for empty files). */
  spans: ByteSpan[];
  /**
   * For a multipart answer: `before[i]` goes out before `spans[i]` (delimiter and part headers),
   * `close` after the last one. Their lengths are part of the planned Content-Length.
   */
  multipart?: { before: Buffer[]; close: Buffer };
}

/**
 * @param boundary of a multipart answer; random by default (it must not occur in the parts, and a
 *   fixed one could be planted in a file).
 */
export function planBlobResponse(
  entry: FileEntry,
  conditional: ConditionalHeaders,
  cacheStatus: CacheStatus | 'none',
  boundary?: string,
): ResponsePlan {
  const size = entry.size;
  const etag = `"${entry.etag}"`;
  const headers: Record<string, string> = {
    'content-type': entry.contentType,
    etag,
    'x-repo-commit': entry.commit,
    'accept-ranges': 'bytes',
    'content-disposition': dispositionOf(entry.request),
  };
  if (entry.isLfs) {
    headers['x-linked-etag'] = etag;
    headers['x-linked-size'] = String(size);
  }
  if (cacheStatus !== 'none') headers['x-mirror-cache'] = cacheStatus;

  if (conditional.ifNoneMatch !== undefined && etagListMatches(conditional.ifNoneMatch, entry.etag)) {
    return { status: 304, headers, spans: [] };
  }
  return planBytes(headers, size, etag, conditional, (spans) => {
    const separator = boundary ?? randomBytes(16).toString('hex');
    const multipart = multipartFraming(spans, size, entry.contentType, separator);
    headers['content-type'] = `multipart/byteranges; boundary=${separator}`;
    headers['content-length'] = String(multipart.length);
    return { status: 206, headers, spans, multipart: { before: multipart.before, close: multipart.close } };
  });
}

/**
 * The bytes part of an answer for a blob of `size` bytes whose strong validator is `etag`, with
 * `headers` already set: 200 (the whole blob; also when `If-Range` names another validator), 206
 * for one span, 416 when the Range cannot be satisfied or is refused. Several spans go to
 * `several`; without it they are refused (416).
 */
export function planBytes(
  headers: Record<string, string>,
  size: number,
  etag: string,
  conditional: Pick<ConditionalHeaders, 'range' | 'ifRange'>,
  several?: (spans: ByteSpan[]) => ResponsePlan,
): ResponsePlan {
  // If-Range: honour Range only when the validator is our strong ETag (dates and weak tags → full body).
  const rangeAllowed = conditional.ifRange === undefined || conditional.ifRange.trim() === etag;
  const resolved = rangeAllowed ? resolveRange(parseRange(conditional.range), size) : ({ type: 'full' } as const);
  const refusal = resolved.type === 'refused' ? resolved.reason : resolved.type === 'partial' && resolved.spans.length > 1 && !several ? 'one range per request' : undefined;
  if (resolved.type === 'unsatisfiable' || refusal !== undefined) {
    headers['content-range'] = `bytes */${size}`;
    headers['content-length'] = '0';
    if (refusal !== undefined) headers['x-error-message'] = `Range refused: ${refusal}`;
    return { status: 416, headers, spans: [] };
  }
  if (resolved.type === 'partial') {
    const [only, ...more] = resolved.spans;
    if (only && more.length === 0) {
      headers['content-range'] = `bytes ${only.start}-${only.end}/${size}`;
      headers['content-length'] = String(only.end - only.start + 1);
      return { status: 206, headers, spans: resolved.spans };
    }
    return several!(resolved.spans);
  }
  headers['content-length'] = String(size);
  return { status: 200, headers, spans: size > 0 ? [{ start: 0, end: size - 1 }] : [] };
}

/**
 * The framing of a `multipart/byteranges` body (RFC 9110 §14.6, RFC 2046 §5.1.1): each part is
 * `--boundary CRLF`, its `Content-Type` and `Content-Range` lines, an empty line and the bytes; the
 * CRLF ending a part belongs to the next delimiter; the body ends with `CRLF --boundary-- CRLF`.
 * `length` is the exact body length, framing and bytes together.
 */
function multipartFraming(spans: readonly ByteSpan[], size: number, contentType: string, boundary: string): { before: Buffer[]; close: Buffer; length: number } {
  let length = 0;
  const before = spans.map((span, i) => {
    const head = Buffer.from(
      `${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: ${contentType}\r\nContent-Range: bytes ${span.start}-${span.end}/${size}\r\n\r\n`,
      'latin1',
    );
    length += head.length + span.end - span.start + 1;
    return head;
  });
  const close = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');
  return { before, close, length: length + close.length };
}

/** `If-None-Match` uses weak comparison: `*`, or any listed tag equal to ours with or without `W/`. */
function etagListMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === `"${etag}"`);
}

/**
 * contentDisposition per request object: file requests are parsed once per path and kept
 * (routes/files.ts), so a warm HEAD or GET does not encode the name again (2.5 % of a warm HEAD's
 * CPU in a profile).
 */
const dispositions = new WeakMap<FileEntry['request'], string>();
function dispositionOf(request: FileEntry['request']): string {
  let value = dispositions.get(request);
  if (value === undefined) dispositions.set(request, (value = contentDisposition(request.path)));
  return value;
}

/** `inline; filename*=UTF-8''<pct-encoded>; filename="<ascii fallback>"`, like the Hub, injection-proof. */
export function contentDisposition(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `inline; filename*=UTF-8''${encoded}; filename="${ascii}";`;
}

/**
 * Writes the planned response. For GET with a body, streams the planned spans of `source` (and the
 * multipart framing between them) to the socket; resolves when the response is finished or the
 * client went away. If the source fails mid-body the connection is cut (the client sees a short
 * body, never a complete wrong one).
 *
 * `preamble`: headers to send before the planned ones (the request id and CORS headers of a
 * download answered without Hono), in the same `writeHead` (the record itself is not changed).
 * Node writes a header record it is handed in one go, but once any
 * header was set with `setHeader` it sets every other one that way too: measured on a warm HEAD
 * (`npm run bench -- head`, 3 × 5 rounds interleaved A/B), 0.023-0.025 ms of mirror CPU instead
 * of 0.025-0.027.
 */
export async function writeBlobResponse(
  req: IncomingMessage,
  res: ServerResponse,
  plan: ResponsePlan,
  source: BlobSource | null,
  stats: TransferStats = { bytes: 0, completed: false },
  preamble?: Record<string, string>,
): Promise<TransferStats> {
  writeHead(res, plan, preamble);
  const [first] = plan.spans;
  if (req.method === 'HEAD' || !first || !source) {
    res.end();
    stats.completed = true;
    return stats;
  }
  // A fill's bytes may be seconds away (queued, upstream slow, a range far ahead of the fill):
  // the headers go out now, as promised by fillStartWaitMs, not with the first byte. Hits and
  // bypasses have their bytes at hand and send both together.
  if (source.cacheStatus === 'miss' || source.cacheStatus === 'joined') res.flushHeaders();
  try {
    if (plan.multipart) {
      for (const [i, span] of plan.spans.entries()) {
        const head = plan.multipart.before[i];
        if (head && !(await send(res, head, stats))) return stats;
        if (!(await sendSpan(res, source, span, stats))) return stats;
      }
      if (!(await send(res, plan.multipart.close, stats))) return stats;
    } else if (!(await sendSpan(res, source, first, stats))) {
      return stats;
    }
    stats.completed = await finish(res);
  } catch {
    // The source failed mid-body: cut the connection, so the client sees a short body, never a
    // complete wrong one.
    res.destroy();
    stats.completed = false;
  }
  return stats;
}

function writeHead(res: ServerResponse, plan: ResponsePlan, preamble: Record<string, string> | undefined): void {
  if (!preamble) {
    res.writeHead(plan.status, plan.headers);
    return;
  }
  // The request log reads X-Error-* back from the response (getHeader), which sees only headers
  // set one by one: answers that carry them take that way.
  if ('x-error-code' in plan.headers || 'x-error-message' in plan.headers) {
    for (const [name, value] of Object.entries(preamble)) res.setHeader(name, value);
    res.writeHead(plan.status, plan.headers);
    return;
  }
  // A new record: should writeHead throw (a header value Node refuses), the preamble is unchanged
  // for the error answer. (Object.assign, not a spread: with `{ ...a, ...b }` the same bench gave
  // 0.035-0.038 ms per HEAD against 0.023-0.024, alternating runs.)
  res.writeHead(plan.status, Object.assign({}, preamble, plan.headers));
}

/**
 * Copies one span from a fresh reader to the socket, honouring backpressure; each chunk is released
 * to the reader once the socket is done with it. False when the client went away (the reader is
 * closed either way); throws the source's failure.
 */
async function sendSpan(res: ServerResponse, source: BlobSource, span: ByteSpan, stats: TransferStats): Promise<boolean> {
  const reader = source.createReader(span.start, span.end);
  try {
    for (;;) {
      const chunk = await reader.next();
      if (chunk === null) return true;
      if (!(await send(res, chunk, stats, () => reader.release(chunk)))) return false;
    }
  } finally {
    reader.close();
  }
}

/** Ends the response; true once it is handed to the socket whole, false if the client left first. */
function finish(res: ServerResponse): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const onClose = (): void => resolve(res.writableFinished);
    res.once('close', onClose);
    res.end(() => {
      res.off('close', onClose);
      resolve(true);
    });
  });
}

/**
 * Writes a chunk; waits for `drain` when the socket buffer is full. False once the client is gone.
 * `written` runs once the socket is done with the chunk (at once if it never took it).
 */
async function send(res: ServerResponse, chunk: Buffer, stats: TransferStats, written?: () => void): Promise<boolean> {
  if (res.destroyed) {
    written?.();
    return false;
  }
  stats.bytes += chunk.length;
  if (res.write(chunk, written)) return true;
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean): void => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = (): void => done(true);
    const onClose = (): void => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
