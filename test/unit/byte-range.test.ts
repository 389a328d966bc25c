import { describe, expect, it } from 'vitest';
import { MAX_RANGES, parseRange, resolveRange } from '../../src/http/byte-range.js';

const r = (header: string | undefined, size: number) => resolveRange(parseRange(header), size);

describe('byte ranges', () => {
  it('answers the full body without a usable Range', () => {
    expect(r(undefined, 10)).toEqual({ type: 'full' });
    expect(r('items=0-1', 10)).toEqual({ type: 'full' });
    expect(r('bytes=abc', 10)).toEqual({ type: 'full' });
    expect(r('bytes=5-2', 10)).toEqual({ type: 'full' });
    expect(r('bytes=-', 10)).toEqual({ type: 'full' });
  });

  it('resolves bounded, open-ended and suffix ranges', () => {
    expect(r('bytes=0-0', 10)).toEqual({ type: 'partial', span: { start: 0, end: 0 } });
    expect(r('bytes=2-5', 10)).toEqual({ type: 'partial', span: { start: 2, end: 5 } });
    expect(r('bytes=2-500', 10)).toEqual({ type: 'partial', span: { start: 2, end: 9 } });
    expect(r('bytes=7-', 10)).toEqual({ type: 'partial', span: { start: 7, end: 9 } });
    expect(r('bytes=-3', 10)).toEqual({ type: 'partial', span: { start: 7, end: 9 } });
    expect(r('bytes=-30', 10)).toEqual({ type: 'partial', span: { start: 0, end: 9 } });
    expect(r('Bytes = 1 - 2', 10)).toEqual({ type: 'partial', span: { start: 1, end: 2 } });
  });

  it('is unsatisfiable past the end, for empty suffixes and empty files', () => {
    expect(r('bytes=10-', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=10-20', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=-0', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=0-0', 0)).toEqual({ type: 'unsatisfiable' });
  });

  it('coalesces several ranges into one covering span (one pass, never multipart)', () => {
    expect(r('bytes=0-0,-1', 10)).toEqual({ type: 'partial', span: { start: 0, end: 9 } });
    expect(r('bytes=2-3, 5-6, 100-200', 10)).toEqual({ type: 'partial', span: { start: 2, end: 6 } });
  });

  it('clamps numbers beyond 2^53 instead of losing precision', () => {
    expect(r('bytes=0-99999999999999999999999', 10)).toEqual({ type: 'partial', span: { start: 0, end: 9 } });
    expect(r('bytes=99999999999999999999999-', 10)).toEqual({ type: 'unsatisfiable' });
  });

  it('ignores range lists of more than MAX_RANGES parts, however long', () => {
    const many = `bytes=${Array.from({ length: 1000 }, (_, i) => `${i}-${i}`).join(',')}`;
    expect(r(many, 10_000)).toEqual({ type: 'full' });
    const huge = `bytes=${Array.from({ length: 100_000 }, (_, i) => `${i}-${i}`).join(',')}`;
    expect(r(huge, 10_000)).toEqual({ type: 'full' });
    const oneTooMany = `bytes=${Array.from({ length: MAX_RANGES + 1 }, () => '0-').join(',')}`;
    expect(r(oneTooMany, 10)).toEqual({ type: 'full' });
    const allowed = `bytes=${Array.from({ length: MAX_RANGES }, () => '0-').join(',')}`;
    expect(r(allowed, 10)).toEqual({ type: 'partial', span: { start: 0, end: 9 } });
  });
});
