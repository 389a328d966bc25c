/**
 * Who the mirror asks upstream as, per request (set as the `identity` context variable; what
 * each identity may read is the AccessPolicy's call, hub/access-policy.ts):
 * - open mirror (no accessKeys): the client's own token (`Authorization`), else the tokenless
 *   identity: the service token (`hfToken`) if configured, else anonymous;
 * - with accessKeys: the client must send `Authorization: Bearer <key>` with one of the keys
 *   (else 401). The key never goes upstream: every admitted client is the tokenless identity
 *   (the service token, or anonymous), the documented risk.
 * `/healthz` is always open (container health checks).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { MirrorError } from '../errors.js';
import type { AccessPolicy, Identity } from '../hub/access-policy.js';
import type { AppEnv } from './app-env.js';

export interface AccessOptions {
  accessKeys: readonly string[];
  policy: AccessPolicy;
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/**
 * Who a request is, from its `Authorization` header (the one value Node keeps, see authorizationOf)
 * and path; throws AccessKeyRequired (401) when
 * access keys are configured and none was presented. Shared by the middleware below and the file
 * downloads served without Hono (http/file-listener.ts).
 */
export function identifier(opts: AccessOptions): (authorization: string | undefined, path: string) => Identity {
  const keys = opts.accessKeys.map(digest);
  const { policy } = opts;
  return (header, path) => {
    if (path === '/healthz') return policy.tokenless;
    if (keys.length > 0) {
      const presented = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];
      // Compare digests in constant time: no early exit on the first differing byte.
      const ok = presented !== undefined && keys.some((k) => timingSafeEqual(k, digest(presented)));
      if (!ok) {
        throw new MirrorError('AccessKeyRequired', 'This mirror requires an access key: set HF_TOKEN (or send Authorization: Bearer <key>) to a key the mirror operator gave you');
      }
      return policy.tokenless;
    }
    return header ? policy.client(header) : policy.tokenless;
  };
}

export function accessControl(opts: AccessOptions): MiddlewareHandler<AppEnv> {
  const identify = identifier(opts);
  return async (c, next) => {
    c.set('identity', identify(authorizationOf(c), c.req.path));
    await next();
  };
}

/**
 * The request's `Authorization`, first line only when a client sent several: Node keeps the first
 * (`message.headers`), while Fetch-style headers would join them into one `a, b` credential that
 * would be forwarded upstream and used as the memo identity. One value, authorized and forwarded.
 * (The file listener passes `incoming.headers.authorization` to `identifier` for the same reason.)
 */
function authorizationOf(c: Context<AppEnv>): string | undefined {
  const incoming = (c.env as Partial<AppEnv['Bindings']> | undefined)?.incoming;
  return incoming ? incoming.headers.authorization : c.req.header('authorization');
}
