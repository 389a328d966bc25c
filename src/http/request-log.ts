/**
 * One canonical log line per request (openstatus style): id, method, path as sent (no query),
 * status, cache status, bytes, duration; below the `info` level nothing is prepared for it. Never
 * the Authorization header, never a query string (signed URLs and cursors stay out of logs).
 */
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { rawRequestPath } from './request-target.js';

/** Progress of a body the route streams itself; read when the response closes. */
export interface TransferStats {
  bytes: number;
  completed: boolean;
}

export interface RequestLogFields {
  cacheStatus: string;
  transfer: TransferStats;
}

export function requestLog(log: Logger): MiddlewareHandler<{ Bindings: HttpBindings; Variables: RequestLogFields }> {
  return async (c, next) => {
    const id = randomUUID();
    const { incoming, outgoing } = c.env;
    // On the Node response itself: blob responses are written there directly, not through Hono.
    outgoing.setHeader('x-request-id', id);
    if (log.isLevelEnabled('info')) {
      const started = performance.now();
      outgoing.once('close', () => {
        const path = rawRequestPath(incoming.url ?? '/');
        log.info(
          {
            reqId: id,
            method: incoming.method,
            path: path.length > 300 ? `${path.slice(0, 300)}…` : path,
            status: outgoing.statusCode,
            cache: c.get('cacheStatus'),
            bytes: c.get('transfer')?.bytes,
            completed: outgoing.writableFinished,
            ms: Math.round(performance.now() - started),
          },
          'request',
        );
      });
    }
    await next();
  };
}
