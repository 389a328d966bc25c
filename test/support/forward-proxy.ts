/**
 * Forward proxies for tests, on 127.0.0.1:
 *
 * - {@link startTinyproxy}: the real thing (Debian's tinyproxy), started with a config in a temp
 *   dir, logging every request line to a temp file. Its outgoing connections leave from their own
 *   loopback address (`Bind`), so the fake hub can tell them from the mirror's direct ones.
 * - {@link startRecordingProxy}: a minimal CONNECT relay that keeps the exact bytes of every
 *   proxy request head it receives (to prove what the proxy itself was told) and the first line
 *   sent inside each tunnel. A request that is not CONNECT is recorded and refused.
 *
 * Both are stopped by `stop()`, and killed when the test process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './free-port.js';

/** Children still running: killed when the test process exits, even after a timed-out test. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

export interface Tinyproxy {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  port: number;
  /** Address its outgoing connections come from. */
  bindAddress: string;
  /** The request lines it logged (`CONNECT 127.0.0.1:1234 HTTP/1.1`, `GET http://… HTTP/1.1`), in order. */
  requestLines(): string[];
  /** The whole log so far. */
  log(): string;
  stop(): Promise<void>;
}

/** Whether something accepts TCP connections on 127.0.0.1:`port`. */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Polls `condition` every 20 ms until it holds; throws after `timeoutMs`. */
async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Starts tinyproxy on a free port of 127.0.0.1, allowing CONNECT to `connectPorts` only and
 * accepting clients from 127.0.0.1 only; it never reaches beyond what the tests point it at.
 */
export async function startTinyproxy(opts: { connectPorts: number[]; bindAddress?: string }): Promise<Tinyproxy> {
  const bindAddress = opts.bindAddress ?? '127.0.0.3';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-tinyproxy-'));
  const logPath = path.join(dir, 'tinyproxy.log');
  let lastError = '';
  // The port is free when asked; another process may take it before tinyproxy binds: try again.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const config = [
      `Port ${port}`,
      'Listen 127.0.0.1',
      `Bind ${bindAddress}`,
      'Timeout 30',
      `LogFile "${logPath}"`,
      'LogLevel Connect',
      'MaxClients 200',
      'Allow 127.0.0.1',
      'DisableViaHeader Yes',
      ...opts.connectPorts.map((p) => `ConnectPort ${p}`),
    ].join('\n');
    fs.writeFileSync(path.join(dir, 'tinyproxy.conf'), `${config}\n`);
    fs.writeFileSync(logPath, '');
    const child = spawn('tinyproxy', ['-d', '-c', path.join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const output: string[] = [];
    child.stdout.on('data', (c: Buffer) => output.push(c.toString()));
    child.stderr.on('data', (c: Buffer) => output.push(c.toString()));
    let exited = false;
    const exit = new Promise<void>((resolve) => {
      child.once('exit', () => {
        exited = true;
        live.delete(child);
        resolve();
      });
      // Not installed (.ci/run installs tinyproxy-bin): fail with that, not an unhandled error.
      child.once('error', (err) => {
        output.push(`cannot run tinyproxy: ${err.message}\n`);
        exited = true;
        live.delete(child);
        resolve();
      });
    });
    const log = () => fs.readFileSync(logPath, 'utf8');
    const stop = async () => {
      if (!exited) child.kill('SIGKILL');
      await exit;
      fs.rmSync(dir, { recursive: true, force: true });
    };
    try {
      await waitFor(async () => exited || (await accepts(port)), 10_000, () => `tinyproxy to start:\n${log()}${output.join('')}`);
    } catch (err) {
      await stop();
      throw err;
    }
    if (exited) {
      lastError = `${log()}${output.join('')}`;
      continue;
    }
    return {
      url: `http://127.0.0.1:${port}`,
      port,
      bindAddress,
      log,
      requestLines: () => [...log().matchAll(/Request \(file descriptor \d+\): (.*)$/gm)].map((m) => m[1] ?? ''),
      stop,
    };
  }
  fs.rmSync(dir, { recursive: true, force: true });
  throw new Error(`tinyproxy did not start:\n${lastError}`);
}

export interface ProxyHead {
  /** The proxy request head exactly as received, up to and including the blank line. */
  raw: string;
  /** `CONNECT host:port`, or whatever else the request line was. */
  requestLine: string;
  /** For CONNECT: the first line the client sent inside the tunnel (its request line). */
  firstTunnelLine?: string;
}

export interface RecordingProxy {
  url: string;
  port: number;
  /** Address its outgoing connections come from. */
  bindAddress: string;
  /** Every proxy request head, in arrival order. */
  heads: ProxyHead[];
  stop(): Promise<void>;
}

/** Starts the recording CONNECT relay on 127.0.0.1 port 0. */
export async function startRecordingProxy(opts: { bindAddress?: string } = {}): Promise<RecordingProxy> {
  const bindAddress = opts.bindAddress ?? '127.0.0.4';
  const heads: ProxyHead[] = [];
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const server = net.createServer((client) => {
    track(client);
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buffered.length > 64 * 1024) client.destroy();
        return;
      }
      client.off('data', onData);
      client.pause();
      const raw = buffered.subarray(0, end + 4).toString('latin1');
      const rest = buffered.subarray(end + 4);
      const requestLine = raw.slice(0, raw.indexOf('\r\n'));
      const head: ProxyHead = { raw, requestLine };
      heads.push(head);
      const m = /^CONNECT (\[[0-9a-f:.]+\]|[^\s:]+):(\d+) HTTP\/1\.[01]$/i.exec(requestLine);
      if (!m?.[1] || !m[2]) {
        client.end('HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      const upstream = net.connect({ host: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), localAddress: bindAddress });
      track(upstream);
      upstream.once('connect', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        let first = rest;
        const noteFirstLine = (c: Buffer) => {
          first = Buffer.concat([first, c]);
          const eol = first.indexOf('\r\n');
          if (eol >= 0 || first.length > 8192) {
            head.firstTunnelLine = first.subarray(0, eol >= 0 ? eol : first.length).toString('latin1');
            client.off('data', noteFirstLine);
          }
        };
        if (rest.length > 0) upstream.write(rest);
        if (rest.indexOf('\r\n') >= 0) head.firstTunnelLine = rest.subarray(0, rest.indexOf('\r\n')).toString('latin1');
        else client.on('data', noteFirstLine);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      upstream.once('error', () => {
        if (!client.destroyed) client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      });
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    bindAddress,
    heads,
    stop: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}
