/**
 * Sends bytes exactly as given over a TCP socket (no URL normalisation, no header validation),
 * for hostile-input tests, and returns the raw response text. Fetch-style clients would collapse
 * `..` or refuse CR/LF before the request ever left.
 */
import net from 'node:net';

export function rawRequest(baseUrl: string, rawRequestText: string, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    let data = '';
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('raw request timed out')));
    socket.on('data', (c: Buffer) => (data += c.toString('latin1')));
    socket.on('end', () => resolve(data));
    socket.on('close', () => resolve(data));
    socket.on('error', reject);
    socket.write(rawRequestText);
  });
}

/** `GET <rawPath>` with `Connection: close`; returns the status line's code and the header block. */
export async function rawGet(baseUrl: string, rawPath: string): Promise<{ status: number; head: string }> {
  const text = await rawRequest(baseUrl, `GET ${rawPath} HTTP/1.1\r\nHost: ${new URL(baseUrl).host}\r\nConnection: close\r\n\r\n`);
  const head = text.split('\r\n\r\n')[0] ?? '';
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head };
}
