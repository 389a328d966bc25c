/**
 * A TCP port on 127.0.0.1 that was free a moment ago, for servers that cannot listen on port 0
 * and report the port (nginx) or whose port must be written into a config file first. Another
 * process may take it in between: callers retry on "address in use" with a new one.
 */
import net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
