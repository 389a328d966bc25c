/**
 * RepoSummary rows (the inventory's `repos()`) from the three queries both index engines run: file
 * counts per repo, the sums of its cached blobs, and its refs. The engines differ only in dialect.
 */
import type { RepoType } from '../hub/repo-ref.js';
import type { RepoSummary } from './cache-index-contract.js';

/** Rows of the three repo queries (file counts, blob sums, refs), as either engine returns them. */
export interface RepoCountRow {
  repo_type: string;
  repo_id: string;
  commits: number;
  files: number;
  cached_files: number;
}
export interface RepoBlobSumRow {
  repo_type: string;
  repo_id: string;
  cached_bytes: number;
  last_access: number | null;
  hits: number;
}
export interface RepoRefRow {
  repo_type: string;
  repo_id: string;
  revision: string;
  commit_sha: string;
}

/** RepoSummary rows, in the order of `counts`, joined with the blob sums and refs of each repo. */
export function repoSummaries(counts: readonly RepoCountRow[], sums: readonly RepoBlobSumRow[], refRows: readonly RepoRefRow[]): RepoSummary[] {
  const keyOf = (r: { repo_type: string; repo_id: string }): string => `${r.repo_type}\0${r.repo_id}`;
  const byRepo = new Map(sums.map((r) => [keyOf(r), r]));
  const refs = new Map<string, Record<string, string>>();
  for (const r of refRows) {
    const named = refs.get(keyOf(r)) ?? {};
    named[r.revision] = r.commit_sha;
    refs.set(keyOf(r), named);
  }
  return counts.map((r) => {
    const s = byRepo.get(keyOf(r));
    return {
      repo: { type: r.repo_type as RepoType, id: r.repo_id },
      commits: r.commits,
      files: r.files,
      cachedFiles: r.cached_files,
      cachedBytes: s?.cached_bytes ?? 0,
      lastAccessAt: s?.last_access ?? null,
      hits: s?.hits ?? 0,
      refs: refs.get(keyOf(r)) ?? {},
    };
  });
}
