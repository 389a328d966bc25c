/**
 * The mirror under test, in its own process (mirror-child.ts), forked the same way as the clients.
 * Its CPU and memory are read from /proc from outside; its event-loop delay and CPU profiles come
 * from inside, over the IPC channel.
 */
import { fileURLToPath } from 'node:url';
import type { Config } from '../../src/config/config.js';
import { forkChild, type Child, type LoopDelay } from './child.js';
import { cpuSeconds, rssBytes } from './proc.js';

export interface MirrorUnderTest {
  url: string;
  pid: number;
  dataDir: string;
  child: Child;
  cpu(): { user: number; system: number } | null;
  rss(): number | null;
  loopDelay(reset: boolean): Promise<LoopDelay>;
  /** Log lines at warn and above since the last call. */
  takeLogs(): Promise<string[]>;
  close(): Promise<void>;
}

const MIRROR_CHILD = fileURLToPath(new URL('./mirror-child.ts', import.meta.url));

export async function startMirrorChild(upstream: string, dataDir: string, overrides: Partial<Config>, label = 'mirror'): Promise<MirrorUnderTest> {
  const child = await forkChild(MIRROR_CHILD, [JSON.stringify({ upstream, dataDir, overrides })], label, mirrorNodeArgs());
  return {
    url: String(child.info.url),
    pid: child.pid,
    dataDir,
    child,
    cpu: () => cpuSeconds(child.pid),
    rss: () => rssBytes(child.pid),
    loopDelay: (reset) => child.loopDelay(reset),
    takeLogs: () => child.call<string[]>(null),
    close: () => child.close(),
  };
}

/** Extra node flags for the mirror process only (BENCH_MIRROR_NODE_ARGS, space-separated), e.g. `--trace-gc`. */
function mirrorNodeArgs(): string[] {
  return (process.env.BENCH_MIRROR_NODE_ARGS ?? '').split(/\s+/).filter((a) => a !== '');
}
