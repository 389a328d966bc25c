/**
 * HubClient: every request to the upstream Hub goes through here, over one pooled undici Agent.
 *
 * - `headFile` asks for a file's metadata without following absolute redirects (the Hub puts
 *   X-Repo-Commit and X-Linked-* on the first hop); same-origin relative redirects (`resolve-cache`,
 *   renamed repos) are followed like huggingface_hub does.
 * - `openBody` GETs a body and follows redirects itself, hop by hop: the client's Authorization is
 *   sent to the upstream origin only and dropped for good once a hop leaves it (signed CDN URLs).
 * - The client's `Accept` is never forwarded (a Xet file-info answer would send clients off the
 *   mirror): upstream always sees `Accept: *\/*` and `Accept-Encoding: identity`.
 */
import type { Readable } from 'node:stream';
import { Agent } from 'undici';
import { MirrorError } from '../errors.js';
import { fileUrlPath, type FileRequest } from '../hub/repo-ref.js';
import { fromNetworkError, fromUpstreamStatus, headerValue, type Headers } from './upstream-errors.js';

export interface HubClientOptions {
  /** Upstream base URL, e.g. `https://huggingface.co`. */
  upstream: string;
  connectTimeoutMs: number;
  /** Whole-request budget of a metadata HEAD (redirect hops included). */
  metadataTimeoutMs: number;
  /** Time allowed for upstream response headers. */
  headersTimeoutMs: number;
  /** Longest silence allowed inside an upstream body. */
  bodyIdleTimeoutMs: number;
  userAgent: string;
  /** Upper bound of connections per upstream origin. */
  connectionsPerOrigin?: number;
}

/** What the Hub's HEAD on `/resolve` or `/raw` tells about a file (hf-protocol §4.1). */
export interface UpstreamFileMeta {
  commit: string;
  /** Unquoted `X-Linked-Etag` (sha256 of an LFS file), if any. */
  linkedEtag: string | undefined;
  /** Unquoted `ETag`, without `W/`. */
  etag: string | undefined;
  /** `X-Linked-Size`: the size of the LFS content, when the Hub gives it. */
  linkedSize: number | undefined;
  /** `Content-Length` of a non-redirect answer: the size of the body that GET would return. */
  contentLength: number | undefined;
  /** The answer was a redirect to a CDN (an LFS file). */
  redirected: boolean;
  contentType: string | undefined;
}

export interface UpstreamBody {
  statusCode: number;
  headers: Headers;
  body: Readable;
}

const MAX_REDIRECTS = 5;

export class HubClient {
  readonly #agent: Agent;
  readonly #base: URL;
  readonly #basePath: string;
  readonly #userAgent: string;
  readonly #metadataTimeoutMs: number;

  constructor(opts: HubClientOptions) {
    this.#metadataTimeoutMs = opts.metadataTimeoutMs;
    this.#base = new URL(opts.upstream);
    this.#basePath = this.#base.pathname.replace(/\/+$/, '');
    this.#userAgent = opts.userAgent;
    this.#agent = new Agent({
      connect: { timeout: opts.connectTimeoutMs },
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: opts.connectionsPerOrigin ?? 128,
    });
  }

  /** Absolute upstream URL for a path below the upstream base. */
  url(pathAndQuery: string): URL {
    return new URL(this.#basePath + pathAndQuery, this.#base.origin);
  }

  #headers(auth: string | undefined, extra: Record<string, string> = {}): Record<string, string> {
    const h: Record<string, string> = {
      'user-agent': this.#userAgent,
      accept: '*/*',
      'accept-encoding': 'identity',
      ...extra,
    };
    if (auth) h.authorization = auth;
    return h;
  }

  async #send(method: 'HEAD' | 'GET', url: URL, headers: Record<string, string>, signal?: AbortSignal) {
    try {
      return await this.#agent.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method,
        headers,
        signal,
      });
    } catch (err) {
      throw fromNetworkError(err, describe(url));
    }
  }

  /** HEAD of a file URL; throws the Hub's error (with X-Repo-Commit on EntryNotFound). */
  async headFile(req: FileRequest, auth: string | undefined): Promise<UpstreamFileMeta> {
    let url = this.url(fileUrlPath(req));
    const signal = AbortSignal.timeout(this.#metadataTimeoutMs);
    for (let hop = 0; ; hop++) {
      const res = await this.#send('HEAD', url, this.#headers(auth), signal);
      res.body.resume();
      const location = headerValue(res.headers, 'location');
      const isRedirect = res.statusCode >= 300 && res.statusCode < 400 && location !== undefined;
      if (isRedirect && isRelativeLocation(location) && hop < MAX_REDIRECTS) {
        url = new URL(location, url);
        continue;
      }
      if (res.statusCode >= 400) throw fromUpstreamStatus(res.statusCode, res.headers, describe(url));
      if (res.statusCode >= 300 && !isRedirect) throw fromUpstreamStatus(502, res.headers, describe(url));
      return parseFileMeta(res.headers, isRedirect, describe(url));
    }
  }

  /**
   * GET with redirects followed server-side. `Authorization` goes to the upstream origin only and
   * is dropped for the rest of the chain once a hop leaves it. Returns the final answer, whatever
   * its status; the caller consumes or destroys `body`.
   */
  async openBody(pathAndQuery: string, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody> {
    let url = this.url(pathAndQuery);
    let token = auth;
    for (let hop = 0; ; hop++) {
      if (url.origin !== this.#base.origin) token = undefined;
      const res = await this.#send('GET', url, this.#headers(token, extra), signal);
      const location = headerValue(res.headers, 'location');
      if (res.statusCode >= 300 && res.statusCode < 400 && location !== undefined) {
        res.body.resume();
        if (hop >= MAX_REDIRECTS) throw new MirrorError('UpstreamError', `Too many upstream redirects for ${describe(url)}`);
        url = this.#redirectTarget(location, url);
        continue;
      }
      return { statusCode: res.statusCode, headers: res.headers, body: res.body };
    }
  }

  /** The next hop of a redirect: http(s) only. */
  #redirectTarget(location: string, from: URL): URL {
    let next: URL;
    try {
      next = new URL(location, from);
    } catch {
      throw new MirrorError('UpstreamError', 'Upstream sent an invalid redirect');
    }
    if (next.protocol !== 'https:' && next.protocol !== 'http:') {
      throw new MirrorError('UpstreamError', `Upstream redirect to a ${next.protocol} URL refused`);
    }
    return next;
  }

  async close(): Promise<void> {
    await this.#agent.close();
  }
}

function isRelativeLocation(location: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith('//');
}

function unquote(etag: string | undefined): string | undefined {
  if (etag === undefined) return undefined;
  return etag.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function parseFileMeta(headers: Headers, redirected: boolean, what: string): UpstreamFileMeta {
  const commit = headerValue(headers, 'x-repo-commit');
  if (!commit || !/^[0-9a-f]{40}$/.test(commit)) {
    throw new MirrorError('UpstreamError', `Upstream answer for ${what} has no X-Repo-Commit: not a Hugging Face hub?`);
  }
  return {
    commit,
    linkedEtag: unquote(headerValue(headers, 'x-linked-etag')),
    etag: unquote(headerValue(headers, 'etag')),
    linkedSize: parseSize(headerValue(headers, 'x-linked-size')),
    // A redirect's own Content-Length is the length of the redirect body, not the file's.
    contentLength: redirected ? undefined : parseSize(headerValue(headers, 'content-length')),
    redirected,
    contentType: headerValue(headers, 'content-type'),
  };
}

function parseSize(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,16}$/.test(text.trim())) return undefined;
  const n = Number(text.trim());
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A URL for messages and logs: origin and path only, never the (signed) query. */
export function describe(url: URL): string {
  return `${url.origin}${url.pathname}`;
}
