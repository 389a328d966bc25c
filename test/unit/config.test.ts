import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, OPTIONS, envName, flagName, parseListenAddress, validateConfig } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/load-config.js';

describe('config', () => {
  it('has the documented defaults', () => {
    expect(DEFAULT_CONFIG).toMatchObject({ host: '0.0.0.0', port: 8080, dataDir: './data', upstream: ['https://huggingface.co'] });
    expect(envName('refsTtlSeconds')).toBe('HUBCACHE_REFS_TTL_SECONDS');
    expect(flagName('dataDir')).toBe('--data-dir');
  });

  it('applies flags over environment over file over defaults', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-cfg-'));
    const file = path.join(dir, 'c.json');
    fs.writeFileSync(file, JSON.stringify({ port: 1000, dataDir: '/from-file', refsTtlSeconds: 5, logLevel: 'warn' }));
    const result = loadConfig({
      configFile: file,
      env: { HUBCACHE_PORT: '2000', HUBCACHE_DATA_DIR: '/from-env' },
      flags: { port: '3000' },
    });
    expect(result).toEqual({
      ok: true,
      config: { ...DEFAULT_CONFIG, port: 3000, dataDir: '/from-env', refsTtlSeconds: 5, logLevel: 'warn' },
    });
    fs.rmSync(dir, { recursive: true });
  });

  it('reports every problem at once, naming the source', () => {
    const result = validateConfig([
      { source: 'file', values: { port: 'eighty', upstrem: 'x' } },
      { source: 'environment', values: { upstream: 'ftp://example.com', logLevel: 'loud', refsTtlSeconds: '-1' } },
    ]);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.errors).toHaveLength(5);
    expect(result.errors.join('\n')).toMatch(/port \(from file\): expected an integer/);
    expect(result.errors.join('\n')).toMatch(/unknown option "upstrem"/);
    expect(result.errors.join('\n')).toMatch(/upstream \(from environment\): must be an http/);
    expect(result.errors.join('\n')).toMatch(/logLevel/);
    expect(result.errors.join('\n')).toMatch(/refsTtlSeconds .* between 0/);
  });

  it('reads upstream as an ordered list (comma-separated in the environment), refusing an empty list and duplicates', () => {
    const ok = validateConfig([{ source: 'environment', values: { upstream: 'https://huggingface.co/, http://hf-mirror.local:8080' } }]);
    expect(ok.ok && ok.config.upstream).toEqual(['https://huggingface.co', 'http://hf-mirror.local:8080']);
    const bad = validateConfig([{ source: 'file', values: { upstream: [] } }]);
    expect(bad.ok ? [] : bad.errors).toEqual(['upstream (from file): at least one upstream URL is needed']);
    const twice = validateConfig([{ source: 'flags', values: { upstream: 'https://a.example,https://a.example/' } }]);
    expect(twice.ok ? [] : twice.errors).toEqual(['upstream (from flags): "https://a.example" is listed twice']);
  });

  it('reads booleans as true/false/1/0 and an optional URL as empty or a URL', () => {
    for (const [value, expected] of [['true', true], ['1', true], ['false', false], ['0', false], [true, true]] as const) {
      const r = validateConfig([{ source: 'environment', values: { offline: value } }]);
      expect(r.ok && r.config.offline, String(value)).toBe(expected);
    }
    const bad = validateConfig([{ source: 'environment', values: { offline: 'yes', publicUrl: 'ftp://x' } }]);
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.errors).toHaveLength(2);
    const url = validateConfig([{ source: 'file', values: { publicUrl: 'https://mirror.example/hf/' } }]);
    expect(url.ok && url.config.publicUrl).toBe('https://mirror.example/hf');
    const empty = loadConfig({ env: { HUBCACHE_OFFLINE: '1', HUBCACHE_PUBLIC_URL: '' }, flags: {} });
    expect(empty.ok && [empty.config.offline, empty.config.publicUrl]).toEqual([true, '']);
  });

  it('checks list entries with the parsers that use them, and normalizes CORS origins', () => {
    const ok = validateConfig([
      { source: 'file', values: { allowedRedirectHosts: ['*.hf.co', 'cdn.example:8443', '[fd00::1]:*'], allowRepos: ['models/org/*', 'datasets/**', '**', '*/org/name', 'spaces/a?c'], corsOrigins: ['HTTPS://App.Example:443/', 'http://127.0.0.1:5173'] } },
    ]);
    expect(ok.ok && ok.config.corsOrigins).toEqual(['https://app.example', 'http://127.0.0.1:5173']);
    const bad = validateConfig([
      {
        source: 'file',
        values: {
          allowedRedirectHosts: ['ok.example', 'https://cdn.example', 'cdn.example:0', '*.[::1]'],
          allowRepos: ['org/name', 'models/a b', 'models/***'],
          denyRepos: ['dataset/x', 'models/[ab]'],
          corsOrigins: ['*', 'https://a.example'],
        },
      },
    ]);
    expect(bad.ok).toBe(false);
    if (bad.ok) return;
    expect(bad.errors).toHaveLength(9);
    expect(bad.errors.filter((e) => e.startsWith('allowedRedirectHosts (from file): ') && e.includes('is not a host pattern'))).toHaveLength(3);
    expect(bad.errors).toContainEqual(expect.stringMatching(/^denyRepos .*"dataset\/x": must start with .* e\.g\. datasets\/x$/));
    expect(bad.errors).toContainEqual(expect.stringMatching(/^corsOrigins .*cannot be combined/));
    for (const origin of ['app.example', 'ftp://a.example', 'https://a.example/path', 'https://u:p@a.example', 'https://a.example?x']) {
      const r = validateConfig([{ source: 'environment', values: { corsOrigins: origin } }]);
      expect(r.ok, origin).toBe(false);
    }
    const none = loadConfig({ env: {}, flags: { corsOrigins: [] } });
    expect(none.ok && none.config.corsOrigins).toEqual([]);
  });

  it('checks the listen host, tokens and timeouts that only work together', () => {
    for (const host of ['0.0.0.0', '::', '127.0.0.1', 'fd00::1', 'localhost', 'mirror.internal']) {
      expect(validateConfig([{ source: 'flags', values: { host } }]).ok, host).toBe(true);
    }
    for (const host of ['[::1]', 'not a host', 'http://x', '-bad', 'a..b']) {
      expect(validateConfig([{ source: 'flags', values: { host } }]).ok, host).toBe(false);
    }
    const secret = 'hf_secret value';
    const tokens = validateConfig([{ source: 'environment', values: { hfToken: secret, accessKeys: 'good-key,' } }, { source: 'file', values: { accessKeys: ['bad\nkey'] } }]);
    expect(tokens.ok).toBe(false);
    if (!tokens.ok) {
      expect(tokens.errors).toHaveLength(2);
      expect(tokens.errors.join('\n')).not.toContain('secret value');
    }
    const idle = validateConfig([{ source: 'environment', values: { upstreamIdleTimeoutSeconds: '150' } }]);
    expect(idle.ok).toBe(false);
    if (!idle.ok) expect(idle.errors).toEqual(['clientIdleTimeoutSeconds (from default): must be above upstreamIdleTimeoutSeconds (150, from environment), or 0, got 120']);
    expect(validateConfig([{ source: 'environment', values: { upstreamIdleTimeoutSeconds: '150', clientIdleTimeoutSeconds: '0' } }]).ok).toBe(true);
    // A value that is invalid on its own is reported once, not again as a bad combination.
    const single = validateConfig([{ source: 'environment', values: { upstreamIdleTimeoutSeconds: 'soon' } }]);
    expect(!single.ok && single.errors).toHaveLength(1);
  });

  it('reports unknown HUBCACHE_* environment variables (misspelt options), not the config path or test hooks', () => {
    const r = loadConfig({ env: { HUBCACHE_OFLINE: '1', HUBCACHE_PORT: '1', HUBCACHE_CONFIG: '', HUBCACHE_TEST_CRASH_AT: 'x', OTHER: '1' }, flags: {} });
    expect(r).toEqual({ ok: false, errors: ['unknown environment variable HUBCACHE_OFLINE'] });
  });

  it('reports an unreadable config file', () => {
    const result = loadConfig({ configFile: '/nonexistent/hubcache.json', env: {}, flags: {} });
    expect(result.ok).toBe(false);
  });

  it('documents every option in the example config', () => {
    const example = JSON.parse(fs.readFileSync(new URL('../../config/hubcache.example.json', import.meta.url), 'utf8')) as Record<string, unknown>;
    for (const o of OPTIONS) expect(example).toHaveProperty(o.key, o.default);
    const result = loadConfig({ configFile: new URL('../../config/hubcache.example.json', import.meta.url).pathname, env: {}, flags: {} });
    expect(result).toEqual({ ok: true, config: DEFAULT_CONFIG });
  });

  it('documents every option in the README configuration table', () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const o of OPTIONS) {
      expect(readme).toContain(`| \`${o.key}\` | \`${flagName(o.key)}\` | \`${envName(o.key)}\` | \`${JSON.stringify(o.default)}\` |`);
    }
  });
});

describe('admin options', () => {
  it('adminListen takes host:port and [ipv6]:port', () => {
    expect(parseListenAddress('127.0.0.1:8081')).toEqual({ host: '127.0.0.1', port: 8081 });
    expect(parseListenAddress('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListenAddress('admin.internal:9000')).toEqual({ host: 'admin.internal', port: 9000 });
    for (const bad of ['127.0.0.1', ':8080', '[127.0.0.1]:80', '::1:80', '127.0.0.1:70000', 'host:port', 'a b:1']) {
      expect(() => parseListenAddress(bad), bad).toThrow(/expected host:port|not an IPv6|not an IP address or host name/);
    }
  });
});

describe('clusterSecret', () => {
  const secret = 'cluster-secret-0123456789';

  it('is read from HUBCACHE_CLUSTER_SECRET and --cluster-secret', () => {
    expect(envName('clusterSecret')).toBe('HUBCACHE_CLUSTER_SECRET');
    expect(flagName('clusterSecret')).toBe('--cluster-secret');
    expect(loadConfig({ env: { HUBCACHE_CLUSTER_SECRET: secret }, flags: {} })).toEqual({ ok: true, config: { ...DEFAULT_CONFIG, clusterSecret: secret } });
    expect(DEFAULT_CONFIG.clusterSecret).toBe('');
  });

  it('refuses a short, Hub-shaped or non-token secret, and one equal to another credential, without showing it', () => {
    const problems = (values: Record<string, unknown>): string[] => {
      const r = validateConfig([{ source: 'environment', values }]);
      return r.ok ? [] : r.errors;
    };
    expect(problems({ clusterSecret: 'short-secret' })).toEqual(['clusterSecret (from environment): must be at least 16 characters long (the value is not shown)']);
    expect(problems({ clusterSecret: 'hf_abcdefghijklmnopqrstuvwxyz' })[0]).toMatch(/looks like a Hugging Face token/);
    expect(problems({ clusterSecret: 'with a space in it, long enough' })[0]).toMatch(/visible ASCII/);
    expect(problems({ clusterSecret: secret, adminToken: secret })).toEqual(['clusterSecret (from environment): must differ from adminToken (the value is not shown)']);
    expect(problems({ clusterSecret: secret, accessKeys: ['k', secret] })).toEqual(['clusterSecret (from environment): must differ from accessKeys (the value is not shown)']);
    expect(problems({ clusterSecret: secret, hfToken: secret })).toHaveLength(1);
    expect(problems({ clusterSecret: secret, metricsToken: secret })).toHaveLength(1);
    for (const bad of [{ clusterSecret: 'short-secret' }, { clusterSecret: secret, adminToken: secret }]) {
      for (const line of problems(bad)) expect(line).not.toContain(String(bad.clusterSecret));
    }
    expect(problems({ clusterSecret: secret })).toEqual([]);
  });
});
