/**
 * A TCP relay: listens on `host` (port 0) and pipes every connection to `target` — so servers of
 * this process bound to 127.0.0.1 (PostgreSQL, Swift) are reached from network namespaces
 * through the test network's gateway address. The target sees connections from 127.0.0.1 (what
 * their loopback-only settings allow).
 */
import net from 'node:net';

export interface Relay {
  host: string;
  port: number;
  close(): Promise<void>;
}

export function startRelay(host: string, target: { host: string; port: number }): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target.port, target.host);
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      server.off('error', reject);
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        host,
        port,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sockets) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}
