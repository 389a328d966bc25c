/**
 * Upstream answers and network failures → MirrorError, keeping the Hub's codes and the headers
 * clients need (X-Repo-Commit on EntryNotFound, Retry-After on 429/503). An upstream 4xx stays a
 * 4xx: a 5xx would make clients retry and then blame the connection.
 */
import { MirrorError } from '../errors.js';
import { ForbiddenAddressError } from './redirect-policy.js';
import { retryAfterSeconds } from './retry-policy.js';

export type HeaderValue = string | string[] | undefined;
export type Headers = Record<string, HeaderValue>;

export function headerValue(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Strips anything that could break a response header; upstream text is untrusted. */
function clean(text: string | undefined, max = 500): string | undefined {
  if (text === undefined) return undefined;
  // eslint-disable-next-line no-control-regex
  const t = text.replace(/[\x00-\x1f\x7f]/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max)}…` : t;
}

export function fromUpstreamStatus(status: number, headers: Headers, what: string): MirrorError {
  const code = headerValue(headers, 'x-error-code');
  const message = clean(headerValue(headers, 'x-error-message'));
  const commit = headerValue(headers, 'x-repo-commit');
  const extra: Record<string, string> = {};
  if (commit && /^[0-9a-f]{40}$/.test(commit)) extra['X-Repo-Commit'] = commit;
  const retryAfter = clean(headerValue(headers, 'retry-after'), 40);
  if (retryAfter && /^[\w ,:]+$/.test(retryAfter)) extra['Retry-After'] = retryAfter;
  else {
    // The Hub's `RateLimit: "api";r=0;t=55` says the same thing: clients only understand Retry-After.
    const hinted = retryAfterSeconds(headers);
    if (hinted) extra['Retry-After'] = hinted;
  }

  if (code === 'RevisionNotFound') return new MirrorError('RevisionNotFound', message ?? 'Revision not found', { headers: extra });
  if (code === 'EntryNotFound') return new MirrorError('EntryNotFound', message ?? 'Entry not found', { headers: extra });
  if (code === 'GatedRepo') {
    return new MirrorError(status === 403 ? 'GatedRepoForbidden' : 'GatedRepoUnauthenticated', message ?? `Access to ${what} is restricted`, { headers: extra });
  }
  // A 401 naming RepoNotFound is the Hub's anonymous "missing or private" as an http:// mirror
  // relays it (another hubcache upstream, a core in front of this edge, adds the code: see
  // RepoUnauthenticated in errors.ts): it stays a 401, as the Hub answered it.
  if (code === 'RepoNotFound') {
    return status === 401
      ? new MirrorError('RepoUnauthenticated', message ?? 'Invalid username or password.', { headers: extra })
      : new MirrorError('RepoNotFound', message ?? 'Repository not found', { headers: extra });
  }
  if (status === 401) return new MirrorError('RepoUnauthenticated', message ?? 'Invalid username or password.', { headers: extra });
  if (status === 404) return new MirrorError('RepoNotFound', message ?? 'Repository not found', { headers: extra });
  if (status === 403) return new MirrorError('Forbidden', message ?? 'Forbidden', { headers: extra });
  if (status === 429) return new MirrorError('RateLimited', message ?? 'Upstream rate limit reached', { headers: extra });
  if (status >= 400 && status < 500) {
    return new MirrorError('UpstreamRejected', message ?? `Upstream answered ${status} for ${what}`, { status, headers: extra });
  }
  const failure = serverFailure(status, what, extra);
  serverFailures.add(failure);
  return failure;
}

/** Errors made from a 5xx answer: upstream is failing (see isUnhealthy). */
const serverFailures = new WeakSet<MirrorError>();

function serverFailure(status: number, what: string, extra: Record<string, string>): MirrorError {
  // Upstream's own "unavailable" and "timeout" stay what they are (with their Retry-After): the
  // client's backoff is the right answer to them. Anything else 5xx is upstream's fault: 502.
  if (status === 503) return new MirrorError('UpstreamUnavailable', `Upstream answered 503 (unavailable) for ${what}`, { headers: extra });
  if (status === 504) return new MirrorError('UpstreamTimeout', `Upstream answered 504 (gateway timeout) for ${what}`, { headers: extra });
  return new MirrorError('UpstreamError', `Upstream answered ${status} for ${what}`, { headers: extra });
}

/** undici's ConnectTimeoutError, HeadersTimeoutError and BodyTimeoutError. */
const UNDICI_TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** A thrown network error (connect refused, DNS, timeout, reset) → 503/504. */
export function fromNetworkError(err: unknown, what: string): MirrorError {
  if (err instanceof MirrorError) return err;
  const refused = forbiddenAddressOf(err);
  if (refused) return new MirrorError('UpstreamError', `Upstream redirect refused: ${refused.message}`, { cause: err });
  const name = (err as { name?: string } | null)?.name;
  // An aborted request reports the abort's reason as its cause (AbortSignal.timeout → TimeoutError).
  const causeName = (err as { cause?: { name?: string } } | null)?.cause?.name;
  const code = (err as { code?: string } | null)?.code ?? '';
  // undici's timeouts by their codes, not their classes: the same whichever undici copy threw them.
  if (name === 'TimeoutError' || causeName === 'TimeoutError' || UNDICI_TIMEOUTS.has(code)) {
    return new MirrorError('UpstreamTimeout', `Upstream timed out for ${what}`, { cause: err });
  }
  const reason = code || (err instanceof Error ? err.name : 'error');
  return new MirrorError('UpstreamUnavailable', `Upstream unreachable for ${what} (${reason})`, { cause: err });
}

/** True for failures that mean "upstream cannot be asked right now" (offline fallback applies). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof MirrorError && (err.code === 'UpstreamUnavailable' || err.code === 'UpstreamTimeout' || err.code === 'UpstreamError');
}

/**
 * True for failures that say the upstream itself is failing, so another upstream may be asked: a
 * connect error, reset or timeout (a network error behind it), or a 5xx answer. Not an answer
 * about the file (4xx), not a refused redirect, not offline mode.
 */
export function isUnhealthy(err: unknown): boolean {
  if (!(err instanceof MirrorError)) return false;
  if (serverFailures.has(err)) return true;
  if (err.code !== 'UpstreamUnavailable' && err.code !== 'UpstreamTimeout') return false;
  return err.cause !== undefined && forbiddenAddressOf(err.cause) === undefined;
}

/** The ForbiddenAddressError behind `err` (undici may wrap the connect error), if any. */
function forbiddenAddressOf(err: unknown): ForbiddenAddressError | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof ForbiddenAddressError) return e;
  }
  return undefined;
}
