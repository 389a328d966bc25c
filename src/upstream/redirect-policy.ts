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
 * Resolved addresses are checked inside the connection's own DNS lookup (`lookup` of the socket
 * the request then uses; see {@link RedirectPolicy.lookup}), not by a separate resolution before
 * connecting: there is no window between the check and the connect for a DNS-rebinding answer to
 * slip into (no TOCTOU). The price: the refusal surfaces as a connect error (mapped to a 502
 * UpstreamError naming the address), and a name that resolves to several addresses is refused as
 * soon as one of them is forbidden, even if the others are public.
 */
import dns from 'node:dns';
import net from 'node:net';
import { MirrorError } from '../errors.js';
import { ForbiddenAddressError } from './upstream-errors.js';

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

const V4_BLOCKED: ReadonlyArray<[string, number, string]> = [
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared (CGNAT)'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'reserved'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];
const V6_BLOCKED: ReadonlyArray<[string, number, string]> = [
  ['::1', 128, 'loopback'],
  ['::', 128, 'unspecified'],
  ['::', 96, 'IPv4-compatible'],
  ['64:ff9b:1::', 48, 'local NAT64'],
  ['100::', 64, 'discard'],
  ['fc00::', 7, 'unique-local (private)'],
  ['fe80::', 10, 'link-local'],
  ['fec0::', 10, 'site-local'],
  ['ff00::', 8, 'multicast'],
];

const v4Rules = V4_BLOCKED.map(([base, bits, why]) => {
  const list = new net.BlockList();
  list.addSubnet(base, bits, 'ipv4');
  return { list, why };
});
const v6Rules = V6_BLOCKED.map(([base, bits, why]) => {
  const list = new net.BlockList();
  list.addSubnet(base, bits, 'ipv6');
  return { list, why };
});

/** Why `address` (an IP literal) must not be connected to, or undefined if it is a public address. */
export function forbiddenAddress(address: string): string | undefined {
  const ip = bareHost(address).replace(/%.*$/, '');
  const family = net.isIP(ip);
  if (family === 4) return v4Rules.find((r) => r.list.check(ip, 'ipv4'))?.why;
  if (family !== 6) return 'malformed';
  // An IPv4 address carried inside IPv6 (mapped, NAT64 well-known prefix, 6to4) is judged as IPv4.
  const words = ipv6Words(ip);
  if (!words) return 'malformed';
  const embedded = embeddedV4(words);
  if (embedded) {
    const why = forbiddenAddress(embedded);
    if (why) return why;
  }
  return v6Rules.find((r) => r.list.check(ip, 'ipv6'))?.why;
}

/** Eight 16-bit words of an IPv6 literal (with `::` and a trailing dotted quad), or undefined. */
function ipv6Words(ip: string): number[] | undefined {
  let text = ip.toLowerCase();
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad?.[1]) {
    const b = quad[1].split('.').map(Number);
    text = `${text.slice(0, -quad[1].length)}${(((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16)}:${(((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  if (fill < 0) return undefined;
  const words = [...h, ...Array<string>(fill).fill('0'), ...t].map((w) => parseInt(w, 16));
  return words.length === 8 && words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffff) ? words : undefined;
}

function embeddedV4(w: number[]): string | undefined {
  const v4 = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  const zero = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && w[5] === 0xffff) return v4(w[6] ?? 0, w[7] ?? 0); // ::ffff:a.b.c.d
  if (w[0] === 0x64 && w[1] === 0xff9b && zero(2, 6)) return v4(w[6] ?? 0, w[7] ?? 0); // 64:ff9b::a.b.c.d
  if (w[0] === 0x2002) return v4(w[1] ?? 0, w[2] ?? 0); // 6to4 2002:aabb:ccdd::
  return undefined;
}
