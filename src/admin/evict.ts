/**
 * The operator's eviction (`hubcache evict`, `POST /admin/evict`): which blobs, parsed and checked
 * the same way for the CLI and the API, then handed to the Evictor (which keeps leases: a blob
 * in use is reported `in-use`, never removed).
 *
 *   {repo, type?, revision?}   blobs of that repo (at that revision's commit) not shared with another
 *   {unusedForSeconds}         blobs not used for that long
 *   {bytes}                    at most (about) that many bytes, in the eviction policy's order
 *   {dryRun}                   report what would go, remove nothing
 * Conditions combine (all must hold); at least one of repo, unusedForSeconds, bytes is required.
 */
import { MirrorError } from '../errors.js';
import { isCommitSha, isRepoType, validateRepoId, validateRevision, type RepoRef } from '../hub/repo-ref.js';
import type { EvictReport, Evictor } from '../mirror/eviction.js';
import type { CacheIndex, EvictionSelection } from '../storage/cache-index-contract.js';

export interface EvictRequest {
  repo?: RepoRef;
  revision?: string;
  unusedForSeconds?: number;
  bytes?: number;
  dryRun: boolean;
}

export function parseEvictRequest(body: Record<string, unknown>): EvictRequest {
  const req: EvictRequest = { dryRun: body.dryRun === true };
  if (body.dryRun !== undefined && typeof body.dryRun !== 'boolean') throw new MirrorError('InvalidRequest', 'dryRun must be true or false');
  const type = body.type ?? 'model';
  if (typeof type !== 'string' || !isRepoType(type)) throw new MirrorError('InvalidRequest', 'type must be model, dataset or space');
  if (body.repo !== undefined) {
    if (typeof body.repo !== 'string') throw new MirrorError('InvalidRequest', 'repo must be a repo id (org/name)');
    req.repo = { type, id: validateRepoId(body.repo) };
  }
  if (body.revision !== undefined) {
    if (!req.repo) throw new MirrorError('InvalidRequest', 'revision needs a repo');
    if (typeof body.revision !== 'string') throw new MirrorError('InvalidRequest', 'revision must be a string');
    req.revision = validateRevision(body.revision);
  }
  for (const key of ['unusedForSeconds', 'bytes'] as const) {
    const v = body[key];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new MirrorError('InvalidRequest', `${key} must be a non-negative integer`);
    req[key] = v;
  }
  if (!req.repo && req.unusedForSeconds === undefined && req.bytes === undefined) {
    throw new MirrorError('InvalidRequest', 'say what to evict: a repo, unusedForSeconds or bytes');
  }
  return req;
}

/** The selection for a request: a revision is looked up in the refs (or taken as a commit). 404 if unknown. */
export async function evictSelection(req: EvictRequest, index: CacheIndex, now: number): Promise<EvictionSelection> {
  const sel: EvictionSelection = {};
  if (req.repo) {
    sel.repo = req.repo;
    if (req.revision !== undefined) {
      const commit = isCommitSha(req.revision) ? req.revision : (await index.getRef(req.repo, req.revision))?.commit;
      if (!commit) throw new MirrorError('NotFound', `The mirror knows no revision ${req.revision} of ${req.repo.type} ${req.repo.id}`);
      sel.commit = commit;
    }
  }
  if (req.unusedForSeconds !== undefined) sel.usedBefore = now - req.unusedForSeconds * 1000;
  return sel;
}

export async function runEviction(req: EvictRequest, evictor: Evictor, index: CacheIndex, now = Date.now()): Promise<EvictReport> {
  return evictor.evictSelection(await evictSelection(req, index, now), { ...(req.bytes === undefined ? {} : { bytes: req.bytes }), dryRun: req.dryRun });
}

/** `30d`, `12h`, `45m`, `90s` or plain seconds → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw]?)$/.exec(text.trim());
  if (!m) throw new MirrorError('InvalidRequest', `not a duration (e.g. 30d, 12h, 45m, 90s): ${JSON.stringify(text)}`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as '' | 's' | 'm' | 'h' | 'd' | 'w'];
  return Number(m[1]) * unit;
}

/** `10G`, `500M`, `64K` (powers of 1024, optional `iB`/`B`) or plain bytes → bytes. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(text.trim());
  if (!m) throw new MirrorError('InvalidRequest', `not a size (e.g. 10G, 500M, or bytes): ${JSON.stringify(text)}`);
  const exp = m[2] ? 'KMGT'.indexOf(m[2].toUpperCase()) + 1 : 0;
  const n = Math.floor(Number(m[1]) * 1024 ** exp);
  if (!Number.isSafeInteger(n)) throw new MirrorError('InvalidRequest', `size too large: ${JSON.stringify(text)}`);
  return n;
}
