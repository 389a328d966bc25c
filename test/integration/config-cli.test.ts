/**
 * Configuration through the real CLI (`hubcache serve` in a child process): every problem, from
 * the command line, the environment and a config file alike, is reported in one message with exit
 * code 2 before anything is opened or listened on; boolean options work as bare flags
 * (`--offline`), as `--offline=false`, as `--no-offline` and from `HUBCACHE_OFFLINE`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { runCli, startMirrorProcess, type MirrorProcess } from '../support/mirror-process.js';

const REPO: RepoRef = { id: 'org/cli-model' };
let hub: FakeHub;
let tmp: string;

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ ...REPO, files: { 'config.json': Buffer.from('{"cli": true}\n') } });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-cli-'));
});
afterAll(async () => {
  await hub?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** Listen on a free loopback port should a bad configuration ever be accepted. */
const SAFE_LISTEN = ['--host', '127.0.0.1', '--port', '0'];
/** A generous bound: a configuration that is wrongly accepted starts a server that never exits. */
const EXIT_DEADLINE_MS = 30_000;

/** Runs the CLI until it exits by itself; a process still running at the deadline is killed and reported. */
async function runToExit(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const run = runCli(args, env);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), EXIT_DEADLINE_MS)));
  const outcome = await Promise.race([run.exited, deadline]);
  clearTimeout(timer);
  if (outcome === 'running') {
    run.child.kill('SIGKILL');
    await run.exited;
    return { code: null, output: `${run.output.join('\n')}\n(still running after ${EXIT_DEADLINE_MS} ms: killed)` };
  }
  return { code: outcome.code, output: run.output.join('\n') };
}

/** The problem lines of the "invalid configuration" message. */
function problems(output: string): string[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('  - '))
    .map((l) => l.slice(4));
}

describe('invalid configuration', () => {
  it('lists every problem from flags, environment and config file in one message, exit 2, before touching the data dir', async () => {
    const dataDir = path.join(tmp, 'never-created');
    const configFile = path.join(tmp, 'bad.json');
    fs.writeFileSync(configFile, JSON.stringify({ denyRepos: ['models/{a,b}'], corsOrigins: ['https://app.example/path'], maxResumes: 1000 }));
    const { code, output } = await runToExit(
      [
        'serve',
        '--config', configFile,
        '--data-dir', dataDir,
        '--allowed-redirect-hosts', 'cdn.example,https://cdn2.example',
        '--allow-repos', 'meta-llama/*',
        '--host', 'not a host',
        '--offline=yes',
        '--ofline',
      ],
      { HUBCACHE_PORT: '70000', HUBCACHE_LOG_LEVEL: 'loud', HUBCACHE_CORS_ORIGIN: '*', HUBCACHE_UPSTREAM: 'ftp://hub.example', HUBCACHE_CLIENT_IDLE_TIMEOUT_SECONDS: '30' },
    );
    expect(code, output).toBe(2);
    expect(output).toContain('hubcache: invalid configuration:');
    expect(output).not.toContain('could not start');
    const listed = problems(output);
    const expected = [
      /^unknown option --ofline \(from command line\)$/,
      /^unknown environment variable HUBCACHE_CORS_ORIGIN$/,
      /^host \(from command line\): not an IP address or host name/,
      /^port \(from environment\): must be between 0 and 65535, got 70000$/,
      /^upstream \(from environment\): must be an http:\/\/ or https:\/\/ URL/,
      /^maxResumes \(from .*bad\.json\): must be between 0 and 100/,
      /^allowedRedirectHosts \(from command line\): "https:\/\/cdn2\.example" is not a host pattern/,
      /^offline \(from command line\): expected true, false, 1 or 0, got "yes"$/,
      /^allowRepos \(from command line\): "meta-llama\/\*": must start with models\/, datasets\/ or spaces\//,
      /^denyRepos \(from .*bad\.json\): "models\/\{a,b\}": only letters, digits/,
      /^corsOrigins \(from .*bad\.json\): an origin is scheme:\/\/host\[:port\] only/,
      /^logLevel \(from environment\): must be one of/,
      /^clientIdleTimeoutSeconds \(from environment\): must be above upstreamIdleTimeoutSeconds \(60, from default\)/,
    ];
    for (const re of expected) expect(listed.some((l) => re.test(l)), `${re} in\n${output}`).toBe(true);
    expect(listed).toHaveLength(expected.length);
    expect(fs.existsSync(dataDir)).toBe(false);
  });

  it('an invalid allowedRedirectHosts entry alone is a configuration problem (exit 2), not a failure to start', async () => {
    const dataDir = path.join(tmp, 'redirect-hosts');
    const { code, output } = await runToExit(['serve', '--data-dir', dataDir, ...SAFE_LISTEN], { HUBCACHE_ALLOWED_REDIRECT_HOSTS: '*.hf.co,https://cdn.example,cdn.example:99999' });
    expect(code, output).toBe(2);
    expect(problems(output)).toEqual([
      expect.stringMatching(/^allowedRedirectHosts \(from environment\): "https:\/\/cdn\.example" is not a host pattern/),
      expect.stringMatching(/^allowedRedirectHosts \(from environment\): "cdn\.example:99999" is not a host pattern/),
    ]);
    expect(output).not.toContain('could not start');
    expect(fs.existsSync(dataDir)).toBe(false);
  });

  it('invalid repo globs are reported (they used to be accepted and match nothing)', async () => {
    const { code, output } = await runToExit(['serve', '--data-dir', path.join(tmp, 'globs'), ...SAFE_LISTEN, '--allow-repos', 'models/org/*,org/model', '--deny-repos', 'model/org/secret,models//x,models/a/b/c']);
    expect(code, output).toBe(2);
    expect(problems(output)).toEqual([
      expect.stringMatching(/^allowRepos .*"org\/model": must start with models\/, datasets\/ or spaces\/ .* e\.g\. models\/org\/model$/),
      expect.stringMatching(/^denyRepos .*"model\/org\/secret": must start with .* e\.g\. models\/org\/secret$/),
      expect.stringMatching(/^denyRepos .*"models\/\/x": empty path segment$/),
      expect.stringMatching(/^denyRepos .*"models\/a\/b\/c": a repo is <type>\/<name> or <type>\/<org>\/<name>/),
    ]);
  });

  it('index: postgres without storage s3 is a configuration problem (exit 2); the URL\'s password is never shown', async () => {
    const dataDir = path.join(tmp, 'pg-index');
    const { code, output } = await runToExit(['serve', '--data-dir', dataDir, ...SAFE_LISTEN, '--index', 'postgres'], { HUBCACHE_INDEX_URL: 'mysql://hubcache:cli-hidden-pw@127.0.0.1:1/db' });
    expect(code, output).toBe(2);
    expect(problems(output)).toEqual([
      expect.stringMatching(/^indexUrl \(from environment\): must be a postgres:\/\/ or postgresql:\/\/ URL, got "mysql:\/\/hubcache:\*\*\*@127\.0\.0\.1:1\/db"$/),
      expect.stringMatching(/^index \(from command line\): "postgres" \(an index shared by replicas\) needs storage "s3"/),
    ]);
    expect(output).not.toContain('cli-hidden-pw');
    expect(fs.existsSync(dataDir)).toBe(false);
  });

  it('a flag given without its value is a usage error with exit 2', async () => {
    const { code, output } = await runToExit(['serve', '--data-dir', path.join(tmp, 'usage'), '--host', '127.0.0.1', '--port']);
    expect(code, output).toBe(2);
    expect(output).toMatch(/--port <value>' argument missing/);
  });
});

describe('boolean options', () => {
  const started: MirrorProcess[] = [];
  afterAll(async () => {
    for (const m of started) await m.kill('SIGTERM');
  });

  async function start(name: string, env: Record<string, string>, args: string[]): Promise<MirrorProcess> {
    const m = await startMirrorProcess(hub.url, path.join(tmp, name), env, args);
    started.push(m);
    return m;
  }

  const isOffline = (m: MirrorProcess) => m.output.some((l) => l.includes('offline mode (offline: true)'));

  it('`serve --offline` (a bare flag) starts in offline mode: nothing cached, nothing asked upstream', async () => {
    const m = await start('bare-offline', {}, ['--offline']);
    expect(isOffline(m)).toBe(true);
    hub.resetCounters();
    const res = await download(`${m.url}/${REPO.id}/resolve/main/config.json`);
    expect(res.status).toBe(503);
    expect(header(res, 'x-error-message')).toMatch(/Offline mode/);
    expect(hub.count()).toBe(0);
    await m.kill('SIGTERM');
  });

  it('HUBCACHE_OFFLINE=1 turns it on; --no-offline and --offline=false on the command line win over it', async () => {
    const fromEnv = await start('env-offline', { HUBCACHE_OFFLINE: '1' }, []);
    expect(isOffline(fromEnv)).toBe(true);
    await fromEnv.kill('SIGTERM');
    for (const [name, flag] of [['no-offline', '--no-offline'], ['offline-false', '--offline=false']] as const) {
      const m = await start(name, { HUBCACHE_OFFLINE: 'true' }, [flag]);
      expect(isOffline(m), flag).toBe(false);
      const res = await download(`${m.url}/${REPO.id}/resolve/main/config.json`);
      expect([flag, res.status, res.body.toString()]).toEqual([flag, 200, '{"cli": true}\n']);
      await m.kill('SIGTERM');
    }
  });
});
