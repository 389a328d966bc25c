/**
 * What the PostgreSQL cache index makes of errors: which ones are a passing condition (the server
 * unreachable, restarting, out of connections: the write waits and is retried), and how the
 * index URL is shown (never with its password: in an error, a log line or an event).
 */

/** SQLSTATEs that say "not now": the server shutting down or starting, too many connections, connection failures (class 08). */
const TRANSIENT_SQLSTATE = /^(57P01|57P02|57P03|53300|08...)$/;
/** Socket-level failures (connect, DNS, a connection cut in the middle). */
const TRANSIENT_ERRNO = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED']);
/** node-postgres' own errors without a code: a connection that ended, a connect or query timeout. */
const TRANSIENT_MESSAGE = /Connection terminated|connection error and is not queryable|Client was closed and is not queryable|timeout exceeded when trying to connect|Query read timeout|Connection ended/i;

/** True for an error that says the database cannot take the request now (retry later), not that the request is wrong. */
export function isTransientPgError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; errors?: unknown } | null;
  if (!e || typeof e !== 'object') return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (TRANSIENT_SQLSTATE.test(code) || TRANSIENT_ERRNO.has(code)) return true;
  // A connect to a name with several addresses fails with an AggregateError of socket errors.
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(isTransientPgError)) return true;
  return typeof e.message === 'string' && TRANSIENT_MESSAGE.test(e.message);
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db` (unchanged when it has no password or does not parse). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password === '') return url;
    u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/**
 * A function that removes `url`'s password from any text, as written and percent-decoded
 * (a driver or server may quote either). The identity when the URL has none.
 */
export function passwordScrubber(url: string): (text: string) => string {
  let secrets: string[] = [];
  try {
    const raw = new URL(url).password;
    if (raw !== '') secrets = [...new Set([raw, safeDecode(raw)])].sort((a, b) => b.length - a.length);
  } catch {
    // An unparsable URL is refused before it is used; nothing to scrub.
  }
  return (text) => secrets.reduce((t, s) => t.split(s).join('***'), text);
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** `CODE: message` of an error, for events and logs (scrubbed by the caller). */
export function pgErrorText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : 'error';
  return `${code}: ${typeof e?.message === 'string' ? e.message : String(err)}`;
}
