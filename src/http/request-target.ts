/**
 * What the route code reads off Node's request directly, without the Fetch `Request` the Hono
 * adaptor would otherwise build for it (a URL parse and a `Headers` object per request).
 */
import type { IncomingMessage } from 'node:http';
import type { Context } from 'hono';
import type { AppEnv } from './app-env.js';

/**
 * The request target's path exactly as sent (still percent-encoded, dot segments kept), so `..`
 * is rejected by validation instead of being silently resolved by URL parsing. Absolute-form
 * targets (`GET http://host/path`) only contribute their path: the host never matters.
 */
export function rawRequestPath(target: string): string {
  const path = target.charCodeAt(0) === 0x2f ? target : target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '');
  const end = path.search(/[?#]/);
  const p = end === -1 ? path : path.slice(0, end);
  return p.startsWith('/') ? p : `/${p}`;
}

/**
 * A request header by lower-case name, as Node parsed it: repeated headers joined with `, ` (as
 * Fetch's `Headers.get` would), except the few Node keeps once (e.g. `authorization`, `host`,
 * `content-type`, `content-length`: the first).
 */
export function requestHeader(c: Context<AppEnv>, name: string): string | undefined {
  return incomingHeader(c.env.incoming, name);
}

/** `requestHeader` off Node's request itself. */
export function incomingHeader(incoming: IncomingMessage, name: string): string | undefined {
  const value = incoming.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}
