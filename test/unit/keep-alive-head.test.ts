/**
 * KeepAliveHead against an upstream that closes idle kept-alive connections: a HEAD that meets a
 * connection closed under it is sent again on a fresh one; a fresh connection that fails is an
 * error as before.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { KeepAliveHead } from '../../src/upstream/keep-alive-head.js';

let server: http.Server | undefined;
let heads: KeepAliveHead | undefined;
afterEach(async () => {
  heads?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = heads = undefined;
});

/** A server that answers `answered` requests per connection, then drops the connection on the next one. */
async function upstream(answered: number): Promise<{ url: URL; connections: () => number }> {
  const perSocket = new Map<Socket, number>();
  server = http.createServer((req, res) => {
    const n = (perSocket.get(req.socket) ?? 0) + 1;
    perSocket.set(req.socket, n);
    if (n > answered) {
      req.socket.destroy(); // closed as the request arrived: what an idle timeout does at the wrong moment
      return;
    }
    res.writeHead(200, { 'content-length': '3', etag: '"x"' });
    res.end();
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/f`), connections: () => perSocket.size };
}

describe('KeepAliveHead', () => {
  it('sends a HEAD again on a fresh connection when the kept-alive one was closed under it', async () => {
    const up = await upstream(1);
    heads = new KeepAliveHead({ maxSockets: 4, connectTimeoutMs: 5_000 });
    expect((await heads.head(up.url, {}, AbortSignal.timeout(10_000))).statusCode).toBe(200);
    const again = await heads.head(up.url, {}, AbortSignal.timeout(10_000));
    expect([again.statusCode, again.headers.etag]).toEqual([200, '"x"']);
    expect(up.connections()).toBe(2);
  });

  it('does not retry a failure on a fresh connection', async () => {
    const up = await upstream(0);
    heads = new KeepAliveHead({ maxSockets: 4, connectTimeoutMs: 5_000 });
    await expect(heads.head(up.url, {}, AbortSignal.timeout(10_000))).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(up.connections()).toBe(1);
  });
});
