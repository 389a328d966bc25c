/**
 * Child-process entry of the janitor (see janitor.ts): holds the cleanup steps the bench
 * registered and, if the bench goes away without having run them (SIGKILL, a wrapper that killed
 * it on Ctrl-C), runs them: stop processes, unmount, remove directories, newest first.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type { JanitorMessage, JanitorStep } from './janitor.js';

const steps = new Map<number, JanitorStep>();

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function runStep(step: JanitorStep): void {
  try {
    if (step.kind === 'kill') {
      if (!alive(step.pid)) return;
      process.kill(step.pid, 'SIGTERM');
      for (let i = 0; i < 50 && alive(step.pid); i++) sleepSync(100);
      if (alive(step.pid)) process.kill(step.pid, 'SIGKILL');
    } else if (step.kind === 'umount') {
      try {
        execFileSync('umount', [step.path], { stdio: 'ignore' });
      } catch {
        execFileSync('umount', ['-l', step.path], { stdio: 'ignore' });
      }
    } else {
      fs.rmSync(step.path, { recursive: true, force: true });
    }
  } catch {
    // Best effort: not mounted, already gone.
  }
}

process.on('message', (raw) => {
  const msg = raw as JanitorMessage;
  if (msg.op === 'add') steps.set(msg.id, msg.step);
  else if (msg.op === 'done') steps.delete(msg.id);
  else if (msg.op === 'close') {
    steps.clear();
    process.disconnect();
  }
});

process.on('disconnect', () => {
  const pending = [...steps.entries()].sort((a, b) => b[0] - a[0]);
  if (pending.length > 0) console.error(`bench janitor: the bench is gone; cleaning up ${pending.length} leftover(s)`);
  for (const [, step] of pending) runStep(step);
  process.exit(0);
});
