/**
 * A real PostgreSQL for tests: a throwaway cluster (initdb in a temp dir, trust auth, listening
 * on 127.0.0.1 on a free port only), started by {@link startPostgres} from the server binaries
 * on the machine (Debian's `postgresql-15`: /usr/lib/postgresql/15/bin; HUBCACHE_TEST_PG_BIN
 * names another directory). When HUBCACHE_TEST_PG_URL is set (a superuser URL), that server is
 * used instead and left running. Each test file takes a database of its own
 * ({@link TestPostgres.createDatabase}), so files run in any order and at once.
 *
 * PostgreSQL refuses to run as root: as root the cluster's directory is given to the `postgres`
 * user (created by the Debian package) and the server runs as that user. The server dies with
 * this process: on exit here, or by a watchdog (a shell loop) if this process is killed outright.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './free-port.js';

export interface TestPostgres {
  /** Superuser URL of the `postgres` database (`postgres://hubcache@127.0.0.1:PORT/postgres`). */
  adminUrl: string;
  /** Creates an empty database named `<prefix>_<random>` and returns its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** The cluster's directory (undefined for a reused server). */
  dir: string | undefined;
  /** Stops the server this call started and removes its directory; a reused one is left alone. */
  stop(): Promise<void>;
}

/** The directory holding `initdb` and `postgres`, or undefined. */
function findBinDir(): string | undefined {
  const candidates: string[] = [];
  if (process.env.HUBCACHE_TEST_PG_BIN) candidates.push(process.env.HUBCACHE_TEST_PG_BIN);
  const base = '/usr/lib/postgresql';
  if (fs.existsSync(base)) {
    const versions = fs.readdirSync(base).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => path.join(base, v, 'bin')));
  }
  return candidates.find((dir) => fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'postgres')));
}

/**
 * Why PostgreSQL cannot run here, or undefined when it can (or a server is configured). In CI (CI
 * set) it is always undefined: `.ci/run` installs PostgreSQL, so a missing one must fail, not skip.
 */
export const postgresSkipReason: string | undefined = (() => {
  if (process.env.HUBCACHE_TEST_PG_URL || process.env.CI) return undefined;
  if (!findBinDir()) return 'PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb; Debian: apt-get install --no-install-recommends postgresql-15, or set HUBCACHE_TEST_PG_BIN)';
  return undefined;
})();

/** Clusters this process started: killed when it exits. */
const live = new Map<string, ChildProcess>();
process.once('exit', () => {
  for (const [dir, child] of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

function withHelpers(adminUrl: string, stop: () => Promise<void>, dir?: string): TestPostgres {
  return {
    adminUrl,
    dir,
    stop,
    createDatabase: async (prefix = 'test') => {
      const name = `${prefix}_${crypto.randomBytes(6).toString('hex')}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return url.toString();
    },
  };
}

/** Resolves once a connection to `url` succeeds (the server accepts queries), or rejects after `timeoutMs`. */
async function waitUntilReady(url: string, child: ChildProcess, log: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`postgres exited (${child.exitCode ?? child.signalCode}):\n${log()}`);
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch {
      await client.end().catch(() => {});
    }
    if (Date.now() > deadline) throw new Error(`postgres did not accept connections within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts a throwaway PostgreSQL (about a second on an idle box), or returns the one
 * HUBCACHE_TEST_PG_URL names. Durability settings are off (fsync, synchronous_commit): a test
 * cluster never outlives its machine's crash.
 */
export async function startPostgres(): Promise<TestPostgres> {
  if (process.env.HUBCACHE_TEST_PG_URL) return withHelpers(process.env.HUBCACHE_TEST_PG_URL, async () => {});
  const bin = findBinDir();
  if (!bin) throw new Error(postgresSkipReason ?? 'PostgreSQL server binaries not found');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-pg-'));
  const data = path.join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  let ids: { uid: number; gid: number } | undefined;
  if (asRoot) {
    ids = {
      uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
      gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
    };
    fs.chownSync(dir, ids.uid, ids.gid);
  }
  try {
    execFileSync(path.join(bin, 'initdb'), ['-D', data, '-U', 'hubcache', '--auth=trust', '-E', 'UTF8', '--locale=C', '--no-sync'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...ids,
    });
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`initdb failed: ${e.stderr?.toString() ?? e.message}`);
  }
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const args = ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=300'];
    const child = spawn(path.join(bin, 'postgres'), args, { stdio: ['ignore', 'pipe', 'pipe'], ...ids });
    // The watchdog: stops the server (fast shutdown) once this process is gone, also after SIGKILL.
    spawn('sh', ['-c', `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${child.pid} 2>/dev/null; do sleep 1; done; kill -INT ${child.pid} 2>/dev/null`], {
      stdio: 'ignore',
      detached: true,
    }).unref();
    let output = '';
    child.stdout?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-8_000)));
    child.stderr?.on('data', (c: Buffer) => (output = (output + c.toString()).slice(-8_000)));
    live.set(dir, child);
    const adminUrl = `postgres://hubcache@127.0.0.1:${port}/postgres`;
    try {
      await waitUntilReady(adminUrl, child, () => output, 60_000);
    } catch (err) {
      child.kill('SIGKILL');
      live.delete(dir);
      if (attempt < 3 && /could not bind|already in use/i.test(output)) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return withHelpers(
      adminUrl,
      async () => {
        if (!live.has(dir)) return;
        live.delete(dir);
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGINT'); // fast shutdown: roll back, close connections, exit
          await exited;
        }
        fs.rmSync(dir, { recursive: true, force: true });
      },
      dir,
    );
  }
}
