/**
 * MirrorError → HTTP response in the Hub's style: status from ERROR_TABLE, `X-Error-Code`,
 * `X-Error-Message` and a JSON body `{"error": message}` (what both Python and JS clients parse).
 */
import { ERROR_TABLE, MirrorError, isMirrorError } from '../errors.js';

export function errorResponse(err: unknown): Response {
  const e = isMirrorError(err) ? err : new MirrorError('Internal', 'Internal error');
  const spec = ERROR_TABLE[e.code];
  const message = headerSafe(e.message);
  const headers = new Headers({ 'content-type': 'application/json; charset=utf-8', 'x-error-message': message });
  if (spec.hubCode) headers.set('x-error-code', spec.hubCode);
  for (const [k, v] of Object.entries(e.headers)) headers.set(k, v);
  return new Response(e.status === 304 ? null : JSON.stringify({ error: e.message }), { status: e.status, headers });
}

/** Header values must be latin1 without control characters; messages may quote user input. */
function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 1000);
}
