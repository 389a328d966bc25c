/**
 * The mirror's own origin as a client should see it, for URLs the mirror writes into answers
 * (pagination `Link`, rebased `Location`). Only for building responses: the Host header never
 * selects what is cached or which upstream is asked (threat T18), and cached answers store
 * upstream paths, not origins.
 *
 * Order: the configured `publicUrl`; else `http://` + the request's Host header when it is a
 * plain host[:port] (so clients reaching the mirror by another name or port follow pages on it);
 * else the listen address.
 */

// A DNS name, an IPv4 address or a bracketed IPv6 address, then an optional port.
const HOST_RE = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]{2,45}\])(?::(\d{1,5}))?$/i;

/** True when `host` is a plain `host[:port]` with nothing that could smuggle a path, userinfo or scheme. */
export function isPlainHost(host: string): boolean {
  if (host.length > 260) return false;
  const m = HOST_RE.exec(host);
  if (!m) return false;
  const port = m[1];
  return port === undefined || (Number(port) >= 1 && Number(port) <= 65535);
}

export function publicOrigin(publicUrl: string, hostHeader: string | undefined, listenUrl: string): string {
  if (publicUrl) return publicUrl.replace(/\/+$/, '');
  if (hostHeader !== undefined && isPlainHost(hostHeader)) return `http://${hostHeader.toLowerCase()}`;
  return listenUrl.replace(/\/+$/, '');
}
