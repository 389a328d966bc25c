/**
 * Gathers configuration layers in precedence order (lowest first): defaults, the config file,
 * `HUBCACHE_*` environment variables, then CLI flags; validation is in config.ts.
 */
import fs from 'node:fs';
import { OPTIONS, envName, validateConfig, type Config } from './config.js';

export interface LoadConfigInput {
  /** Path of a JSON config file (`--config`), if any. */
  configFile?: string | undefined;
  env: NodeJS.ProcessEnv;
  /** Options given on the command line, keyed by option name (strings as typed). */
  flags: Record<string, unknown>;
}

/** `HUBCACHE_*` variables that are not options: the config file path, and test hooks. */
const NOT_OPTIONS = /^HUBCACHE_(CONFIG|TEST_.*)$/;

export function loadConfig(input: LoadConfigInput): { ok: true; config: Config } | { ok: false; errors: string[] } {
  const layers: Array<{ source: string; values: Record<string, unknown> }> = [];
  const errors: string[] = [];
  const configFile = input.configFile ?? input.env.HUBCACHE_CONFIG;
  if (configFile) {
    try {
      const parsed: unknown = JSON.parse(fs.readFileSync(configFile, 'utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) errors.push(`${configFile}: expected a JSON object`);
      else {
        const values = Object.fromEntries(Object.entries(parsed).filter(([k]) => !k.startsWith('$') && !k.startsWith('//')));
        layers.push({ source: configFile, values });
      }
    } catch (err) {
      errors.push(`${configFile}: ${(err as Error).message}`);
    }
  }
  const envValues: Record<string, unknown> = {};
  for (const o of OPTIONS) {
    const v = input.env[envName(o.key)];
    if (v !== undefined && v !== '') envValues[o.key] = v;
  }
  // A misspelt variable would otherwise be ignored without a word.
  const envNames = new Set(OPTIONS.map((o) => envName(o.key)));
  for (const name of Object.keys(input.env).sort()) {
    if (name.startsWith('HUBCACHE_') && !envNames.has(name) && !NOT_OPTIONS.test(name)) errors.push(`unknown environment variable ${name}`);
  }
  layers.push({ source: 'environment', values: envValues });
  layers.push({ source: 'command line', values: input.flags });
  const result = validateConfig(layers);
  if (errors.length > 0) return { ok: false, errors: [...errors, ...(result.ok ? [] : result.errors)] };
  return result;
}
