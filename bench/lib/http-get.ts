/**
 * The bench's load generator: one HTTP/1.1 request per TCP connection on a raw `net` socket that
 * reads into one reused buffer (`onread`), so a body costs the client the kernel's copy into that
 * buffer and, when asked, a memcmp against the source bytes (ExpectedContent) or a sha256 — no
 * per-chunk allocation, no streams. On this VM that receives 1 GiB from nginx with well under a
 * core, so the server, not the client, sets the pace (the bench reports the clients' CPU to show it).
 *
 * Only what the bench needs: GET/HEAD, extra request headers (Range), redirects followed on a new
 * connection, bodies framed by Content-Length (a chunked or unframed body is reported as an error:
 * the mirror always sends a length for file bodies).
 */
import { createHash, type Hash } from 'node:crypto';
import net from 'node:net';
import { expectedContent, type ContentRef, type ExpectedContent } from './content.js';

export interface GetSpec {
  url: string;
  method?: 'GET' | 'HEAD';
  /** Extra request headers, e.g. `{ range: 'bytes=-500' }`. */
  headers?: Record<string, string>;
  followRedirects?: boolean;
  /** Compare the body with these source bytes (a 206 body from its Content-Range start). */
  expect?: ContentRef;
  /** With `expect`: compare every read ('full', the default) or one read in 16 ('sample'). */
  check?: 'full' | 'sample';
  /** sha256 of the body (the verification passes). */
  hash?: boolean;
  /** Stop (close the connection) once this many body bytes arrived; the outcome is `stopped`. */
  maxBodyBytes?: number;
  /** Give up after this long (ms); the outcome gets `error: 'deadline'`. Default 15 min. */
  deadlineMs?: number;
}

/** One request. Times are epoch milliseconds (performance.timeOrigin + now), comparable across processes. */
export interface GetOutcome {
  url: string;
  status: number;
  /** Lower-case names: content-length, content-range, etag, x-mirror-cache, location (when present). */
  headers: Record<string, string>;
  redirects: number;
  /** Body bytes received (of the last response). */
  bytes: number;
  startMs: number;
  headersMs: number;
  /** First body byte (NaN if none). */
  firstByteMs: number;
  /** When all but the last body byte had arrived (NaN if the body was not complete). */
  allButLastMs: number;
  endMs: number;
  /** Absolute offset of the first byte that differs from `expect`, else null. */
  mismatchAt: number | null;
  sha256?: string;
  /** Stopped on purpose: `maxBodyBytes` reached, or the batch's time box ended. */
  stopped: boolean;
  /** Connection error, premature close, deadline, bad framing. */
  error?: string;
}

const KEPT_HEADERS = new Set(['content-length', 'content-range', 'etag', 'x-mirror-cache', 'location', 'transfer-encoding', 'x-linked-size']);
const MAX_HEAD = 64 * 1024;
const SAMPLE_EVERY = 16;

/** Shared by every socket of this process: onread callbacks run one at a time on this thread. */
const READ_BUFFER = Buffer.allocUnsafe(1 << 20);

const now = (): number => performance.timeOrigin + performance.now();

interface Running {
  /** Stops the request now (the batch's time box); resolves its outcome as `stopped`. */
  stop(): void;
  done: Promise<GetOutcome>;
}

export function startGet(spec: GetSpec): Running {
  let stopHook: (() => void) | null = null;
  let stopRequested = false;
  const done = (async (): Promise<GetOutcome> => {
    const startMs = now();
    let url = new URL(spec.url);
    let redirects = 0;
    for (;;) {
      const attempt = oneRequest(url, spec, startMs, redirects, (hook) => {
        stopHook = hook;
        if (stopRequested) hook();
      });
      const out = await attempt;
      const location = out.headers.location;
      if (spec.followRedirects && !out.error && !out.stopped && out.status >= 300 && out.status < 400 && location !== undefined) {
        if (++redirects > 5) return { ...out, error: 'too many redirects' };
        url = new URL(location, url);
        continue;
      }
      return out;
    }
  })();
  return {
    stop: () => {
      stopRequested = true;
      stopHook?.();
    },
    done,
  };
}

function oneRequest(url: URL, spec: GetSpec, startMs: number, redirects: number, onStopHook: (hook: () => void) => void): Promise<GetOutcome> {
  const method = spec.method ?? 'GET';
  const expected: ExpectedContent | undefined = spec.expect ? expectedContent(spec.expect) : undefined;
  const sample = spec.check === 'sample';
  return new Promise<GetOutcome>((resolve) => {
    const out: GetOutcome = {
      url: url.href,
      status: 0,
      headers: {},
      redirects,
      bytes: 0,
      startMs,
      headersMs: NaN,
      firstByteMs: NaN,
      allButLastMs: NaN,
      endMs: NaN,
      mismatchAt: null,
      stopped: false,
    };
    let head: Buffer | null = Buffer.alloc(0);
    let length = -1; // body length; -1 until the head is parsed
    let bodyOffset = 0; // absolute offset of the body's first byte in the source
    let hasher: Hash | undefined;
    let reads = 0;
    let settled = false;
    const finish = (error?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      out.endMs = now();
      if (error !== undefined) out.error = error;
      if (hasher && !out.error && !out.stopped) out.sha256 = hasher.digest('hex');
      socket.destroy();
      resolve(out);
    };
    const timer = setTimeout(() => finish('deadline'), spec.deadlineMs ?? 15 * 60_000);
    const body = (buf: Buffer, from: number, to: number): void => {
      if (to <= from) return;
      if (Number.isNaN(out.firstByteMs)) out.firstByteMs = now();
      const n = to - from;
      if (expected && out.mismatchAt === null && (!sample || reads % SAMPLE_EVERY === 0)) {
        const at = expected.mismatch(buf, from, to, bodyOffset + out.bytes);
        if (at >= 0) out.mismatchAt = at;
      }
      hasher?.update(buf.subarray(from, to));
      out.bytes += n;
      if (out.bytes >= length - 1 && Number.isNaN(out.allButLastMs) && out.bytes > 0) out.allButLastMs = now();
    };
    const onHead = (text: string): string | null => {
      const lines = text.split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
      if (!m) return `bad status line ${JSON.stringify(lines[0])}`;
      out.status = Number(m[1]);
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        if (i <= 0) continue;
        const name = line.slice(0, i).trim().toLowerCase();
        if (KEPT_HEADERS.has(name)) out.headers[name] = line.slice(i + 1).trim();
      }
      out.headersMs = now();
      const noBody = method === 'HEAD' || out.status === 204 || out.status === 304 || (out.status >= 100 && out.status < 200);
      if (noBody) {
        length = 0;
        return null;
      }
      if (out.headers['transfer-encoding'] !== undefined) return `unexpected transfer-encoding ${out.headers['transfer-encoding']}`;
      const cl = out.headers['content-length'];
      if (cl === undefined || !/^\d+$/.test(cl)) return 'no content-length';
      length = Number(cl);
      const cr = /^bytes (\d+)-\d+\/\d+$/.exec(out.headers['content-range'] ?? '');
      bodyOffset = out.status === 206 && cr ? Number(cr[1]) : 0;
      if (spec.hash) hasher = createHash('sha256');
      return null;
    };
    const socket = net.connect({
      host: url.hostname,
      port: Number(url.port || 80),
      onread: {
        buffer: READ_BUFFER,
        callback: (nread: number, buf: Uint8Array): boolean => {
          if (settled) return false;
          const b = buf as Buffer;
          reads++;
          let from = 0;
          if (head !== null) {
            const joined: Buffer = head.length === 0 ? b.subarray(0, nread) : Buffer.concat([head, b.subarray(0, nread)]);
            const end = joined.indexOf('\r\n\r\n');
            if (end < 0) {
              if (joined.length > MAX_HEAD) finish('response head too long');
              else head = Buffer.from(joined); // copy: the read buffer is reused
              return true;
            }
            const problem = onHead(joined.toString('latin1', 0, end));
            if (problem) {
              finish(problem);
              return false;
            }
            const tailStart = end + 4 - (joined.length - nread); // position in b after the head
            head = null;
            from = tailStart;
          }
          const take = Math.min(nread, from + (length - out.bytes));
          body(b, from, take);
          if (out.bytes >= length) {
            finish();
            return false;
          }
          if (spec.maxBodyBytes !== undefined && out.bytes >= spec.maxBodyBytes) {
            out.stopped = true;
            finish();
            return false;
          }
          return true;
        },
      },
    });
    onStopHook(() => {
      out.stopped = true;
      finish();
    });
    socket.setNoDelay(true);
    socket.once('error', (err) => finish(err.message));
    socket.once('end', () => finish(length < 0 ? 'closed before the response head' : `closed after ${out.bytes} of ${length} body bytes`));
    socket.once('close', () => finish(length < 0 ? 'closed before the response head' : `closed after ${out.bytes} of ${length} body bytes`));
    const extra = Object.entries(spec.headers ?? {})
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    socket.write(`${method} ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: hubcache-bench\r\nAccept: */*\r\n${extra}\r\n`);
  });
}

/** Runs specs all at once; `stopAfterMs` ends the batch (stopping what still runs) after that long. */
export async function runGets(specs: GetSpec[], stopAfterMs?: number): Promise<GetOutcome[]> {
  const running = specs.map((s) => startGet(s));
  const timer = stopAfterMs === undefined ? undefined : setTimeout(() => running.forEach((r) => r.stop()), stopAfterMs);
  try {
    return await Promise.all(running.map((r) => r.done));
  } finally {
    clearTimeout(timer);
  }
}
