/**
 * Starts the real mirror (the same `startServer` as `hubcache serve`) on 127.0.0.1 port 0 over a
 * fresh temp data dir, pointed at a fake hub. Logs are captured in memory so tests can grep them
 * (e.g. for leaked tokens).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { DEFAULT_CONFIG, type Config } from '../../src/config/config.js';
import { createLogger } from '../../src/observability/logger.js';
import { startServer, type ServerEnvironment } from '../../src/server.js';

export interface TestMirror {
  url: string;
  /** The admin listener's URL, when `adminListen` is configured. */
  adminUrl: string | undefined;
  dataDir: string;
  config: Config;
  /** Every log line so far. */
  logs: string[];
  close(): Promise<void>;
  /** Closes and removes the data dir. */
  destroy(): Promise<void>;
}

/**
 * `env`: what `hubcache serve` would take from the process environment (e.g. the outbound proxy);
 * `env.clock`: a TestClock (test/support/test-clock.ts) to step TTLs instead of sleeping through them.
 */
export async function startMirror(upstream: string | string[], overrides: Partial<Config> = {}, env: ServerEnvironment = {}): Promise<TestMirror> {
  const dataDir = overrides.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-test-'));
  // The fake CDN is on 127.0.0.1 (the upstream's own host, so allowed): tests must allow loopback redirects.
  const config: Config = { ...DEFAULT_CONFIG, host: '127.0.0.1', port: 0, logLevel: 'info', allowPrivateRedirects: true, ...overrides, upstream: typeof upstream === 'string' ? [upstream] : upstream, dataDir };
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      cb();
    },
  });
  const running = await startServer(config, createLogger(config.logLevel, sink), env);
  return {
    url: running.url,
    adminUrl: running.adminUrl,
    dataDir,
    config,
    logs,
    close: () => running.close(),
    destroy: async () => {
      await running.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
