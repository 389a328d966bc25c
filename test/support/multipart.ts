/**
 * A strict reader of `multipart/byteranges` bodies (RFC 9110 §14.6, RFC 2046 §5.1.1) for tests:
 * every delimiter, CRLF and part header must be exactly where the grammar puts it, and each part
 * holds exactly the bytes its `Content-Range` names. Anything else throws, so a test that parses a
 * body also checks its framing byte by byte.
 */

import path from 'node:path';
import { pathToFileURL } from 'node:url';

export interface BytePart {
  /** The part's own `Content-Type`. */
  contentType: string;
  start: number;
  /** Inclusive. */
  end: number;
  /** The complete length the part's `Content-Range` names. */
  size: number;
  body: Buffer;
}

/** The boundary parameter of a `multipart/byteranges` Content-Type (throws for any other type). */
export function boundaryOf(contentType: string | undefined): string {
  const m = /^multipart\/byteranges\s*;\s*boundary=("?)([0-9A-Za-z'()+_,\-./:=? ]{1,70})\1\s*$/i.exec(contentType ?? '');
  if (!m?.[2]) throw new Error(`not a multipart/byteranges Content-Type: ${contentType}`);
  return m[2];
}

export function parseByteranges(contentType: string | undefined, body: Buffer): BytePart[] {
  const boundary = boundaryOf(contentType);
  const delimiter = Buffer.from(`--${boundary}`, 'latin1');
  const parts: BytePart[] = [];
  let at = 0;
  const expect = (bytes: string, what: string): void => {
    const b = Buffer.from(bytes, 'latin1');
    if (!body.subarray(at, at + b.length).equals(b)) {
      throw new Error(`multipart: expected ${what} at byte ${at}, found ${JSON.stringify(body.subarray(at, at + b.length + 8).toString('latin1'))}`);
    }
    at += b.length;
  };
  expect(delimiter.toString('latin1'), 'the first delimiter');
  for (;;) {
    expect('\r\n', 'CRLF after a delimiter');
    const headEnd = body.indexOf('\r\n\r\n', at, 'latin1');
    if (headEnd === -1) throw new Error(`multipart: part ${parts.length} has no end of headers`);
    const headers = new Map<string, string>();
    for (const line of body.subarray(at, headEnd).toString('latin1').split('\r\n')) {
      const m = /^([A-Za-z0-9-]+): (.*)$/.exec(line);
      if (!m?.[1] || m[2] === undefined) throw new Error(`multipart: bad header line ${JSON.stringify(line)}`);
      const name = m[1].toLowerCase();
      if (headers.has(name)) throw new Error(`multipart: part ${parts.length} repeats ${name}`);
      headers.set(name, m[2]);
    }
    at = headEnd + 4;
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(headers.get('content-range') ?? '');
    if (!range) throw new Error(`multipart: part ${parts.length} has Content-Range ${headers.get('content-range')}`);
    const [start, end, size] = [Number(range[1]), Number(range[2]), Number(range[3])];
    if (!(start <= end && end < size)) throw new Error(`multipart: part ${parts.length} has an invalid range ${start}-${end}/${size}`);
    const contentType = headers.get('content-type');
    if (contentType === undefined) throw new Error(`multipart: part ${parts.length} has no Content-Type`);
    const length = end - start + 1;
    if (at + length > body.length) throw new Error(`multipart: part ${parts.length} is cut short`);
    parts.push({ contentType, start, end, size, body: body.subarray(at, at + length) });
    at += length;
    expect(`\r\n${delimiter.toString('latin1')}`, 'CRLF and a delimiter after the part');
    if (body.subarray(at, at + 2).toString('latin1') === '--') {
      at += 2;
      expect('\r\n', 'CRLF after the close delimiter');
      if (at !== body.length) throw new Error(`multipart: ${body.length - at} bytes after the close delimiter`);
      return parts;
    }
  }
}

/** Checks every part against the source: same size, exactly its bytes; returns the spans as `a-b`. */
export function partsMatch(parts: readonly BytePart[], source: Buffer): string[] {
  return parts.map((p) => {
    if (p.size !== source.length) throw new Error(`part ${p.start}-${p.end} names size ${p.size}, the file has ${source.length}`);
    if (!p.body.equals(source.subarray(p.start, p.end + 1))) throw new Error(`part ${p.start}-${p.end} has other bytes than the file`);
    return `${p.start}-${p.end}`;
  });
}

interface XetMultipartParser {
  push(chunk?: Uint8Array): Uint8Array[];
}

/**
 * The parts of a multipart body as the JS Xet client (@huggingface/hub's StreamingMultipartParser,
 * which maps parts to its ranges by position) reads them, fed `chunkSize` bytes at a time like a
 * network stream. The parser is not exported by the package, so it is loaded from the TypeScript
 * source the package ships (a devDependency: upgrading it may move the file).
 */
export async function xetClientParts(contentType: string, body: Buffer, chunkSize: number): Promise<Buffer[]> {
  const file = path.resolve('node_modules/@huggingface/hub/src/utils/multipart.ts');
  const mod = (await import(pathToFileURL(file).href)) as { StreamingMultipartParser: new (contentType: string) => XetMultipartParser };
  const parser = new mod.StreamingMultipartParser(contentType);
  const parts: Uint8Array[] = [];
  for (let at = 0; at < body.length; at += chunkSize) parts.push(...parser.push(body.subarray(at, at + chunkSize)));
  parts.push(...parser.push());
  return parts.map((p) => Buffer.from(p));
}
