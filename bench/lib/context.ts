/**
 * What every phase of the bench shares: the settings, the report, the correctness failures, the
 * client processes, the cleanup stack (run on any exit, Ctrl-C included), and `world()`: a fresh
 * fake hub (in this process) plus a fresh mirror child over a fresh data dir, so each phase starts
 * from a clean mirror and the fake hub's file buffers are freed when the phase ends.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../../src/config/config.js';
import { makeContent } from '../../test/support/content.js';
import { startFakeHub, type FakeHub } from '../../test/support/fake-hub.js';
import type { ClientPool } from './clients.js';
import type { ContentRef } from './content.js';
import type { GetOutcome } from './http-get.js';
import type { Janitor, JanitorStep } from './janitor.js';
import { startMirrorChild, type MirrorUnderTest } from './mirror.js';
import type { Report } from './report.js';
import type { Settings } from './settings.js';
import { recyclePages } from './pages.js';

export interface BenchFile {
  repo: string;
  path: string;
  size: number;
  ref: ContentRef;
  sha256: string;
  /** Path of the blob on the fake CDN (its body requests are counted by this). */
  cdnPath: string;
}

/**
 * A LIFO stack of cleanup steps; `runAll` runs each once, even if one throws. A step may name a
 * backstop for the janitor (janitor.ts), which runs it if this process dies before the step did.
 */
export class Cleanup {
  readonly #steps: { name: string; fn: () => Promise<void> | void }[] = [];
  constructor(readonly janitor?: Janitor) {}

  push(name: string, fn: () => Promise<void> | void, backstop: JanitorStep | JanitorStep[] = []): () => Promise<void> {
    const janitor = this.janitor;
    const ids = janitor ? [backstop].flat().map((b) => janitor.add(b)) : [];
    const step = {
      name,
      fn: async () => {
        await fn();
        for (const id of ids) janitor?.done(id);
      },
    };
    this.#steps.push(step);
    return async () => {
      const i = this.#steps.indexOf(step);
      if (i < 0) return;
      this.#steps.splice(i, 1);
      await step.fn();
    };
  }
  async runAll(): Promise<void> {
    while (this.#steps.length > 0) {
      const step = this.#steps.pop()!;
      try {
        await step.fn();
      } catch (err) {
        console.error(`bench: cleanup "${step.name}" failed: ${(err as Error).message}`);
      }
    }
  }
}

/** A fresh fake hub for one phase. */
export interface HubWorld {
  hub: FakeHub;
  /** Adds `count` fresh files of `size` bytes (each its own content, never seen by anyone). */
  addFiles(name: string, count: number, size: number): BenchFile[];
  hubUrl(f: BenchFile): string;
  /** Body bytes the fake CDN sent for this file so far, and its CDN GETs. */
  upstream(f: BenchFile): { bytes: number; gets: number };
}

/** A fresh fake hub plus a fresh mirror over a fresh data dir. */
export interface World extends HubWorld {
  mirror: MirrorUnderTest;
  mirrorUrl(f: BenchFile): string;
}

let nextSeed = 1000;

export class BenchContext {
  readonly failures: string[] = [];
  readonly details: Record<string, unknown> = {};
  readonly t0 = performance.now();

  constructor(
    readonly s: Settings,
    readonly report: Report,
    readonly clients: ClientPool,
    readonly tmp: string,
    readonly cleanup: Cleanup,
  ) {}

  fail(msg: string): void {
    this.failures.push(msg);
    console.error(`  FAIL: ${msg}`);
  }

  /**
   * Right before a timed run that stores about `bytes` (a cache's copy, a client's output file):
   * fresh pages for it, whatever ran before (see pages.ts).
   */
  async freshPages(bytes: number): Promise<void> {
    if (this.s.recyclePages) await recyclePages(this.tmp, bytes);
  }

  progress(msg: string): void {
    console.error(`[bench ${((performance.now() - this.t0) / 1000).toFixed(0)}s] ${msg}`);
  }

  /**
   * Checks one GET: status, Content-Length, body length, body bytes (ExpectedContent), sha256
   * when hashed, and no transport error. `stoppedOk`: a request stopped on purpose (time box,
   * maxBodyBytes) is fine as long as what arrived was right.
   */
  checkGet(what: string, r: GetOutcome, o: { size: number; status?: number; sha256?: string; cache?: string; stoppedOk?: boolean; bodyLength?: number }): boolean {
    const status = o.status ?? 200;
    const length = o.bodyLength ?? o.size;
    const before = this.failures.length;
    if (r.error) this.fail(`${what}: ${r.error} (status ${r.status}, ${r.bytes} body bytes)`);
    else if (r.status !== status) this.fail(`${what}: status ${r.status}, expected ${status}`);
    else {
      if (r.headers['content-length'] !== String(length)) this.fail(`${what}: content-length ${String(r.headers['content-length'])}, expected ${length}`);
      if (!(r.stopped && o.stoppedOk) && r.bytes !== length) this.fail(`${what}: ${r.bytes} body bytes, expected ${length}`);
      if (r.stopped && !o.stoppedOk) this.fail(`${what}: stopped early`);
    }
    if (r.mismatchAt !== null) this.fail(`${what}: body differs from the source at byte ${r.mismatchAt} (its sha256 cannot match)`);
    if (o.sha256 !== undefined && !r.error && r.sha256 !== o.sha256) this.fail(`${what}: sha256 ${String(r.sha256)}, expected ${o.sha256}`);
    if (o.cache !== undefined && r.headers['x-mirror-cache'] !== o.cache) console.error(`  note: ${what}: x-mirror-cache ${String(r.headers['x-mirror-cache'])}, expected ${o.cache}`);
    return this.failures.length === before;
  }

  /** The untimed sha256 pass: one more full GET, hashed inline (and compared byte by byte). */
  async verifySha(what: string, url: string, f: BenchFile, cache?: string): Promise<void> {
    const b = await this.clients.gets([{ url, expect: f.ref, hash: true, followRedirects: true }]);
    this.checkGet(`${what} (sha256 pass)`, b.outcomes[0]!, { size: f.size, sha256: f.sha256, ...(cache !== undefined ? { cache } : {}) });
  }

  /** A fresh fake hub for one phase (its file buffers are freed when the phase ends). */
  async hubWorld<T>(name: string, fn: (h: HubWorld) => Promise<T>): Promise<T> {
    const hub = await startFakeHub();
    const stopHub = this.cleanup.push(`fake hub (${name})`, () => hub.stop());
    try {
      return await fn({
        hub,
        addFiles: (fname, count, size) => {
          const repo = `bench/${fname}`;
          const files: Record<string, Buffer> = {};
          const refs: { path: string; ref: ContentRef }[] = [];
          for (let i = 0; i < count; i++) {
            const ref = { seed: nextSeed++, size };
            const p = `${fname}-${i}.bin`;
            files[p] = makeContent(size, ref.seed);
            refs.push({ path: p, ref });
          }
          hub.addRepo({ id: repo, files });
          return refs.map(({ path: p, ref }) => {
            const info = hub.fileInfo({ id: repo }, p);
            return { repo, path: p, size, ref, sha256: info.sha256, cdnPath: info.cdnPath ?? '' };
          });
        },
        hubUrl: (f) => `${hub.url}/${f.repo}/resolve/main/${f.path}`,
        upstream: (f) => ({
          bytes: hub.bytesSent({ server: 'cdn', pathPrefix: f.cdnPath }),
          gets: hub.count({ server: 'cdn', method: 'GET', pathPrefix: f.cdnPath }),
        }),
      });
    } finally {
      await stopHub();
    }
  }

  /**
   * A mirror child over `dataDir` pointed at this hub, for the duration of `fn`. `config`: the
   * phase's own settings (e.g. `storage: s3`), over BENCH_MIRROR_CONFIG.
   */
  async withMirror<T>(h: HubWorld, name: string, dataDir: string, fn: (w: World) => Promise<T>, config: Partial<Config> = {}): Promise<T> {
    fs.mkdirSync(dataDir, { recursive: true });
    const mirror = await startMirrorChild(h.hub.url, dataDir, { ...this.s.mirrorConfig, ...config }, `mirror-${name}`);
    const closeMirror = this.cleanup.push(`mirror (${name})`, () => mirror.close(), { kind: 'kill', pid: mirror.pid });
    try {
      const out = await fn({ ...h, mirror, mirrorUrl: (f) => `${mirror.url}/${f.repo}/resolve/main/${f.path}` });
      // The start-up warning about loopback redirects is expected: the fake CDN is on 127.0.0.1.
      const logs = (await mirror.takeLogs().catch(() => [])).filter((l) => !l.includes('allowPrivateRedirects'));
      if (logs.length > 0) console.error(`  mirror (${name}) logged:\n${logs.slice(0, 20).map((l) => `    ${l}`).join('\n')}`);
      return out;
    } finally {
      await closeMirror();
    }
  }

  /** A fresh fake hub + mirror (data dir in the bench's temp dir, removed afterwards) for one phase. */
  async world<T>(name: string, fn: (w: World) => Promise<T>): Promise<T> {
    return this.hubWorld(name, async (h) => {
      const dataDir = path.join(this.tmp, `${name}-data`);
      const removeData = this.cleanup.push(`data dir (${name})`, () => fs.rmSync(dataDir, { recursive: true, force: true }));
      try {
        return await this.withMirror(h, name, dataDir, fn);
      } finally {
        await removeData();
      }
    });
  }

  /** With BENCH_PROF_DIR: a CPU profile of the mirror over `fn` (mirror-<label>.cpuprofile). */
  async profiled<T>(mirror: MirrorUnderTest, label: string, fn: () => Promise<T>): Promise<T> {
    if (!this.s.profDir) return fn();
    await mirror.child.profileStart();
    try {
      return await fn();
    } finally {
      const file = path.join(this.s.profDir, `mirror-${label}.cpuprofile`);
      await mirror.child.profileStop(file).then(
        () => this.progress(`   profile written: ${file}`),
        (err: unknown) => console.error(`  note: profile ${label}: ${(err as Error).message}`),
      );
    }
  }
}

/** The finished blob file of `sha256` in a mirror data dir (the layout is the mirror's business: search for it). */
export function findBlob(dataDir: string, sha256: string): string | null {
  const walk = (dir: string): string | null => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return null;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name === 'staging' || e.name === 'quarantine') continue;
        const hit = walk(p);
        if (hit) return hit;
      } else if (e.isFile() && e.name === sha256) return p;
    }
    return null;
  };
  return walk(dataDir);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
