/**
 * Starts the two servers under comparison — the mirror and the static baseline — under the same
 * conditions: each in its own child process (the default), or both in this process
 * (BENCH_INPROC=1), where they also share the event loop with the clients and the fake hub.
 */
import { fileURLToPath } from 'node:url';
import { startMirror } from '../../test/support/start-mirror.js';
import { forkChild, type CpuUsage, type LoopDelay } from './child.js';
import { startStaticServer } from './static-server.js';

export interface BenchServer {
  url: string;
  /** CPU time used so far by the server's process; null in-process (shared with everything else). */
  cpuUsage(): Promise<CpuUsage | null>;
  /** Event-loop delay of the server's process since the last reset; null in-process. */
  loopDelay(reset: boolean): Promise<LoopDelay | null>;
  close(): Promise<void>;
}

const SERVER_CHILD = fileURLToPath(new URL('./server-child.ts', import.meta.url));

export async function startMirrorServer(inproc: boolean, upstream: string, dataDir: string): Promise<BenchServer> {
  if (!inproc) return childServer('mirror', { upstream, dataDir });
  const m = await startMirror(upstream, { logLevel: 'warn', dataDir });
  return { url: m.url, cpuUsage: () => Promise.resolve(null), loopDelay: () => Promise.resolve(null), close: () => m.close() };
}

export async function startBaselineServer(inproc: boolean, root: string): Promise<BenchServer> {
  if (!inproc) return childServer('static', { root });
  const s = await startStaticServer(root);
  return { url: s.url, cpuUsage: () => Promise.resolve(null), loopDelay: () => Promise.resolve(null), close: () => s.close() };
}

async function childServer(kind: 'mirror' | 'static', options: Record<string, string>): Promise<BenchServer> {
  const child = await forkChild(SERVER_CHILD, [kind, JSON.stringify(options)], kind);
  return {
    url: String(child.info.url),
    cpuUsage: () => child.cpuUsage(),
    loopDelay: (reset) => child.loopDelay(reset),
    close: () => child.close(),
  };
}
