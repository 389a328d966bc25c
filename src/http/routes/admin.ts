/**
 * The operator API under `/admin/`: JSON in and out, on the main port when `adminToken` is set,
 * or on its own listener (`adminListen`).
 *
 * Authentication is its own: `Authorization: Bearer <adminToken>`, compared in constant time
 * (digests). No Hub token or access key opens it (config refuses an adminToken equal to either,
 * or shaped like a Hub token), and the mirror's access keys are not asked for here. On the admin
 * listener without adminToken it is open (the operator restricts who reaches that address).
 *
 *   GET  /admin/stats                        disk, blobs, traffic counters
 *   GET  /admin/repos                        every repo the index knows
 *   GET  /admin/repos/{type}/{id}            one repo: revisions, files
 *   POST /admin/prefetch                     {repo, type?, revision?, include?, exclude?, hubToken?, concurrency?} → 202 job
 *   POST /admin/import                       {path, repo?, type?, revision?, public?, copy?} → 202 job
 *   POST /admin/verify                       → 202 job
 *   POST /admin/evict                        {repo?, type?, revision?, unusedForSeconds?, bytes?, dryRun?} → the report
 *   GET  /admin/jobs                         the newest jobs
 *   GET  /admin/jobs/{id}?after=N&limit=M    one job and its items finished after seq N
 *   POST /admin/jobs/{id}/cancel             → the job
 * Anything else under `/admin/` is a 404.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { Logger } from 'pino';
import { MirrorError } from '../../errors.js';
import { parseEvictRequest, runEviction } from '../../admin/evict.js';
import { detectShape } from '../../admin/hf-cache.js';
import { parseImportRequest, importParams } from '../../admin/import-cache.js';
import { describeRepo, listRepos, statsReport } from '../../admin/inventory.js';
import type { Jobs } from '../../admin/jobs.js';
import { parsePrefetchRequest, prefetchKey, prefetchParams } from '../../admin/prefetch.js';
import type { RepoPolicy } from '../../hub/repo-policy.js';
import { isRepoType, validateRepoId } from '../../hub/repo-ref.js';
import type { Evictor } from '../../mirror/eviction.js';
import type { Mirror } from '../../mirror/mirror.js';
import type { TrafficCounters } from '../../observability/traffic-counters.js';
import type { CacheIndex, JobItem, JobRow } from '../../storage/cache-index-contract.js';
import type { AppEnv } from '../app-env.js';

export interface AdminDeps {
  /** Config `adminToken`; '' only on the admin listener (then the API is open there). */
  token: string;
  jobs: Jobs;
  index: CacheIndex;
  dataDir: string;
  minFreeBytes: number;
  traffic: TrafficCounters;
  mirror: Mirror;
  evictor: Evictor;
  policy: RepoPolicy;
  log: Logger;
}

const MAX_BODY = 1024 * 1024;
const MAX_ITEMS_PER_PAGE = 1000;

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

export function adminRoutes(deps: AdminDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const expected = deps.token === '' ? undefined : digest(deps.token);

  app.use('/admin', authenticate(expected));
  app.use('/admin/*', authenticate(expected));

  app.get('/admin/stats', async (c) =>
    c.json(
      await statsReport({
        index: deps.index,
        dataDir: deps.dataDir,
        minFreeBytes: deps.minFreeBytes,
        budgetBytes: deps.evictor.budgetBytes,
        traffic: deps.traffic,
        fills: { active: deps.mirror.activeFills, queued: deps.mirror.queuedFills },
      }),
    ),
  );
  app.get('/admin/repos', async (c) => c.json({ repos: await listRepos(deps.index) }));
  app.get('/admin/repos/:type/:id{.+}', async (c) => {
    const type = c.req.param('type');
    if (!isRepoType(type)) throw new MirrorError('InvalidRequest', 'repo type must be model, dataset or space');
    return c.json(await describeRepo(deps.index, { type, id: validateRepoId(c.req.param('id')) }));
  });

  app.post('/admin/prefetch', async (c) => {
    const body = await jsonBody(c);
    const req = parsePrefetchRequest(body);
    deps.policy.check(req.repo);
    const hubToken = typeof body.hubToken === 'string' ? body.hubToken : undefined;
    const withToken = hubToken !== undefined;
    const job = deps.jobs.submit('prefetch', prefetchParams(req, withToken), { key: prefetchKey(req, withToken), ...(hubToken === undefined ? {} : { secret: hubToken }) });
    return c.json({ job: jobJson(job) }, 202);
  });
  app.post('/admin/import', async (c) => {
    const req = parseImportRequest(await jsonBody(c));
    // A path that is not a cache is the caller's mistake: said now, not in a failed job.
    await detectShape(req.path, req.repo ? { repo: req.repo } : {});
    return c.json({ job: jobJson(deps.jobs.submit('import', importParams(req))) }, 202);
  });
  app.post('/admin/verify', async (c) => {
    await jsonBody(c, true);
    return c.json({ job: jobJson(deps.jobs.submit('verify', {}, { key: 'verify' })) }, 202);
  });

  app.post('/admin/evict', async (c) => c.json(await runEviction(parseEvictRequest(await jsonBody(c)), deps.evictor, deps.index)));

  app.get('/admin/jobs', async (c) => c.json({ jobs: (await deps.jobs.list()).map(jobJson) }));
  app.get('/admin/jobs/:id', async (c) => {
    const id = c.req.param('id');
    const job = await deps.jobs.get(id);
    if (!job) throw new MirrorError('NotFound', `No job ${id}`);
    const after = intParam(c.req.query('after'), 0);
    const limit = Math.min(intParam(c.req.query('limit'), MAX_ITEMS_PER_PAGE), MAX_ITEMS_PER_PAGE);
    return c.json({ job: jobJson(job), items: (await deps.jobs.items(id, after, limit)).map(itemJson) });
  });
  app.post('/admin/jobs/:id/cancel', async (c) => c.json({ job: jobJson(await deps.jobs.cancel(c.req.param('id'))) }));

  app.all('/admin', () => notFound());
  app.all('/admin/*', () => notFound());
  return app;
}

function authenticate(expected: Buffer | undefined) {
  return async (c: Context<AppEnv>, next: () => Promise<void>): Promise<void> => {
    if (expected) {
      const header = c.req.header('authorization') ?? '';
      const presented = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
      if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
        throw new MirrorError('AdminTokenRequired', 'The operator API needs the admin token: Authorization: Bearer <adminToken> (the CLI reads HUBCACHE_ADMIN_TOKEN)', {
          headers: { 'WWW-Authenticate': 'Bearer realm="hubcache-admin"' },
        });
      }
    }
    await next();
  };
}

/** The request's JSON object body ({} when empty and `optional`); 400 otherwise. */
async function jsonBody(c: Context<AppEnv>, optional = false): Promise<Record<string, unknown>> {
  const declared = Number(c.req.header('content-length') ?? '0');
  if (declared > MAX_BODY) throw new MirrorError('PayloadTooLarge', `request body over ${MAX_BODY} bytes`);
  const raw = Buffer.from(await c.req.arrayBuffer());
  if (raw.length > MAX_BODY) throw new MirrorError('PayloadTooLarge', `request body over ${MAX_BODY} bytes`);
  if (raw.length === 0 && optional) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new MirrorError('InvalidRequest', 'the body must be a JSON object');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new MirrorError('InvalidRequest', 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function intParam(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new MirrorError('InvalidRequest', `not a non-negative integer: ${JSON.stringify(text.slice(0, 40))}`);
  return n;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

/** A job as the API shows it (the dedupe key is internal). */
export function jobJson(job: JobRow): Record<string, unknown> {
  const { key: _key, ...params } = job.params;
  return { id: job.id, kind: job.kind, state: job.state, params, progress: job.progress, message: job.message, createdAt: iso(job.createdAt), startedAt: iso(job.startedAt), finishedAt: iso(job.finishedAt) };
}

export function itemJson(item: JobItem): Record<string, unknown> {
  return { seq: item.seq, item: item.item, outcome: item.outcome, ok: item.ok, bytes: item.bytes, message: item.message };
}

function notFound(): Response {
  return new Response(JSON.stringify({ error: 'Not found' }), {
    status: 404,
    headers: { 'content-type': 'application/json; charset=utf-8', 'x-error-message': 'Not found' },
  });
}
