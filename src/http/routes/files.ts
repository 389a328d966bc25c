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
import { LRUCache } from 'lru-cache';
import { parseFileUrl, type FileRequest } from '../../hub/repo-ref.js';
import type { Mirror } from '../../mirror/mirror.js';
import type { TrafficCounters } from '../../observability/traffic-counters.js';
import { planBlobResponse, writeBlobResponse } from '../send-blob.js';
import type { RepoPolicy } from '../../hub/repo-policy.js';
import type { AppEnv } from '../app-env.js';
import { rawRequestPath, requestHeader } from '../request-target.js';

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
  // Parsing and validating a path costs more than the rest of a warm HEAD's own work: each path
  // is parsed once (results are immutable; invalid paths throw every time and are not kept).
  const parsed = new LRUCache<string, FileRequest | false>({ max: 10_000 });
  const parse = (rawPath: string): FileRequest | null => {
    let req = parsed.get(rawPath);
    if (req === undefined) parsed.set(rawPath, (req = parseFileUrl(rawPath) ?? false));
    return req || null;
  };

  app.on(['GET', 'HEAD'], '*', async (c, next) => {
    const fileReq = parse(rawRequestPath(c.env.incoming.url ?? '/'));
    if (!fileReq) return next();
    deps.policy.check(fileReq.repo);
    const identity = c.get('identity');
    const entry = await deps.resolver.resolve(fileReq, identity);
    const conditional = {
      range: requestHeader(c, 'range'),
      ifRange: requestHeader(c, 'if-range'),
      ifNoneMatch: requestHeader(c, 'if-none-match'),
    };
    const { incoming, outgoing } = c.env;

    if (incoming.method === 'HEAD') {
      const cacheStatus = (await deps.mirror.isCached(entry.blobKey)) ? 'hit' : 'miss';
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
      const transfer = { bytes: 0, completed: false, headersAt: performance.now() };
      c.set('transfer', transfer);
      await writeBlobResponse(incoming, outgoing, plan, source, transfer);
      deps.traffic?.served(source.cacheStatus, transfer.bytes);
      return RESPONSE_ALREADY_SENT;
    } finally {
      source.release(); // a hit's file is let go; the blob may be evicted once no one reads it
    }
  });

  return app;
}
