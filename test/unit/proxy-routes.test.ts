import { describe, expect, it } from 'vitest';
import { ProxyRoutes, proxyAuthorization, proxyEndpoint, proxySettingsFromEnv, proxySettingsProblems, showProxy } from '../../src/upstream/proxy-routes.js';

describe('proxySettingsFromEnv', () => {
  it('reads the lower-case variables first, then the upper-case ones; empty ones do not count', () => {
    expect(proxySettingsFromEnv({})).toEqual({});
    expect(proxySettingsFromEnv({ HTTPS_PROXY: 'http://a:1', HTTP_PROXY: 'http://b:2', NO_PROXY: 'x' })).toEqual({ httpsProxy: 'http://a:1', httpProxy: 'http://b:2', noProxy: 'x' });
    expect(proxySettingsFromEnv({ https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:1', no_proxy: 'l', NO_PROXY: 'u' })).toEqual({ httpsProxy: 'http://lower:1', noProxy: 'l' });
    expect(proxySettingsFromEnv({ http_proxy: ' ', HTTP_PROXY: 'http://upper:2' })).toEqual({ httpProxy: 'http://upper:2' });
  });
});

describe('proxySettingsProblems', () => {
  it('names the variable and what is wrong; accepts host:port without a scheme', () => {
    expect(proxySettingsProblems({ httpProxy: 'proxy.corp:3128', httpsProxy: 'https://u:p@proxy.corp:443' })).toEqual([]);
    expect(proxySettingsProblems({ httpProxy: 'socks5://proxy:1080', httpsProxy: 'http://proxy:3128/path' })).toEqual([
      'HTTP_PROXY: socks5: proxies are not supported (http:// or https:// only)',
      'HTTPS_PROXY: a proxy URL has no path or query (expected http://[user:password@]host:port)',
    ]);
    expect(proxySettingsProblems({ httpProxy: 'http://[bad' })[0]).toMatch(/^HTTP_PROXY: not a URL/);
  });
});

describe('ProxyRoutes', () => {
  const HTTP = 'http://http-proxy.corp:3128';
  const HTTPS = 'http://https-proxy.corp:3129';
  const via = (routes: ProxyRoutes, url: string) => routes.proxyFor(new URL(url))?.host ?? 'direct';

  it('no proxy configured: everything direct', () => {
    const routes = new ProxyRoutes({});
    expect(routes.configured).toBe(false);
    expect(via(routes, 'https://huggingface.co/')).toBe('direct');
  });

  it('picks the proxy by the target scheme; https falls back to the http proxy', () => {
    const both = new ProxyRoutes({ httpProxy: HTTP, httpsProxy: HTTPS });
    expect(via(both, 'https://huggingface.co/x')).toBe('https-proxy.corp:3129');
    expect(via(both, 'http://huggingface.co/x')).toBe('http-proxy.corp:3128');
    const httpOnly = new ProxyRoutes({ httpProxy: HTTP });
    expect(via(httpOnly, 'https://cdn-lfs.hf.co/x')).toBe('http-proxy.corp:3128');
    const httpsOnly = new ProxyRoutes({ httpsProxy: HTTPS });
    expect(via(httpsOnly, 'https://cdn-lfs.hf.co/x')).toBe('https-proxy.corp:3129');
    expect(via(httpsOnly, 'http://mirror.corp/x')).toBe('direct');
    expect(new ProxyRoutes({ httpProxy: 'proxy.corp:8080' }).proxyFor(new URL('http://a/'))?.href).toBe('http://proxy.corp:8080/');
  });

  it('NO_PROXY: per target host, with subdomains, ports, IP literals and CIDR ranges', () => {
    const routes = new ProxyRoutes({ httpsProxy: HTTPS, httpProxy: HTTP, noProxy: 'hf.co, .internal.corp *.lan,cdn.example:8443 10.0.0.0/8\t192.168.1.5:8080 ::1 [fd00::7]:443 LOCALHOST.' });
    const cases: Array<[string, string]> = [
      ['https://huggingface.co/x', 'https-proxy.corp:3129'],
      ['https://hf.co/x', 'direct'],
      ['https://cdn-lfs.hf.co/x', 'direct'],
      ['https://cas-bridge.xethub.hf.co/x', 'direct'],
      ['https://evilhf.co/x', 'https-proxy.corp:3129'],
      ['https://hf.co.evil.example/x', 'https-proxy.corp:3129'],
      ['https://a.internal.corp/', 'direct'],
      ['https://internal.corp/', 'direct'],
      ['https://x.y.lan/', 'direct'],
      ['https://cdn.example:8443/', 'direct'],
      ['https://cdn.example/', 'https-proxy.corp:3129'],
      ['http://10.1.2.3/', 'direct'],
      ['http://11.1.2.3/', 'http-proxy.corp:3128'],
      ['http://192.168.1.5:8080/', 'direct'],
      ['http://192.168.1.5/', 'http-proxy.corp:3128'],
      ['http://[::1]:9000/', 'direct'],
      ['https://[fd00::7]/', 'direct'],
      ['http://[fd00::7]/', 'http-proxy.corp:3128'],
      ['http://localhost:8080/', 'direct'],
      ['http://LocalHost./', 'direct'],
      ['http://127.0.0.1/', 'http-proxy.corp:3128'],
    ];
    for (const [url, expected] of cases) expect([url, via(routes, url)]).toEqual([url, expected]);
  });

  it('NO_PROXY: an IP literal is compared as an address, never by suffix; * disables the proxy', () => {
    const routes = new ProxyRoutes({ httpProxy: HTTP, noProxy: '0.1,1.1' });
    expect(via(routes, 'http://10.0.0.1/')).toBe('http-proxy.corp:3128');
    expect(via(routes, 'http://1.1.1.1/')).toBe('http-proxy.corp:3128');
    const none = new ProxyRoutes({ httpProxy: HTTP, noProxy: '*' });
    expect(via(none, 'http://huggingface.co/')).toBe('direct');
  });

  it('describes itself without credentials', () => {
    const routes = new ProxyRoutes({ httpProxy: 'http://ops:s3cret@proxy.corp:3128', httpsProxy: 'https://proxy.corp', noProxy: 'hf.co,10.0.0.0/8' });
    expect(routes.describe()).toEqual({ httpProxy: 'http://proxy.corp:3128 (with credentials)', httpsProxy: 'https://proxy.corp', noProxy: 'hf.co,10.0.0.0/8' });
    expect(JSON.stringify(routes.describe())).not.toContain('s3cret');
    expect(showProxy(new URL('http://u@p:1'))).toBe('http://p:1 (with credentials)');
  });

  it('Proxy-Authorization comes from the proxy URL only, decoded; the endpoint has no credentials', () => {
    const proxy = new URL('http://proxy%20user:p%40ss%3Aword@proxy.corp:3128');
    expect(proxyAuthorization(proxy)).toBe(`Basic ${Buffer.from('proxy user:p@ss:word').toString('base64')}`);
    expect(proxyEndpoint(proxy).href).toBe('http://proxy.corp:3128/');
    expect(proxyAuthorization(new URL('http://proxy.corp:3128'))).toBeUndefined();
  });
});
