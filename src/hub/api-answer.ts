/**
 * ApiAnswer: a Hub API answer as the mirror hands it on, in a form that does not depend on the
 * mirror's own origin (URLs on upstream are kept as upstream paths; the absolute mirror URL is
 * built per request), with the Xet hygiene applied (no Xet hints reach clients):
 *
 * - `xetHash` removed from JSON bodies (tree and paths-info entries, anywhere else too);
 * - `X-Xet-*` headers dropped, and `Link` relations `xet-*` (xet-auth, xet-reconstruction-info);
 * - hop-by-hop headers, `Content-Length`/`Content-Encoding` (the body is re-framed and decoded),
 *   cookies and upstream's request id dropped.
 * Pure: no I/O.
 */

/** A URL in an answer: on upstream (kept as its path + query, rebased on the mirror when sent) or elsewhere. */
export type UrlRef = { upstreamPath: string } | { absolute: string };

export interface LinkRef {
  url: UrlRef;
  /** Link parameters as sent, e.g. `['rel="next"']`. */
  params: string[];
}

export interface ApiAnswer {
  status: number;
  /** Lower-case names; never Link, Location or framing headers. */
  headers: Record<string, string>;
  body: Buffer;
  links: LinkRef[];
  location?: UrlRef;
  /** hit: from the index; miss: asked upstream and stored; pass: asked upstream, not stored; stale: from the index because upstream is unreachable. */
  source: 'hit' | 'miss' | 'pass' | 'stale';
}

/** Upstream answer fields this module reads (see HubClient.requestApi). */
export interface RawAnswer {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** Never relayed: framing (recomputed), cookies, upstream's own ids and transport policy. */
const DROPPED = new Set(['content-length', 'content-encoding', 'set-cookie', 'x-request-id', 'date', 'server', 'alt-svc', 'strict-transport-security', 'link', 'location', 'via']);

/** Removes every `xetHash` key, at any depth. Returns the same value when there was none. */
export function stripXetHash(value: unknown): { value: unknown; changed: boolean } {
  if (Array.isArray(value)) {
    let changed = false;
    const out = value.map((v) => {
      const r = stripXetHash(v);
      changed ||= r.changed;
      return r.value;
    });
    return changed ? { value: out, changed } : { value, changed };
  }
  if (typeof value === 'object' && value !== null) {
    let changed = false;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'xetHash') {
        changed = true;
        continue;
      }
      const r = stripXetHash(v);
      changed ||= r.changed;
      out[k] = r.value;
    }
    return changed ? { value: out, changed } : { value, changed };
  }
  return { value, changed: false };
}

/** A JSON body without `xetHash`; bytes unchanged when there is nothing to remove or it is not JSON. */
export function stripXetFromBody(body: Buffer): Buffer {
  if (!body.includes('xetHash')) return body;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return body;
  }
  const r = stripXetHash(parsed);
  return r.changed ? Buffer.from(JSON.stringify(r.value)) : body;
}

/** Parses a `Link` header value into its entries (`<url>; param; param, <url>; ...`). */
export function parseLinkHeader(value: string): Array<{ url: string; params: string[] }> {
  const out: Array<{ url: string; params: string[] }> = [];
  for (const m of value.matchAll(/<([^>]*)>([^<]*)/g)) {
    const params = (m[2] ?? '')
      .replace(/,\s*$/, '')
      .split(';')
      .map((p) => p.trim())
      .filter((p) => p !== '');
    out.push({ url: m[1] ?? '', params });
  }
  return out;
}

/** The relation types of a link's parameters (`rel="next prev"` → `['next', 'prev']`). */
export function linkRels(params: string[]): string[] {
  for (const p of params) {
    const m = /^rel\s*=\s*(?:"([^"]*)"|([^\s;,]+))$/i.exec(p);
    if (m) return (m[1] ?? m[2] ?? '').toLowerCase().split(/\s+/).filter(Boolean);
  }
  return [];
}

/** Xet relations (`xet-auth`, `xet-reconstruction-info`, any `xet-*`) send clients off the mirror. */
export function isXetLink(params: string[]): boolean {
  return linkRels(params).some((r) => r.startsWith('xet-'));
}

/**
 * Upstream answer → ApiAnswer. `toUpstreamPath` maps a URL from the answer (absolute, or relative
 * to the request) to its path below the upstream base, or undefined when it points elsewhere.
 * `repoScoped`: the request named a repo, so a bare 401 gets `X-Error-Code: RepoNotFound` (an
 * http:// mirror must name it: huggingface_hub reads a bare 401 from a non-Hub host as a bad token).
 */
export function toApiAnswer(raw: RawAnswer, toUpstreamPath: (url: string) => string | undefined, opts: { repoScoped: boolean }): ApiAnswer {
  const headers: Record<string, string> = {};
  const connectionTokens = new Set(
    headerList(raw.headers.connection)
      .flatMap((v) => v.split(','))
      .map((t) => t.trim().toLowerCase()),
  );
  for (const [name, value] of Object.entries(raw.headers)) {
    const n = name.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(n) || DROPPED.has(n) || connectionTokens.has(n) || n.startsWith('x-xet-')) continue;
    headers[n] = Array.isArray(value) ? value.join(', ') : value;
  }
  if (/xet/i.test(headers['content-type'] ?? '')) headers['content-type'] = 'application/json; charset=utf-8';
  const exposed = headers['access-control-expose-headers'];
  if (exposed !== undefined) {
    headers['access-control-expose-headers'] = exposed
      .split(',')
      .map((h) => h.trim())
      .filter((h) => h !== '' && !/^x-xet-/i.test(h))
      .join(',');
  }

  const links: LinkRef[] = [];
  for (const v of headerList(raw.headers.link)) {
    for (const { url, params } of parseLinkHeader(v)) {
      if (isXetLink(params)) continue;
      links.push({ url: urlRef(url, toUpstreamPath), params });
    }
  }
  const loc = headerList(raw.headers.location)[0];
  const answer: ApiAnswer = { status: raw.statusCode, headers, body: stripXetFromBody(raw.body), links, source: 'pass' };
  if (loc !== undefined) answer.location = urlRef(loc, toUpstreamPath);
  if (opts.repoScoped && raw.statusCode === 401 && !headers['x-error-code'] && headers['x-error-message'] !== 'Invalid credentials in Authorization header') {
    headers['x-error-code'] = 'RepoNotFound';
  }
  return answer;
}

function urlRef(url: string, toUpstreamPath: (url: string) => string | undefined): UrlRef {
  const upstreamPath = toUpstreamPath(url);
  return upstreamPath === undefined ? { absolute: url } : { upstreamPath };
}

function headerList(v: string | string[] | undefined): string[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

/** A URL as sent to the client: upstream paths rebased on the mirror's origin. */
export function renderUrl(ref: UrlRef, mirrorOrigin: string): string {
  return 'upstreamPath' in ref ? `${mirrorOrigin}${ref.upstreamPath}` : ref.absolute;
}

/**
 * The `Link` header for the client, or undefined. Entries are written `<url>; rel="next"`: exactly
 * one space after `;`, which @huggingface/hub's parser requires (`>;\s+rel=`).
 */
export function renderLinks(links: LinkRef[], mirrorOrigin: string): string | undefined {
  if (links.length === 0) return undefined;
  return links.map((l) => [`<${renderUrl(l.url, mirrorOrigin)}>`, ...l.params].join('; ')).join(', ');
}

/** The `rel="next"` page of an answer as an upstream path, if it has one on upstream. */
export function nextPage(links: LinkRef[]): string | undefined {
  const next = links.find((l) => linkRels(l.params).includes('next'));
  return next && 'upstreamPath' in next.url ? next.url.upstreamPath : undefined;
}
