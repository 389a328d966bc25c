/**
 * Several hosts on one machine, for multi-host tests: each host is a Linux network namespace with
 * its own loopback and one interface (`eth0`, a veth pair) on a private /24, all joined by a bridge
 * in the root namespace. The bridge holds the subnet's `.1`, so the test process itself (in the
 * root namespace) reaches every host, and every host reaches servers the test process runs on the
 * bridge address (a fake hub, PostgreSQL, Swift listening on 0.0.0.0 or on `gateway`). Hosts get
 * `.2`, `.3`, … . A host's 127.0.0.1 is its own: nothing of the root namespace or of another host
 * is reachable there.
 *
 * Needs root and iproute2 (`ip`). Names are unique per test process and short (interface names
 * are at most 15 characters): `hc<pid36><n36>` plus a suffix. A subnet is claimed with a file
 * created exclusively in /run/hubcache-netns, so concurrent test processes never pick the same
 * one (two bridges on one /24 would break routing in the root namespace). Leftovers of test
 * processes that died (their pid is gone) are removed when a network is created; a network is
 * removed by `destroy()` and on this process's exit.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const CLAIMS = '/run/hubcache-netns';
/** Subnets 10.213.N.0/24 are used, N in [1, 254]. */
const SUBNET_PREFIX = '10.213';

export interface NetnsHost {
  /** The namespace's name (for `ip netns exec`). */
  name: string;
  /** The host's IPv4 address on the shared subnet. */
  address: string;
  /** Spawns `command args` inside this host's namespace. */
  spawn(command: string, args: string[], opts?: SpawnOptions): ChildProcess;
  /**
   * Runs `command args` inside this host's namespace; resolves to its stdout, rejects on a non-zero
   * exit (the error's `code` is the exit code). Asynchronous, so servers of this process keep answering.
   */
  run(command: string, args: string[], opts?: { timeoutMs?: number }): Promise<string>;
}

export interface Network {
  hosts: NetnsHost[];
  /** The bridge's address in the root namespace: where hosts reach the test process's servers. */
  gateway: string;
  /** The bridge's name. */
  bridge: string;
  /** Kills what still runs in the hosts and removes the namespaces, interfaces and the subnet claim. */
  destroy(): void;
}

/** Why multi-host tests cannot run here, or undefined. Under CI they must run: never a skip there. */
export const netnsSkipReason: string | undefined = (() => {
  if (process.env.CI) return undefined;
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'iproute2 (`ip`) is not installed (Debian: apt-get install iproute2)';
  }
  return undefined;
})();

function ip(args: string[], opts: { allowFail?: boolean } = {}): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Claim {
  pid: number;
  netns: string[];
  links: string[];
}

function removeAll(claim: Claim): void {
  for (const ns of claim.netns) {
    const pids = ip(['netns', 'pids', ns], { allowFail: true }).split(/\s+/).filter(Boolean).map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    ip(['netns', 'delete', ns], { allowFail: true });
  }
  // Deleting a namespace deletes its veth end and with it the pair; the bridge stays until removed.
  for (const link of claim.links) ip(['link', 'delete', link], { allowFail: true });
}

/** Removes the networks of test processes that are gone. */
function sweep(): void {
  if (!fs.existsSync(CLAIMS)) return;
  for (const name of fs.readdirSync(CLAIMS)) {
    const file = path.join(CLAIMS, name);
    let claim: Claim;
    try {
      claim = JSON.parse(fs.readFileSync(file, 'utf8')) as Claim;
    } catch {
      continue; // being written by its owner right now
    }
    if (alive(claim.pid)) continue;
    removeAll(claim);
    fs.rmSync(file, { force: true });
  }
}

/** Claims a free /24 (its third octet) by creating its claim file exclusively. */
function claimSubnet(claim: Claim): { octet: number; file: string } {
  fs.mkdirSync(CLAIMS, { recursive: true });
  for (let octet = 1; octet <= 254; octet++) {
    const file = path.join(CLAIMS, String(octet));
    try {
      fs.writeFileSync(file, JSON.stringify(claim), { flag: 'wx' });
      return { octet, file };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new Error(`no free subnet ${SUBNET_PREFIX}.1-254.0/24 (claims in ${CLAIMS})`);
}

const live = new Map<string, () => void>();
process.once('exit', () => {
  for (const destroy of live.values()) destroy();
});
let counter = 0;

/** Creates `hosts` namespaces on one bridged /24 (see the header comment). */
export function createNetwork(opts: { hosts: number }): Network {
  if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > 200) throw new RangeError(`hosts must be 1..200, got ${opts.hosts}`);
  sweep();
  const base = `hc${process.pid.toString(36)}${(counter++).toString(36)}`;
  if (base.length > 12) throw new Error(`name prefix too long: ${base}`);
  const bridge = `${base}br`;
  const claim: Claim = { pid: process.pid, netns: [], links: [bridge] };
  const { octet, file } = claimSubnet(claim);
  const record = () => fs.writeFileSync(file, JSON.stringify(claim));
  const gateway = `${SUBNET_PREFIX}.${octet}.1`;
  let destroyed = false;
  const destroy = (): void => {
    if (destroyed) return;
    destroyed = true;
    live.delete(bridge);
    removeAll(claim);
    fs.rmSync(file, { force: true });
  };
  live.set(bridge, destroy);
  try {
    ip(['link', 'add', bridge, 'type', 'bridge']);
    ip(['addr', 'add', `${gateway}/24`, 'dev', bridge]);
    ip(['link', 'set', bridge, 'up']);
    const hosts: NetnsHost[] = [];
    for (let i = 0; i < opts.hosts; i++) {
      const ns = `${base}h${i}`;
      const outer = `${base}v${i}`;
      const address = `${SUBNET_PREFIX}.${octet}.${i + 2}`;
      claim.netns.push(ns);
      record();
      ip(['netns', 'add', ns]);
      // The pair is born with its inner end in the namespace, already named eth0.
      ip(['link', 'add', outer, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      ip(['link', 'set', outer, 'master', bridge]);
      ip(['link', 'set', outer, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
      ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
      ip(['-n', ns, 'route', 'add', 'default', 'via', gateway]);
      hosts.push({
        name: ns,
        address,
        spawn: (command, args, spawnOpts = {}) => spawn('ip', ['netns', 'exec', ns, command, ...args], spawnOpts),
        run: (command, args, runOpts = {}) =>
          new Promise((resolve, reject) => {
            execFile('ip', ['netns', 'exec', ns, command, ...args], { encoding: 'utf8', timeout: runOpts.timeoutMs ?? 30_000 }, (err, stdout) => (err ? reject(Object.assign(new Error(err.message), { code: err.code })) : resolve(stdout)));
          }),
      });
    }
    return { hosts, gateway, bridge, destroy };
  } catch (err) {
    destroy();
    throw err;
  }
}
