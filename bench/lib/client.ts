/**
 * The benchmark's HTTP clients. By default they run in their own process (client-child.ts), so
 * they share neither an event loop with the fake hub (whose throttle pacer must tick on time) nor
 * with the servers; BENCH_INPROC=1 runs them here.
 *
 * - GET: undici with a keep-alive Agent. Bodies are consumed in flowing mode and counted.
 *   `expect` compares every chunk with the matching slice of the source bytes as it arrives (a
 *   memcmp, far cheaper than sha256, and nothing kept: equal bytes ⇒ equal sha256); `hash`
 *   computes the body's sha256 inline (for the untimed verification passes). Chunks are never
 *   retained: on this VM first-touch of fresh memory is slow, so keeping 256 MiB of socket buffers
 *   per client would measure the hypervisor, not the servers.
 * - HEAD: node:http with a keep-alive agent (like huggingface_hub's requests session). undici
 *   closes the connection after every HEAD (client-h1.js: "Close after a HEAD request to interop
 *   with misbehaving servers", nodejs/undici#258), which would time TCP setup, not the servers.
 */
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { Agent } from 'undici';
import { forkChild, type CpuUsage, type LoopDelay } from './child.js';

/** Source bytes a body must equal: the bench's deterministic content (makeContent(size, seed)). */
export interface ContentRef {
  seed: number;
  size: number;
}

export interface GetSpec {
  url: string;
  /** Concurrent identical GETs (all started at once). */
  clients: number;
  followRedirects?: boolean;
  expect?: ContentRef;
  hash?: boolean;
  /** Size the body should have; `allButLastMs` is taken when all but its last byte arrived. */
  expectedSize?: number;
}

/** One GET; times in ms from the start of its batch. */
export interface GetOutcome {
  status: number;
  contentLength: string | undefined;
  cache: string | undefined;
  redirects: number;
  bytes: number;
  startMs: number;
  headersMs: number;
  endMs: number;
  allButLastMs: number;
  /** With `expect`: offset of the first byte that differs from the source (or where a length mismatch starts), else null. */
  mismatchAt: number | null;
  sha256: string | undefined;
}

export interface GetBatch {
  /** From the start of the batch to the end of its last body. */
  wallMs: number;
  results: GetOutcome[];
}

export interface HeadSpec {
  /** Request i goes to urls[i % urls.length]. */
  urls: string[];
  total: number;
  concurrency: number;
}

export interface HeadOutcome {
  status: number;
  etag: string | undefined;
  contentLength: string | undefined;
  cache: string | undefined;
  ms: number;
}

export interface HeadBatch {
  wallMs: number;
  results: HeadOutcome[];
}

export interface Clients {
  gets(spec: GetSpec): Promise<GetBatch>;
  heads(spec: HeadSpec): Promise<HeadBatch>;
  /** CPU of the clients' own process; null when they run in the bench process. */
  cpuUsage(): Promise<CpuUsage | null>;
  loopDelay(reset: boolean): Promise<LoopDelay | null>;
  close(): Promise<void>;
}

type Headers = Record<string, string | string[] | undefined>;
function header(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

// ------------------------------------------------------------------------------------ the work

export class ClientOps {
  readonly #agent = new Agent({ keepAliveTimeout: 60_000, keepAliveMaxTimeout: 600_000, headersTimeout: 120_000, bodyTimeout: 120_000 });
  readonly #headAgent: http.Agent;
  readonly #content: (ref: ContentRef) => Buffer;

  constructor(content: (ref: ContentRef) => Buffer, maxHeadSockets: number) {
    this.#content = content;
    this.#headAgent = new http.Agent({ keepAlive: true, maxSockets: maxHeadSockets, keepAliveMsecs: 60_000 });
  }

  async gets(spec: GetSpec): Promise<GetBatch> {
    const expected = spec.expect ? this.#content(spec.expect) : undefined;
    const t0 = performance.now();
    const results = await Promise.all(Array.from({ length: spec.clients }, () => this.#get(spec, expected, t0)));
    return { wallMs: Math.max(...results.map((r) => r.endMs)), results };
  }

  async #get(spec: GetSpec, expected: Buffer | undefined, t0: number): Promise<GetOutcome> {
    const startMs = performance.now() - t0;
    let target = new URL(spec.url);
    let redirects = 0;
    for (;;) {
      const res = await this.#agent.request({ origin: target.origin, path: target.pathname + target.search, method: 'GET' });
      const location = header(res.headers, 'location');
      if (spec.followRedirects && res.statusCode >= 300 && res.statusCode < 400 && location !== undefined) {
        await res.body.dump();
        if (++redirects > 5) throw new Error(`too many redirects for ${spec.url}`);
        target = new URL(location, target);
        continue;
      }
      const headersMs = performance.now() - t0;
      const hasher = spec.hash ? createHash('sha256') : undefined;
      const almost = spec.expectedSize === undefined ? Infinity : spec.expectedSize - 1;
      let bytes = 0;
      let allButLastMs = NaN;
      let mismatchAt: number | null = null;
      const body = res.body;
      await new Promise<void>((resolve, reject) => {
        body.on('data', (chunk: Buffer) => {
          if (expected && mismatchAt === null) {
            const end = bytes + chunk.length;
            if (end > expected.length || expected.compare(chunk, 0, chunk.length, bytes, end) !== 0) mismatchAt = firstDifference(expected, chunk, bytes);
          }
          hasher?.update(chunk);
          bytes += chunk.length;
          if (bytes >= almost && Number.isNaN(allButLastMs)) allButLastMs = performance.now() - t0;
        });
        body.once('end', () => resolve());
        body.once('error', reject);
      });
      const endMs = performance.now() - t0;
      if (expected && mismatchAt === null && bytes !== expected.length) mismatchAt = Math.min(bytes, expected.length);
      return {
        status: res.statusCode,
        contentLength: header(res.headers, 'content-length'),
        cache: header(res.headers, 'x-mirror-cache'),
        redirects,
        bytes,
        startMs,
        headersMs,
        endMs,
        allButLastMs,
        mismatchAt,
        sha256: hasher?.digest('hex'),
      };
    }
  }

  async heads(spec: HeadSpec): Promise<HeadBatch> {
    const urls = spec.urls.map((u) => new URL(u));
    const t0 = performance.now();
    const results = await runPool(spec.total, spec.concurrency, (i) => this.#head(urls[i % urls.length]!));
    return { wallMs: performance.now() - t0, results };
  }

  #head(url: URL): Promise<HeadOutcome> {
    const t0 = performance.now();
    return new Promise<HeadOutcome>((resolve, reject) => {
      const req = http.request(url, { method: 'HEAD', agent: this.#headAgent }, (res) => {
        res.resume();
        res.once('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            etag: header(res.headers, 'etag'),
            contentLength: header(res.headers, 'content-length'),
            cache: header(res.headers, 'x-mirror-cache'),
            ms: performance.now() - t0,
          }),
        );
        res.once('error', reject);
      });
      req.once('error', reject);
      req.end();
    });
  }

  async close(): Promise<void> {
    this.#headAgent.destroy();
    await this.#agent.close();
  }
}

function firstDifference(expected: Buffer, chunk: Buffer, offset: number): number {
  for (let i = 0; i < chunk.length; i++) {
    if (offset + i >= expected.length || expected[offset + i] !== chunk[i]) return offset + i;
  }
  return offset + chunk.length;
}

/** Runs `task(i)` for i in [0, total) with at most `concurrency` in flight. */
async function runPool<T>(total: number, concurrency: number, task: (i: number) => Promise<T>): Promise<T[]> {
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

// ------------------------------------------------------------------------------------ where they run

export function localClients(content: (ref: ContentRef) => Buffer, maxHeadSockets: number): Clients {
  const ops = new ClientOps(content, maxHeadSockets);
  return {
    gets: (spec) => ops.gets(spec),
    heads: (spec) => ops.heads(spec),
    cpuUsage: () => Promise.resolve(null),
    loopDelay: () => Promise.resolve(null),
    close: () => ops.close(),
  };
}

export type ClientCall = { op: 'gets'; spec: GetSpec } | { op: 'heads'; spec: HeadSpec };

const CLIENT_CHILD = fileURLToPath(new URL('./client-child.ts', import.meta.url));

export async function childClients(maxHeadSockets: number): Promise<Clients> {
  const child = await forkChild(CLIENT_CHILD, [String(maxHeadSockets)], 'clients');
  return {
    gets: (spec) => child.call<GetBatch>({ op: 'gets', spec } satisfies ClientCall),
    heads: (spec) => child.call<HeadBatch>({ op: 'heads', spec } satisfies ClientCall),
    cpuUsage: () => child.cpuUsage(),
    loopDelay: (reset) => child.loopDelay(reset),
    close: () => child.close(),
  };
}
