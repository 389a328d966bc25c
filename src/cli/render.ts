/** Human-readable output of the operator commands (`--json` prints the objects themselves). */
import type { RepoDetail, RepoListing, StatsReport } from '../admin/inventory.js';
import { formatBytes } from '../storage/disk-space.js';

/** The job shape the admin API returns (routes/admin.ts jobJson). */
export interface JobView {
  id: string;
  kind: string;
  state: string;
  params: Record<string, unknown>;
  progress: { itemsTotal: number | null; itemsDone: number; itemsFailed: number; bytesTotal: number | null; bytesDone: number };
  message: string | null;
  createdAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
}

const when = (iso: string | null): string => (iso === null ? '-' : iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'));
const short = (commit: string): string => commit.slice(0, 12);

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

export function renderRepos(repos: RepoListing[]): string {
  if (repos.length === 0) return 'the cache holds no repo yet';
  const rows = [['TYPE', 'REPO', 'REFS', 'COMMITS', 'FILES', 'CACHED', 'SIZE', 'HITS', 'LAST ACCESS']];
  for (const r of repos) {
    const refs = Object.entries(r.refs).map(([name, c]) => `${name}→${c.slice(0, 7)}`).join(',') || '-';
    rows.push([r.type, r.id, refs, String(r.commits), String(r.files), String(r.cachedFiles), formatBytes(r.cachedBytes), String(r.hits), when(r.lastAccess)]);
  }
  return table(rows);
}

export function renderRepo(d: RepoDetail): string {
  const out = [`${d.type} ${d.id}: ${d.cachedFiles}/${d.files} files cached, ${formatBytes(d.cachedBytes)}, ${d.hits} hits, last access ${when(d.lastAccess)}`];
  for (const rev of d.revisions) {
    out.push('', `commit ${rev.commit}${rev.refs.length ? ` (${rev.refs.join(', ')})` : ''}`);
    const rows = [['  CACHED', 'SIZE', 'HITS', 'LAST ACCESS', 'VISIBILITY', 'PATH']];
    for (const f of rev.files) rows.push([`  ${f.cached ? 'yes' : 'no'}`, formatBytes(f.size), String(f.hits), when(f.lastAccess), f.visibility, f.view === 'resolve' ? f.path : `${f.path} (${f.view})`]);
    out.push(table(rows));
  }
  return out.join('\n');
}

export function renderStats(s: StatsReport): string {
  const pct = (r: number | null) => (r === null ? '-' : `${(r * 100).toFixed(1)}%`);
  const t = s.traffic;
  const lines = [
    ['data dir', s.dataDir],
    ['disk used', `${formatBytes(s.disk.usedBytes)} in ${s.disk.blobs} blobs (budget: ${s.disk.budgetBytes === null ? 'none' : formatBytes(s.disk.budgetBytes)})`],
    ['disk free', `${s.disk.freeBytes === null ? '?' : formatBytes(s.disk.freeBytes)} of ${s.disk.totalBytes === null ? '?' : formatBytes(s.disk.totalBytes)} (minFreeBytes ${formatBytes(s.disk.minFreeBytes)} kept free)`],
    ['repos', String(s.repos)],
    ['requests', `${t.requests.total} (hit ${t.requests.hit}, miss ${t.requests.miss}, joined ${t.requests.joined}, range bypass ${t.requests.bypass}), hit ratio ${pct(t.hitRatio)}`],
    ['served', `${formatBytes(t.bytesServed.total)} (from cache ${formatBytes(t.bytesServed.hit)}, while downloading ${formatBytes(t.bytesServed.miss + t.bytesServed.joined)}, ranges ${formatBytes(t.bytesServed.bypass)}), byte hit ratio ${pct(t.byteHitRatio)}`],
    ['pulled', `${formatBytes(t.bytesPulledFromUpstream)} from upstream`],
    ['counting since', t.since ?? '-'],
  ];
  if (s.fills) lines.push(['downloads', `${s.fills.active} running or queued, ${s.fills.queued} waiting for a slot`]);
  return table(lines);
}

export function renderJobs(jobs: JobView[]): string {
  if (jobs.length === 0) return 'no jobs';
  const rows = [['ID', 'KIND', 'STATE', 'ITEMS', 'BYTES', 'CREATED', 'WHAT']];
  for (const j of jobs) rows.push([j.id, j.kind, j.state, progressText(j), bytesText(j), when(j.createdAt), describeJob(j)]);
  return table(rows);
}

export function renderJob(j: JobView): string {
  return [`job ${j.id}: ${j.kind} ${describeJob(j)}`, `state ${j.state}${j.message ? ` (${j.message})` : ''}`, `items ${progressText(j)}, ${bytesText(j)}`, `created ${when(j.createdAt)}, started ${when(j.startedAt)}, finished ${when(j.finishedAt)}`].join('\n');
}

/** One line at the end of a followed job. */
export function summary(j: JobView): string {
  return `${j.kind} ${j.id}: ${j.state}${j.message ? ` (${j.message})` : ''}, ${progressText(j)}, ${bytesText(j)}`;
}

function progressText(j: JobView): string {
  const p = j.progress;
  return `${p.itemsDone}/${p.itemsTotal ?? '?'}${p.itemsFailed ? ` (${p.itemsFailed} failed)` : ''}`;
}

function bytesText(j: JobView): string {
  const p = j.progress;
  return `${formatBytes(p.bytesDone)}${p.bytesTotal === null ? '' : `/${formatBytes(p.bytesTotal)}`}`;
}

function describeJob(j: JobView): string {
  const p = j.params;
  if (j.kind === 'prefetch') {
    const repo = p.repo as { type?: string; id?: string } | undefined;
    const commit = typeof p.commit === 'string' ? ` (${short(p.commit)})` : '';
    return `${repo?.type ?? ''} ${repo?.id ?? ''}@${String(p.revision)}${commit}`.trim();
  }
  if (j.kind === 'import') return String(p.path);
  return '';
}
