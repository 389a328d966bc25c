/**
 * Hub API: everything under `/api/`.
 *
 * - Repo info (`/api/{type}s/{repo}`, `.../revision/{rev}`), `.../tree/{rev}[/{path}]` and
 *   `POST .../paths-info/{rev}` (form or JSON) go through the MetadataCache (commit-consistent,
 *   cached for commits, offline fallback), when their query is one the cache understands.
 * - `xet-*-token` routes are refused (501): their answer would send clients to the Xet CAS,
 *   around the mirror (hf-protocol §10.3).
 * - Read-only by default: POST, PUT, PATCH and DELETE are refused with 403 `ReadOnlyMirror`
 *   before anything goes upstream (with hfToken, anyone reaching the mirror would otherwise write
 *   as the service token), except the POST that only reads (`paths-info`). `allowWrites` passes
 *   them through.
 * - Anything else (refs, commits, whoami-v2, ...) is passed through uncached with the caller's
 *   token, to the upstream origin only, and logged.
 * Every answer gets the same hygiene (no xetHash, no X-Xet-*, no Xet Link relations) and its
 * upstream URLs (pagination `Link`, `Location`) rebased on the mirror's own origin.
 */
import { Hono, type Context } from 'hono';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import { MirrorError } from '../../errors.js';
import { renderLinks, renderUrl, toApiAnswer, type ApiAnswer } from '../../hub/api-answer.js';
import { canonicalQuery, parseApiPath, parsePathsInfoBody, type ApiTarget } from '../../hub/api-request.js';
import type { MetadataCache, MetadataRequest } from '../../hub/metadata-cache.js';
import type { UpstreamApi } from '../../upstream/hub-client.js';
import { publicOrigin } from '../public-origin.js';
import type { RepoPolicy } from '../../hub/repo-policy.js';
import { isRepoType, type RepoRef } from '../../hub/repo-ref.js';
import type { AppEnv } from '../app-env.js';
import { rawRequestPath } from '../request-target.js';

export interface ApiRoutesDeps {
  metadata: MetadataCache;
  hub: UpstreamApi;
  log: Logger;
  /** Config `publicUrl` ('' when unset). */
  publicUrl: string;
  /** The listen address, once known (last resort for the mirror's origin). */
  listenUrl: () => string;
  policy: RepoPolicy;
  /** Config `allowWrites`: pass write methods upstream instead of refusing them. */
  allowWrites: boolean;
}

type Env = AppEnv;

/** Methods that change something upstream. */
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** Largest request body accepted (paths-info lists, passed-through API calls). */
const MAX_REQUEST_BODY = 10 * 1024 * 1024;
const XET_REFUSAL =
  'Xet is not available through this mirror: files are served over plain HTTP here. ' +
  'Set HF_HUB_DISABLE_XET=1, or clear a tree cache written by a direct download (it carries Xet hashes).';

export function apiRoutes(deps: ApiRoutesDeps): Hono<Env> {
  const app = new Hono<Env>();

  app.all('/api/*', async (c) => {
    const target = c.env.incoming.url ?? '/';
    const rawPath = rawRequestPath(target);
    const rawQuery = rawRequestQuery(target);
    const method = c.req.method;
    const identity = c.get('identity');
    const parsed = parseApiPath(rawPath);
    if (!deps.allowWrites && WRITE_METHODS.has(method) && !(method === 'POST' && parsed.kind === 'paths-info')) {
      throw new MirrorError('ReadOnlyMirror', `This mirror is read-only: ${method} ${printablePath(rawPath)} is not passed upstream (the operator can set allowWrites)`);
    }
    for (const repo of reposNamedBy(parsed, rawPath)) deps.policy.check(repo);
    if (parsed.kind === 'xet-token') throw new MirrorError('NotSupported', XET_REFUSAL);
    if (/[\\]/.test(rawPath)) throw new MirrorError('InvalidPath', 'Invalid API path');

    const body = method === 'GET' || method === 'HEAD' ? undefined : await readBody(c);
    const question = toMetadataRequest(parsed, method, rawQuery, body, c.req.header('content-type'));
    if (question) return send(c, await deps.metadata.answer(question, identity));

    const upstreamPath = rawQuery ? `${rawPath}?${rawQuery}` : rawPath;
    const auth = identity.auth;
    const raw = await deps.hub.requestApi(httpMethod(method), upstreamPath, auth, {
      ...(body === undefined ? {} : { body, contentType: c.req.header('content-type') ?? 'application/octet-stream' }),
    });
    const answer = toApiAnswer(raw, (u) => deps.hub.upstreamPathOf(u, raw.url), { repoScoped: parsed.kind !== 'other' || isRepoPath(rawPath) });
    deps.log.info({ method, path: printablePath(rawPath), status: raw.statusCode, auth: auth !== undefined }, 'api passed through uncached');
    return send(c, answer);
  });

  function send(c: Context<Env>, answer: ApiAnswer): Response {
    // A status HTTP cannot relay (upstream is not a well-behaved Hub) is upstream's fault.
    if (!Number.isInteger(answer.status) || answer.status < 200 || answer.status > 599) {
      throw new MirrorError('UpstreamError', `Upstream answered with status ${answer.status}, which cannot be relayed`);
    }
    const origin = publicOrigin(deps.publicUrl, c.req.header('host'), deps.listenUrl());
    const headers = new Headers();
    for (const [name, value] of Object.entries(answer.headers)) {
      try {
        headers.set(name, value);
      } catch {
        // A value the Fetch API refuses (non-latin1 from upstream): dropped rather than failing.
      }
    }
    const link = renderLinks(answer.links, origin);
    if (link) headers.set('link', link);
    if (answer.location) headers.set('location', renderUrl(answer.location, origin));
    headers.set('x-mirror-cache', answer.source);
    c.set('cacheStatus', answer.source);
    const nullBodyStatus = answer.status === 204 || answer.status === 205 || answer.status === 304;
    headers.set('content-length', String(nullBodyStatus ? 0 : answer.body.length));
    const withBody = c.req.method !== 'HEAD' && !nullBodyStatus;
    return new Response(withBody ? new Uint8Array(answer.body.buffer, answer.body.byteOffset, answer.body.length) : null, { status: answer.status, headers });
  }

  return app;
}

/** The cacheable question a request asks, or null when it is to be passed through as sent. */
function toMetadataRequest(t: ApiTarget, method: string, rawQuery: string, body: Buffer | undefined, contentType: string | undefined): MetadataRequest | null {
  const isRead = method === 'GET' || method === 'HEAD';
  switch (t.kind) {
    case 'info':
    case 'revision': {
      const query = isRead ? canonicalQuery(t.kind, rawQuery) : null;
      if (query === null) return null;
      return { repo: t.repo, revision: t.kind === 'info' ? undefined : t.revision, question: { kind: 'info', query } };
    }
    case 'tree': {
      const query = isRead ? canonicalQuery('tree', rawQuery) : null;
      if (query === null) return null;
      return { repo: t.repo, revision: t.revision, question: { kind: 'tree', path: t.path, query } };
    }
    case 'paths-info':
      if (method !== 'POST' || rawQuery !== '' || body === undefined) return null;
      return { repo: t.repo, revision: t.revision, question: { kind: 'paths-info', body: parsePathsInfoBody(body, contentType) } };
    default:
      return null;
  }
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

function httpMethod(method: string): Dispatcher.HttpMethod {
  if (!METHODS.has(method)) throw new MirrorError('InvalidRequest', `Method not supported: ${method.slice(0, 20)}`);
  return method;
}

/** A request path for messages and logs: at most 300 characters. */
function printablePath(rawPath: string): string {
  return rawPath.length > 300 ? `${rawPath.slice(0, 300)}…` : rawPath;
}

/** `/api/{models|datasets|spaces}/...`: a bare 401 there means "repo not found" to clients. */
function isRepoPath(rawPath: string): boolean {
  return /^\/api\/(models|datasets|spaces)\/[^/]+/.test(rawPath);
}

/** The query of a request target as sent (without `?`), or ''. */
export function rawRequestQuery(target: string): string {
  const q = target.indexOf('?');
  if (q === -1) return '';
  const rest = target.slice(q + 1);
  const hash = rest.indexOf('#');
  return hash === -1 ? rest : rest.slice(0, hash);
}

async function readBody(c: Context<Env>): Promise<Buffer> {
  const declared = Number(c.req.header('content-length') ?? '0');
  if (declared > MAX_REQUEST_BODY) throw new MirrorError('PayloadTooLarge', `Request body over ${MAX_REQUEST_BODY} bytes`);
  const stream = c.req.raw.body as ReadableStream<Uint8Array> | null;
  if (!stream) return Buffer.alloc(0);
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch {
      // The client went away mid-body (or sent a broken one): its problem, not an unhandled error.
      throw new MirrorError('InvalidRequest', 'The request body ended early');
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.length;
    if (total > MAX_REQUEST_BODY) {
      await reader.cancel();
      throw new MirrorError('PayloadTooLarge', `Request body over ${MAX_REQUEST_BODY} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/**
 * The repos an API path is about, for the operator policy: the parsed repo, or for passed-through
 * paths (`/api/models/{id}/refs`, ...) both readings of the id (with and without an org).
 */
function reposNamedBy(parsed: ApiTarget, rawPath: string): RepoRef[] {
  if ('repo' in parsed) return [parsed.repo];
  const segs = rawPath.split('/').slice(2).map((s) => safeDecode(s));
  const plural = segs[0] ?? '';
  const type = plural.endsWith('s') ? plural.slice(0, -1) : '';
  if (!isRepoType(type) || segs.length < 2) return [];
  const one = segs[1] ?? '';
  const candidates: RepoRef[] = [{ type, id: one }];
  if (segs[2] !== undefined) candidates.push({ type, id: `${one}/${segs[2]}` });
  return candidates;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
