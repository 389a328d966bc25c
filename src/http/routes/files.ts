/**
 * File downloads: `GET|HEAD /{datasets/|spaces/}{repo}/{resolve|raw}/{revision}/{path}`.
 *
 * HEAD answers from metadata only (index or one upstream HEAD) and never starts a download:
 * clients give up on a HEAD after 10 s. GET opens the blob through the Mirror and streams it.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import type { FileResolver } from '../../hub/file-resolver.js';
import { parseFileUrl } from '../../hub/repo-ref.js';
import type { Mirror } from '../../mirror/mirror.js';
import type { TrafficCounters } from '../../observability/traffic-counters.js';
import { planBlobResponse, writeBlobResponse } from '../send-blob.js';
import type { RepoPolicy } from '../../hub/repo-policy.js';
import type { AppEnv } from '../app-env.js';

export interface FilesRoutesDeps {
  resolver: FileResolver;
  mirror: Mirror;
  /** Longest wait for upstream to start a fill before response headers are sent anyway. */
  fillStartWaitMs: number;
  policy: RepoPolicy;
  /** Counts what each GET served, by cache status. */
  traffic?: TrafficCounters;
}

export function filesRoutes(deps: FilesRoutesDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.on(['GET', 'HEAD'], '*', async (c, next) => {
    const fileReq = parseFileUrl(rawRequestPath(c.env.incoming.url ?? '/'));
    if (!fileReq) return next();
    deps.policy.check(fileReq.repo);
    const identity = c.get('identity');
    const entry = await deps.resolver.resolve(fileReq, identity);
    const conditional = {
      range: c.req.header('range'),
      ifRange: c.req.header('if-range'),
      ifNoneMatch: c.req.header('if-none-match'),
    };
    const { incoming, outgoing } = c.env;

    if (c.req.method === 'HEAD') {
      const cacheStatus = deps.mirror.isCached(entry.blobKey) ? 'hit' : 'miss';
      c.set('cacheStatus', cacheStatus);
      await writeBlobResponse(incoming, outgoing, planBlobResponse(entry, conditional, cacheStatus), null);
      return RESPONSE_ALREADY_SENT;
    }

    const plan = planBlobResponse(entry, conditional, 'none');
    if (plan.status === 304 || plan.status === 416) {
      await writeBlobResponse(incoming, outgoing, plan, null);
      return RESPONSE_ALREADY_SENT;
    }
    const source = await deps.mirror.open(entry, identity.auth, plan.status === 206 ? plan.spans : undefined);
    try {
      c.set('cacheStatus', source.cacheStatus);
      plan.headers['x-mirror-cache'] = source.cacheStatus;
      // Give upstream a moment to answer so an immediate failure becomes a proper error response;
      // past that, send headers anyway (the size is known) and stream as bytes land.
      // (A bypass is ready when open() returns: its ranges are in memory, or open() threw.)
      await Promise.race([source.ready, delay(deps.fillStartWaitMs, undefined, { ref: false })]);
      const transfer = { bytes: 0, completed: false };
      c.set('transfer', transfer);
      await writeBlobResponse(incoming, outgoing, plan, source, transfer);
      deps.traffic?.served(source.cacheStatus, transfer.bytes);
      return RESPONSE_ALREADY_SENT;
    } finally {
      source.release(); // the blob may be evicted once no one reads it
    }
  });

  return app;
}

/**
 * The request target's path exactly as sent (still percent-encoded, dot segments kept), so `..`
 * is rejected by validation instead of being silently resolved by URL parsing. Absolute-form
 * targets (`GET http://host/path`) only contribute their path: the host never matters.
 */
export function rawRequestPath(target: string): string {
  const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.test(target) ? target.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '') : target;
  const end = path.search(/[?#]/);
  const p = end === -1 ? path : path.slice(0, end);
  return p.startsWith('/') ? p : `/${p}`;
}
