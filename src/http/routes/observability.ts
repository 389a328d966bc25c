/**
 * What an operator looks at: `GET /metrics` (Prometheus text format), the dashboard page `/_/`
 * and its data, `GET /_/status` (JSON, polled by the page).
 *
 * Who may see them (one rule for both): with `metricsToken` set, `/metrics` and `/_/status`
 * answer only `Authorization: Bearer <metricsToken>` (401 otherwise; access keys are neither
 * needed nor accepted) and the status names repos, files and error messages. Without it they are
 * served like any other request (accessKeys if set, else to anyone), and the status names nothing:
 * metrics carry no names by construction, the status then shows numbers only. The page itself
 * (HTML, script, style) holds no data and is served to anyone; it asks for the token when the
 * status answers 401.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type MiddlewareHandler } from 'hono';
import { MirrorError } from '../../errors.js';
import type { Mirror } from '../../mirror/mirror.js';
import type { Activity } from '../../observability/activity.js';
import type { Metrics } from '../../observability/metrics.js';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS } from '../dashboard/page.js';

export interface ObservabilityDeps {
  metrics: Metrics;
  activity: Activity;
  mirror: Mirror;
  /** Config `metricsToken` ('' when unset). */
  metricsToken: string;
  maxConcurrentFills: number;
  maxQueuedFills: number;
  version: string;
  /** Wall-clock ms the server started. */
  startedAt: number;
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** With a metrics token, the request must carry it as its bearer token (compared in constant time). */
function metricsGate(token: string): MiddlewareHandler {
  const expected = token ? digest(token) : undefined;
  return async (c, next) => {
    if (expected) {
      const presented = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header('authorization') ?? '')?.[1];
      if (presented === undefined || !timingSafeEqual(expected, digest(presented))) {
        throw new MirrorError('AccessKeyRequired', 'This endpoint requires the mirror\'s metrics token: send Authorization: Bearer <metricsToken>', {
          headers: { 'www-authenticate': 'Bearer realm="hubcache metrics"' },
        });
      }
    }
    await next();
  };
}

/** `/metrics` and `/_/status`. */
export function observabilityRoutes(deps: ObservabilityDeps): Hono {
  const app = new Hono();
  const gate = metricsGate(deps.metricsToken);
  app.get('/metrics', gate, async (c) => {
    const { contentType, body } = await deps.metrics.exposition();
    return c.body(body, 200, { 'content-type': contentType, 'cache-control': 'no-store' });
  });
  app.get('/_/status', gate, async (c) => c.json(await buildStatus(deps), 200, { 'cache-control': 'no-store' }));
  return app;
}

/** The dashboard page: static, no data. */
export function dashboardPage(): Hono {
  const app = new Hono();
  const headers = (type: string): Record<string, string> => ({
    'content-type': type,
    'cache-control': 'no-cache',
    'x-content-type-options': 'nosniff',
    // The page runs only its own script and talks only to this mirror.
    'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  });
  app.get('/_', (c) => c.redirect('/_/', 302));
  app.get('/_/', (c) => c.body(DASHBOARD_HTML, 200, headers('text/html; charset=utf-8')));
  app.get('/_/dashboard.js', (c) => c.body(DASHBOARD_JS, 200, headers('text/javascript; charset=utf-8')));
  app.get('/_/dashboard.css', (c) => c.body(DASHBOARD_CSS, 200, headers('text/css; charset=utf-8')));
  return app;
}

export interface StatusFill {
  /** Repo (`models/org/name`) and file path: only when names are shown. */
  repo?: string;
  path?: string;
  size: number;
  bytes: number;
  state: 'queued' | 'running';
  readers: number;
  admittedAt: number;
}

/** The dashboard's data. Names (repos, paths, messages) only with a metrics token. */
export async function buildStatus(deps: ObservabilityDeps) {
  const names = deps.metricsToken !== '';
  const storage = await deps.metrics.storage()?.catch(() => undefined);
  const fills: StatusFill[] = deps.mirror.fillProgress().map((f) => ({
    ...(names ? { repo: `${f.repo.type}s/${f.repo.id}`, path: f.path } : {}),
    size: f.size,
    bytes: f.bytes,
    state: f.state,
    readers: f.readers,
    admittedAt: f.admittedAt,
  }));
  return {
    now: Date.now(),
    version: deps.version,
    startedAt: deps.startedAt,
    names,
    disk: storage ? { usedBytes: storage.usedBytes, budgetBytes: storage.budgetBytes, freeBytes: storage.freeBytes } : null,
    indexRows: storage?.rows ?? null,
    totals: deps.metrics.totals(),
    fills,
    queue: { running: deps.mirror.runningFills, queued: deps.mirror.queuedFills, maxConcurrentFills: deps.maxConcurrentFills, maxQueuedFills: deps.maxQueuedFills },
    errors: deps.activity.recentErrors().map((e) => ({
      at: e.at,
      kind: e.kind,
      status: e.status,
      code: e.code,
      method: e.method,
      ...(names ? { path: e.path, message: e.message } : {}),
    })),
    topRepos: names ? deps.activity.topRepos(10) : null,
    history: deps.activity.history().map((h) => ({ at: h.at, fileGets: h.totals.fileGets, served: h.totals.served, upstreamBytes: h.totals.upstreamBytes })),
  };
}
