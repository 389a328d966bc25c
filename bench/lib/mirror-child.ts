/**
 * Child-process entry of the mirror under test: `startMirror` (the same startServer as
 * `hubcache serve`), logLevel warn, loopback redirects allowed (the fake CDN is on 127.0.0.1),
 * plus any config overrides the bench passes (BENCH_MIRROR_CONFIG).
 *
 *   argv: <JSON { upstream, dataDir, overrides }>
 */
import type { Config } from '../../src/config/config.js';
import { startMirror } from '../../test/support/start-mirror.js';
import { runChild } from './child.js';

runChild(async () => {
  const o = JSON.parse(process.argv[2] ?? '{}') as { upstream: string; dataDir: string; overrides?: Partial<Config> };
  const m = await startMirror(o.upstream, { logLevel: 'warn', ...o.overrides, dataDir: o.dataDir });
  return {
    info: { url: m.url },
    // Warnings and errors the mirror logged (the bench prints them: a fill that failed explains a failure).
    handle: () => Promise.resolve(m.logs.splice(0)),
    close: () => m.close(),
  };
});
