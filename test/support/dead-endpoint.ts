/**
 * An HTTP endpoint on 127.0.0.1 that does not work: `hangs` accepts connections and never
 * answers; `refuses` is a port nothing listens on (free a moment ago). For stores and upstreams
 * that are down. `close()` ends the held connections and the listener.
 */
import net from 'node:net';
import { freePort } from './free-port.js';

export interface DeadEndpoint {
  endpoint: string;
  close(): Promise<void>;
}

export async function deadEndpoint(mode: 'hangs' | 'refuses'): Promise<DeadEndpoint> {
  if (mode === 'refuses') return { endpoint: `http://127.0.0.1:${await freePort()}`, close: async () => undefined };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
