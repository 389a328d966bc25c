/**
 * A test HTTP client that reports exactly what a client would see: status, headers, the bytes,
 * and whether the body was complete (a connection cut short is `complete: false`, never an
 * exception), plus when each phase happened.
 */
import { createHash } from 'node:crypto';
import { request, type Dispatcher } from 'undici';

export interface Download {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  sha256: string;
  /** The body arrived in full (as many bytes as Content-Length said, and no socket error). */
  complete: boolean;
  error?: string;
  /** ms from the request to the response headers, and to the end of the body. */
  headersMs: number;
  totalMs: number;
}

export interface DownloadOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal;
  dispatcher?: Dispatcher;
  /** Called for every chunk, with the total so far (e.g. to abort at 10 %). */
  onProgress?: (received: number) => void;
  /** Keep the body (default true); false only counts bytes and hashes. */
  keepBody?: boolean;
}

export function header(d: Pick<Download, 'headers'>, name: string): string | undefined {
  const v = d.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(', ') : v;
}

export async function download(url: string, opts: DownloadOptions = {}): Promise<Download> {
  const t0 = performance.now();
  let res: Dispatcher.ResponseData;
  try {
    res = await request(url, {
      method: opts.method ?? 'GET',
      headers: opts.headers,
      signal: opts.signal,
      dispatcher: opts.dispatcher,
    });
  } catch (err) {
    // The connection closed before any response: what a client sees, not a test failure.
    if (opts.signal?.aborted) throw err;
    const ms = performance.now() - t0;
    return { status: 0, headers: {}, body: Buffer.alloc(0), sha256: '', complete: false, error: (err as Error).message, headersMs: ms, totalMs: ms };
  }
  const headersMs = performance.now() - t0;
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let received = 0;
  let error: string | undefined;
  try {
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      received += buf.length;
      hash.update(buf);
      if (opts.keepBody !== false) chunks.push(buf);
      opts.onProgress?.(received);
    }
  } catch (err) {
    error = (err as Error).message;
  }
  const lengthHeader = res.headers['content-length'];
  const expected = typeof lengthHeader === 'string' ? Number(lengthHeader) : undefined;
  const complete = error === undefined && (opts.method === 'HEAD' || expected === undefined || expected === received);
  return {
    status: res.statusCode,
    headers: res.headers,
    body: Buffer.concat(chunks),
    sha256: hash.digest('hex'),
    complete,
    ...(error === undefined ? {} : { error }),
    headersMs,
    totalMs: performance.now() - t0,
  };
}
