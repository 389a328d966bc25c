/**
 * `hubcache import`: adopts what Hugging Face clients already downloaded (a huggingface_hub cache,
 * one repo folder of it, or a local_dir download; see hf-cache.ts), so those files are served as
 * hits, online and offline, with no download.
 *
 * - Every blob is re-hashed (sha256 for LFS files, the git blob sha1 for regular files) and
 *   adopted only if it matches the etag the client recorded; a corrupt one is reported and
 *   skipped, the rest imported. A blob the mirror already holds is not read again.
 * - Same filesystem: hard-linked, no copy; otherwise (or with `copy`) copied, after checking the
 *   free space the mirror's own downloads would need (free space less `minFreeBytes` less what
 *   running downloads still have to write): a blob that does not fit is refused.
 * - File rows (repo, commit, path → blob) and refs (branch → commit) are recorded. A row the index
 *   already has for another blob is kept (upstream's answer wins) and reported as a conflict; a
 *   ref is recorded only where the index has none newer.
 *
 * Who may read imported files back (the row's scope, hub/access-policy.ts) is decided per repo,
 * and never on the cache's word alone, since a cache may hold gated or private repos that its
 * owner was granted:
 * - `anonymous` (public: every caller, offline too) only when upstream, asked now as the
 *   tokenless identity, says the repo is public (`private: false`, not gated), or, when upstream
 *   cannot be asked at all (offline, unreachable), when the operator vouches for it (`public`).
 *   Upstream saying "private or gated" overrides the operator.
 * - otherwise none (the scope of a client token's answers): the blob is stored and the row
 *   recorded, but the file is served only after upstream grants the caller (one metadata request,
 *   no download), and never offline. No ref is recorded for such a repo (a branch of a private
 *   repo is not public knowledge).
 * Nothing is recorded under the service token's scope: the cache's owner was not the service
 * token, and upstream granting it is what a normal request establishes anyway.
 */
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';
import { PUBLIC_SCOPE, type AccessPolicy } from '../hub/access-policy.js';
import { isRepoType, validateRepoId, validateRevision, type RepoRef } from '../hub/repo-ref.js';
import { adoptFile } from '../storage/blob-adopt.js';
import { parseBlobKey, type BlobKey } from '../storage/blob-layout.js';
import type { BlobStore } from '../storage/blob-store-contract.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { formatBytes, type DiskSpace } from '../storage/disk-space.js';
import { scanCache, type CachedFile } from './hf-cache.js';
import type { JobContext, JobRunner } from './jobs.js';

export interface ImportRequest {
  /** The directory to import (absolute, on the mirror's machine). */
  path: string;
  /** local_dir downloads only: the repo it is of. */
  repo?: RepoRef;
  /** local_dir downloads only: the branch or tag it was downloaded at. */
  revision?: string;
  /** The operator vouches that the repos are public, for when upstream cannot be asked. */
  public: boolean;
  /** Copy even on the same filesystem. */
  copy: boolean;
}

/** Checks a request body (JSON): `path` (absolute), `repo`, `type`, `revision`, `public`, `copy`. Throws a 400. */
export function parseImportRequest(body: Record<string, unknown>): ImportRequest {
  const bad = (message: string): never => {
    throw new MirrorError('InvalidRequest', `import: ${message}`);
  };
  const known = new Set(['path', 'repo', 'type', 'revision', 'public', 'copy']);
  for (const k of Object.keys(body)) if (!known.has(k)) bad(`unknown field ${JSON.stringify(k)}`);
  if (typeof body.path !== 'string' || !body.path.startsWith('/') || body.path.includes('\0')) bad('"path" must be an absolute path on the mirror\'s machine');
  const type = body.type ?? 'model';
  if (typeof type !== 'string' || !isRepoType(type)) bad('"type" must be model, dataset or space');
  if (body.repo !== undefined && typeof body.repo !== 'string') bad('"repo" must be a repo id (org/name)');
  if (body.revision !== undefined && typeof body.revision !== 'string') bad('"revision" must be a string');
  for (const flag of ['public', 'copy'] as const) if (body[flag] !== undefined && typeof body[flag] !== 'boolean') bad(`"${flag}" must be true or false`);
  return {
    path: body.path as string,
    ...(body.repo === undefined ? {} : { repo: { type: type as RepoRef['type'], id: validateRepoId(body.repo as string) } }),
    ...(body.revision === undefined ? {} : { revision: validateRevision(body.revision as string) }),
    public: body.public === true,
    copy: body.copy === true,
  };
}

/** The request as job params (the same shape parseImportRequest reads back). */
export function importParams(req: ImportRequest): Record<string, unknown> {
  return { path: req.path, ...(req.repo ? { repo: req.repo.id, type: req.repo.type } : {}), ...(req.revision ? { revision: req.revision } : {}), public: req.public, copy: req.copy };
}

export interface ImportDeps {
  store: BlobStore;
  index: CacheIndex;
  /** Asks upstream whether a repo is public (tokenless identity). */
  access: AccessPolicy;
  /** Free-space guard for copies; omitted: no check. */
  diskSpace?: DiskSpace;
  /** Bytes running downloads still have to write (the server's Mirror), 0 with the server stopped. */
  reservedBytes?: () => number;
  /**
   * The cache budget, when maxCacheBytes is set: a blob larger than it is refused. Smaller ones are adopted
   * and count against it like downloads (background eviction makes room by the policy).
   */
  budgetBytes?: number;
}

/** The parts of a job an import reports to (the offline CLI provides its own). */
export type ImportProgress = Pick<JobContext, 'signal' | 'succeeded' | 'setTotals' | 'item'>;

interface Visibility {
  scope: typeof PUBLIC_SCOPE | null;
  why: string;
}

/** Item name of a file: `models/org/name@<commit>/<path>` (unique, and what a resume skips). */
export function fileItem(f: Pick<CachedFile, 'repo' | 'commit' | 'path'>): string {
  return `${f.repo.type}s/${f.repo.id}@${f.commit}/${f.path}`;
}

export async function importCache(req: ImportRequest, deps: ImportDeps, ctx: ImportProgress): Promise<void> {
  const scan = await scanCache(req.path, { ...(req.repo ? { repo: req.repo } : {}), ...(req.revision ? { revision: req.revision } : {}) });
  const groups = new Map<BlobKey, CachedFile[]>();
  for (const f of scan.files) {
    const group = groups.get(f.blobKey);
    if (group) group.push(f);
    else groups.set(f.blobKey, [f]);
  }
  const bytesTotal = [...groups.values()].reduce((n, g) => n + (g[0]?.size ?? 0), 0);
  ctx.setTotals(scan.files.length + scan.problems.length + scan.refs.length, bytesTotal);
  for (const p of scan.problems) ctx.item(p.item).finish(p.outcome, false, 0, p.message);

  const visibilities = new Map<string, Promise<Visibility>>();
  const visibility = (repo: RepoRef): Promise<Visibility> => {
    const key = `${repo.type}:${repo.id}`;
    let v = visibilities.get(key);
    if (!v) {
      v = decideVisibility(deps.access, repo, req.public);
      visibilities.set(key, v);
    }
    return v;
  };
  const imported = new Set<string>();

  for (const [key, files] of groups) {
    if (ctx.signal.aborted) return;
    const todo = files.filter((f) => !ctx.succeeded.has(fileItem(f)));
    for (const f of files) if (!todo.includes(f)) imported.add(`${f.repo.type}:${f.repo.id}@${f.commit}`);
    const first = todo[0];
    if (!first) continue;
    const tracker = ctx.item(fileItem(first));
    let outcome: 'present' | 'linked' | 'copied';
    try {
      outcome = await adoptBlob(deps, key, first, req.copy, tracker.add, ctx.signal);
    } catch (err) {
      if (ctx.signal.aborted) return;
      const e = err as MirrorError;
      const kind = e.code === 'IntegrityError' ? 'corrupt' : e.code === 'InsufficientStorage' ? 'refused' : 'failed';
      tracker.finish(kind, false, 0, e.message);
      for (const f of todo.slice(1)) ctx.item(fileItem(f)).finish(kind, false, 0, `same blob as ${first.path}: ${e.message}`);
      continue;
    }
    for (const [i, f] of todo.entries()) {
      const t = i === 0 ? tracker : ctx.item(fileItem(f));
      const existing = await deps.index.getFile(f.repo, f.commit, 'resolve', f.path);
      if (existing && existing.blobKey !== key) {
        t.finish('conflict', false, 0, `the mirror already knows this file as ${existing.blobKey} (upstream's answer): kept`);
        continue;
      }
      const v = await visibility(f.repo);
      const isLfs = parseBlobKey(key).algorithm === 'sha256';
      await deps.index.putFile({
        repo: f.repo,
        commit: f.commit,
        view: 'resolve',
        path: f.path,
        blobKey: key,
        size: f.size,
        etag: parseBlobKey(key).hex,
        isLfs,
        contentType: isLfs ? 'application/octet-stream' : await contentTypeOf(f.source),
        scope: v.scope,
        checkedAt: Date.now(),
      });
      imported.add(`${f.repo.type}:${f.repo.id}@${f.commit}`);
      t.finish(outcome, true, i === 0 ? f.size : 0, v.why);
    }
  }

  for (const ref of scan.refs) {
    if (ctx.signal.aborted) return;
    const item = `${ref.repo.type}s/${ref.repo.id}@${ref.revision}`;
    if (ctx.succeeded.has(item)) continue;
    const t = ctx.item(item);
    if (!imported.has(`${ref.repo.type}:${ref.repo.id}@${ref.commit}`)) {
      t.finish('ref-skipped', true, 0, `no file of ${ref.commit} was imported`);
      continue;
    }
    const v = await visibility(ref.repo);
    const existing = await deps.index.getRef(ref.repo, ref.revision);
    if (v.scope === null) t.finish('ref-skipped', true, 0, `not recorded: ${v.why}`);
    else if (existing && existing.checkedAt >= ref.seenAt) t.finish('ref-kept', true, 0, `the mirror's own newer answer (${existing.commit}) is kept`);
    else {
      await deps.index.putRef(ref.repo, ref.revision, ref.commit, ref.seenAt, v.scope);
      t.finish('ref', true, 0, `${ref.revision} → ${ref.commit}`);
    }
  }
}

/** Stores one blob: already there, linked or copied (after the free-space check), verified either way. */
async function adoptBlob(deps: ImportDeps, key: BlobKey, file: CachedFile, copy: boolean, moved: (n: number) => void, signal: AbortSignal): Promise<'present' | 'linked' | 'copied'> {
  const known = await deps.index.getBlob(key);
  const st = await deps.store.stat(key);
  if (known && st && st.size === known.size) return 'present';
  if (deps.budgetBytes !== undefined && file.size > deps.budgetBytes) {
    throw new MirrorError('InsufficientStorage', `too large for the cache budget: ${formatBytes(file.size)}, maxCacheBytes is ${formatBytes(deps.budgetBytes)}`);
  }
  const mode = await adoptFile(deps.store, key, file.source, {
    copy,
    signal,
    onBytes: moved,
    beforeCopy: async (size) => {
      if (!deps.diskSpace) return;
      const available = await deps.diskSpace.available();
      const reserved = deps.reservedBytes?.() ?? 0;
      if (size + reserved + deps.diskSpace.minFreeBytes > available) {
        throw new MirrorError(
          'InsufficientStorage',
          `too large for the cache disk: ${formatBytes(size)} to copy, ${formatBytes(available)} free, ${formatBytes(reserved)} promised to downloads in progress, ${formatBytes(deps.diskSpace.minFreeBytes)} kept free (minFreeBytes)`,
        );
      }
    },
  });
  await deps.index.recordBlob(key, (await fsp.stat(deps.store.pathOf(key))).size);
  return mode;
}

async function decideVisibility(access: AccessPolicy, repo: RepoRef, vouched: boolean): Promise<Visibility> {
  let publicity: 'public' | 'restricted' | 'unknown';
  try {
    publicity = await access.publicity(repo);
  } catch {
    publicity = 'unknown'; // an unusable answer says nothing either way
  }
  if (publicity === 'public') return { scope: PUBLIC_SCOPE, why: 'public (upstream says so)' };
  if (publicity === 'restricted') return { scope: null, why: 'token holders only: upstream says the repo is private or gated (served after upstream grants the caller, never offline)' };
  if (vouched) return { scope: PUBLIC_SCOPE, why: 'public (--public: upstream could not be asked)' };
  return { scope: null, why: 'token holders only: upstream could not be asked and --public was not given (served after upstream grants the caller, never offline)' };
}

/** What the Hub sends for a regular file: text, unless it has a NUL byte early on. */
async function contentTypeOf(file: string): Promise<string> {
  const handle = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(8192);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).includes(0) ? 'application/octet-stream' : 'text/plain; charset=utf-8';
  } finally {
    await handle.close();
  }
}

/** The `import` job: the request in its params, the server's store and index. */
export class ImportRunner implements JobRunner {
  readonly #deps: ImportDeps;

  constructor(deps: ImportDeps) {
    this.#deps = deps;
  }

  run(ctx: JobContext): Promise<void> {
    return importCache(parseImportRequest(ctx.job.params), this.#deps, ctx);
  }
}
