/**
 * Child-process entry for a server under test: the mirror (startMirror, the same startServer as
 * `hubcache serve`, logLevel warn) or the static baseline server.
 *
 *   argv: <kind: mirror|static> <JSON options>
 */
import { startMirror } from '../../test/support/start-mirror.js';
import { runChild } from './child.js';
import { startStaticServer } from './static-server.js';

runChild(async () => {
  const kind = process.argv[2];
  const options = JSON.parse(process.argv[3] ?? '{}') as Record<string, string>;
  if (kind === 'mirror') {
    const m = await startMirror(String(options.upstream), { logLevel: 'warn', dataDir: String(options.dataDir) });
    return { info: { url: m.url }, close: () => m.close() };
  }
  if (kind === 'static') {
    const s = await startStaticServer(String(options.root));
    return { info: { url: s.url }, close: () => s.close() };
  }
  throw new Error(`unknown server kind ${String(kind)}`);
});
