/**
 * Child processes of the benchmark (the mirror, the clients): forked with this process's tsx
 * loader, an IPC channel, and a tiny request/response protocol. Every child answers `cpu` (its CPU
 * time), `loop` (its event-loop delay) and `prof-start`/`prof-stop` (a V8 CPU profile of one
 * measurement, written where the parent says) so the parent can see where the machine's time went.
 *
 *   parent → child: { id, op: 'cpu' | 'loop' | 'close' | 'call' | 'prof-start' | 'prof-stop', reset?, body? }
 *   child → parent: { type: 'ready', info } | { type: 'fatal', message } | { id, ok: true, body } | { id, ok: false, message }
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface CpuUsage {
  userUs: number;
  systemUs: number;
}

export interface LoopDelay {
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

type Op = 'cpu' | 'loop' | 'close' | 'call' | 'prof-start' | 'prof-stop';
interface Request {
  id: number;
  op: Op;
  reset?: boolean;
  body?: unknown;
}
type Reply = { type: 'ready'; info: Record<string, unknown> } | { type: 'fatal'; message: string } | { id: number; ok: true; body: unknown } | { id: number; ok: false; message: string };

export interface Child {
  readonly info: Record<string, unknown>;
  readonly pid: number;
  call<T>(body: unknown): Promise<T>;
  cpuUsage(): Promise<CpuUsage>;
  loopDelay(reset: boolean): Promise<LoopDelay>;
  /** Starts a CPU profile (node:inspector) in the child. */
  profileStart(): Promise<void>;
  /** Stops it and writes it to `file` (a .cpuprofile, readable by bench/prof-top.ts and Chrome DevTools). */
  profileStop(file: string): Promise<void>;
  /** Asks the child to shut down cleanly, then waits for it to exit (SIGKILL after 10 s). */
  close(): Promise<void>;
}

// ------------------------------------------------------------------------------------ parent side

export async function forkChild(script: string, args: string[], label: string, nodeArgs: readonly string[] = []): Promise<Child> {
  const prof = process.env.BENCH_PROF_DIR;
  const child: ChildProcess = fork(script, args, {
    // The tsx loader this process runs under; BENCH_PROF_DIR adds a V8 CPU profile per child.
    execArgv: [...process.execArgv, ...nodeArgs, ...(prof ? ['--cpu-prof', `--cpu-prof-dir=${path.join(prof, label)}`] : [])],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let exited = false;
  const exitedP = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      for (const p of pending.values()) p.reject(new Error(`${label} child exited`));
      pending.clear();
      resolve();
    }),
  );
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let readyResolve!: (info: Record<string, unknown>) => void;
  let readyReject!: (e: Error) => void;
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  void exitedP.then(() => readyReject(new Error(`${label} child exited before it was ready`)));
  child.on('message', (raw) => {
    const msg = raw as Reply;
    if ('type' in msg) {
      if (msg.type === 'ready') readyResolve(msg.info);
      else readyReject(new Error(`${label} child failed: ${msg.message}`));
      return;
    }
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.body);
    else p.reject(new Error(`${label} child: ${msg.message}`));
  });
  const info = await ready.catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });

  let nextId = 1;
  const request = <T>(op: Op, extra: Partial<Request> = {}): Promise<T> => {
    if (exited) return Promise.reject(new Error(`${label} child exited`));
    const id = nextId++;
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ id, op, ...extra } satisfies Request);
    });
  };
  return {
    info,
    pid: child.pid ?? 0,
    call: (body) => request('call', { body }),
    cpuUsage: () => request<CpuUsage>('cpu'),
    loopDelay: (reset) => request<LoopDelay>('loop', { reset }),
    profileStart: () => request<void>('prof-start'),
    profileStop: (file) => request<void>('prof-stop', { body: file }),
    close: async () => {
      if (!exited) {
        await request('close').catch(() => undefined);
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exitedP;
        clearTimeout(timer);
      }
    },
  };
}

// ------------------------------------------------------------------------------------ child side

export interface ChildService {
  info: Record<string, unknown>;
  handle?(body: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/** The body of a child entry script: starts the service, then serves the parent's requests. */
export function runChild(start: () => Promise<ChildService>): void {
  const send = (msg: Reply): void => {
    // The parent may be gone already (then the 'disconnect' handler below stops this child).
    if (process.connected) process.send?.(msg);
  };
  const main = async (): Promise<void> => {
    if (!process.send) throw new Error('a bench child must be forked with an IPC channel');
    const service = await start();
    if (!process.connected) {
      // The parent went away while this child was starting: nobody will ever ask it to close.
      await service.close();
      process.exit(0);
    }
    const loop = monitorEventLoopDelay({ resolution: 5 });
    loop.enable();
    let profiler: Session | null = null;
    let closing: Promise<void> | null = null;
    const close = (): Promise<void> => (closing ??= service.close());
    process.on('message', (raw) => {
      const req = raw as Request;
      const answer = async (): Promise<unknown> => {
        switch (req.op) {
          case 'cpu': {
            const u = process.cpuUsage();
            return { userUs: u.user, systemUs: u.system } satisfies CpuUsage;
          }
          case 'loop': {
            const l: LoopDelay = { p50Ms: loop.percentile(50) / 1e6, p99Ms: loop.percentile(99) / 1e6, maxMs: loop.max / 1e6 };
            if (req.reset) loop.reset();
            return l;
          }
          case 'close':
            await close();
            return null;
          case 'prof-start':
            if (profiler) throw new Error('a profile is already running');
            profiler = new Session();
            profiler.connect();
            await profiler.post('Profiler.enable');
            await profiler.post('Profiler.start');
            return null;
          case 'prof-stop': {
            if (!profiler) throw new Error('no profile is running');
            const { profile } = await profiler.post('Profiler.stop');
            profiler.disconnect();
            profiler = null;
            const file = String(req.body);
            fs.mkdirSync(path.dirname(file), { recursive: true });
            fs.writeFileSync(file, JSON.stringify(profile));
            return null;
          }
          case 'call':
            if (!service.handle) throw new Error('this child takes no calls');
            return service.handle(req.body);
        }
      };
      answer().then(
        (body) => {
          send({ id: req.id, ok: true, body });
          if (req.op === 'close') process.disconnect();
        },
        (err: unknown) => send({ id: req.id, ok: false, message: err instanceof Error ? (err.stack ?? err.message) : String(err) }),
      );
    });
    // Parent gone without saying goodbye: stop anyway.
    process.on('disconnect', () => {
      void close().finally(() => process.exit(0));
    });
    send({ type: 'ready', info: service.info });
  };
  main().catch((err: unknown) => {
    send({ type: 'fatal', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exitCode = 1;
    process.disconnect?.();
  });
}
