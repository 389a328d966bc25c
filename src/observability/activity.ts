/**
 * Activity: what the dashboard shows besides the counters: the last errors, the repos that
 * served the most bytes, and a history of the totals (hit ratio and bytes saved over time).
 *
 * Bounded memory whatever the traffic: RECENT_ERRORS errors, MAX_REPOS repos (the smallest is
 * dropped for a new one), HISTORY samples. Only file responses that succeeded name a repo here,
 * so junk URLs never take a slot. Names are kept for the holder of the metrics token; whoever
 * builds the status decides whether to show them.
 */
import type { RequestOutcome } from '../http/request-log.js';
import { routeOf, type Totals } from './metrics.js';

const RECENT_ERRORS = 20;
const MAX_REPOS = 500;
const HISTORY = 360;

export interface RecentError {
  /** Wall-clock ms. */
  at: number;
  status: number | undefined;
  code: string | undefined;
  /** `request` (an error response) or `fill` (a download that failed; its clients got the error). */
  kind: 'request' | 'fill';
  method?: string;
  /** The request path, or the blob of a fill (names: shown to the metrics token holder only). */
  path: string;
  message: string | undefined;
}

export interface RepoActivity {
  /** `models/org/name`, `datasets/…`, `spaces/…`. */
  repo: string;
  requests: number;
  hits: number;
  bytes: number;
}

export interface HistorySample {
  at: number;
  totals: Totals;
}

/** The repo of a file URL path (`/org/name/resolve/…`, `/datasets/org/name/raw/…`), if it is one. */
export function repoOfFilePath(path: string): string | undefined {
  const m = /^\/(?:(datasets|spaces)\/)?([^/]+(?:\/[^/]+)?)\/(?:resolve|raw)\//.exec(path);
  if (!m?.[2]) return undefined;
  return `${m[1] ?? 'models'}/${m[2]}`;
}

export class Activity {
  readonly #errors: RecentError[] = [];
  readonly #repos = new Map<string, RepoActivity>();
  readonly #history: HistorySample[] = [];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A response closed (the request log's observer). */
  request(r: RequestOutcome): void {
    const route = routeOf(r.path);
    // Errors of downloads and API calls; not the dashboard's own 401s, health probes or stray URLs.
    if (r.status >= 400 && (route === 'file' || route === 'api')) {
      this.#pushError({ at: this.#now(), status: r.status, code: r.errorCode, kind: 'request', method: r.method, path: r.path, message: r.errorMessage });
      return;
    }
    if (r.status >= 400 || r.method !== 'GET' || route !== 'file') return;
    const repo = repoOfFilePath(r.path);
    if (!repo) return;
    let row = this.#repos.get(repo);
    if (!row) {
      if (this.#repos.size >= MAX_REPOS) this.#dropSmallestRepo();
      row = { repo, requests: 0, hits: 0, bytes: 0 };
      this.#repos.set(repo, row);
    }
    row.requests++;
    if (r.cacheStatus === 'hit') row.hits++;
    row.bytes += r.bytes;
  }

  /** A fill failed (its clients got the error, or a cut body). */
  fillFailed(blob: string, code: string | undefined, message: string | undefined): void {
    this.#pushError({ at: this.#now(), status: undefined, code, kind: 'fill', path: blob, message });
  }

  /** Records the totals now (called on a timer). */
  sample(totals: Totals): void {
    this.#history.push({ at: this.#now(), totals });
    if (this.#history.length > HISTORY) this.#history.shift();
  }

  /** Newest first. */
  recentErrors(): RecentError[] {
    return [...this.#errors].reverse();
  }

  topRepos(n: number): RepoActivity[] {
    return [...this.#repos.values()].sort((a, b) => b.bytes - a.bytes || b.requests - a.requests).slice(0, n);
  }

  history(): HistorySample[] {
    return [...this.#history];
  }

  #pushError(e: RecentError): void {
    this.#errors.push(e);
    if (this.#errors.length > RECENT_ERRORS) this.#errors.shift();
  }

  #dropSmallestRepo(): void {
    let smallest: RepoActivity | undefined;
    for (const r of this.#repos.values()) if (!smallest || r.bytes < smallest.bytes) smallest = r;
    if (smallest) this.#repos.delete(smallest.repo);
  }
}
