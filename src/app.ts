/**
 * createApp: mounts the route groups on one Hono app with the request log and the one error
 * mapping. Pure wiring: it opens nothing, so tests build it over temp dirs and a fake hub.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Hono } from 'hono';
import type { Logger } from 'pino';
import { isMirrorError } from './errors.js';
import type { AccessPolicy } from './hub/access-policy.js';
import type { FileResolver } from './hub/file-resolver.js';
import type { MetadataCache } from './hub/metadata-cache.js';
import { errorResponse } from './http/hub-errors.js';
import { accessControl, identifier } from './http/access.js';
import type { AppEnv } from './http/app-env.js';
import { CorsPolicy, cors } from './http/cors.js';
import { fileListener } from './http/file-listener.js';
import { requestLog, type RequestObserver } from './http/request-log.js';
import type { RepoPolicy } from './hub/repo-policy.js';
import { apiRoutes } from './http/routes/api.js';
import { fileDownloads, filesRoutes, type FilesRoutesDeps } from './http/routes/files.js';
import { healthRoutes } from './http/routes/health.js';
import { dashboardPage, observabilityRoutes, type ObservabilityDeps } from './http/routes/observability.js';
import type { Mirror } from './mirror/mirror.js';
import type { TrafficCounters } from './observability/traffic-counters.js';
import type { CacheIndex } from './storage/cache-index-contract.js';
import type { UpstreamApi } from './upstream/hub-client.js';

export interface AppDeps {
  log: Logger;
  index: CacheIndex;
  resolver: FileResolver;
  mirror: Mirror;
  metadata: MetadataCache;
  hub: UpstreamApi;
  dataDir: string;
  fillStartWaitMs: number;
  /** Config `publicUrl` ('' when unset): the mirror's origin in the URLs it writes. */
  publicUrl: string;
  /** The listen address, once known. */
  listenUrl: () => string;
  /** Operator policy: which repos are served. */
  policy: RepoPolicy;
  /** Client access keys (empty: open mirror). */
  accessKeys: readonly string[];
  /** Config `corsOrigins`: web origins whose pages may read the mirror (`*`: any). */
  corsOrigins: readonly string[];
  /** Who may read what (identities: anonymous, the service token, client tokens). */
  access: AccessPolicy;
  /** Config `allowWrites`: pass API write requests upstream instead of refusing them. */
  allowWrites: boolean;
  /** `/metrics` and the dashboard; omitted: not served. */
  observability?: ObservabilityDeps;
  /** Told about every request and its outcome (metrics, the dashboard's activity). */
  requestObserver?: RequestObserver;
  /** What file GETs served, for `stats`. */
  traffic?: TrafficCounters;
  /** The operator API (routes/admin.ts), when it is served on this port (adminToken without adminListen). */
  admin?: Hono<AppEnv>;
  /** The replicas' internal endpoint (routes/peer.ts), when `clusterSecret` is configured. */
  peer?: Hono<AppEnv>;
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(requestLog(deps.log, deps.requestObserver));
  // Before CORS and access keys: the operator API has its own token, no access key opens it, and
  // no web page is told it may read it. It answers everything under /admin/ (404 for the rest).
  if (deps.admin) app.route('/', deps.admin);
  // Replica to replica, before CORS and access keys for the same reasons: its own secret, no web
  // page may read it, no client token is involved (the asking replica checked its client's access).
  if (deps.peer) app.route('/', deps.peer);
  // Before access control: preflights carry no credentials; and outside it, so that its 401 and
  // every other answer carries the CORS headers too.
  app.use(cors({ origins: deps.corsOrigins }));
  const observability = deps.observability;
  // The dashboard page holds no data: anyone may load it. With a metrics token, /metrics and the
  // status are behind that token instead of the access keys; without one, behind the access keys.
  if (observability) app.route('/', dashboardPage());
  if (observability?.metricsToken) app.route('/', observabilityRoutes(observability));
  app.use(accessControl({ accessKeys: deps.accessKeys, policy: deps.access }));
  if (observability && !observability.metricsToken) app.route('/', observabilityRoutes(observability));
  app.route('/', healthRoutes({ index: deps.index, dataDir: deps.dataDir }));
  // Before the file routes: `/api/...` is never a file URL (nor are the operator API's and the
  // replicas' paths above: file-listener.ts's APP_ONLY_PREFIXES, which must list all three).
  app.route('/', apiRoutes({ metadata: deps.metadata, hub: deps.hub, log: deps.log, publicUrl: deps.publicUrl, listenUrl: deps.listenUrl, policy: deps.policy, allowWrites: deps.allowWrites }));
  app.route('/', filesRoutes(filesDeps(deps)));
  return withErrors(app, deps.log);
}

/** The app of the admin listener (`adminListen`): the operator API only, every other path a 404. */
export function createAdminApp(log: Logger, admin: Hono<AppEnv>): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(requestLog(log));
  app.route('/', admin);
  return withErrors(app, log);
}

/**
 * File downloads answered without Hono (see http/file-listener.ts), with the same steps as the
 * app built by createApp over the same deps gives these paths: request log and observer, CORS,
 * access check, the file route, the same error answers. Mount it in front of the app's listener.
 */
export function createFileListener(deps: AppDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  return fileListener({
    log: deps.log,
    ...(deps.requestObserver ? { observer: deps.requestObserver } : {}),
    cors: new CorsPolicy({ origins: deps.corsOrigins }),
    identify: identifier({ accessKeys: deps.accessKeys, policy: deps.access }),
    files: fileDownloads(filesDeps(deps)),
    errorAnswer: (err) => errorAnswer(deps.log, err),
  });
}

function filesDeps(deps: AppDeps): FilesRoutesDeps {
  return { resolver: deps.resolver, mirror: deps.mirror, fillStartWaitMs: deps.fillStartWaitMs, policy: deps.policy, ...(deps.traffic ? { traffic: deps.traffic } : {}) };
}

/** The answer to a request that failed with `err`; unexpected errors and 5xx are logged. */
function errorAnswer(log: Logger, err: unknown): Response {
  if (!isMirrorError(err)) {
    const e = err instanceof Error ? err : new Error(String(err));
    log.error({ err: { message: e.message, stack: e.stack } }, 'unhandled error');
  } else if (err.status >= 500) log.warn({ code: err.code, message: err.message }, 'request failed');
  return errorResponse(err);
}

function withErrors(app: Hono<AppEnv>, log: Logger): Hono<AppEnv> {
  app.notFound(() => notFound());
  app.onError((err) => errorAnswer(log, err));
  return app;
}

function notFound(): Response {
  return new Response(JSON.stringify({ error: 'Not found' }), {
    status: 404,
    headers: { 'content-type': 'application/json; charset=utf-8', 'x-error-message': 'Not found' },
  });
}
