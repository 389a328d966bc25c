/**
 * A backstop for the bench's cleanup: a small process in its own process group (so the
 * terminal's Ctrl-C does not reach it) that is told about everything that must not outlive the
 * bench — nginx's pid, the loop mount, the temp dir. The bench cleans up itself (finally blocks,
 * its SIGINT handler) and tells the janitor each step is done; if the bench is killed before
 * that (SIGKILL, or a wrapper such as `npx tsx` that SIGKILLs it on Ctrl-C), the janitor sees the
 * IPC channel close and runs what is left.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type JanitorStep = { kind: 'kill'; pid: number } | { kind: 'umount'; path: string } | { kind: 'rm'; path: string };
export type JanitorMessage = { op: 'add'; id: number; step: JanitorStep } | { op: 'done'; id: number } | { op: 'close' };

export interface Janitor {
  add(step: JanitorStep): number;
  done(id: number): void;
  /** Normal end: forget every step and let the janitor exit. */
  close(): void;
}

const JANITOR_CHILD = fileURLToPath(new URL('./janitor-child.ts', import.meta.url));

export function startJanitor(): Janitor {
  const child: ChildProcess = fork(JANITOR_CHILD, [], { detached: true, execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.unref();
  let nextId = 1;
  const send = (m: JanitorMessage): void => {
    if (child.connected) child.send(m);
  };
  return {
    add: (step) => {
      const id = nextId++;
      send({ op: 'add', id, step });
      return id;
    },
    done: (id) => send({ op: 'done', id }),
    close: () => send({ op: 'close' }),
  };
}
