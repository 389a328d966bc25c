/**
 * HashPool: sha256 / git-sha1 of staging files, computed in worker threads so hashing never
 * blocks the event loop. A job hashes one file in order: the fill tells it how far the file's
 * contiguous written prefix reaches (`advance`), the worker reads those bytes itself (they are in
 * the page cache: just written) and feeds its hash. One job is pinned to one worker, whose
 * messages are handled in order, so updates never race.
 *
 * The worker is plain JavaScript evaluated from a string: the TypeScript loaders the mirror runs
 * under in development and tests (tsx, vitest) cannot load a `.ts` file as a worker.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { DigestAlgorithm } from './blob-layout.js';

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const jobs = new Map();
const buf = Buffer.allocUnsafe(8 * 1024 * 1024);
function drop(id) {
  const j = jobs.get(id);
  if (!j) return;
  jobs.delete(id);
  try { fs.closeSync(j.fd); } catch {}
}
parentPort.on('message', (m) => {
  try {
    if (m.op === 'open') {
      const h = createHash(m.algorithm === 'sha256' ? 'sha256' : 'sha1');
      if (m.prefix) h.update(m.prefix, 'latin1');
      jobs.set(m.id, { h, fd: fs.openSync(m.path, 'r'), pos: 0 });
    } else if (m.op === 'advance') {
      const j = jobs.get(m.id);
      if (!j) return;
      while (j.pos < m.to) {
        const n = fs.readSync(j.fd, buf, 0, Math.min(buf.length, m.to - j.pos), j.pos);
        if (n === 0) throw new Error('staging file ends at ' + j.pos + ', before ' + m.to);
        j.h.update(n === buf.length ? buf : buf.subarray(0, n));
        j.pos += n;
      }
      parentPort.postMessage({ id: m.id, op: 'progress', to: j.pos });
    } else if (m.op === 'digest') {
      const j = jobs.get(m.id);
      if (!j) return;
      const hex = j.h.digest('hex');
      drop(m.id);
      parentPort.postMessage({ id: m.id, op: 'digest', hex });
    } else if (m.op === 'close') {
      drop(m.id);
    }
  } catch (err) {
    drop(m.id);
    parentPort.postMessage({ id: m.id, op: 'error', message: String(err && err.message || err) });
  }
});
`;

interface JobState {
  resolveDigest?: (hex: string) => void;
  rejectDigest?: (err: Error) => void;
  failure?: Error;
  hashedTo: number;
}

interface PoolWorker {
  worker: Worker;
  jobs: Map<number, JobState>;
  /** Digests asked for and not yet answered: while there are any, the worker keeps the process alive. */
  awaiting: number;
}

/** A digest of `pw` was asked for: its answer must arrive even if nothing else keeps the process alive. */
function awaitDigest(pw: PoolWorker): void {
  if (pw.awaiting++ === 0) pw.worker.ref();
}

/** A digest of `pw` was answered (or failed). */
function digestSettled(pw: PoolWorker): void {
  if (--pw.awaiting === 0) pw.worker.unref();
}

/** One file being hashed in a worker. */
export interface HashJob {
  /** Bytes hashed so far (as last reported by the worker). */
  readonly hashedTo: number;
  /** The bytes `[previous advance, to)` are in the file: hash them. `to` never goes down. */
  advance(to: number): void;
  /** The hex digest once everything advanced so far is hashed; the job ends. */
  digest(): Promise<string>;
  /** Ends the job without a digest (the fill failed). Idempotent. */
  close(): void;
}

export class HashPool {
  readonly #size: number;
  readonly #workers: PoolWorker[] = [];
  #nextWorker = 0;
  #nextId = 1;
  #closed = false;

  /** @param size worker threads (default: one per core beyond the event loop's, 1 to 4). */
  constructor(size = Math.min(4, Math.max(1, os.availableParallelism() - 1))) {
    this.#size = Math.max(1, size);
  }

  /**
   * Starts hashing `file` (which must exist) with the blob key's algorithm: sha256, or the git
   * blob sha1 (`blob <size>\0` then the content).
   */
  open(file: string, algorithm: DigestAlgorithm, size: number): HashJob {
    if (this.#closed) throw new Error('hash pool closed');
    const pw = this.#pick();
    const id = this.#nextId++;
    const state: JobState = { hashedTo: 0 };
    pw.jobs.set(id, state);
    pw.worker.postMessage({ op: 'open', id, path: file, algorithm, prefix: algorithm === 'gitsha1' ? `blob ${size}\0` : undefined });
    let asked = 0;
    let ended = false;
    return {
      get hashedTo() {
        return state.hashedTo;
      },
      advance(to: number) {
        if (ended || to <= asked) return;
        asked = to;
        pw.worker.postMessage({ op: 'advance', id, to });
      },
      digest() {
        if (ended) return Promise.reject(new Error('hash job already ended'));
        ended = true;
        if (state.failure) {
          pw.jobs.delete(id);
          return Promise.reject(state.failure);
        }
        awaitDigest(pw);
        const p = new Promise<string>((resolve, reject) => {
          state.resolveDigest = (hex) => {
            digestSettled(pw);
            resolve(hex);
          };
          state.rejectDigest = (err) => {
            digestSettled(pw);
            reject(err);
          };
        });
        pw.worker.postMessage({ op: 'digest', id });
        return p;
      },
      close() {
        if (ended) return;
        ended = true;
        pw.jobs.delete(id);
        pw.worker.postMessage({ op: 'close', id });
      },
    };
  }

  /** Stops the workers; jobs still running fail. */
  async close(): Promise<void> {
    this.#closed = true;
    const workers = this.#workers.splice(0);
    await Promise.all(workers.map((pw) => pw.worker.terminate()));
  }

  #pick(): PoolWorker {
    if (this.#workers.length < this.#size) {
      const pw = this.#spawn();
      this.#workers.push(pw);
      return pw;
    }
    // The worker with the fewest jobs (ties: round robin).
    let best: PoolWorker | undefined;
    for (let k = 0; k < this.#workers.length; k++) {
      const pw = this.#workers[(this.#nextWorker + k) % this.#workers.length]!;
      if (!best || pw.jobs.size < best.jobs.size) best = pw;
    }
    this.#nextWorker = (this.#nextWorker + 1) % this.#workers.length;
    return best!;
  }

  #spawn(): PoolWorker {
    const worker = new Worker(WORKER_SOURCE, { eval: true });
    const pw: PoolWorker = { worker, jobs: new Map(), awaiting: 0 };
    worker.on('message', (m: { id: number; op: string; to?: number; hex?: string; message?: string }) => {
      const job = pw.jobs.get(m.id);
      if (!job) return;
      if (m.op === 'progress') job.hashedTo = m.to ?? job.hashedTo;
      else if (m.op === 'digest') {
        pw.jobs.delete(m.id);
        job.resolveDigest?.(m.hex ?? '');
      } else if (m.op === 'error') {
        const err = new Error(`hashing failed: ${m.message ?? 'unknown error'}`);
        job.failure = err;
        if (job.rejectDigest) {
          pw.jobs.delete(m.id);
          job.rejectDigest(err);
        }
      }
    });
    const fail = (err: Error): void => {
      const i = this.#workers.indexOf(pw);
      if (i >= 0) this.#workers.splice(i, 1);
      for (const [id, job] of pw.jobs) {
        job.failure = err;
        if (job.rejectDigest) {
          pw.jobs.delete(id);
          job.rejectDigest(err);
        }
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`hash worker exited (code ${code})`)));
    // The pool keeps the process alive only while a digest is awaited (after the listeners: adding
    // one refs the port again).
    worker.unref();
    return pw;
  }
}

let shared: HashPool | undefined;

/** The process's hash pool (created on first use; its threads keep the process alive only while a digest is awaited). */
export function sharedHashPool(): HashPool {
  shared ??= new HashPool();
  return shared;
}
