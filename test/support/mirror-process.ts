/**
 * The mirror as a child process (`hubcache serve`), so a test can SIGKILL it mid-fill and start
 * another one on the same data dir. It runs the bundle of src/main.ts built by the global setup
 * (test/support/global-setup.ts), or the TypeScript sources through tsx where there is none.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface MirrorProcess {
  url: string;
  child: ChildProcess;
  /** stdout and stderr lines so far. */
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Children still running: killed when the test process exits, even after a timed-out test. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** Outbound proxy variables: a child gets only those a test gives it, never the test process's own. */
const PROXY_VARIABLES = ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'];

/** Starts the child process (default: node's spawn; a network namespace's host.spawn runs it there). */
export type Spawner = (command: string, args: string[], opts: SpawnOptions) => ChildProcess;

/** `as`: run the child as another user (the test process must be root). */
export function runCli(args: string[], env: Record<string, string> = {}, as?: { uid: number; gid: number }, spawner: Spawner = spawn): { child: ChildProcess; output: string[]; exited: MirrorProcess['exited'] } {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([name]) => !PROXY_VARIABLES.includes(name)));
  const bundle = inject('mirrorBundle') as string | undefined;
  const entry = bundle ? [bundle] : ['--import', 'tsx', path.join(ROOT, 'src/main.ts')];
  const child = spawner(process.execPath, [...entry, ...args], {
    cwd: ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...as,
  });
  const output: string[] = [];
  // Whole lines only: a chunk may end in the middle of one (kept until its end arrives).
  const collector = () => {
    let partial = '';
    return (c: Buffer) => {
      const lines = (partial + c.toString()).split('\n');
      partial = lines.pop() ?? '';
      output.push(...lines.filter(Boolean));
    };
  };
  child.stdout?.on('data', collector());
  child.stderr?.on('data', collector());
  live.add(child);
  // 'close', not 'exit': 'exit' may come before the last of the child's output has been read.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, output, exited };
}

/**
 * `hubcache serve` on 127.0.0.1 port 0; `args` are further command-line words (e.g. `--offline`).
 * `where`: another listen address, started by another spawner (a network namespace's host).
 */
export async function startMirrorProcess(upstream: string, dataDir: string, env: Record<string, string> = {}, args: string[] = [], where: { host: string; spawn: Spawner } = { host: '127.0.0.1', spawn }): Promise<MirrorProcess> {
  // The fake CDN is on 127.0.0.1 (or the test network): private redirects must be allowed.
  const { child, output, exited } = runCli(['serve', '--host', where.host, '--port', '0', '--data-dir', dataDir, '--upstream', upstream, '--log-level', 'info', ...args], { HUBCACHE_ALLOW_PRIVATE_REDIRECTS: 'true', ...env }, undefined, where.spawn);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mirror did not start:\n${output.join('\n')}`)), 30_000);
    const check = () => {
      for (const line of output) {
        const m = /"url":"(http:\/\/[^"]+)".*hubcache listening/.exec(line);
        if (m?.[1]) {
          clearTimeout(timer);
          resolve(m[1]);
          return;
        }
      }
    };
    child.stdout?.on('data', check);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`mirror exited (${code ?? signal}) before listening:\n${output.join('\n')}`));
    });
  });
  return {
    url,
    child,
    output,
    exited,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
