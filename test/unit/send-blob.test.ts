import { describe, expect, it } from 'vitest';
import type { FileEntry } from '../../src/hub/file-resolver.js';
import { planBlobResponse } from '../../src/http/send-blob.js';
import type { BlobKey } from '../../src/storage/blob-layout.js';

const content = Buffer.from('0123456789abcdefghij');
const entry: FileEntry = {
  request: { repo: { type: 'model', id: 'org/r' }, view: 'resolve', revision: 'main', path: 'notes.txt' },
  commit: 'c'.repeat(40),
  blobKey: `gitsha1:${'a'.repeat(40)}` as BlobKey,
  size: content.length,
  etag: 'a'.repeat(40),
  isLfs: false,
  contentType: 'text/plain; charset=utf-8',
  source: 'upstream',
};
const plan = (range: string | undefined, extra: { ifRange?: string; ifNoneMatch?: string } = {}) =>
  planBlobResponse(entry, { range, ifRange: extra.ifRange, ifNoneMatch: extra.ifNoneMatch }, 'none', 'SEPARATOR');

/** The body the plan describes, with `content` as the blob. */
function body(p: ReturnType<typeof plan>): string {
  const out: Buffer[] = [];
  p.spans.forEach((s, i) => {
    const head = p.multipart?.before[i];
    if (head) out.push(head);
    out.push(content.subarray(s.start, s.end + 1));
  });
  if (p.multipart) out.push(p.multipart.close);
  return Buffer.concat(out).toString('latin1');
}

describe('response plans for ranges', () => {
  it('several ranges: one multipart/byteranges 206 framed exactly, with its exact length', () => {
    const p = plan('bytes=0-0,-3,5-6');
    expect(p.status).toBe(206);
    expect(p.headers['content-type']).toBe('multipart/byteranges; boundary=SEPARATOR');
    expect(p.headers['content-range']).toBeUndefined();
    const expected =
      '--SEPARATOR\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-0/20\r\n\r\n0' +
      '\r\n--SEPARATOR\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 17-19/20\r\n\r\nhij' +
      '\r\n--SEPARATOR\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 5-6/20\r\n\r\n56' +
      '\r\n--SEPARATOR--\r\n';
    expect(body(p)).toBe(expected);
    expect(p.headers['content-length']).toBe(String(Buffer.byteLength(expected)));
    // The other headers are the file's, as for a single range.
    expect(p.headers.etag).toBe(`"${entry.etag}"`);
    expect(p.headers['accept-ranges']).toBe('bytes');
  });

  it('one range left: a plain 206; refused or unsatisfiable sets: 416 bytes */size', () => {
    const one = plan('bytes=3-4,99-');
    expect([one.status, one.headers['content-range'], one.headers['content-type'], one.multipart]).toEqual([206, 'bytes 3-4/20', entry.contentType, undefined]);
    expect(body(one)).toBe('34');
    for (const range of ['bytes=99-', 'bytes=0-1,1-2,2-3', `bytes=${Array.from({ length: 65 }, (_, i) => `${i % 20}-${i % 20}`).join(',')}`]) {
      const p = plan(range);
      expect([p.status, p.headers['content-range'], p.headers['content-length'], p.spans]).toEqual([416, 'bytes */20', '0', []]);
    }
    expect(plan('bytes=0-1,1-2,2-3').headers['x-error-message']).toBe('Range refused: more than two overlapping ranges');
  });

  it('If-Range and If-None-Match apply to several ranges as to one', () => {
    expect(plan('bytes=0-0,-1', { ifRange: `"${entry.etag}"` }).multipart).toBeDefined();
    const other = plan('bytes=0-0,-1', { ifRange: '"other"' });
    expect([other.status, other.headers['content-type'], other.spans]).toEqual([200, entry.contentType, [{ start: 0, end: 19 }]]);
    expect(plan('bytes=0-0,-1', { ifNoneMatch: `"${entry.etag}"` }).status).toBe(304);
  });

  it('boundaries are random per answer unless given', () => {
    const a = planBlobResponse(entry, { range: 'bytes=0-0,-1', ifRange: undefined, ifNoneMatch: undefined }, 'none');
    const b = planBlobResponse(entry, { range: 'bytes=0-0,-1', ifRange: undefined, ifNoneMatch: undefined }, 'none');
    expect(a.headers['content-type']).toMatch(/^multipart\/byteranges; boundary=[0-9a-f]{32}$/);
    expect(a.headers['content-type']).not.toBe(b.headers['content-type']);
    expect(a.headers['content-length']).toBe(b.headers['content-length']);
  });
});
