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

export function cors(opts: CorsOptions): MiddlewareHandler<AppEnv> {
  const anyOrigin = opts.origins.includes('*');
  const listed = new Set(opts.origins);
  const allowedOrigin = (origin: string | undefined): string | undefined => (anyOrigin ? '*' : origin !== undefined && listed.has(origin) ? origin : undefined);

  return async (c, next) => {
    const origin = requestHeader(c, 'origin');
    const allowOrigin = allowedOrigin(origin);

    if (c.env.incoming.method === 'OPTIONS' && origin !== undefined && requestHeader(c, 'access-control-request-method') !== undefined) {
      const headers = new Headers({ vary: anyOrigin ? 'Access-Control-Request-Headers' : 'Origin, Access-Control-Request-Headers', 'content-length': '0' });
      if (allowOrigin !== undefined) {
        headers.set('access-control-allow-origin', allowOrigin);
        headers.set('access-control-allow-methods', c.req.path.startsWith('/api/') ? API_METHODS : FILE_METHODS);
        headers.set('access-control-allow-headers', allowedRequestHeaders(requestHeader(c, 'access-control-request-headers')));
        headers.set('access-control-max-age', String(PREFLIGHT_MAX_AGE_SECONDS));
      }
      return new Response(null, { status: 204, headers });
    }

    const ours: Record<string, string> = { 'access-control-expose-headers': EXPOSE_HEADERS };
    if (allowOrigin !== undefined) ours['access-control-allow-origin'] = allowOrigin;
    // Routes that write to Node's response themselves (file answers) send these as they are.
    const outgoing = c.env.outgoing;
    for (const [name, value] of Object.entries(ours)) outgoing.setHeader(name, value);
    if (!anyOrigin) outgoing.setHeader('vary', 'Origin');

    await next();

    // A Hono response (API, error, 404) replaces what was set on Node's response header by header.
    if (outgoing.headersSent) return;
    const headers = c.res.headers;
    for (const name of [...headers.keys()]) if (name.startsWith('access-control-')) headers.delete(name);
    for (const [name, value] of Object.entries(ours)) headers.set(name, value);
    if (!anyOrigin) headers.set('vary', withVary(headers.get('vary'), 'Origin'));
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
