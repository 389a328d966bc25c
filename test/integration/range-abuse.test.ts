/**
 * Odd HTTP: T21 Range abuse on a cached blob (Apache CVE-2011-3192,
 * Squid CVE-2021-31806/7/8, RFC 9110 §14.2) and T22 request smuggling / desync (CL+TE, double
 * Content-Length, `chunked, chunked`, obs-fold, pipelining). Requests go over raw sockets so the
 * headers arrive exactly as written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { header, rawExchange, type RawExchange, type RawResponse } from '../support/raw-http.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor } from '../support/wait-for.js';
import { parseByteranges, partsMatch } from '../support/multipart.js';
import { MAX_RANGES } from '../../src/http/byte-range.js';

let hub: FakeHub;
let mirror: TestMirror;
let host: string;
const SIZE = 64 * 1024 + 7;
const blob = makeContent(SIZE, 211);
const small = {
  'a.txt': Buffer.from('AAAA first file\n'),
  'b.txt': Buffer.from('BBBB second file, a little longer\n'),
  'c.txt': Buffer.from('CCCC third\n'),
};
const BLOB_PATH = '/org/r/resolve/main/blob.bin';

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ id: 'org/r', files: { 'blob.bin': blob, ...small } });
  mirror = await startMirror(hub.url);
  host = new URL(mirror.url).host;
  // Cache everything: the abuse runs against hits.
  expect((await download(`${mirror.url}${BLOB_PATH}`)).status).toBe(200);
  for (const name of Object.keys(small)) expect((await download(`${mirror.url}/org/r/resolve/main/${name}`)).status).toBe(200);
});

afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

function get(target: string, headerLines: string[]): Promise<RawExchange> {
  return rawExchange(mirror.url, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${headerLines.map((l) => `${l}\r\n`).join('')}Connection: close\r\n\r\n`);
}

/**
 * status ∈ {200 whole, one 206 with the right slice, a multipart 206 of at most MAX_RANGES right
 * slices, 416 bytes *\/size}.
 */
function expectSaneRangeAnswer(r: RawResponse | undefined, what: string): void {
  expect(r, what).toBeDefined();
  const ct = header(r!, 'content-type') ?? '';
  expect(r!.headers.filter(([k]) => k === 'content-range').length, what).toBeLessThanOrEqual(1);
  if (r!.status === 206 && /multipart/i.test(ct)) {
    expect(header(r!, 'content-range'), what).toBeUndefined();
    const parts = parseByteranges(ct, r!.body);
    expect(parts.length, what).toBeGreaterThan(1);
    expect(parts.length, what).toBeLessThanOrEqual(MAX_RANGES);
    partsMatch(parts, blob);
    return;
  }
  expect(ct, what).not.toMatch(/multipart/i);
  switch (r!.status) {
    case 200:
      expect(r!.body.equals(blob), what).toBe(true);
      expect(header(r!, 'content-range'), what).toBeUndefined();
      break;
    case 206: {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header(r!, 'content-range') ?? '');
      expect(m, `${what}: ${header(r!, 'content-range')}`).not.toBeNull();
      const [start, end, total] = [Number(m![1]), Number(m![2]), Number(m![3])];
      expect(total).toBe(SIZE);
      expect(start).toBeLessThanOrEqual(end);
      expect(end).toBeLessThan(SIZE);
      expect(r!.body.equals(blob.subarray(start, end + 1)), what).toBe(true);
      break;
    }
    case 416:
      expect(header(r!, 'content-range'), what).toBe(`bytes */${SIZE}`);
      expect(r!.body.length).toBe(0);
      break;
    default:
      expect.fail(`${what}: status ${r!.status}`);
  }
}

/** Abusive and odd Range headers, each sent to the cached blob. */
const many = (n: number, f: (i: number) => string) => `Range: bytes=${Array.from({ length: n }, (_, i) => f(i)).join(',')}`;
const cases: Array<[string, string[]]> = [
  ['500 overlapping 0-', [many(500, () => '0-')]],
  ['1000 one-byte ranges', [many(1000, (i) => `${i}-${i}`)]],
  ['1000 reversed tiny ranges', [many(1000, (i) => `${2000 - 2 * i}-${2000 - 2 * i}`)]],
  ['100 overlapping (at the limit)', [many(100, (i) => `${i}-${SIZE - 1 - i}`)]],
  ['99 disjoint far apart', [many(99, (i) => `${i * 600}-${i * 600 + 1}`)]],
  ['beyond 2^53 start', ['Range: bytes=99999999999999999999-']],
  ['beyond 2^53 end', ['Range: bytes=0-99999999999999999999']],
  ['beyond 2^53 suffix', ['Range: bytes=-99999999999999999999']],
  ['9007199254740993-', ['Range: bytes=9007199254740993-9007199254740994']],
  ['4000 digits', [`Range: bytes=${'9'.repeat(4000)}-`]],
  ['bytes=-0', ['Range: bytes=-0']],
  ['bytes=0-0,-1', ['Range: bytes=0-0,-1']],
  ['bytes=5-1', ['Range: bytes=5-1']],
  ['bytes=0--1', ['Range: bytes=0--1']],
  ['bytes=--1', ['Range: bytes=--1']],
  ['bytes=-', ['Range: bytes=-']],
  ['bytes=', ['Range: bytes=']],
  ['bytes=,,,', ['Range: bytes=,,,,,,']],
  ['whitespace', ['Range:   bytes = 1 - 2 ,  3 - 4 ']],
  ['tab', ['Range: bytes=\t1-2']],
  ['upper case', ['Range: BYTES=1-2']],
  ['items=0-1', ['Range: items=0-1']],
  ['negative', ['Range: bytes=-5-10']],
  ['hex', ['Range: bytes=0x10-0x20']],
  ['exponent', ['Range: bytes=1e3-2e3']],
  ['past the end', [`Range: bytes=${SIZE}-`]],
  ['two Range lines', ['Range: bytes=0-1', 'Range: bytes=5-9']],
  ['two Range lines, 600 each', [many(600, () => '0-'), many(600, () => '1-')]],
  ['two If-Range lines', ['Range: bytes=0-9', 'If-Range: "x"', 'If-Range: "y"']],
  ['If-Range garbage', ['Range: bytes=0-9', 'If-Range: garbage, W/"x", Sun, 06 Nov 1994 08:49:37 GMT']],
  ['If-Range our ETag twice', ['Range: bytes=0-9', `If-Range: "${sha256Hex(blob)}"`, `If-Range: "${sha256Hex(blob)}"`]],
  ['If-Range our ETag', ['Range: bytes=0-9', `If-Range: "${sha256Hex(blob)}"`]],
  ['If-None-Match x1000', [`If-None-Match: ${Array.from({ length: 600 }, (_, i) => `"${i}"`).join(', ')}`, 'Range: bytes=1-1']],
];

describe('T21: Range abuse on a cached blob', () => {

  it('answers each with 200, one 206, a multipart 206 of right parts, or 416, from the cached blob', async () => {
    for (const [name, lines] of cases) {
      const ex = await get(BLOB_PATH, lines);
      expect(ex.timedOut, name).toBe(false);
      expect(ex.responses.length, name).toBe(1);
      // At most one pass over the blob (never one copy per listed range).
      expectSaneRangeAnswer(ex.responses[0], name);
      if (ex.responses[0]!.status !== 416) expect(header(ex.responses[0]!, 'x-mirror-cache'), name).toBe('hit');
    }
  });

  it('picks sensible answers for the classic cases', async () => {
    const status = async (lines: string[]) => (await get(BLOB_PATH, lines)).responses[0]?.status;
    expect(await status(['Range: bytes=-0'])).toBe(416);
    expect(await status([`Range: bytes=${SIZE}-`])).toBe(416);
    expect(await status(['Range: bytes=99999999999999999999-'])).toBe(416);
    expect(await status(['Range: bytes=5-1'])).toBe(200);
    expect(await status(['Range: items=0-1'])).toBe(200);
    const one = (await get(BLOB_PATH, ['Range: bytes=0-99999999999999999999'])).responses[0]!;
    expect(one.status).toBe(206);
    expect(header(one, 'content-range')).toBe(`bytes 0-${SIZE - 1}/${SIZE}`);
    // Many parts: refused (416), never more than one pass over the blob.
    const r = (await get(BLOB_PATH, [many(1000, (i) => `${i}-${i}`)])).responses[0]!;
    expect(r.body.length).toBeLessThanOrEqual(SIZE);
  });

  it('keeps memory flat over 200 abusive requests', async () => {
    const abusive = [many(500, () => '0-'), many(1000, (i) => `${i}-${i}`), 'Range: bytes=0-0,-1', 'Range: bytes=99999999999999999999-'];
    const round = async (n: number) => {
      const jobs: Array<Promise<RawExchange>> = [];
      for (let i = 0; i < n; i++) jobs.push(get(BLOB_PATH, [abusive[i % abusive.length]!, ...(i % 3 === 0 ? ['Range: bytes=1-2', 'If-Range: "a"', 'If-Range: "b"'] : [])]));
      for (const ex of await Promise.all(jobs)) expectSaneRangeAnswer(ex.responses[0], 'memory round');
    };
    await round(50); // warm
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 4; i++) await round(50);
    const grown = process.memoryUsage().rss - before;
    // This process also runs the clients and the fake hub: growth of 20-30 MB is ordinary GC
    // slack. Serving each listed range (or the blob per part) would hold about a copy of the
    // blob per range: tens of MB per request, gigabytes over the run. The bound sits far from both.
    expect(grown, `RSS grew ${(grown / 1e6).toFixed(1)} MB`).toBeLessThan(256 * 1024 * 1024);
    expect(mirror.logs.filter((l) => l.includes('unhandled error'))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// T22
// ---------------------------------------------------------------------------------------------

const req = (target: string, lines: string[] = [], method = 'GET') => `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`;
const statusLines = (ex: RawExchange) => (ex.raw.toString('latin1').match(/HTTP\/1\.1 \d{3}/g) ?? []).length;

describe('T22: request smuggling and desync', () => {
  const SMUGGLED = '/org/r/resolve/main/c.txt?smuggled=1';
  const smuggled = `GET ${SMUGGLED} HTTP/1.1\r\nHost: x\r\n\r\n`;
  // Built lazily: the mirror's Host is known only once it runs.
  const malformed: Array<[string, (h: string) => string]> = [
    ['CL + TE', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nContent-Length: ${4 + smuggled.length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['TE + CL', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n${smuggled}`],
    ['two different Content-Length', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`],
    ['Content-Length list', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nContent-Length: 0, ${smuggled.length}\r\n\r\n${smuggled}`],
    ['Transfer-Encoding: chunked, chunked', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['Transfer-Encoding: chunked, identity', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${smuggled}`],
    ['obs-fold', (h) => `GET /org/r/resolve/main/a.txt HTTP/1.1\r\nHost: ${h}\r\nX-Folded: a\r\n  b\r\n\r\n${smuggled}`],
    ['obs-fold on Transfer-Encoding', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n${smuggled}`],
    ['space before colon', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n${smuggled}`],
    ['bare LF line endings', (h) => `GET /org/r/resolve/main/a.txt HTTP/1.1\nHost: ${h}\nX-A: 1\n\n${smuggled}`],
    ['bad chunk size', (h) => `POST /api/models/org/r/paths-info/main HTTP/1.1\r\nHost: ${h}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${smuggled}`],
    ['NUL in a header', (h) => `GET /org/r/resolve/main/a.txt HTTP/1.1\r\nHost: ${h}\r\nX-A: a\0b\r\n\r\n${smuggled}`],
    ['no Host (HTTP/1.1)', () => `GET /org/r/resolve/main/a.txt HTTP/1.1\r\nX-A: 1\r\n\r\n${smuggled}`],
    ['CR in a header value', (h) => `GET /org/r/resolve/main/a.txt HTTP/1.1\r\nHost: ${h}\r\nX-A: a\rb\r\n\r\n${smuggled}`],
  ];

  it.each(malformed)('%s: 400, connection closed, nothing smuggled through', async (_name, bytes) => {
    hub.resetCounters();
    const ex = await rawExchange(mirror.url, bytes(host), { timeoutMs: 3000 });
    expect(ex.timedOut).toBe(false);
    expect(ex.closedByServer).toBe(true);
    expect(ex.responses.map((r) => r.status)).toEqual([400]);
    expect(statusLines(ex)).toBe(1);
    expect(ex.raw.toString('latin1')).not.toContain('CCCC');
    expect(hub.requests.filter((r) => r.path.includes('smuggled'))).toEqual([]);
  });

  it('a body on GET is consumed as a body, not read as the next request', async () => {
    const body = smuggled;
    const ex = await rawExchange(mirror.url, [req('/org/r/resolve/main/a.txt', [`Content-Length: ${body.length}`]) + body, req('/org/r/resolve/main/b.txt', ['Connection: close'])]);
    expect(ex.responses.map((r) => r.status)).toEqual([200, 200]);
    expect(ex.responses[0]!.body.equals(small['a.txt'])).toBe(true);
    expect(ex.responses[1]!.body.equals(small['b.txt'])).toBe(true);
    expect(ex.raw.toString('latin1')).not.toContain('CCCC');
  });

  it('pipelined valid requests are answered in order, each with its own body', async () => {
    const names = ['a.txt', 'b.txt', 'c.txt', 'a.txt', 'c.txt', 'b.txt'] as const;
    const methods = names.map((_, i) => (i === 3 ? 'HEAD' : 'GET'));
    const bytes = names.map((n, i) => req(`/org/r/resolve/main/${n}`, i === names.length - 1 ? ['Connection: close'] : [], methods[i])).join('');
    const ex = await rawExchange(mirror.url, bytes, { methods });
    expect(ex.responses.map((r) => r.status)).toEqual(names.map(() => 200));
    ex.responses.forEach((r, i) => {
      const name = names[i]!;
      expect(header(r, 'content-length')).toBe(String(small[name].length));
      expect(r.body.equals(methods[i] === 'HEAD' ? Buffer.alloc(0) : small[name]), `${i}: ${name}`).toBe(true);
    });
    // Ranges and a blob in the pipeline too.
    const mixed = await rawExchange(mirror.url, req(BLOB_PATH, ['Range: bytes=10-19']) + req('/org/r/resolve/main/b.txt') + req(BLOB_PATH, ['Range: bytes=-5', 'Connection: close']));
    expect(mixed.responses.map((r) => r.status)).toEqual([206, 200, 206]);
    expect(mixed.responses[0]!.body.equals(blob.subarray(10, 20))).toBe(true);
    expect(mixed.responses[1]!.body.equals(small['b.txt'])).toBe(true);
    expect(mixed.responses[2]!.body.equals(blob.subarray(SIZE - 5))).toBe(true);
  });

  it('a malformed request in the middle of a pipeline: 400 and close, the rest never answered', async () => {
    hub.resetCounters();
    const bad = `GET /org/r/resolve/main/b.txt HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n`;
    // Sent together: the first may or may not be answered before the parser meets the bad one.
    const together = await rawExchange(mirror.url, req('/org/r/resolve/main/a.txt') + bad + req(SMUGGLED));
    expect(together.closedByServer).toBe(true);
    const statuses = together.responses.map((r) => r.status);
    expect(statuses.at(-1)).toBe(400);
    expect(statuses.length).toBeLessThanOrEqual(2);
    if (statuses.length === 2) expect(together.responses[0]!.body.equals(small['a.txt'])).toBe(true);
    expect(together.raw.toString('latin1')).not.toContain('BBBB');
    expect(together.raw.toString('latin1')).not.toContain('CCCC');
    // Sent after the first answer arrived: that answer is intact, then 400 and close.
    const { hostname, port } = new URL(mirror.url);
    const net = await import('node:net');
    const got = await new Promise<{ raw: Buffer; closed: boolean }>((resolve) => {
      const socket = net.connect({ host: hostname, port: Number(port) });
      const chunks: Buffer[] = [];
      let sentRest = false;
      const timer = setTimeout(() => {
        socket.destroy();
        resolve({ raw: Buffer.concat(chunks), closed: false });
      }, 3000);
      socket.on('data', (c: Buffer) => {
        chunks.push(c);
        if (!sentRest && Buffer.concat(chunks).includes(small['a.txt'])) {
          sentRest = true;
          socket.write(bad + req(SMUGGLED));
        }
      });
      socket.on('end', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve({ raw: Buffer.concat(chunks), closed: true });
      });
      socket.on('error', () => undefined);
      socket.write(req('/org/r/resolve/main/a.txt'));
    });
    expect(got.closed).toBe(true);
    const text = got.raw.toString('latin1');
    // The first answer intact, then a 400 or, when Node had not yet seen that answer finish as the
    // bad bytes arrived (its parser then cannot write a status line mid-response), a plain close.
    // Either way the connection ends and nothing after the bad request is answered.
    expect([['HTTP/1.1 200', 'HTTP/1.1 400'], ['HTTP/1.1 200']]).toContainEqual(text.match(/HTTP\/1\.1 \d{3}/g));
    expect(text).toContain(small['a.txt'].toString());
    expect(text).not.toContain('CCCC');
    expect(hub.requests.filter((r) => r.path.includes('smuggled'))).toEqual([]);
  });

  it('a client leaving in the middle of a request body is not an unhandled error', async () => {
    const before = mirror.logs.length;
    for (const target of ['/api/models/org/r/paths-info/main', '/api/models/org/r/preupload/main']) {
      const ex = await rawExchange(mirror.url, `POST ${target} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"paths"`, { timeoutMs: 200 });
      expect(ex.timedOut).toBe(true); // the mirror waits for the rest; the client leaves
    }
    // The mirror closed both exchanges (the request line is written when the response closes):
    // paths-info waited for the body the client never sent; preupload, a write, was refused at once.
    const left = () => mirror.logs.slice(before).filter((l) => l.includes('"msg":"request"') && l.includes('"method":"POST"'));
    await waitFor(() => left().length === 2, { what: 'both abandoned requests to be closed' });
    expect(mirror.logs.slice(before).filter((l) => l.includes('unhandled error') || /"level":(50|60)/.test(l))).toEqual([]);
  });

  it('duplicate Authorization lines: upstream is asked with exactly one of them, the first', async () => {
    hub.resetCounters();
    const ex = await rawExchange(mirror.url, req('/api/whoami-v2', ['Authorization: Bearer hf_first_token', 'Authorization: Bearer hf_second_token', 'Connection: close']));
    expect(ex.responses.length).toBe(1);
    const seen = hub.requests.filter((r) => r.path === '/api/whoami-v2');
    expect(seen.length).toBe(1);
    expect(seen[0]!.headers.authorization).toBe('Bearer hf_first_token');
    expect(JSON.stringify(hub.requests)).not.toContain('hf_second_token');
  });

  it('survives a run of all of it: no unhandled error, and it still serves the right bytes', async () => {
    const before = mirror.logs.length;
    for (const [name, bytes] of malformed) {
      const ex = await rawExchange(mirror.url, bytes(host), { timeoutMs: 3000 });
      expect([name, ex.responses.map((r) => r.status)]).toEqual([name, [400]]);
    }
    for (const [name, lines] of cases) expectSaneRangeAnswer((await get(BLOB_PATH, lines)).responses[0], name);
    expect(mirror.logs.slice(before).filter((l) => l.includes('unhandled error') || /"level":(50|60)/.test(l))).toEqual([]);
    const d = await download(`${mirror.url}${BLOB_PATH}`);
    expect(d.status).toBe(200);
    expect(d.body.equals(blob)).toBe(true);
  });
});
