/**
 * Raw HTTP/1.1 over a TCP socket for hostile-input tests, with a small response parser: sends the
 * bytes exactly as given (no URL normalisation, no header validation, pipelining allowed) and
 * splits what comes back into responses, so a test can check their order, their bodies, and
 * whether the server closed the connection. Never rejects: a hang shows as `timedOut`.
 */
import net from 'node:net';

export interface RawResponse {
  status: number;
  /** The header block as received (status line included, no final CRLF CRLF). */
  head: string;
  /** Header lines after the status line, names lower-cased, in order. */
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface RawExchange {
  responses: RawResponse[];
  /** Every byte received. */
  raw: Buffer;
  /** The server ended or closed the connection (not us, not a timeout). */
  closedByServer: boolean;
  timedOut: boolean;
  /** Socket error, if any (e.g. ECONNRESET after the server destroyed the socket). */
  error?: string;
  /** From the write to the end of the exchange. */
  ms: number;
}

export interface RawExchangeOptions {
  /** Give up after this long (default 5 s): the exchange then reports `timedOut`. */
  timeoutMs?: number;
  /**
   * Stop (and close our side) once this many complete responses arrived, instead of waiting for
   * the server to close: for keep-alive exchanges.
   */
  expectResponses?: number;
  /**
   * Methods of the pipelined requests in order, so HEAD responses are parsed without a body
   * (default: all GET).
   */
  methods?: string[];
}

export function header(r: RawResponse, name: string): string | undefined {
  const n = name.toLowerCase();
  const values = r.headers.filter(([k]) => k === n).map(([, v]) => v);
  return values.length === 0 ? undefined : values.join(', ');
}

/** Parses as many complete responses as `buf` holds. */
export function parseResponses(buf: Buffer, methods: string[] = []): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (end === -1) break;
    const head = buf.subarray(at, end).toString('latin1');
    const [statusLine = '', ...lines] = head.split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
    const headers = lines.map((l): [string, string] => {
      const colon = l.indexOf(':');
      return colon === -1 ? [l.toLowerCase(), ''] : [l.slice(0, colon).toLowerCase(), l.slice(colon + 1).trim()];
    });
    const get = (n: string) => headers.find(([k]) => k === n)?.[1];
    let bodyStart = end + 4;
    const noBody = methods[out.length] === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
    let body: Buffer;
    if (noBody) {
      body = Buffer.alloc(0);
    } else if ((get('transfer-encoding') ?? '').toLowerCase().includes('chunked')) {
      const chunks: Buffer[] = [];
      let p = bodyStart;
      let done = false;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', p, 'latin1');
        if (lineEnd === -1) break;
        const size = parseInt(buf.subarray(p, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          // Optional trailers, then an empty line.
          const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd, 'latin1');
          if (trailerEnd === -1) break;
          p = trailerEnd + 4;
          done = true;
          break;
        }
        if (lineEnd + 2 + size + 2 > buf.length) break;
        chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      if (!done) break;
      body = Buffer.concat(chunks);
      bodyStart = p;
    } else {
      const length = get('content-length');
      if (length === undefined) {
        // Delimited by the close: everything that is left.
        body = buf.subarray(bodyStart);
        out.push({ status, head, headers, body });
        break;
      }
      const n = Number(length);
      if (bodyStart + n > buf.length) break;
      body = buf.subarray(bodyStart, bodyStart + n);
      bodyStart += n;
    }
    out.push({ status, head, headers, body });
    at = bodyStart;
  }
  return out;
}

/** Sends `data` over one connection and collects the answer (see {@link RawExchange}). */
export function rawExchange(baseUrl: string, data: string | Buffer | Array<string | Buffer>, opts: RawExchangeOptions = {}): Promise<RawExchange> {
  const { hostname, port } = new URL(baseUrl);
  const timeoutMs = opts.timeoutMs ?? 5000;
  return new Promise((resolve) => {
    const t0 = performance.now();
    const chunks: Buffer[] = [];
    let closedByServer = false;
    let timedOut = false;
    let error: string | undefined;
    let finished = false;
    const socket = net.connect({ host: hostname, port: Number(port) });
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      resolve({ responses: parseResponses(raw, opts.methods), raw, closedByServer, timedOut, ...(error === undefined ? {} : { error }), ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      finish();
    }, timeoutMs);
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (opts.expectResponses !== undefined && parseResponses(Buffer.concat(chunks), opts.methods).length >= opts.expectResponses) finish();
    });
    socket.on('end', () => {
      closedByServer = true;
      finish();
    });
    socket.on('close', () => {
      if (!finished) closedByServer = true;
      finish();
    });
    socket.on('error', (err) => {
      error = (err as NodeJS.ErrnoException).code ?? err.message;
    });
    socket.setNoDelay(true);
    for (const part of Array.isArray(data) ? data : [data]) socket.write(part);
  });
}

/** Runs `fn` over `items` with at most `limit` at a time; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
