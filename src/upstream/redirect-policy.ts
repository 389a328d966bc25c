/**
 * Where an upstream redirect may send the mirror (SSRF guard, test plan S8/T23).
 *
 * The upstream itself is configuration and trusted. Every hop that leaves its origin must:
 * 1. be `http:` or `https:`;
 * 2. name a host allowed by `allowedRedirectHosts` (globs, see {@link HostPattern}) or the
 *    upstream's own host name (any port);
 * 3. unless `allowPrivateRedirects`, not be a loopback, private, link-local, unique-local,
 *    unspecified, multicast or otherwise reserved address — neither as an IP literal in the URL
 *    nor as any address its name resolves to.
 *
 * Address ranges are ipaddr.js's (IANA's special-purpose registries): only global unicast
 * addresses pass, and an IPv4 address carried inside IPv6 is judged as IPv4 (see
 * {@link forbiddenAddress}).
 *
 * Resolved addresses are checked inside the connection's own DNS lookup (`lookup` of the socket
 * the request then uses; see {@link RedirectPolicy.lookup}), not by a separate resolution before
 * connecting: there is no window between the check and the connect for a DNS-rebinding answer to
 * slip into (no TOCTOU). The price: the refusal surfaces as a connect error (mapped to a 502
 * UpstreamError naming the address), and a name that resolves to several addresses is refused as
 * soon as one of them is forbidden, even if the others are public. Through an outbound proxy the
 * proxy resolves the name: there the mirror resolves and checks it first
 * ({@link RedirectPolicy.checkResolved}), accepting a small rebinding window.
 */
import dns from 'node:dns';
import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { MirrorError } from '../errors.js';

/** Thrown by the redirect policy's DNS guard when a redirect target resolves to a forbidden address. */
export class ForbiddenAddressError extends Error {
  readonly code = 'ERR_HUBCACHE_FORBIDDEN_ADDRESS';
  constructor(message: string) {
    super(message);
    this.name = 'ForbiddenAddressError';
  }
}

/** The Hub's own domains: the site, its LFS CDN (`cdn-lfs*.hf.co`) and the Xet bridges (`cas-bridge.xethub.hf.co`). */
export const DEFAULT_REDIRECT_HOSTS: readonly string[] = ['huggingface.co', '*.huggingface.co', 'hf.co', '*.hf.co', '*.xethub.hf.co'];

/**
 * One entry of `allowedRedirectHosts`: `host`, `*.domain` (any name below `domain`, at any depth,
 * not `domain` itself), optionally followed by `:port` (only that port) or `:*`. IPv6 literals in
 * brackets: `[fd00::1]:8080`. Case-insensitive; a trailing dot is ignored.
 */
export class HostPattern {
  readonly #suffix: string | undefined;
  readonly #host: string | undefined;
  readonly #port: string | undefined;

  constructor(readonly text: string) {
    const m = /^(\*\.)?(\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.?(?::(\d{1,5}|\*))?$/i.exec(text.trim());
    const port = m?.[3];
    const bracketed = m?.[2]?.startsWith('[') ? m[2].slice(1, -1) : undefined;
    if (!m?.[2] || (bracketed !== undefined && (m[1] || net.isIP(bracketed) !== 6)) || (port !== undefined && port !== '*' && (Number(port) < 1 || Number(port) > 65535))) {
      throw new Error(`${JSON.stringify(text)} is not a host pattern (host, *.domain, [IPv6], optionally :port with a port from 1 to 65535 or *)`);
    }
    const host = m[2].toLowerCase();
    if (m[1]) this.#suffix = `.${host}`;
    else this.#host = host.startsWith('[') ? host.slice(1, -1) : host;
    this.#port = m[3] === '*' ? undefined : m[3];
  }

  matches(hostname: string, port: string): boolean {
    if (this.#port !== undefined && this.#port !== port) return false;
    return this.#suffix !== undefined ? hostname.endsWith(this.#suffix) : hostname === this.#host;
  }
}

export interface RedirectPolicyOptions {
  upstream: URL;
  allowedHosts: readonly string[];
  allowPrivate: boolean;
}

export class RedirectPolicy {
  readonly #upstream: URL;
  readonly #patterns: HostPattern[];
  readonly #allowPrivate: boolean;

  constructor(opts: RedirectPolicyOptions) {
    this.#upstream = opts.upstream;
    this.#patterns = opts.allowedHosts.map((p) => new HostPattern(p));
    this.#allowPrivate = opts.allowPrivate;
  }

  get allowPrivate(): boolean {
    return this.#allowPrivate;
  }

  /** Throws an UpstreamError (502) unless the mirror may follow a redirect to `target`. */
  check(target: URL, shown: string): void {
    if (target.protocol !== 'https:' && target.protocol !== 'http:') {
      throw new MirrorError('UpstreamError', `Upstream redirect to a ${target.protocol} URL refused`);
    }
    if (target.origin === this.#upstream.origin) return;
    const hostname = bareHost(target.hostname);
    const port = target.port || (target.protocol === 'https:' ? '443' : '80');
    const allowed = hostname === bareHost(this.#upstream.hostname) || this.#patterns.some((p) => p.matches(hostname, port));
    if (!allowed) {
      throw new MirrorError('UpstreamError', `Upstream redirect to ${shown} refused: ${hostname}${target.port ? `:${target.port}` : ''} is not in allowedRedirectHosts`);
    }
    if (!this.#allowPrivate && net.isIP(hostname) !== 0) {
      const why = forbiddenAddress(hostname);
      if (why) throw new MirrorError('UpstreamError', `Upstream redirect to ${shown} refused: ${hostname} is not a public address (${why}; allowPrivateRedirects is false)`);
    }
  }

  /**
   * For a hop sent through a proxy, which resolves the name itself (the `lookup` guard never
   * runs): resolves `target`'s name here and throws an UpstreamError (502) when any address is
   * forbidden, or when the name does not resolve here (its addresses cannot be checked). The
   * proxy resolves the name again when it connects, so a rebinding answer between the two
   * resolutions is not caught: a small window, left open knowingly. IP literals are judged by
   * {@link check}. Nothing to do when private addresses are allowed.
   */
  async checkResolved(target: URL, shown: string): Promise<void> {
    const hostname = bareHost(target.hostname);
    if (this.#allowPrivate || net.isIP(hostname) !== 0) return;
    let addresses: dns.LookupAddress[];
    try {
      addresses = await dns.promises.lookup(hostname, { all: true, verbatim: true });
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'error';
      throw new MirrorError('UpstreamError', `Upstream redirect to ${shown} refused: ${hostname} does not resolve here (${code}), so its addresses cannot be checked (allowPrivateRedirects is false)`, { cause: err });
    }
    for (const a of addresses) {
      const why = forbiddenAddress(a.address);
      if (why) throw new MirrorError('UpstreamError', `Upstream redirect to ${shown} refused: ${hostname} resolves to ${a.address}, not a public address (${why}; allowPrivateRedirects is false)`);
    }
  }

  /**
   * A `lookup` for the sockets of off-origin hops: resolves as usual and fails the connection when
   * any resolved address is forbidden. Undefined when private addresses are allowed.
   */
  get lookup(): net.LookupFunction | undefined {
    if (this.#allowPrivate) return undefined;
    const guarded = (hostname: string, options: dns.LookupOptions, callback: (err: Error | null, address: string | dns.LookupAddress[], family?: number) => void): void => {
      dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
        if (err) {
          callback(err, options.all ? [] : '', undefined);
          return;
        }
        for (const a of addresses) {
          const why = forbiddenAddress(a.address);
          if (why) {
            callback(new ForbiddenAddressError(`${hostname} resolves to ${a.address}, not a public address (${why}; allowPrivateRedirects is false)`), options.all ? [] : '', undefined);
            return;
          }
        }
        const first = addresses[0];
        if (options.all) callback(null, addresses);
        else if (first) callback(null, first.address, first.family);
        else callback(Object.assign(new Error(`${hostname}: no address`), { code: 'ENOTFOUND' }), '', undefined);
      });
    };
    return guarded;
  }
}

function bareHost(hostname: string): string {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/** Why an IPv4 range (ipaddr.js's name for it) is refused; every range but `unicast` is. */
const V4_REASONS: Record<string, string> = {
  unspecified: 'unspecified',
  broadcast: 'broadcast',
  multicast: 'multicast',
  linkLocal: 'link-local',
  loopback: 'loopback',
  carrierGradeNat: 'shared (CGNAT)',
  private: 'private',
  reserved: 'reserved (IETF, documentation, benchmarking, 6to4 relay or future use)',
  as112: 'AS112 anycast',
  amt: 'AMT anycast',
};
const V6_REASONS: Record<string, string> = {
  unspecified: 'unspecified',
  linkLocal: 'link-local',
  multicast: 'multicast',
  loopback: 'loopback',
  uniqueLocal: 'unique-local (private)',
  deprecatedSiteLocal: 'site-local',
  discard: 'discard',
  rfc6145: 'IPv4-translated',
  rfc6052: 'local NAT64',
  benchmarking: 'benchmarking',
  amt: 'AMT anycast',
  as112v6: 'AS112 anycast',
  deprecatedOrchid: 'ORCHID',
  orchid2: 'ORCHID',
  droneRemoteIdProtocolEntityTags: 'reserved (drone remote ID)',
  segmentRouting: 'segment routing',
  reserved: 'reserved (IETF or documentation)',
};

const GLOBAL_UNICAST_V6: [ipaddr.IPv6, number] = [ipaddr.IPv6.parse('2000::'), 3];
const NAT64_WELL_KNOWN: [ipaddr.IPv6, number] = [ipaddr.IPv6.parse('64:ff9b::'), 96];

/**
 * Why `address` (an IP literal, optionally in brackets or with a zone) must not be connected to,
 * or undefined when it is a global unicast address. Ranges come from ipaddr.js (IANA's
 * special-purpose registries). IPv6 must be in 2000::/3, except that an IPv4 address carried
 * inside IPv6 (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16, both ends of Teredo 2001::/32)
 * is judged as that IPv4 address: a public one passes, a private one is refused.
 */
export function forbiddenAddress(address: string): string | undefined {
  const text = canonicalIp(address);
  if (text === undefined) return 'malformed';
  const ip = ipaddr.parse(text);
  if (ip.kind() === 'ipv4') return forbiddenV4(ip as ipaddr.IPv4);
  const v6 = ip as ipaddr.IPv6;
  const embedded = embeddedV4(v6);
  if (embedded) {
    for (const [v4, how] of embedded) {
      const why = forbiddenV4(v4);
      if (why) return `${why}: ${v4.toString()} inside ${how}`;
    }
    return undefined;
  }
  const range = v6.range();
  if (range !== 'unicast') return V6_REASONS[range] ?? range;
  if (!v6.match(GLOBAL_UNICAST_V6)) return 'not global unicast (outside 2000::/3)';
  return undefined;
}

/**
 * An IP literal as the WHATWG URL parser writes it (what a redirect's `hostname` holds and the
 * connection uses: `0x7f.1` → `127.0.0.1`, `::a.b.c.d` → `::xxxx:xxxx`), zone and brackets
 * removed; undefined when `address` is not an IP literal. ipaddr.js alone would read the
 * deprecated IPv4-compatible `::a.b.c.d` as IPv4-mapped.
 */
function canonicalIp(address: string): string | undefined {
  const bare = bareHost(address).replace(/%.*$/, '');
  let host: string;
  try {
    host = bareHost(new URL(`http://${bare.includes(':') ? `[${bare}]` : bare}/`).hostname);
  } catch {
    return undefined;
  }
  return net.isIP(host) === 0 ? undefined : host;
}

function forbiddenV4(ip: ipaddr.IPv4): string | undefined {
  const range = ip.range();
  return range === 'unicast' ? undefined : (V4_REASONS[range] ?? range);
}

/** The IPv4 addresses an IPv6 address carries, with what carries them; undefined when none. */
function embeddedV4(ip: ipaddr.IPv6): Array<[ipaddr.IPv4, string]> | undefined {
  const p = ip.parts;
  const v4 = (hi: number, lo: number) => new ipaddr.IPv4([hi >> 8, hi & 0xff, lo >> 8, lo & 0xff]);
  if (ip.isIPv4MappedAddress()) return [[ip.toIPv4Address(), 'an IPv4-mapped address']];
  if (ip.match(NAT64_WELL_KNOWN)) return [[v4(p[6] ?? 0, p[7] ?? 0), 'a NAT64 address']];
  const range = ip.range();
  if (range === '6to4') return [[v4(p[1] ?? 0, p[2] ?? 0), 'a 6to4 address']];
  if (range === 'teredo') {
    // Teredo: the server's address in clear, the client's with every bit inverted.
    return [
      [v4(p[2] ?? 0, p[3] ?? 0), 'a Teredo address (server)'],
      [v4(~(p[6] ?? 0) & 0xffff, ~(p[7] ?? 0) & 0xffff), 'a Teredo address (client)'],
    ];
  }
  return undefined;
}
