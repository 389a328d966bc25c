/**
 * What `hubcache ls` and `hubcache stats` report, as JSON-ready objects, from the index (and, with
 * the server running, its live counters). The same functions serve the admin API and the CLI on a
 * stopped server.
 */
import fsp from 'node:fs/promises';
import { MirrorError } from '../errors.js';
import type { RepoRef } from '../hub/repo-ref.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { trafficReport, type TrafficCounters, type TrafficReport } from '../observability/traffic-counters.js';

export interface RepoListing {
  type: RepoRef['type'];
  id: string;
  commits: number;
  files: number;
  cachedFiles: number;
  cachedBytes: number;
  lastAccess: string | null;
  hits: number;
  refs: Record<string, string>;
}

export interface RepoDetail extends RepoListing {
  revisions: Array<{
    commit: string;
    /** Branches and tags that point at it. */
    refs: string[];
    files: Array<{ path: string; view: string; size: number; blob: string; lfs: boolean; visibility: string; cached: boolean; storedAt: string | null; lastAccess: string | null; hits: number }>;
  }>;
}

export interface StatsReport {
  dataDir: string;
  disk: {
    /** Bytes of the blobs the index records. */
    usedBytes: number;
    blobs: number;
    /** Free space on the cache disk for the mirror's process, and the disk's size (statfs). */
    freeBytes: number | null;
    totalBytes: number | null;
    /** Config minFreeBytes: always left free. */
    minFreeBytes: number;
    /** The most the cache may hold (maxCacheBytes, resolved against the filesystem); null: unknown. */
    budgetBytes: number | null;
  };
  repos: number;
  traffic: TrafficReport;
  /** With the server running: downloads in progress and waiting. */
  fills?: { active: number; queued: number };
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export async function listRepos(index: CacheIndex): Promise<RepoListing[]> {
  await index.flushTouches();
  return (await index.inventory.repos()).map((r) => ({
    type: r.repo.type,
    id: r.repo.id,
    commits: r.commits,
    files: r.files,
    cachedFiles: r.cachedFiles,
    cachedBytes: r.cachedBytes,
    lastAccess: iso(r.lastAccessAt),
    hits: r.hits,
    refs: r.refs,
  }));
}

/** One repo's revisions and files; 404 when the index knows no file of it. */
export async function describeRepo(index: CacheIndex, repo: RepoRef): Promise<RepoDetail> {
  const summary = (await listRepos(index)).find((r) => r.type === repo.type && r.id === repo.id);
  if (!summary) throw new MirrorError('NotFound', `The mirror has no file of ${repo.type} ${repo.id}`);
  const byCommit = new Map<string, RepoDetail['revisions'][number]>();
  for (const f of await index.inventory.files(repo)) {
    let rev = byCommit.get(f.commit);
    if (!rev) {
      rev = { commit: f.commit, refs: Object.entries(summary.refs).filter(([, c]) => c === f.commit).map(([name]) => name), files: [] };
      byCommit.set(f.commit, rev);
    }
    rev.files.push({ path: f.path, view: f.view, size: f.size, blob: f.blobKey, lfs: f.isLfs, visibility: f.visibility, cached: f.cached, storedAt: iso(f.storedAt), lastAccess: iso(f.lastAccessAt), hits: f.hits });
  }
  return { ...summary, revisions: [...byCommit.values()] };
}

export interface StatsSources {
  index: CacheIndex;
  dataDir: string;
  minFreeBytes: number;
  /** The cache budget in bytes (null: unknown). */
  budgetBytes: number | null;
  /** The running server's counters (persisted totals plus what is not flushed yet). */
  traffic?: TrafficCounters;
  fills?: { active: number; queued: number };
}

export async function statsReport(s: StatsSources): Promise<StatsReport> {
  await s.index.flushTouches();
  const totals = await s.index.inventory.blobTotals();
  let freeBytes: number | null = null;
  let totalBytes: number | null = null;
  try {
    const st = await fsp.statfs(s.dataDir);
    freeBytes = st.bavail * st.bsize;
    totalBytes = st.blocks * st.bsize;
  } catch {
    // reported as unknown
  }
  return {
    dataDir: s.dataDir,
    disk: { usedBytes: totals.bytes, blobs: totals.blobs, freeBytes, totalBytes, minFreeBytes: s.minFreeBytes, budgetBytes: s.budgetBytes },
    repos: (await s.index.inventory.repos()).length,
    traffic: s.traffic ? await s.traffic.report(s.index.inventory) : trafficReport(await s.index.inventory.counters()),
    ...(s.fills ? { fills: s.fills } : {}),
  };
}
