/**
 * HTTP clients for the benchmark: undici with keep-alive agents. Bodies are consumed in flowing
 * mode and only counted; `keep: true` also keeps the received chunks (views of the socket reads,
 * no copy) so the sha256 can be computed after the clock stopped.
 */
import { createHash } from 'node:crypto';
import { Agent } from 'undici';

export type Headers = Record<string, string | string[] | undefined>;

export interface GetOptions {
  /** Keep the body chunks for a later hash (costs memory, no CPU in the timed loop). */
  keep?: boolean;
  /** Follow 3xx redirects (the direct Hub → CDN download). */
  followRedirects?: boolean;
  /** Size the body should have; `allButLastMs` is taken when `expectedSize - 1` bytes arrived. */
  expectedSize?: number;
}

export interface GetResult {
  status: number;
  /** Headers of the final answer. */
  headers: Headers;
  bytes: number;
  /** performance.now() when the request started / the final headers arrived / the body ended. */
  startedAt: number;
  headersAt: number;
  endedAt: number;
  /** performance.now() when all but the last byte had arrived (NaN if expectedSize not given). */
  allButLastAt: number;
  chunks: Buffer[] | undefined;
  redirects: number;
}

export function newAgent(): Agent {
  return new Agent({ keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000, headersTimeout: 120_000, bodyTimeout: 120_000 });
}

export function header(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export async function get(agent: Agent, url: string, opts: GetOptions = {}): Promise<GetResult> {
  const startedAt = performance.now();
  let target = new URL(url);
  let redirects = 0;
  for (;;) {
    const res = await agent.request({ origin: target.origin, path: target.pathname + target.search, method: 'GET' });
    const location = header(res.headers, 'location');
    if (opts.followRedirects && res.statusCode >= 300 && res.statusCode < 400 && location !== undefined) {
      await res.body.dump();
      if (++redirects > 5) throw new Error(`too many redirects for ${url}`);
      target = new URL(location, target);
      continue;
    }
    const headersAt = performance.now();
    const chunks: Buffer[] | undefined = opts.keep ? [] : undefined;
    const almost = opts.expectedSize === undefined ? Infinity : opts.expectedSize - 1;
    let bytes = 0;
    let allButLastAt = NaN;
    const body = res.body;
    await new Promise<void>((resolve, reject) => {
      body.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (chunks) chunks.push(chunk);
        if (bytes >= almost && Number.isNaN(allButLastAt)) allButLastAt = performance.now();
      });
      body.once('end', () => resolve());
      body.once('error', reject);
    });
    return { status: res.statusCode, headers: res.headers, bytes, startedAt, headersAt, endedAt: performance.now(), allButLastAt, chunks, redirects };
  }
}

export interface HeadResult {
  status: number;
  headers: Headers;
  ms: number;
}

export async function head(agent: Agent, url: URL): Promise<HeadResult> {
  const t0 = performance.now();
  const res = await agent.request({ origin: url.origin, path: url.pathname + url.search, method: 'HEAD' });
  await res.body.dump();
  return { status: res.statusCode, headers: res.headers, ms: performance.now() - t0 };
}

export function sha256OfChunks(chunks: readonly Buffer[]): string {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return h.digest('hex');
}

/** Runs `task(i)` for i in [0, total) with at most `concurrency` in flight. */
export async function runPool<T>(total: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(total);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      out[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  return out;
}
