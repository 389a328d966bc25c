/**
 * HubClient: every request to the upstream Hub goes through here, over one pooled undici Agent.
 *
 * - `headFile` asks for a file's metadata without following absolute redirects (the Hub puts
 *   X-Repo-Commit and X-Linked-* on the first hop); same-origin relative redirects (`resolve-cache`,
 *   renamed repos) are followed like huggingface_hub does.
 * - `openBody` GETs a body and follows redirects itself, hop by hop: the client's Authorization is
 *   sent to the upstream origin only and dropped for good once a hop leaves it (signed CDN URLs).
 * - `requestApi` sends one Hub API request (no redirects followed) and buffers the answer within
 *   the metadata timeout.
 * - The client's `Accept` is never forwarded (a Xet file-info answer would send clients off the
 *   mirror): upstream always sees `Accept: *\/*` and `Accept-Encoding: identity`.
 * - With `offline`, nothing is sent: every call fails at once with UpstreamUnavailable, so the
 *   callers' offline fallbacks answer from the cache.
 * - 429 and 5xx answers are retried (RetryPolicy: upstream's Retry-After / RateLimit hint, else
 *   backoff with jitter, `retries` at most). `headFile` and `requestApi` retry only inside the
 *   metadata timeout, which bounds the whole question; `openBody` (fills, resumes, range
 *   bypasses) retries the whole redirect chain, so a CDN hop is asked again with a fresh signed
 *   URL. Coalescing above (one fill per blob, one flight per metadata question) makes that one
 *   retry sequence however many clients wait.
 * - Redirects leaving the upstream origin go through the RedirectPolicy (allowed hosts; no
 *   private, loopback or link-local address, checked on the literal and, in the socket's own DNS
 *   lookup, on every resolved address) and over a separate pool that carries that lookup.
 * - An outbound proxy (`proxy`: HTTPS_PROXY, HTTP_PROXY, NO_PROXY) carries every connection it
 *   applies to, judged per target (upstream, each CDN hop, HEADs alike), always through a CONNECT
 *   tunnel (http:// targets too), so the proxy never sees a request's headers; it gets
 *   `Proxy-Authorization` only from its own URL's credentials. The proxy resolves the names it
 *   connects to, so a proxied off-origin hop's name is resolved and checked here first.
 */
import type { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { Agent, Pool, ProxyAgent, type Dispatcher } from 'undici';
import { MirrorError } from '../errors.js';
import { fileUrlPath, type FileRequest } from '../hub/repo-ref.js';
import { KeepAliveHead, type HeadResponse } from './keep-alive-head.js';
import { ProxyRoutes, proxyAuthorization, proxyEndpoint, type ProxySettings } from './proxy-routes.js';
import { DEFAULT_REDIRECT_HOSTS, RedirectPolicy } from './redirect-policy.js';
import { RetryPolicy, type RetryDecision } from './retry-policy.js';
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
  /** Never contact upstream (config `offline`). */
  offline?: boolean;
  /** Retries of a 429/5xx answer (config `upstreamRetries`, default 3). */
  retries?: number;
  /** Longest Retry-After honoured; a longer one is passed to the client at once (default 30 s). */
  retryMaxWaitMs?: number;
  /** First backoff step without a Retry-After (default 250 ms). */
  retryBaseDelayMs?: number;
  /** Hosts redirects may lead to besides the upstream's own (config `allowedRedirectHosts`). */
  allowedRedirectHosts?: readonly string[];
  /** Allow redirects to loopback, private and link-local addresses (config `allowPrivateRedirects`). */
  allowPrivateRedirects?: boolean;
  /**
   * A body slower than this, averaged over `bodyIdleTimeoutMs`, counts as stalled (a trickle):
   * the fill drops the connection and resumes. 0 disables (config `upstreamMinBytesPerSecond`).
   */
  minBodyBytesPerSecond?: number;
  /** Told about every retry, and about giving up on a retryable answer (for logs). */
  onRetry?: (event: RetryEvent) => void;
  /** Outbound proxy (from HTTPS_PROXY, HTTP_PROXY, NO_PROXY at startup); none by default. */
  proxy?: ProxySettings;
  /** Told about every request sent upstream and the body bytes of metadata answers (metrics). */
  observer?: UpstreamTraffic;
}

/**
 * Upstream traffic as counted for metrics: `file` requests are body GETs (fills, resumes, range
 * bypasses: each redirect hop and retry counts), `metadata` ones are HEADs and API calls. File
 * body bytes are counted where they are consumed (the Mirror), metadata bytes here.
 */
export interface UpstreamTraffic {
  upstreamRequest(kind: 'file' | 'metadata'): void;
  metadataBytes(bytes: number): void;
}

export interface RetryEvent {
  /** Origin and path asked (never the signed query). */
  what: string;
  status: number;
  /** Retries made before this decision. */
  attempt: number;
  /** The wait before the next attempt, when there is one. */
  waitMs?: number;
  /** Why there is no next attempt, when there is none. */
  gaveUp?: NonNullable<RetryDecision['reason']>;
}

/** What the fill treats as a stalled body: fewer than `bytesPerSecond` over `windowMs`. */
export interface BodySpeedFloor {
  bytesPerSecond: number;
  windowMs: number;
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

/** A buffered Hub API answer, whatever its status. `Content-Encoding` is already undone. */
export interface UpstreamApiAnswer {
  statusCode: number;
  headers: Headers;
  body: Buffer;
  /** The URL asked (to resolve a relative `Location` or `Link` against). */
  url: URL;
}

export interface ApiRequestOptions {
  body?: Buffer;
  contentType?: string;
  /** Largest answer body accepted (default 32 MiB); a bigger one is an UpstreamError. */
  maxBytes?: number;
  /**
   * Whether a 429/5xx may be retried. Default: for GET, HEAD and OPTIONS only; set it for a POST
   * that only reads (paths-info).
   */
  idempotent?: boolean;
}

export interface UpstreamBody {
  statusCode: number;
  headers: Headers;
  body: Readable;
  /**
   * The URL that answered (the last redirect hop, e.g. a signed CDN URL). It may carry
   * credentials in its query: never log it (use `describe`).
   */
  url: URL;
}

/**
 * What the hub/ and http/ layers ask upstream: one HubClient, or the UpstreamSet that picks the
 * first healthy of several.
 */
export interface UpstreamApi {
  readonly bodySpeedFloor: BodySpeedFloor | undefined;
  headFile(req: FileRequest, auth: string | undefined): Promise<UpstreamFileMeta>;
  requestApi(method: Dispatcher.HttpMethod, pathAndQuery: string, auth: string | undefined, opts?: ApiRequestOptions): Promise<UpstreamApiAnswer>;
  openBody(pathAndQuery: string, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody>;
  upstreamPathOf(url: string, from?: URL): string | undefined;
  close(): Promise<void>;
}

const MAX_REDIRECTS = 5;
const MAX_API_BODY = 32 * 1024 * 1024;

export class HubClient implements UpstreamApi {
  /** Connections to the upstream origin (trusted configuration). */
  readonly #agent: Agent;
  /** Connections to every other origin a redirect leads to (CDN), with the DNS guard. */
  readonly #redirectAgent: Agent;
  readonly #redirects: RedirectPolicy;
  readonly #proxies: ProxyRoutes;
  /** One pool per proxy URL, for the upstream and redirect hops alike (the proxy resolves names). */
  readonly #proxyAgents = new Map<string, ProxyAgent>();
  readonly #agentOptions: Agent.Options;
  readonly #connectTimeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #onRetry: HubClientOptions['onRetry'];
  readonly #speedFloor: BodySpeedFloor | undefined;
  readonly #base: URL;
  readonly #basePath: string;
  readonly #userAgent: string;
  readonly #metadataTimeoutMs: number;
  readonly #offline: boolean;
  readonly #traffic: UpstreamTraffic | undefined;

  /** HEADs go over Node's http client: undici closes the connection after every HEAD. */
  readonly #heads: KeepAliveHead;

  constructor(opts: HubClientOptions) {
    this.#metadataTimeoutMs = opts.metadataTimeoutMs;
    this.#offline = opts.offline ?? false;
    this.#traffic = opts.observer;
    this.#base = new URL(opts.upstream);
    this.#basePath = this.#base.pathname.replace(/\/+$/, '');
    this.#userAgent = opts.userAgent;
    this.#proxies = new ProxyRoutes(opts.proxy);
    this.#connectTimeoutMs = opts.connectTimeoutMs;
    const proxies = this.#proxies;
    this.#heads = new KeepAliveHead({
      maxSockets: opts.connectionsPerOrigin ?? 128,
      connectTimeoutMs: opts.connectTimeoutMs,
      ...(proxies.configured ? { proxyFor: (url: URL) => proxies.proxyFor(url) } : {}),
    });
    const agentOptions = {
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyIdleTimeoutMs,
      keepAliveTimeout: 30_000,
      connections: opts.connectionsPerOrigin ?? 128,
    };
    this.#agentOptions = agentOptions;
    this.#agent = new Agent({ ...agentOptions, connect: { timeout: opts.connectTimeoutMs } });
    this.#redirects = new RedirectPolicy({
      upstream: this.#base,
      allowedHosts: opts.allowedRedirectHosts ?? DEFAULT_REDIRECT_HOSTS,
      allowPrivate: opts.allowPrivateRedirects ?? false,
    });
    const lookup = this.#redirects.lookup;
    this.#redirectAgent = new Agent({ ...agentOptions, connect: { timeout: opts.connectTimeoutMs, ...(lookup ? { lookup } : {}) } });
    this.#retry = new RetryPolicy({
      retries: opts.retries ?? 3,
      maxWaitMs: opts.retryMaxWaitMs ?? 30_000,
      ...(opts.retryBaseDelayMs === undefined ? {} : { baseDelayMs: opts.retryBaseDelayMs }),
    });
    this.#onRetry = opts.onRetry;
    const minRate = opts.minBodyBytesPerSecond ?? 0;
    this.#speedFloor = minRate > 0 ? { bytesPerSecond: minRate, windowMs: opts.bodyIdleTimeoutMs } : undefined;
  }

  /** Counts a request about to be sent (offline, nothing is). */
  #sent(kind: 'file' | 'metadata'): void {
    if (!this.#offline) this.#traffic?.upstreamRequest(kind);
  }

  /** The slowest upstream body the fill accepts before treating it as stalled, if any. */
  get bodySpeedFloor(): BodySpeedFloor | undefined {
    return this.#speedFloor;
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

  /**
   * The path + query of `url` below the upstream base (`/api/...`), or undefined when it points
   * elsewhere (another origin, or outside the base path). `url` may be relative to `from`.
   */
  upstreamPathOf(url: string, from: URL = this.#base): string | undefined {
    let u: URL;
    try {
      u = new URL(url, from);
    } catch {
      return undefined;
    }
    if (u.origin !== this.#base.origin || (u.protocol !== 'http:' && u.protocol !== 'https:')) return undefined;
    if (this.#basePath && !(u.pathname === this.#basePath || u.pathname.startsWith(`${this.#basePath}/`))) return undefined;
    const path = u.pathname.slice(this.#basePath.length) || '/';
    return path + u.search;
  }

  async #send(method: Dispatcher.HttpMethod, url: URL, headers: Record<string, string>, signal?: AbortSignal, body?: Buffer) {
    if (this.#offline) {
      throw new MirrorError('UpstreamUnavailable', `Offline mode (offline: true): upstream is never contacted, and ${describe(url)} is not in the cache`);
    }
    try {
      const agent = await this.#dispatcherFor(url);
      return await agent.request({
        origin: url.origin,
        path: url.pathname + url.search,
        method,
        headers,
        signal,
        ...(body === undefined ? {} : { body }),
      });
    } catch (err) {
      throw fromNetworkError(err, describe(url));
    }
  }

  /**
   * The pool for a request to `url`: through the proxy that applies to it, else the upstream's
   * pool or the guarded pool of redirect hops. A proxied off-origin hop's name is checked first.
   */
  async #dispatcherFor(url: URL): Promise<Dispatcher> {
    const offOrigin = url.origin !== this.#base.origin;
    const proxy = this.#proxies.proxyFor(url);
    if (!proxy) return offOrigin ? this.#redirectAgent : this.#agent;
    if (offOrigin) await this.#redirects.checkResolved(url, describe(url));
    let agent = this.#proxyAgents.get(proxy.href);
    if (!agent) {
      const connectTimeoutMs = this.#connectTimeoutMs;
      const token = proxyAuthorization(proxy);
      agent = new ProxyAgent({
        ...this.#agentOptions,
        uri: proxyEndpoint(proxy).href,
        ...(token ? { token } : {}),
        // CONNECT for http:// targets too: an absolute-form request would show the proxy our headers.
        proxyTunnel: true,
        proxyTls: { timeout: connectTimeoutMs },
        requestTls: { timeout: connectTimeoutMs },
        // The CONNECT answer is part of connecting: bounded like a TCP connect.
        clientFactory: (origin, options) => new Pool(origin, { ...options, headersTimeout: connectTimeoutMs }),
      });
      this.#proxyAgents.set(proxy.href, agent);
    }
    return agent;
  }

  async #head(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<HeadResponse> {
    if (this.#offline) {
      throw new MirrorError('UpstreamUnavailable', `Offline mode (offline: true): upstream is never contacted, and ${describe(url)} is not in the cache`);
    }
    try {
      return await this.#heads.head(url, headers, signal);
    } catch (err) {
      throw fromNetworkError(err, describe(url));
    }
  }

  /**
   * HEAD of a file URL; throws the Hub's error (with X-Repo-Commit on EntryNotFound). A 429/5xx is
   * retried while the metadata timeout allows.
   */
  async headFile(req: FileRequest, auth: string | undefined): Promise<UpstreamFileMeta> {
    const signal = AbortSignal.timeout(this.#metadataTimeoutMs);
    const deadline = performance.now() + this.#metadataTimeoutMs; // monotonic: immune to clock steps
    for (let attempt = 0; ; attempt++) {
      let url = this.url(fileUrlPath(req));
      let res: HeadResponse;
      let isRedirect: boolean;
      for (let hop = 0; ; hop++) {
        this.#sent('metadata');
        res = await this.#head(url, this.#headers(auth), signal);
        const location = headerValue(res.headers, 'location');
        isRedirect = res.statusCode >= 300 && res.statusCode < 400 && location !== undefined;
        const next = isRedirect && location !== undefined && hop < MAX_REDIRECTS ? sameOriginTarget(location, url) : undefined;
        if (next) {
          url = next;
          continue;
        }
        break;
      }
      if (res.statusCode >= 400) {
        if (await this.#retryAfterAnswer(res.statusCode, res.headers, attempt, url, signal, deadline)) continue;
        throw fromUpstreamStatus(res.statusCode, res.headers, describe(url));
      }
      if (res.statusCode >= 300 && !isRedirect) throw fromUpstreamStatus(502, res.headers, describe(url));
      return parseFileMeta(res.headers, isRedirect, describe(url));
    }
  }

  /**
   * Decides about a 429/5xx answer: waits and returns true when it is to be asked again, returns
   * false when it stands. With a `deadline`, only retries that leave time for an attempt.
   */
  async #retryAfterAnswer(status: number, headers: Headers, attempt: number, url: URL, signal: AbortSignal | undefined, deadline?: number): Promise<boolean> {
    const now = Date.now(); // wall clock: only to read HTTP-date Retry-After values
    const remaining = deadline === undefined ? undefined : deadline - performance.now();
    const minAttemptMs = Math.min(1000, this.#metadataTimeoutMs / 4);
    const decision = this.#retry.decide(status, headers, attempt, now, remaining, minAttemptMs);
    if (decision.waitMs === undefined) {
      if (decision.reason !== 'not retryable' && decision.reason !== undefined) this.#onRetry?.({ what: describe(url), status, attempt, gaveUp: decision.reason });
      return false;
    }
    this.#onRetry?.({ what: describe(url), status, attempt, waitMs: decision.waitMs });
    try {
      await delay(decision.waitMs, undefined, signal ? { signal } : {});
    } catch (err) {
      const reason: unknown = signal?.reason;
      if (reason instanceof MirrorError) throw reason;
      throw fromNetworkError(err, describe(url));
    }
    return true;
  }

  /** #retryAfterAnswer for an answer with a body: the body is dropped when it is retried or fails. */
  async #retryDiscarding(res: { statusCode: number; headers: Headers; body: Readable }, attempt: number, url: URL, signal: AbortSignal | undefined, deadline?: number): Promise<boolean> {
    try {
      const again = await this.#retryAfterAnswer(res.statusCode, res.headers, attempt, url, signal, deadline);
      if (again) discardBody(res.body);
      return again;
    } catch (err) {
      discardBody(res.body);
      throw err;
    }
  }

  /**
   * GET with redirects followed server-side. `Authorization` goes to the upstream origin only and
   * is dropped for the rest of the chain once a hop leaves it; a hop the RedirectPolicy refuses
   * fails with a 502 UpstreamError. A 429/5xx is retried (the whole chain) within the retry
   * budget. Returns the final answer, whatever its status; the caller consumes or destroys `body`.
   */
  async openBody(pathAndQuery: string, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody> {
    for (let attempt = 0; ; attempt++) {
      const { url, res } = await this.#followRedirects(pathAndQuery, auth, extra, signal);
      if (res.statusCode >= 400 && (await this.#retryDiscarding(res, attempt, url, signal))) continue;
      return { statusCode: res.statusCode, headers: res.headers, body: res.body, url };
    }
  }

  /**
   * GET of an absolute URL an earlier `openBody` was redirected to (a fill's further ranges of the
   * same file go straight to the CDN URL it resolved), redirects not followed: any answer is
   * returned as is. `Authorization` is sent only if the URL is on the upstream origin; the pools
   * are the same as for redirect hops (with the private-address guard). A 429/5xx is retried like
   * openBody's; the caller re-resolves through `openBody` when the URL stopped working.
   */
  async openUrl(url: URL, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody> {
    const token = url.origin === this.#base.origin ? auth : undefined;
    for (let attempt = 0; ; attempt++) {
      const res = await this.#send('GET', url, this.#headers(token, extra), signal);
      if (res.statusCode >= 400 && (await this.#retryDiscarding(res, attempt, url, signal))) continue;
      return { statusCode: res.statusCode, headers: res.headers, body: res.body, url };
    }
  }

  /** One GET down the redirect chain; the last hop's answer, whatever its status. */
  async #followRedirects(pathAndQuery: string, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal) {
    let url = this.url(pathAndQuery);
    let token = auth;
    for (let hop = 0; ; hop++) {
      if (url.origin !== this.#base.origin) token = undefined;
      this.#sent('file');
      const res = await this.#send('GET', url, this.#headers(token, extra), signal);
      const location = headerValue(res.headers, 'location');
      if (res.statusCode >= 300 && res.statusCode < 400 && location !== undefined) {
        // A redirect's body is a line of text: read it off so the connection can be reused.
        res.body.resume();
        if (hop >= MAX_REDIRECTS) throw new MirrorError('UpstreamError', `Too many upstream redirects for ${describe(url)}`);
        url = this.#redirectTarget(location, url);
        continue;
      }
      return { url, res };
    }
  }

  /**
   * One Hub API request (`pathAndQuery` below the upstream base), redirects not followed, answer
   * buffered. The whole exchange is bounded by the metadata timeout. Throws only for network
   * failures and timeouts (503/504); any HTTP status is returned for the caller to judge.
   */
  async requestApi(method: Dispatcher.HttpMethod, pathAndQuery: string, auth: string | undefined, opts: ApiRequestOptions = {}): Promise<UpstreamApiAnswer> {
    const url = this.url(pathAndQuery);
    const signal = AbortSignal.timeout(this.#metadataTimeoutMs);
    const deadline = performance.now() + this.#metadataTimeoutMs; // monotonic: immune to clock steps
    const extra: Record<string, string> = opts.contentType ? { 'content-type': opts.contentType } : {};
    const retryable = opts.idempotent ?? (method === 'GET' || method === 'HEAD' || method === 'OPTIONS');
    for (let attempt = 0; ; attempt++) {
      this.#sent('metadata');
      const res = await this.#send(method, url, this.#headers(auth, extra), signal, opts.body);
      if (retryable && res.statusCode >= 400 && (await this.#retryDiscarding(res, attempt, url, signal, deadline))) continue;
      return this.#bufferApiAnswer(res, url, opts);
    }
  }

  async #bufferApiAnswer(res: Dispatcher.ResponseData, url: URL, opts: ApiRequestOptions): Promise<UpstreamApiAnswer> {
    const max = opts.maxBytes ?? MAX_API_BODY;
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of res.body) {
        total += (chunk as Buffer).length;
        if (total > max) {
          res.body.destroy();
          throw new MirrorError('UpstreamError', `Upstream answer for ${describe(url)} is larger than ${max} bytes`);
        }
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      throw fromNetworkError(err, describe(url));
    } finally {
      this.#traffic?.metadataBytes(total);
    }
    const headers: Headers = { ...res.headers };
    let body: Buffer = Buffer.concat(chunks);
    const encoding = headerValue(headers, 'content-encoding')?.trim().toLowerCase();
    if (encoding && encoding !== 'identity') {
      body = decodeBody(body, encoding, describe(url));
      delete headers['content-encoding'];
    }
    return { statusCode: res.statusCode, headers, body, url };
  }

  /** The next hop of a redirect: http(s) only, and only where the RedirectPolicy allows. */
  #redirectTarget(location: string, from: URL): URL {
    let next: URL;
    try {
      next = new URL(location, from);
    } catch {
      throw new MirrorError('UpstreamError', 'Upstream sent an invalid redirect');
    }
    this.#redirects.check(next, next.protocol === 'http:' || next.protocol === 'https:' ? describe(next) : next.protocol);
    return next;
  }

  async close(): Promise<void> {
    this.#heads.close();
    await Promise.all([this.#agent.close(), this.#redirectAgent.close(), ...[...this.#proxyAgents.values()].map((a) => a.close())]);
  }
}

/** Drops an upstream body we no longer want, without an unhandled 'error' event. */
export function discardBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Undoes a `Content-Encoding` upstream applied although it was asked for `identity`. */
function decodeBody(body: Buffer, encoding: string, what: string): Buffer {
  try {
    if (encoding === 'gzip' || encoding === 'x-gzip') return gunzipSync(body);
    if (encoding === 'deflate') return inflateSync(body);
    if (encoding === 'br') return brotliDecompressSync(body);
  } catch (err) {
    throw new MirrorError('UpstreamError', `Upstream answer for ${what} has a corrupt ${encoding} body`, { cause: err });
  }
  throw new MirrorError('UpstreamError', `Upstream answer for ${what} uses an unsupported Content-Encoding: ${encoding}`);
}

/**
 * Where a relative `Location` leads, when it stays on the same origin (followed like
 * huggingface_hub does). Undefined for an absolute one, and for one that only looks relative but
 * names another host (`\\host/x` and `/\host/x` parse as `http://host/x`): the credentials
 * must not follow it, so it is treated as an absolute redirect (not followed; the GET goes through
 * the RedirectPolicy).
 */
function sameOriginTarget(location: string, from: URL): URL | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(location) || location.startsWith('//')) return undefined;
  try {
    const next = new URL(location, from);
    return next.origin === from.origin ? next : undefined;
  } catch {
    return undefined;
  }
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
