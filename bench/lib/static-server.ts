/**
 * The baseline: the simplest reasonable static file server (what `serve-static`/`send` boil down
 * to): node:http, `stat` for the length, `fs.createReadStream` (default 64 KiB reads) piped to the
 * response with Content-Length. GET and HEAD only, files under one root directory, no ranges.
 */
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream';

export interface StaticServer {
  url: string;
  close(): Promise<void>;
}

export async function startStaticServer(root: string): Promise<StaticServer> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = path.join(root, path.normalize(rel));
    if (!file.startsWith(root + path.sep)) {
      res.writeHead(403).end();
      return;
    }
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(st.size),
        'accept-ranges': 'bytes',
        etag: `W/"${st.size.toString(16)}-${st.mtimeMs.toString(16)}"`,
        'last-modified': st.mtime.toUTCString(),
      });
      if (req.method === 'HEAD' || st.size === 0) {
        res.end();
        return;
      }
      pipeline(fs.createReadStream(file), res, () => undefined);
    });
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
