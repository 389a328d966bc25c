/**
 * The multi-host harness (test/support/netns.ts) on its own: hosts reach each other and the test
 * process on the shared subnet, a host's 127.0.0.1 is its own, and destroy leaves nothing behind.
 */
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { createNetwork, netnsSkipReason, type Network } from '../support/netns.js';

const SERVER = `
const http = require('node:http');
const srv = http.createServer((req, res) => res.end('hello from ' + process.argv[1]));
srv.listen(0, '0.0.0.0', () => console.log('port=' + srv.address().port));
`;

const networks: Network[] = [];
afterEach(() => {
  for (const n of networks.splice(0)) n.destroy();
});

/** curl inside a host: the body, or the exit code when it failed. */
async function curlIn(net: Network, host: number, url: string): Promise<string> {
  try {
    return await net.hosts[host]!.run('curl', ['-sS', '--max-time', '10', url]);
  } catch (err) {
    return `curl failed: exit ${String((err as { code?: unknown }).code)}`;
  }
}

describe.skipIf(netnsSkipReason !== undefined)('network namespaces', () => {
  it('3 hosts: a server on host 1 is reachable from host 2 and from the test process, not on host 2’s own 127.0.0.1', async () => {
    const net = createNetwork({ hosts: 3 });
    networks.push(net);
    expect(new Set(net.hosts.map((h) => h.address)).size).toBe(3);
    const server = net.hosts[1]!.spawn(process.execPath, ['-e', SERVER, 'host-1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      let out = '';
      server.stdout!.setEncoding('utf8');
      const port = await new Promise<number>((resolve, reject) => {
        server.stdout!.on('data', (c: string) => {
          out += c;
          const m = /port=(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        server.once('exit', (code) => reject(new Error(`server exited (${code}) before listening`)));
      });
      const url = `http://${net.hosts[1]!.address}:${port}/`;
      expect(await curlIn(net, 2, url)).toBe('hello from host-1');
      expect(await curlIn(net, 0, url)).toBe('hello from host-1');
      expect(await (await fetch(url)).text()).toBe('hello from host-1');
      // Host 2's loopback is its own: nothing listens there.
      expect(await curlIn(net, 2, `http://127.0.0.1:${port}/`)).toMatch(/^curl failed: exit 7$/);
    } finally {
      server.kill('SIGKILL');
    }
  });

  it('a server of the test process on the gateway address is reachable from every host', async () => {
    const net = createNetwork({ hosts: 2 });
    networks.push(net);
    const srv = http.createServer((_req, res) => res.end('root side'));
    srv.listen(0, net.gateway);
    await once(srv, 'listening');
    try {
      const { port } = srv.address() as AddressInfo;
      for (let i = 0; i < 2; i++) expect(await curlIn(net, i, `http://${net.gateway}:${port}/`)).toBe('root side');
    } finally {
      srv.close();
    }
  });

  it('destroy removes every namespace and interface it made, and two networks never share a subnet', () => {
    const a = createNetwork({ hosts: 2 });
    const b = createNetwork({ hosts: 1 });
    networks.push(a, b);
    expect(a.gateway).not.toBe(b.gateway);
    const names = [...a.hosts.map((h) => h.name), a.bridge];
    const listed = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }) + execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' });
    for (const n of names) expect(listed()).toContain(n);
    a.destroy();
    const after = listed();
    for (const n of names) expect(after).not.toContain(n);
    expect(after).toContain(b.bridge);
  });
});
