import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { DEFAULT_REDIRECT_HOSTS, HostPattern, RedirectPolicy, forbiddenAddress } from '../../src/upstream/redirect-policy.js';

describe('forbiddenAddress', () => {
  it('refuses loopback, private, link-local, unspecified, multicast and reserved IPv4', () => {
    for (const ip of ['127.0.0.1', '127.0.0.2', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '169.254.169.254', '0.0.0.0', '100.64.0.1', '224.0.0.1', '255.255.255.255', '198.18.0.1']) {
      expect(forbiddenAddress(ip), ip).toBeDefined();
    }
    for (const ip of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '18.244.202.64', '192.169.0.1']) expect(forbiddenAddress(ip), ip).toBeUndefined();
  });

  it('refuses the IPv6 equivalents, and IPv4 addresses carried inside IPv6', () => {
    for (const ip of ['::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:7f00:2', '::ffff:169.254.169.254', '64:ff9b::a9fe:a9fe', '2002:c0a8:0101::1', '::127.0.0.1', '[::1]']) {
      expect(forbiddenAddress(ip), ip).toBeDefined();
    }
    for (const ip of ['2600:9000:2000::1', '2a00:1450:4001:80b::200e', '::ffff:8.8.8.8', '64:ff9b::808:808']) expect(forbiddenAddress(ip), ip).toBeUndefined();
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

  it('the DNS guard fails a name that resolves to a forbidden address', async () => {
    const lookup = policy.lookup;
    if (!lookup) throw new Error('no lookup');
    const err = await new Promise<Error | null>((resolve) => {
      (lookup as unknown as (h: string, o: object, cb: (e: Error | null) => void) => void)('localhost', { all: true }, (e) => resolve(e));
    });
    expect(err?.message).toMatch(/localhost resolves to (127\.0\.0\.1|::1), not a public address \(loopback/);
  });
});
