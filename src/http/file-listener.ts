/**
 * File downloads (GET and HEAD of `/{repo}/resolve|raw/{revision}/{path}`) answered straight from
 * Node's `request` event, without going through Hono; every other request goes on to the app.
 *
 * Why: a warm HEAD or GET of a cached file is the mirror's most frequent request, and Hono's
 * per-request machinery (a Fetch Request and Context, routing over every route group, the
 * middleware chain as promises, and for HEAD a second Response built around the first) cost more
 * than the mirror's own work. Measured on the 2-core bench machine with `hey -c 16`: a bare
 * `node:http` server sending the same headers 46–51k HEAD/s, a minimal Hono app doing the same
 * 37k, the mirror through Hono 26–31k.
 *
 * Same answers as the app's file route, by construction: the same steps in the same order as
 * createApp's middleware for these paths (request log and observer, CORS, access check), the same
 * FileDownloads, the same error answers (errorAnswer, with the CORS headers put on them as the CORS
 * middleware does), written by the same Hono adaptor. Paths under a prefix the app routes before
 * its file route (APP_ONLY_PREFIXES: the API, the operator API, the replicas' endpoint) and
 * malformed file paths are left to the app, which answers them as before.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { getRequestListener, type Http2Bindings, type HttpBindings } from '@hono/node-server';
import type { Logger } from 'pino';
import type { FileRequest } from '../hub/repo-ref.js';
import type { Identity } from '../hub/access-policy.js';
import type { CacheStatus } from '../mirror/mirror.js';
import type { CorsPolicy } from './cors.js';
import { trackRequest, type LiveRequest, type RequestObserver, type TransferStats } from './request-log.js';
import { incomingHeader, rawRequestPath } from './request-target.js';
import type { DownloadNotes, FileDownloads } from './routes/files.js';

/** Paths the app answers with routes it tries before the file route, even when they look like file URLs. */
export const APP_ONLY_PREFIXES: readonly string[] = ['/api/', '/admin/', '/internal/'];

export interface FileListenerDeps {
  log: Logger;
  observer?: RequestObserver;
  cors: CorsPolicy;
  identify: (authorization: string | undefined, path: string) => Identity;
  files: FileDownloads;
  /** The app's error answer for a failed request (logs it as the app does). */
  errorAnswer: (err: unknown) => Response;
}

/** What the request log and the observer read of a download in progress. */
class LiveDownload implements LiveRequest, DownloadNotes {
  transfer: TransferStats | undefined = undefined;
  cacheStatus: CacheStatus | undefined = undefined;
  noteCacheStatus(status: CacheStatus): void {
    this.cacheStatus = status;
  }
  noteTransfer(stats: TransferStats): void {
    this.transfer = stats;
  }
}

/**
 * A `request` handler that takes file downloads: true when it took the request (and answers it),
 * false when the request is the app's to answer.
 */
export function fileListener(deps: FileListenerDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  // Error answers are Fetch Responses: written to Node's response by the same adaptor as the app's.
  const answers = new WeakMap<ServerResponse, Response>();
  const writeAnswer = getRequestListener((_req, env: HttpBindings | Http2Bindings) => answers.get(env.outgoing as ServerResponse) ?? new Response(null, { status: 500 }));

  const serve = async (req: IncomingMessage, res: ServerResponse, path: string, file: FileRequest): Promise<void> => {
    const live = new LiveDownload();
    // The app's middleware sets these on the response first; here they go out with the answer's
    // own headers in one writeHead (see writeBlobResponse), or onto an error answer below.
    const preamble: Record<string, string> = { 'x-request-id': trackRequest(deps.log, deps.observer, req, res, live) };
    const ours = deps.cors.addTo(preamble, incomingHeader(req, 'origin'));
    try {
      const identity = deps.identify(req.headers.authorization, path);
      await deps.files.serve(req, res, file, identity, live, preamble);
    } catch (err) {
      // Past the headers an error can only cut the connection (the client sees a short body).
      if (res.headersSent) {
        res.destroy();
        return;
      }
      for (const [name, value] of Object.entries(preamble)) res.setHeader(name, value);
      const answer = deps.errorAnswer(err);
      deps.cors.replaceIn(answer.headers, ours);
      // As the app answers HEAD: the GET answer's status and headers, no body.
      answers.set(res, req.method === 'HEAD' ? new Response(null, answer) : answer);
      await writeAnswer(req, res);
    }
  };

  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const path = rawRequestPath(req.url ?? '/');
    if (APP_ONLY_PREFIXES.some((p) => path.startsWith(p))) return false;
    let file: FileRequest | null;
    try {
      file = deps.files.parse(path);
    } catch {
      return false; // malformed: the app answers it (its 400, with the same message)
    }
    if (!file) return false;
    void serve(req, res, path, file).catch((err: unknown) => {
      deps.log.error({ err: { message: err instanceof Error ? err.message : String(err) } }, 'file download failed to answer');
      res.destroy();
    });
    return true;
  };
}
