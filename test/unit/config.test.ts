import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, OPTIONS, envName, flagName, validateConfig } from '../../src/config/config.js';
import { loadConfig } from '../../src/config/load-config.js';

describe('config', () => {
  it('has the documented defaults', () => {
    expect(DEFAULT_CONFIG).toMatchObject({ host: '0.0.0.0', port: 8080, dataDir: './data', upstream: 'https://huggingface.co' });
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
