/**
 * Starts the two servers under comparison — the mirror and the static baseline — under the same
 * conditions: both in this process (BENCH_SERVERS=inproc) or each in its own child process
 * (BENCH_SERVERS=child, the default), forked the same way with the same tsx loader.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMirror } from '../../test/support/start-mirror.js';
import { startStaticServer } from './static-server.js';

export type ServerMode = 'child' | 'inproc';

export interface BenchServer {
  url: string;
  /** CPU time (µs, user+system) used so far by the server's process; null in-process (shared). */
  cpuMicros(): Promise<number | null>;
  close(): Promise<void>;
}

export async function startMirrorServer(mode: ServerMode, upstream: string, dataDir: string): Promise<BenchServer> {
  if (mode === 'child') return startChild('mirror', { upstream, dataDir });
  const m = await startMirror(upstream, { logLevel: 'warn', dataDir });
  return { url: m.url, cpuMicros: () => Promise.resolve(null), close: () => m.close() };
}

export async function startBaselineServer(mode: ServerMode, root: string): Promise<BenchServer> {
  if (mode === 'child') return startChild('static', { root });
  const s = await startStaticServer(root);
  return { url: s.url, cpuMicros: () => Promise.resolve(null), close: () => s.close() };
}

type ChildMessage =
  | { type: 'ready'; url: string }
  | { type: 'cpu'; userUs: number; systemUs: number }
  | { type: 'closed' }
  | { type: 'error'; message: string };

const CHILD_SCRIPT = fileURLToPath(new URL('./server-child.ts', import.meta.url));

async function startChild(kind: 'mirror' | 'static', options: Record<string, string>): Promise<BenchServer> {
  const child: ChildProcess = fork(CHILD_SCRIPT, [kind, JSON.stringify(options)], {
    // The tsx loader this process runs under; BENCH_PROF_DIR adds a V8 CPU profile per child.
    execArgv: [...process.execArgv, ...(process.env.BENCH_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${path.join(process.env.BENCH_PROF_DIR, kind)}`] : [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiters: Array<(msg: ChildMessage) => void> = [];
  let exited = false;
  const exitedP = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    resolve();
  }));
  child.on('message', (raw) => {
    const msg = raw as ChildMessage;
    const w = waiters.shift();
    if (w) w(msg);
  });
  const next = (): Promise<ChildMessage> =>
    new Promise<ChildMessage>((resolve, reject) => {
      if (exited) {
        reject(new Error(`${kind} child exited`));
        return;
      }
      waiters.push(resolve);
      void exitedP.then(() => reject(new Error(`${kind} child exited`)));
    });

  const first = await next();
  if (first.type !== 'ready') {
    child.kill();
    throw new Error(`${kind} child failed to start: ${first.type === 'error' ? first.message : first.type}`);
  }
  // One request at a time; calls are serialized so replies match.
  let chain: Promise<unknown> = Promise.resolve();
  const call = (msg: object): Promise<ChildMessage> => {
    const p = chain.then(() => {
      const reply = next();
      child.send(msg);
      return reply;
    });
    chain = p.catch(() => undefined);
    return p;
  };
  return {
    url: first.url,
    cpuMicros: async () => {
      const m = await call({ type: 'cpu' });
      return m.type === 'cpu' ? m.userUs + m.systemUs : null;
    },
    close: async () => {
      if (exited) return;
      try {
        await call({ type: 'close' });
      } catch {
        // exited meanwhile
      }
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exitedP;
      clearTimeout(timer);
    },
  };
}
