/**
 * `hubcache health` through the real CLI, as a container health check runs it: it reads the
 * configuration `serve` reads (config file, environment, flags), finds the server serving that
 * data directory (also when `serve` got its port as a flag the check does not know), exits 0 when
 * /healthz answers 200 and 1 otherwise, with a message saying what it asked. And a data directory
 * the service user cannot write stops `serve` with a message naming the uid that must own it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { freePort } from '../support/free-port.js';
import { runCli } from '../support/mirror-process.js';
import { within } from '../support/wait-for.js';

let hub: FakeHub;
let tmp: string;

beforeAll(async () => {
  hub = await startFakeHub();
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-health-'));
  // Traversable by another user (the unwritable-data-dir test runs the mirror as nobody when root).
  fs.chmodSync(tmp, 0o755);
});
afterAll(async () => {
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

type Cli = ReturnType<typeof runCli>;

/** `hubcache <args>` until it exits (bounded so a wrongly running process cannot hang the file). */
async function runToExit(args: string[], env: Record<string, string> = {}, as?: { uid: number; gid: number }): Promise<{ code: number | null; output: string }> {
  const run = runCli(args, env, as);
  const exit = await within(run.exited, { what: `hubcache ${args.join(' ')} to exit`, timeoutMs: 30_000 }).catch(async (err: unknown) => {
    run.child.kill('SIGKILL');
    await run.exited;
    throw err;
  });
  return { code: exit.code, output: run.output.join('\n') };
}

/** `hubcache serve <args>` once it logs that it listens; undefined if it exited first (its output tells why). */
async function serveUntilListening(args: string[], env: Record<string, string> = {}): Promise<{ cli: Cli } | { exitedWith: string }> {
  const cli = runCli(['serve', ...args], env);
  const listening = new Promise<true>((resolve) => {
    const check = () => {
      if (cli.output.some((l) => l.includes('hubcache listening'))) resolve(true);
    };
    cli.child.stdout?.on('data', check);
    check();
  });
  const outcome = await within(Promise.race([listening, cli.exited]), { what: 'hubcache serve to listen or exit', timeoutMs: 30_000 });
  if (outcome === true) return { cli };
  return { exitedWith: cli.output.join('\n') };
}

async function stop(cli: Cli): Promise<void> {
  if (cli.child.exitCode === null && cli.child.signalCode === null) cli.child.kill('SIGTERM');
  await within(cli.exited, { what: 'hubcache serve to stop' });
}

/** A port nothing listens on (a moment ago): where the check must find no server. */
const closedPort = freePort;

describe('hubcache health', () => {
  it('a server on a port set in a config file: health with the same config file exits 0, also with no listening record', async () => {
    const dataDir = path.join(tmp, 'from-config');
    const configFile = path.join(tmp, 'from-config.json');
    let server: Cli | undefined;
    // The port is written into the file before the server binds it: on the rare collision, another one.
    for (let attempt = 0; attempt < 5 && !server; attempt++) {
      const port = await freePort();
      fs.writeFileSync(configFile, JSON.stringify({ host: '127.0.0.1', port, dataDir, upstream: hub.url }));
      const started = await serveUntilListening(['--config', configFile]);
      if ('cli' in started) server = started.cli;
      else if (!started.exitedWith.includes('EADDRINUSE')) throw new Error(`serve did not start:\n${started.exitedWith}`);
    }
    if (!server) throw new Error('no free port after 5 attempts');
    try {
      const ok = await runToExit(['health', '--config', configFile]);
      expect(ok.code, ok.output).toBe(0);
      expect(ok.output).toMatch(/^hubcache health: healthy: http:\/\/127\.0\.0\.1:\d+\/healthz: \{"status":"ok"/);
      expect(fs.existsSync(path.join(dataDir, 'listening.json'))).toBe(true);

      // Another data directory, so no record: the host and port of the configuration are probed.
      const fromConfig = await runToExit(['health', '--config', configFile, '--data-dir', path.join(tmp, 'empty-dir')]);
      expect(fromConfig.code, fromConfig.output).toBe(0);
      const viaEnv = await runToExit(['health'], { HUBCACHE_CONFIG: configFile, HUBCACHE_DATA_DIR: path.join(tmp, 'empty-dir') });
      expect(viaEnv.code, viaEnv.output).toBe(0);
    } finally {
      await stop(server);
    }
  });

  it('serve --port given as a flag the check does not know: health finds it through the data directory, and fails once it stopped', async () => {
    const dataDir = path.join(tmp, 'flag-port');
    // What a container health check sees: the image's environment (a port nothing listens on
    // here), while the server was started with a port on its command line.
    const checkEnv = { HUBCACHE_DATA_DIR: dataDir, HUBCACHE_HOST: '0.0.0.0', HUBCACHE_PORT: String(await closedPort()) };
    const started = await serveUntilListening(['--port', '0'], { ...checkEnv, HUBCACHE_HOST: '127.0.0.1', HUBCACHE_UPSTREAM: hub.url });
    if (!('cli' in started)) throw new Error(`serve did not start:\n${started.exitedWith}`);
    const url = /"url":"(http:\/\/[^"]+)"/.exec(started.cli.output.join('\n'))?.[1];
    try {
      const ok = await runToExit(['health'], checkEnv);
      expect(ok.code, ok.output).toBe(0);
      expect(ok.output).toContain(`healthy: ${url}/healthz`);
    } finally {
      await stop(started.cli);
    }
    // Stopped: its record is gone, the configured port has no server.
    expect(fs.existsSync(path.join(dataDir, 'listening.json'))).toBe(false);
    const after = await runToExit(['health'], checkEnv);
    expect(after.code, after.output).toBe(1);
    expect(after.output).toContain(`hubcache health: unhealthy: no answer from http://127.0.0.1:${checkEnv.HUBCACHE_PORT}/healthz (`);
  });

  it('a server killed with SIGKILL leaves its record: health probes it, finds nothing and exits 1', async () => {
    const dataDir = path.join(tmp, 'killed');
    const started = await serveUntilListening(['--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, '--upstream', hub.url]);
    if (!('cli' in started)) throw new Error(`serve did not start:\n${started.exitedWith}`);
    started.cli.child.kill('SIGKILL');
    await within(started.cli.exited, { what: 'the killed server to exit' });
    const url = (JSON.parse(fs.readFileSync(path.join(dataDir, 'listening.json'), 'utf8')) as { url: string }).url;
    const r = await runToExit(['health', '--data-dir', dataDir]);
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`unhealthy: no answer from ${url}/healthz (`);
    expect(r.output).toContain('address recorded by the server');
  });

  it('nothing listening: exit 1, naming the address asked and where it came from', async () => {
    const port = await closedPort();
    const r = await runToExit(['health', '--data-dir', path.join(tmp, 'nothing'), '--host', '0.0.0.0', '--port', String(port)]);
    expect(r.code, r.output).toBe(1);
    expect(r.output).toMatch(new RegExp(`^hubcache health: unhealthy: no answer from http://127\\.0\\.0\\.1:${port}/healthz \\(.*ECONNREFUSED.*\\) \\(address from the configuration; is "hubcache serve" running with it`));
  });

  it('an invalid configuration: every problem listed, exit 1 (container checks reserve 2)', async () => {
    const r = await runToExit(['health', '--port', '70000', '--ofline'], { HUBCACHE_LOG_LEVEL: 'loud' });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('hubcache health: invalid configuration:');
    expect(r.output).toMatch(/ {2}- port \(from command line\): must be between 0 and 65535/);
    expect(r.output).toMatch(/ {2}- logLevel \(from environment\)/);
    expect(r.output).toContain('  - unknown option --ofline (from command line)');
  });
});

describe('a data directory the service user cannot write', () => {
  it('stops serve with exit 1 and a message naming the uid that must own it', async () => {
    const dataDir = path.join(tmp, 'root-owned');
    fs.mkdirSync(dataDir, { mode: 0o755 });
    // As root (CI, containers) the mirror runs as nobody on a root-owned directory; otherwise as
    // this user on a directory without write permission.
    const root = process.getuid?.() === 0;
    if (!root) fs.chmodSync(dataDir, 0o555);
    const as = root ? { uid: 65534, gid: 65534 } : undefined;
    const uid = as?.uid ?? process.getuid?.();
    const gid = as?.gid ?? process.getgid?.();
    const r = await runToExit(['serve', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir, '--upstream', hub.url], {}, as);
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`The data directory ${dataDir} is not writable by this process (uid ${uid}, gid ${gid})`);
    expect(r.output).toContain(`chown -R ${uid}:${gid} ${dataDir}`);
    expect(fs.readdirSync(dataDir)).toEqual([]);
  });
});
