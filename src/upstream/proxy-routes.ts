/**
 * The outbound proxy: which proxy, if any, a connection to a given upstream URL goes through.
 *
 * Settings come from the usual environment variables, read once at startup by the entry point
 * ({@link proxySettingsFromEnv}) and then passed around as plain values, with the precedence of
 * undici's EnvHttpProxyAgent: `https_proxy`, `HTTPS_PROXY` for https:// targets, falling back to
 * the http proxy; `http_proxy`, `HTTP_PROXY` for http:// targets; `no_proxy`, `NO_PROXY` for the
 * hosts reached directly. A proxy URL without a scheme (`proxy:3128`) means http://, as in curl.
 *
 * NO_PROXY, evaluated per target (the upstream and every redirect hop separately): entries are
 * separated by commas or white space; `*` alone disables the proxy; `host`, `.host` or `*.host`
 * matches that host and every name below it; `:port` after an entry limits it to that port; an IP
 * literal matches itself (IPv6 with or without brackets), a CIDR range (`10.0.0.0/8`, as curl)
 * every IP literal inside it. Names are not resolved for the comparison.
 */
import net from 'node:net';
import ipaddr from 'ipaddr.js';

export interface ProxySettings {
  /** Proxy for http:// targets (`HTTP_PROXY`). */
  httpProxy?: string;
  /** Proxy for https:// targets (`HTTPS_PROXY`); the http proxy when unset. */
  httpsProxy?: string;
  /** Hosts reached without the proxy (`NO_PROXY`). */
  noProxy?: string;
}

/** The proxy environment variables of `env`, unparsed (empty ones are ignored). */
export function proxySettingsFromEnv(env: Record<string, string | undefined>): ProxySettings {
  const pick = (...names: string[]) => names.map((n) => env[n]?.trim()).find((v) => v !== undefined && v !== '');
  const settings: ProxySettings = {};
  const httpProxy = pick('http_proxy', 'HTTP_PROXY');
  const httpsProxy = pick('https_proxy', 'HTTPS_PROXY');
  const noProxy = pick('no_proxy', 'NO_PROXY');
  if (httpProxy) settings.httpProxy = httpProxy;
  if (httpsProxy) settings.httpsProxy = httpsProxy;
  if (noProxy) settings.noProxy = noProxy;
  return settings;
}

/** Problems with the settings (an unparsable proxy URL, an unsupported scheme), one line each. */
export function proxySettingsProblems(settings: ProxySettings): string[] {
  const problems: string[] = [];
  for (const [name, value] of [['HTTP_PROXY', settings.httpProxy], ['HTTPS_PROXY', settings.httpsProxy]] as const) {
    if (value === undefined) continue;
    try {
      parseProxyUrl(value);
    } catch (err) {
      problems.push(`${name}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** A proxy URL for logs: scheme, host and port, never its credentials. */
export function showProxy(proxy: URL): string {
  return `${proxy.protocol}//${proxy.host}${proxy.username || proxy.password ? ' (with credentials)' : ''}`;
}

interface NoProxyEntry {
  /** As written. */
  text: string;
  /** A lower-case host name: matches it and every name below it. */
  host?: string;
  /** An IP literal (full-length prefix) or a CIDR range: matches IP literal targets inside it. */
  cidr?: [ipaddr.IPv4 | ipaddr.IPv6, number];
  /** 0: any port. */
  port: number;
}

export class ProxyRoutes {
  readonly #http: URL | undefined;
  readonly #https: URL | undefined;
  readonly #noProxyAll: boolean;
  readonly #noProxy: NoProxyEntry[];

  /** Throws on a setting {@link proxySettingsProblems} reports. */
  constructor(settings: ProxySettings = {}) {
    this.#http = settings.httpProxy ? parseProxyUrl(settings.httpProxy) : undefined;
    this.#https = settings.httpsProxy ? parseProxyUrl(settings.httpsProxy) : this.#http;
    const text = settings.noProxy?.trim() ?? '';
    this.#noProxyAll = text === '*';
    this.#noProxy = this.#noProxyAll ? [] : text.split(/[,\s]+/).filter(Boolean).map(parseNoProxyEntry);
  }

  /** Whether any proxy is configured at all. */
  get configured(): boolean {
    return this.#http !== undefined || this.#https !== undefined;
  }

  /** What is configured, for the startup log (no credentials). */
  describe(): { httpProxy?: string; httpsProxy?: string; noProxy?: string } {
    const d: { httpProxy?: string; httpsProxy?: string; noProxy?: string } = {};
    if (this.#http) d.httpProxy = showProxy(this.#http);
    if (this.#https) d.httpsProxy = showProxy(this.#https);
    if (this.#noProxyAll) d.noProxy = '*';
    else if (this.#noProxy.length > 0) d.noProxy = this.#noProxy.map((e) => e.text).join(',');
    return d;
  }

  /** The proxy a connection to `target` goes through, or undefined to connect directly. */
  proxyFor(target: URL): URL | undefined {
    const proxy = target.protocol === 'https:' ? this.#https : target.protocol === 'http:' ? this.#http : undefined;
    if (!proxy || this.#noProxyAll) return undefined;
    const host = target.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
    const port = Number(target.port) || (target.protocol === 'https:' ? 443 : 80);
    // An IP literal matches IP entries only, a name matches names only (no suffix match on IPs).
    const ip = net.isIP(host) !== 0 ? ipaddr.parse(host) : undefined;
    for (const e of this.#noProxy) {
      if (e.port !== 0 && e.port !== port) continue;
      if (ip ? e.cidr && ip.kind() === e.cidr[0].kind() && ip.match(e.cidr) : e.host !== undefined && (host === e.host || host.endsWith(`.${e.host}`))) return undefined;
    }
    return proxy;
  }
}

function parseProxyUrl(text: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new Error('not a URL (expected http://[user:password@]host:port)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${url.protocol} proxies are not supported (http:// or https:// only)`);
  if (!url.hostname) throw new Error('the proxy URL names no host');
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) throw new Error('a proxy URL has no path or query (expected http://[user:password@]host:port)');
  return url;
}

function parseNoProxyEntry(raw: string): NoProxyEntry {
  let entry = raw.toLowerCase();
  if (ipaddr.isValidCIDR(entry)) return { text: raw, cidr: ipaddr.parseCIDR(entry), port: 0 };
  let port = 0;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
  const withPort = bracketed || net.isIPv6(entry) ? undefined : /^(.+):(\d+)$/.exec(entry);
  if (bracketed?.[1]) [entry, port] = [bracketed[1], Number(bracketed[2] ?? 0)];
  else if (withPort?.[1]) [entry, port] = [withPort[1], Number(withPort[2])];
  if (net.isIP(entry) !== 0) {
    const ip = ipaddr.parse(entry);
    return { text: raw, cidr: [ip, ip.kind() === 'ipv4' ? 32 : 128], port };
  }
  return { text: raw, host: entry.replace(/^\*?\./, '').replace(/\.$/, ''), port };
}

/** The proxy URL without its credentials: what the connection libraries are given. */
export function proxyEndpoint(proxy: URL): URL {
  const bare = new URL(proxy.href);
  bare.username = '';
  bare.password = '';
  return bare;
}

/** `Proxy-Authorization` for a proxy URL with credentials (Basic, from the URL only), else undefined. */
export function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username && !proxy.password) return undefined;
  return `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}`;
}
