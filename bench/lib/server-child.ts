/**
 * Child-process entry for BENCH_SERVERS=child: runs either the mirror (startMirror, the same
 * startServer as `hubcache serve`) or the static baseline server, and answers the parent over IPC.
 *
 *   argv: <kind: mirror|static> <JSON options>
 *   parent → child: { type: 'cpu' } | { type: 'close' }
 *   child → parent: { type: 'ready', url } | { type: 'cpu', userUs, systemUs } | { type: 'closed' } | { type: 'error', message }
 */
import { startMirror } from '../../test/support/start-mirror.js';
import { startStaticServer } from './static-server.js';

interface Running {
  url: string;
  close(): Promise<void>;
}

type ParentMessage = { type: 'cpu' } | { type: 'close' };

function send(msg: object): void {
  process.send?.(msg);
}

async function start(kind: string | undefined, options: Record<string, unknown>): Promise<Running> {
  if (kind === 'mirror') {
    const m = await startMirror(String(options.upstream), { logLevel: 'warn', dataDir: String(options.dataDir) });
    return { url: m.url, close: () => m.close() };
  }
  if (kind === 'static') return startStaticServer(String(options.root));
  throw new Error(`unknown server kind ${String(kind)}`);
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('server-child must be started with an IPC channel (fork)');
  const options = JSON.parse(process.argv[3] ?? '{}') as Record<string, unknown>;
  const running = await start(process.argv[2], options);
  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => (closing ??= running.close());
  process.on('message', (raw) => {
    const msg = raw as ParentMessage;
    if (msg.type === 'cpu') {
      const u = process.cpuUsage();
      send({ type: 'cpu', userUs: u.user, systemUs: u.system });
    } else if (msg.type === 'close') {
      void close().then(() => {
        send({ type: 'closed' });
        process.disconnect();
      });
    }
  });
  // Parent gone without saying goodbye: stop anyway.
  process.on('disconnect', () => {
    void close().finally(() => process.exit(0));
  });
  send({ type: 'ready', url: running.url });
}

main().catch((err: unknown) => {
  send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
