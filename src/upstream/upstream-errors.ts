/**
 * Upstream answers and network failures → MirrorError, keeping the Hub's codes and the headers
 * clients need (X-Repo-Commit on EntryNotFound, Retry-After on 429/503). An upstream 4xx stays a
 * 4xx: a 5xx would make clients retry and then blame the connection (hf-protocol §5.2).
 */
import { errors as undiciErrors } from 'undici';
import { MirrorError } from '../errors.js';

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

  if (code === 'RevisionNotFound') return new MirrorError('RevisionNotFound', message ?? 'Revision not found', { headers: extra });
  if (code === 'EntryNotFound') return new MirrorError('EntryNotFound', message ?? 'Entry not found', { headers: extra });
  if (code === 'GatedRepo') {
    return new MirrorError(status === 403 ? 'GatedRepoForbidden' : 'GatedRepoUnauthenticated', message ?? `Access to ${what} is restricted`, { headers: extra });
  }
  if (code === 'RepoNotFound') return new MirrorError('RepoNotFound', message ?? 'Repository not found', { headers: extra });
  if (status === 401) return new MirrorError('RepoUnauthenticated', message ?? 'Invalid username or password.', { headers: extra });
  if (status === 404) return new MirrorError('RepoNotFound', message ?? 'Repository not found', { headers: extra });
  if (status === 403) return new MirrorError('Forbidden', message ?? 'Forbidden', { headers: extra });
  if (status === 429) return new MirrorError('RateLimited', message ?? 'Upstream rate limit reached', { headers: extra });
  if (status >= 400 && status < 500) {
    return new MirrorError('UpstreamRejected', message ?? `Upstream answered ${status} for ${what}`, { status, headers: extra });
  }
  return new MirrorError('UpstreamError', `Upstream answered ${status} for ${what}`, { headers: extra });
}

/** A thrown network error (connect refused, DNS, timeout, reset) → 503/504. */
export function fromNetworkError(err: unknown, what: string): MirrorError {
  if (err instanceof MirrorError) return err;
  const name = (err as { name?: string } | null)?.name;
  // An aborted request reports the abort's reason as its cause (AbortSignal.timeout → TimeoutError).
  const causeName = (err as { cause?: { name?: string } } | null)?.cause?.name;
  if (
    name === 'TimeoutError' ||
    causeName === 'TimeoutError' ||
    err instanceof undiciErrors.ConnectTimeoutError ||
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError
  ) {
    return new MirrorError('UpstreamTimeout', `Upstream timed out for ${what}`, { cause: err });
  }
  const code = (err as { code?: string } | null)?.code ?? '';
  const reason = code || (err instanceof Error ? err.name : 'error');
  return new MirrorError('UpstreamUnavailable', `Upstream unreachable for ${what} (${reason})`, { cause: err });
}

/** True for failures that mean "upstream cannot be asked right now" (offline fallback applies). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof MirrorError && (err.code === 'UpstreamUnavailable' || err.code === 'UpstreamTimeout' || err.code === 'UpstreamError');
}
