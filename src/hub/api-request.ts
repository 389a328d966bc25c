/**
 * Pure parsing of Hub API request targets: which endpoint, repo, revision and
 * path a raw `/api/...` path names, the canonical query and paths-info body the cache keys on, and
 * the upstream path for a given revision. Nothing here touches the network or the disk.
 *
 * Only the endpoints the mirror caches are recognised in detail (repo info, `revision`, `tree`,
 * `paths-info`); Xet token routes are singled out to be refused; everything else is `other` and
 * passed through as sent.
 */
import { createHash } from 'node:crypto';
import { MirrorError } from '../errors.js';
import { apiTypeSegment, encodePath, printable, validatePath, validateRepoId, validateRevision, type RepoRef, type RepoType } from './repo-ref.js';

export type ApiTarget =
  /** `/api/{type}s/{repo}`: repo info at the default branch. */
  | { kind: 'info'; repo: RepoRef }
  /** `/api/{type}s/{repo}/revision/{rev}`. */
  | { kind: 'revision'; repo: RepoRef; revision: string }
  /** `/api/{type}s/{repo}/tree/{rev}[/{path}]`; `path` is `''` for the root. */
  | { kind: 'tree'; repo: RepoRef; revision: string; path: string }
  /** `POST /api/{type}s/{repo}/paths-info/{rev}`. */
  | { kind: 'paths-info'; repo: RepoRef; revision: string }
  /** Any `xet-*-token` route: refused, never proxied (its answer sends clients off the mirror). */
  | { kind: 'xet-token' }
  /** Anything else under `/api/`: passed through as sent. */
  | { kind: 'other' };

const TYPE_OF_PLURAL: Record<string, RepoType> = { models: 'model', datasets: 'dataset', spaces: 'space' };

/** Markers of the endpoints parsed here, and of other repo endpoints (so `name/refs` is never read as repo `name/refs`). */
const CACHED_MARKERS = new Set(['revision', 'tree', 'paths-info']);
const OTHER_MARKERS = new Set([
  'refs',
  'commits',
  'commit',
  'auth-check',
  'lfs-files',
  'discussions',
  'preupload',
  'branch',
  'tag',
  'treesize',
  'last-commit',
  'super-squash',
  'settings',
  'compare',
  'scan',
  'notebook',
]);
const REF_NAMESPACES = new Set(['pr', 'convert', 'heads', 'tags']);

function decode(raw: string, code: 'InvalidRevision' | 'InvalidPath' | 'InvalidRepoId'): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new MirrorError(code, `Malformed percent-encoding: ${printable(raw)}`);
  }
}

/**
 * Classifies a raw (still percent-encoded) request path below `/api/`. Throws a 400 MirrorError
 * when a recognised endpoint has an invalid repo id, revision or path, when the path has dot
 * segments (which URL resolution would silently apply upstream), malformed percent-encoding, or
 * does not literally start with `/api/`: the router matched a normalised form of it
 * (`/x/../api/...`, `/%61pi/...`), and passing that through would skip the checks made here.
 */
export function parseApiPath(rawPath: string): ApiTarget {
  const segs = rawPath.split('/').slice(1);
  const invalid = () => new MirrorError('InvalidPath', `Invalid API path: ${printable(rawPath)}`);
  for (const s of segs) {
    const d = safeDecode(s);
    if (d.split(/[/\\]/).some((part) => part === '.' || part === '..')) throw invalid();
  }
  if (segs[0] !== 'api') throw invalid();
  for (const s of segs) {
    if (/^xet-[a-z-]*token$/i.test(safeDecode(s))) return { kind: 'xet-token' };
  }
  const type = segs[1] === undefined ? undefined : TYPE_OF_PLURAL[segs[1]];
  if (!type) return other(segs, invalid);
  const rest = segs.slice(2);

  for (const n of [2, 1]) {
    const marker = rest[n];
    if (marker === undefined || !CACHED_MARKERS.has(marker) || rest.length <= n + 1) continue;
    const repo: RepoRef = { type, id: validateRepoId(rest.slice(0, n).map((s) => decode(s, 'InvalidRepoId')).join('/')) };
    const after = rest.slice(n + 1);
    if (marker === 'tree') {
      const { revision, remaining } = takeRevision(after);
      const path = remaining.map((s) => decode(s, 'InvalidPath')).join('/');
      return { kind: 'tree', repo, revision, path: path === '' ? '' : validatePath(path) };
    }
    // `revision/{rev}` and `paths-info/{rev}`: everything after the marker is the revision,
    // encoded (`refs%2Fpr%2F1`) or not (`refs/pr/1`).
    const revision = validateRevision(after.map((s) => decode(s, 'InvalidRevision')).join('/'));
    return marker === 'revision' ? { kind: 'revision', repo, revision } : { kind: 'paths-info', repo, revision };
  }
  const bare = rest.length === 1 || (rest.length === 2 && !OTHER_MARKERS.has(rest[1] ?? '') && !CACHED_MARKERS.has(rest[1] ?? ''));
  if (bare && rest.every((s) => s !== '')) {
    return { kind: 'info', repo: { type, id: validateRepoId(rest.map((s) => decode(s, 'InvalidRepoId')).join('/')) } };
  }
  return other(segs, invalid);
}

/** A passed-through path: sent upstream as is, so it must at least be validly percent-encoded. */
function other(segs: string[], invalid: () => MirrorError): ApiTarget {
  for (const s of segs) {
    try {
      decodeURIComponent(s);
    } catch {
      throw invalid();
    }
  }
  return { kind: 'other' };
}

/**
 * Takes the revision off the front of tree segments: one segment (decoded, so `refs%2Fpr%2F1`
 * works), or three for an unencoded `refs/pr/N`, `refs/convert/x` (JS `listFiles` does not encode).
 */
function takeRevision(segs: string[]): { revision: string; remaining: string[] } {
  let revision = decode(segs[0] ?? '', 'InvalidRevision');
  let used = 1;
  if (revision === 'refs' && REF_NAMESPACES.has(segs[1] ?? '') && segs.length >= 3) {
    revision = ['refs', ...segs.slice(1, 3).map((s) => decode(s, 'InvalidRevision'))].join('/');
    used = 3;
  }
  const remaining = segs.slice(used);
  // A trailing slash (`tree/main/`) names the root.
  return { revision: validateRevision(revision), remaining: remaining.length === 1 && remaining[0] === '' ? [] : remaining };
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Query parameters each cached endpoint understands; a request with any other is passed through uncached. */
const CACHEABLE_PARAMS: Record<'info' | 'revision' | 'tree', ReadonlySet<string>> = {
  info: new Set(['expand', 'expand[]', 'blobs', 'files_metadata', 'securityStatus']),
  revision: new Set(['expand', 'expand[]', 'blobs', 'files_metadata', 'securityStatus']),
  tree: new Set(['recursive', 'expand', 'cursor', 'limit']),
};

/**
 * The query string a cached answer is keyed on and asked upstream with (parameters in the order
 * sent, re-encoded), or `null` when the query has a parameter outside the endpoint's list.
 */
export function canonicalQuery(kind: 'info' | 'revision' | 'tree', rawQuery: string): string | null {
  const params = new URLSearchParams(rawQuery);
  for (const key of params.keys()) if (!CACHEABLE_PARAMS[kind].has(key)) return null;
  return params.toString();
}

/**
 * True when a repo-info answer to this query names its commit: the full answer always has `sha`;
 * with `expand`, only when `sha` is one of the expanded fields.
 */
export function infoCarriesSha(query: string): boolean {
  const params = new URLSearchParams(query);
  const expand = [...params.getAll('expand'), ...params.getAll('expand[]')];
  return expand.length === 0 || expand.includes('sha');
}

/** What a paths-info request asks, whatever its encoding. */
export interface PathsInfoQuery {
  paths: string[];
  expand: boolean;
}

const TRUE_VALUES = new Set(['true', 'True', '1']);

/**
 * Parses a paths-info body: form-encoded (`paths=a&paths=b&expand=true`, Python) or JSON
 * (`{"paths": [...], "expand": true}`, JS). Throws InvalidRequest when it is neither.
 */
export function parsePathsInfoBody(body: Buffer, contentType: string | undefined): PathsInfoQuery {
  const text = body.toString('utf8');
  if ((contentType ?? '').toLowerCase().includes('json')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new MirrorError('InvalidRequest', 'paths-info: the body is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new MirrorError('InvalidRequest', 'paths-info: expected a JSON object {"paths": [...], "expand": bool}');
    }
    const { paths, expand } = parsed as { paths?: unknown; expand?: unknown };
    const list = typeof paths === 'string' ? [paths] : paths;
    if (!Array.isArray(list) || !list.every((p): p is string => typeof p === 'string')) {
      throw new MirrorError('InvalidRequest', 'paths-info: "paths" must be a list of strings');
    }
    return { paths: list, expand: expand === true || (typeof expand === 'string' && TRUE_VALUES.has(expand)) || expand === 1 };
  }
  const form = new URLSearchParams(text);
  return { paths: [...form.getAll('paths'), ...form.getAll('paths[]')], expand: TRUE_VALUES.has(form.get('expand') ?? '') };
}

/** The body the mirror sends upstream for a paths-info question (JSON; the Hub takes both forms). */
export function pathsInfoBody(q: PathsInfoQuery): Buffer {
  return Buffer.from(JSON.stringify({ paths: q.paths, expand: q.expand }));
}

/** A cacheable API question, independent of the revision it is asked at. */
export type ApiQuestion =
  | { kind: 'info'; query: string }
  | { kind: 'tree'; path: string; query: string }
  | { kind: 'paths-info'; body: PathsInfoQuery };

/**
 * The key of a question in the index (together with repo and commit). Repo info asked with or
 * without a revision is the same question once the revision is a commit.
 */
export function questionKey(q: ApiQuestion): string {
  switch (q.kind) {
    case 'info':
      return JSON.stringify(['revision', q.query]);
    case 'tree':
      return JSON.stringify(['tree', q.path, q.query]);
    case 'paths-info':
      return JSON.stringify(['paths-info', createHash('sha256').update(JSON.stringify([q.body.paths, q.body.expand])).digest('hex')]);
  }
}

/**
 * The upstream path + query of a question at `revision`; `revision` undefined means the repo's
 * default branch as the client asked it (`/api/{type}s/{repo}` without a revision).
 */
export function upstreamApiPath(repo: RepoRef, q: ApiQuestion, revision: string | undefined): string {
  const base = `/api/${apiTypeSegment(repo.type)}/${repo.id}`;
  const withQuery = (p: string, query: string) => (query ? `${p}?${query}` : p);
  const rev = revision === undefined ? undefined : encodeURIComponent(revision);
  switch (q.kind) {
    case 'info':
      return withQuery(rev === undefined ? base : `${base}/revision/${rev}`, q.query);
    case 'tree':
      return withQuery(`${base}/tree/${rev ?? 'main'}${q.path ? `/${encodePath(q.path)}` : ''}`, q.query);
    case 'paths-info':
      return `${base}/paths-info/${rev ?? 'main'}`;
  }
}
