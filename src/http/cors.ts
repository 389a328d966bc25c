/**
 * Cross-origin access for browser clients (transformers.js, @huggingface/hub in a web page), as the
 * Hub answers them.
 *
 * - Every answer carries the Hub's `Access-Control-Expose-Headers` and, for an allowed origin,
 *   `Access-Control-Allow-Origin`: file answers (written straight to Node's response, so the
 *   headers are set there before the route runs), API answers, errors and 404s (Hono responses,
 *   whose upstream or cached `Access-Control-*` headers are replaced by ours).
 * - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here,
 *   204, before access control: browsers send no `Authorization` on a preflight, so an access key
 *   cannot be asked for. Other `OPTIONS` requests go on to the routes as before.
 * - Origins (config `corsOrigins`): `['*']` answers `Access-Control-Allow-Origin: *` whatever the
 *   Origin (the answer does not depend on it); a list echoes the request's Origin when listed, with
 *   `Vary: Origin` on every answer so a shared cache keeps them apart; an unlisted origin gets no
 *   CORS headers (the browser refuses to hand the answer to the page); `[]` allows none.
 * - No `Access-Control-Allow-Credentials`: the mirror uses no cookies or HTTP authentication, and a
 *   token travels as an explicit `Authorization` header, which a page may send in the default
 *   credentials mode. Pages must not use `credentials: 'include'` (browsers also refuse it with `*`).
 * - Allowed request headers: the ones Hub clients send (BASE_REQUEST_HEADERS) plus any the
 *   preflight names. Refusing a header protects nothing here: the mirror treats a page's request
 *   like any other client's, the browser lends the page no credentials of the user's, and the
 *   headers that carry ambient authority (Cookie, Host, Proxy-Authorization) cannot be set by a page.
 */
import type { ServerResponse } from 'node:http';
import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './app-env.js';
import { requestHeader } from './request-target.js';

export interface CorsOptions {
  /** `['*']`, a list of origins (`https://app.example[:port]`, as browsers send them), or `[]`. */
  origins: readonly string[];
}

/** Response headers a page may read (the Hub's list, without the Xet headers the mirror strips). */
export const EXPOSE_HEADERS =
  'X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag';

/** Request headers always allowed: what Hub clients send (tokens, ranges, revalidation, paths-info JSON). */
export const BASE_REQUEST_HEADERS = ['Authorization', 'Range', 'If-None-Match', 'If-Range', 'If-Match', 'If-Modified-Since', 'Content-Type', 'Accept'];

/** How long a browser may reuse a preflight answer (Chrome caps it at 2 h, Firefox at 24 h). */
export const PREFLIGHT_MAX_AGE_SECONDS = 86_400;

/** Files are read with GET and HEAD; the API also takes POST for reads such as paths-info. */
const FILE_METHODS = 'GET, HEAD';
const API_METHODS = 'GET, HEAD, POST';

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Bounds what an echoed `Access-Control-Request-Headers` can make us write. */
const MAX_ECHOED_HEADERS = 64;

/**
 * The CORS headers of every non-preflight answer, shared by the Hono middleware below and the file
 * downloads served without Hono (http/file-listener.ts).
 */
export class CorsPolicy {
  readonly #anyOrigin: boolean;
  readonly #listed: Set<string>;

  constructor(opts: CorsOptions) {
    this.#anyOrigin = opts.origins.includes('*');
    this.#listed = new Set(opts.origins);
  }

  /** What `Access-Control-Allow-Origin` says to a request from `origin` (none: not allowed). */
  allowedOrigin(origin: string | undefined): string | undefined {
    return this.#anyOrigin ? '*' : origin !== undefined && this.#listed.has(origin) ? origin : undefined;
  }

  /** Whether answers depend on the request's Origin (a list of origins: `Vary: Origin`). */
  get variesByOrigin(): boolean {
    return !this.#anyOrigin;
  }

  /**
   * Sets the CORS headers of an answer to `origin` on Node's response (routes that write there
   * themselves, file answers, send them as they are); returns them for `replaceIn`.
   */
  applyTo(outgoing: ServerResponse, origin: string | undefined): Record<string, string> {
    const headers: Record<string, string> = {};
    const ours = this.addTo(headers, origin);
    for (const [name, value] of Object.entries(headers)) outgoing.setHeader(name, value);
    return ours;
  }

  /**
   * The same headers as applyTo, added to a header record instead (an answer written with one
   * `writeHead`, see writeBlobResponse's `preamble`); returns them for `replaceIn`.
   */
  addTo(headers: Record<string, string>, origin: string | undefined): Record<string, string> {
    const ours: Record<string, string> = { 'access-control-expose-headers': EXPOSE_HEADERS };
    const allowOrigin = this.allowedOrigin(origin);
    if (allowOrigin !== undefined) ours['access-control-allow-origin'] = allowOrigin;
    Object.assign(headers, ours);
    if (this.variesByOrigin) headers.vary = 'Origin';
    return ours;
  }

  /** A Fetch response (API, error, 404) replaces what was set on Node's response header by header: ours go on it. */
  replaceIn(headers: Headers, ours: Record<string, string>): void {
    for (const name of [...headers.keys()]) if (name.startsWith('access-control-')) headers.delete(name);
    for (const [name, value] of Object.entries(ours)) headers.set(name, value);
    if (this.variesByOrigin) headers.set('vary', withVary(headers.get('vary'), 'Origin'));
  }
}

export function cors(opts: CorsOptions): MiddlewareHandler<AppEnv> {
  const policy = new CorsPolicy(opts);
  return async (c, next) => {
    const origin = requestHeader(c, 'origin');

    if (c.env.incoming.method === 'OPTIONS' && origin !== undefined && requestHeader(c, 'access-control-request-method') !== undefined) {
      const allowOrigin = policy.allowedOrigin(origin);
      const headers = new Headers({ vary: policy.variesByOrigin ? 'Origin, Access-Control-Request-Headers' : 'Access-Control-Request-Headers', 'content-length': '0' });
      if (allowOrigin !== undefined) {
        headers.set('access-control-allow-origin', allowOrigin);
        headers.set('access-control-allow-methods', c.req.path.startsWith('/api/') ? API_METHODS : FILE_METHODS);
        headers.set('access-control-allow-headers', allowedRequestHeaders(requestHeader(c, 'access-control-request-headers')));
        headers.set('access-control-max-age', String(PREFLIGHT_MAX_AGE_SECONDS));
      }
      return new Response(null, { status: 204, headers });
    }

    const ours = policy.applyTo(c.env.outgoing, origin);
    await next();
    // Routes that wrote to Node's response themselves are done; a Hono response gets ours.
    if (c.env.outgoing.headersSent) return;
    policy.replaceIn(c.res.headers, ours);
  };
}

/** The base list plus the well-formed names the preflight asks for, each once. */
function allowedRequestHeaders(requested: string | undefined): string {
  const names = [...BASE_REQUEST_HEADERS];
  const seen = new Set(names.map((n) => n.toLowerCase()));
  for (const raw of (requested ?? '').split(',').slice(0, MAX_ECHOED_HEADERS)) {
    const name = raw.trim();
    if (!TOKEN_RE.test(name) || seen.has(name.toLowerCase())) continue;
    seen.add(name.toLowerCase());
    names.push(name);
  }
  return names.join(', ');
}

/** `vary` with `name` added unless it (or `*`) is already there. */
function withVary(vary: string | null, name: string): string {
  if (!vary) return name;
  const present = vary.split(',').map((v) => v.trim().toLowerCase());
  return present.includes('*') || present.includes(name.toLowerCase()) ? vary : `${vary}, ${name}`;
}
