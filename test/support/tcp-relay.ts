/**
 * A TCP relay on port 0 in front of a server: every accepted connection is piped to the target,
 * which sees it come from this process. Two uses:
 * - a server bound to 127.0.0.1 (PostgreSQL, Swift) reached from network namespaces through the
 *   test network's gateway address (`listenHost`);
 * - an outage at a moment of the test's choosing: `cut` destroys every relayed connection at once
 *   and makes new ones close as soon as they are accepted (the client sees its connection end, as
 *   when the server restarts); `restore` relays again. Deterministic: no timing, no signal to a
 *   process.
 */
import net from 'node:net';

export interface TcpRelay {
  /** The address it listens on. */
  host: string;
  port: number;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpRelay(targetPort: number, targetHost = '127.0.0.1', listenHost = '127.0.0.1'): Promise<TcpRelay> {
  let up = true;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!up) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, targetHost);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    host: listenHost,
    port: (server.address() as net.AddressInfo).port,
    cut: () => {
      up = false;
      for (const s of sockets) s.destroy();
    },
    restore: () => {
      up = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
