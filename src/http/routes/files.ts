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
import { incomingHeader, rawRequestPath } from '../request-target.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Identity } from '../../hub/access-policy.js';
import type { CacheStatus } from '../../mirror/mirror.js';
import type { TransferStats } from '../request-log.js';

export interface FilesRoutesDeps {
  resolver: FileResolver;
  mirror: Mirror;
  /** Longest wait for upstream to start a fill before response headers are sent anyway. */
  fillStartWaitMs: number;
  policy: RepoPolicy;
  /** Counts what each GET served, by cache status. */
  traffic?: TrafficCounters;
}

/** What a download records for the request log and the observer, as it happens. */
export interface DownloadNotes {
  noteCacheStatus(status: CacheStatus): void;
  noteTransfer(stats: TransferStats): void;
}

/** File downloads, apart from how a request reaches them (the Hono route below, or http/file-listener.ts). */
export interface FileDownloads {
  /** The file a request path names; null when it names none; throws (4xx) when it is malformed. */
  parse(rawPath: string): FileRequest | null;
  /**
   * Answers a GET or HEAD of `file` as `identity` on Node's response; resolves once it is done.
   * `preamble`: headers not set on the response yet that go before the answer's own (see
   * writeBlobResponse); if this throws before the answer's headers went out, they were not sent.
   */
  serve(incoming: IncomingMessage, outgoing: ServerResponse, file: FileRequest, identity: Identity, notes: DownloadNotes, preamble?: Record<string, string>): Promise<void>;
}

export function fileDownloads(deps: FilesRoutesDeps): FileDownloads {
  // Parsing and validating a path costs more than the rest of a warm HEAD's own work: each path
  // is parsed once (results are immutable; invalid paths throw every time and are not kept).
  const parsed = new LRUCache<string, FileRequest | false>({ max: 10_000 });
  const parse = (rawPath: string): FileRequest | null => {
    let req = parsed.get(rawPath);
    if (req === undefined) parsed.set(rawPath, (req = parseFileUrl(rawPath) ?? false));
    return req || null;
  };

  const serve = async (incoming: IncomingMessage, outgoing: ServerResponse, fileReq: FileRequest, identity: Identity, notes: DownloadNotes, preamble?: Record<string, string>): Promise<void> => {
    deps.policy.check(fileReq.repo);
    const entry = await deps.resolver.resolve(fileReq, identity);
    const conditional = {
      range: incomingHeader(incoming, 'range'),
      ifRange: incomingHeader(incoming, 'if-range'),
      ifNoneMatch: incomingHeader(incoming, 'if-none-match'),
    };

    if (incoming.method === 'HEAD') {
      const cacheStatus = (await deps.mirror.isCached(entry.blobKey)) ? 'hit' : 'miss';
      notes.noteCacheStatus(cacheStatus);
      await writeBlobResponse(incoming, outgoing, planBlobResponse(entry, conditional, cacheStatus), null, undefined, preamble);
      return;
    }

    const plan = planBlobResponse(entry, conditional, 'none');
    if (plan.status === 304 || plan.status === 416) {
      await writeBlobResponse(incoming, outgoing, plan, null, undefined, preamble);
      return;
    }
    const source = await deps.mirror.open(entry, identity.auth, plan.status === 206 ? plan.spans : undefined);
    try {
      notes.noteCacheStatus(source.cacheStatus);
      plan.headers['x-mirror-cache'] = source.cacheStatus;
      // Give upstream a moment to answer so an immediate failure becomes a proper error response;
      // past that, send headers anyway (the size is known) and stream as bytes land.
      // (A bypass is ready when open() returns: its ranges are in memory, or open() threw.)
      await Promise.race([source.ready, delay(deps.fillStartWaitMs, undefined, { ref: false })]);
      const transfer = { bytes: 0, completed: false, headersAt: performance.now() };
      notes.noteTransfer(transfer);
      await writeBlobResponse(incoming, outgoing, plan, source, transfer, preamble);
      deps.traffic?.served(source.cacheStatus, transfer.bytes);
    } finally {
      source.release(); // a hit's file is let go; the blob may be evicted once no one reads it
    }
  };

  return { parse, serve };
}

export function filesRoutes(deps: FilesRoutesDeps): Hono<AppEnv> {
  const files = fileDownloads(deps);
  const app = new Hono<AppEnv>();
  app.on(['GET', 'HEAD'], '*', async (c, next) => {
    const fileReq = files.parse(rawRequestPath(c.env.incoming.url ?? '/'));
    if (!fileReq) return next();
    await files.serve(c.env.incoming, c.env.outgoing, fileReq, c.get('identity'), {
      noteCacheStatus: (status) => c.set('cacheStatus', status),
      noteTransfer: (stats) => c.set('transfer', stats),
    });
    return RESPONSE_ALREADY_SENT;
  });
  return app;
}
