import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { DEFAULT_REDIRECT_HOSTS, HostPattern, RedirectPolicy, forbiddenAddress } from '../../src/upstream/redirect-policy.js';

/** [address, why it is refused (a pattern of the reason), or undefined: a public address that passes]. */
const ADDRESSES: ReadonlyArray<[string, RegExp | undefined]> = [
  // IPv4 special-purpose ranges
  ['0.0.0.0', /unspecified/],
  ['0.1.2.3', /unspecified/],
  ['10.1.2.3', /private/],
  ['172.16.0.1', /private/],
  ['172.31.255.255', /private/],
  ['192.168.1.1', /private/],
  ['100.64.0.1', /CGNAT/],
  ['100.127.255.254', /CGNAT/],
  ['127.0.0.1', /loopback/],
  ['127.255.255.254', /loopback/],
  ['169.254.169.254', /link-local/],
  ['192.0.0.8', /reserved/],
  ['192.0.2.1', /reserved/], // documentation (TEST-NET-1)
  ['198.51.100.7', /reserved/], // documentation (TEST-NET-2)
  ['203.0.113.9', /reserved/], // documentation (TEST-NET-3)
  ['192.88.99.1', /reserved/], // 6to4 relay anycast
  ['198.18.0.1', /reserved/], // benchmarking
  ['198.19.255.255', /reserved/],
  ['224.0.0.1', /multicast/],
  ['239.255.255.250', /multicast/],
  ['240.0.0.1', /reserved/],
  ['255.255.255.255', /broadcast/],
  // public IPv4, some just outside a refused range
  ['8.8.8.8', undefined],
  ['1.1.1.1', undefined],
  ['18.244.202.64', undefined],
  ['172.32.0.1', undefined],
  ['192.169.0.1', undefined],
  ['100.128.0.1', undefined],
  ['198.20.0.1', undefined],
  ['192.0.3.1', undefined],
  ['223.255.255.255', undefined],
  // IPv6 special-purpose ranges
  ['::', /unspecified/],
  ['::1', /loopback/],
  ['[::1]', /loopback/],
  ['fe80::1', /link-local/],
  ['fe80::1%eth0', /link-local/],
  ['fec0::1', /site-local/],
  ['fc00::1', /unique-local/],
  ['fd12:3456::1', /unique-local/],
  ['ff02::1', /multicast/],
  ['ff0e::1', /multicast/],
  ['100::1', /discard/],
  ['2001:db8::1', /documentation|reserved/],
  ['2001:db8:ffff::1', /documentation|reserved/],
  ['3fff::1', /documentation|reserved/],
  ['2001:2::1', /benchmarking/],
  ['2001:10::1', /ORCHID/],
  ['2001:20::1', /ORCHID/],
  ['2001:1::1', /reserved/],
  ['5f00::1', /segment routing|reserved/],
  ['4000::1', /not global unicast/],
  ['::ffff:0:808:808', /IPv4-translated|not global unicast/],
  ['64:ff9b:1::a00:1', /local NAT64|not global unicast/],
  ['::127.0.0.1', /IPv4-compatible|not global unicast/],
  ['::8.8.8.8', /IPv4-compatible|not global unicast/],
  // IPv4 inside IPv6: judged as the IPv4 address it carries
  ['::ffff:127.0.0.1', /loopback/],
  ['::ffff:7f00:2', /loopback/],
  ['::ffff:10.0.0.1', /private/],
  ['::ffff:169.254.169.254', /link-local/],
  ['::ffff:192.0.2.1', /reserved/],
  ['64:ff9b::7f00:1', /loopback/], // NAT64
  ['64:ff9b::a9fe:a9fe', /link-local/],
  ['64:ff9b::10.1.2.3', /private/],
  ['2002:c0a8:0101::1', /private/], // 6to4 of 192.168.1.1
  ['2002:7f00:1::', /loopback/],
  ['2002:a9fe:a9fe::1', /link-local/],
  // Teredo: server 65.54.227.120, client = last 32 bits inverted (192.0.2.45, 10.0.0.1)
  ['2001:0:4136:e378:8000:63bf:3fff:fdd2', /reserved/],
  ['2001:0:4136:e378:8000:63bf:f5ff:fffe', /private/],
  ['2001:0:0a00:0001:8000:63bf:f7f7:f7f7', /private/], // Teredo server 10.0.0.1
  // public IPv6, and public IPv4 inside IPv6
  ['2600:9000:2000::1', undefined],
  ['2a00:1450:4001:80b::200e', undefined],
  ['2001:4860:4860::8888', undefined],
  ['::ffff:8.8.8.8', undefined],
  ['::ffff:808:808', undefined],
  ['64:ff9b::808:808', undefined],
  ['64:ff9b::8.8.8.8', undefined],
  ['2002:808:808::1', undefined],
  ['2001:0:4136:e378:8000:63bf:f7f7:f7f7', undefined], // Teredo of 65.54.227.120 / 8.8.8.8
  // not an address at all
  ['not-an-ip', /malformed/],
  ['1.2.3.4.5', /malformed/],
  ['', /malformed/],
];

describe('forbiddenAddress', () => {
  it.each(ADDRESSES)('%s', (address, why) => {
    if (why === undefined) expect(forbiddenAddress(address)).toBeUndefined();
    else expect(forbiddenAddress(address)).toMatch(why);
  });
});

describe('HostPattern', () => {
  it('matches a host, a domain below a wildcard, and a port when given', () => {
    const m = (p: string, host: string, port = '443') => new HostPattern(p).matches(host, port);
    expect(m('hf.co', 'hf.co')).toBe(true);
    expect(m('hf.co', 'cdn-lfs.hf.co')).toBe(false);
    expect(m('*.hf.co', 'cdn-lfs.hf.co')).toBe(true);
    expect(m('*.hf.co', 'cas-bridge.xethub.hf.co')).toBe(true);
    expect(m('*.hf.co', 'hf.co')).toBe(false);
    expect(m('*.hf.co', 'evilhf.co')).toBe(false);
    expect(m('*.hf.co', 'hf.co.evil.example')).toBe(false);
    expect(m('HF.CO.', 'hf.co')).toBe(true);
    expect(m('127.0.0.1:8080', '127.0.0.1', '8080')).toBe(true);
    expect(m('127.0.0.1:8080', '127.0.0.1', '8081')).toBe(false);
    expect(m('[::1]:*', '::1', '1')).toBe(true);
    expect(() => new HostPattern('http://hf.co')).toThrow(/not a host pattern/);
    expect(() => new HostPattern('*')).toThrow(/not a host pattern/);
    // Patterns that could never match: caught when the configuration is checked.
    for (const p of ['cdn.example:0', 'cdn.example:65536', '*.[::1]', '[1.2.3.4]', '[::g]']) expect(() => new HostPattern(p), p).toThrow(/not a host pattern/);
    expect(m('cdn.example:65535', 'cdn.example', '65535')).toBe(true);
  });
});

describe('RedirectPolicy', () => {
  const upstream = new URL('https://huggingface.co');
  const policy = new RedirectPolicy({ upstream, allowedHosts: DEFAULT_REDIRECT_HOSTS, allowPrivate: false });
  const refused = (url: string, p = policy) => {
    try {
      p.check(new URL(url), url);
      return undefined;
    } catch (err) {
      expect(err).toBeInstanceOf(MirrorError);
      expect((err as MirrorError).status).toBe(502);
      return (err as MirrorError).message;
    }
  };

  it("allows the Hub's CDNs and the upstream itself", () => {
    expect(refused('https://cdn-lfs.hf.co/repos/ab/cd/x?X-Amz-Signature=1')).toBeUndefined();
    expect(refused('https://cas-bridge.xethub.hf.co/xet-bridge-us/abc')).toBeUndefined();
    expect(refused('https://huggingface.co/api/resolve-cache/x')).toBeUndefined();
    expect(refused('https://cdn-lfs.huggingface.co/x')).toBeUndefined();
  });

  it('refuses other schemes, other hosts and private addresses', () => {
    expect(refused('file:///etc/passwd')).toMatch(/file: URL refused/);
    expect(refused('gopher://hf.co/')).toMatch(/gopher: URL refused/);
    expect(refused('https://evil.example/x')).toMatch(/evil\.example is not in allowedRedirectHosts/);
    expect(refused('http://169.254.169.254/latest/meta-data/')).toMatch(/not in allowedRedirectHosts/);
    const permissive = new RedirectPolicy({ upstream, allowedHosts: ['169.254.169.254', '127.0.0.2', '[::1]', 'localhost'], allowPrivate: false });
    expect(refused('http://169.254.169.254/latest/meta-data/', permissive)).toMatch(/not a public address \(link-local/);
    expect(refused('http://2130706434:8080/', permissive)).toMatch(/127\.0\.0\.2 is not a public address \(loopback/);
    expect(refused('http://[::1]:8080/', permissive)).toMatch(/loopback/);
    // A name is judged on what it resolves to, when the connection looks it up.
    expect(refused('http://localhost:8080/', permissive)).toBeUndefined();
    expect(permissive.lookup).toBeTypeOf('function');
    expect(new RedirectPolicy({ upstream, allowedHosts: [], allowPrivate: true }).lookup).toBeUndefined();
  });

  it('judges odd IP literal forms as the URL parser normalises them (hex, octal, short, integer, IPv6-wrapped)', () => {
    // WHATWG URL rewrites these before the policy sees them: 0x7f.1, 127.1, 0177.0.0.1,
    // 017700000001 and 2130706433 all become 127.0.0.1; [::ffff:127.0.0.1] becomes [::ffff:7f00:1].
    const allowAll = new RedirectPolicy({ upstream, allowedHosts: ['127.0.0.1', '[::ffff:7f00:1]', '[::7f00:1]', '[64:ff9b::7f00:1]', '[2002:7f00:1::]', '10.0.0.1'], allowPrivate: false });
    const cases: Array<[string, RegExp]> = [
      ['http://0x7f.1/', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://127.1/', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://0177.0.0.1/', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://017700000001/', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://2130706433/', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://127.0.0.1./', /127\.0\.0\.1 is not a public address \(loopback/],
      ['http://0x0a.0.0.1/', /10\.0\.0\.1 is not a public address \(private/],
      ['http://[::ffff:127.0.0.1]/', /::ffff:7f00:1 is not a public address \(loopback: 127\.0\.0\.1 inside an IPv4-mapped address/],
      ['http://[0:0:0:0:0:ffff:7f00:1]/', /::ffff:7f00:1 is not a public address \(loopback/],
      ['http://[::127.0.0.1]/', /::7f00:1 is not a public address \(not global unicast/],
      ['http://[64:ff9b::127.0.0.1]/', /loopback: 127\.0\.0\.1 inside a NAT64 address/],
      ['http://[2002:7f00:1::]/', /loopback: 127\.0\.0\.1 inside a 6to4 address/],
    ];
    for (const [url, why] of cases) expect(refused(url, allowAll), url).toMatch(why);
  });

  it('the DNS guard fails a name that resolves to a forbidden address', async () => {
    const lookup = policy.lookup;
    if (!lookup) throw new Error('no lookup');
    const err = await new Promise<Error | null>((resolve) => {
      (lookup as unknown as (h: string, o: object, cb: (e: Error | null) => void) => void)('localhost', { all: true }, (e) => resolve(e));
    });
    expect(err?.message).toMatch(/localhost resolves to (127\.0\.0\.1|::1), not a public address \(loopback/);
  });
});
