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
    const one = (start: number, end: number) => ({ type: 'partial', spans: [{ start, end }] });
    expect(r('bytes=0-0', 10)).toEqual(one(0, 0));
    expect(r('bytes=2-5', 10)).toEqual(one(2, 5));
    expect(r('bytes=2-500', 10)).toEqual(one(2, 9));
    expect(r('bytes=7-', 10)).toEqual(one(7, 9));
    expect(r('bytes=-3', 10)).toEqual(one(7, 9));
    expect(r('bytes=-30', 10)).toEqual(one(0, 9));
    expect(r('Bytes = 1 - 2', 10)).toEqual(one(1, 2));
  });

  it('is unsatisfiable past the end, for empty suffixes and empty files', () => {
    expect(r('bytes=10-', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=10-20', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=-0', 10)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=0-0', 0)).toEqual({ type: 'unsatisfiable' });
  });

  it('keeps disjoint ranges as asked, one part each, in the order listed', () => {
    expect(r('bytes=0-0,-1', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 0 }, { start: 9, end: 9 }] });
    expect(r('bytes=-1,0-0', 10)).toEqual({ type: 'partial', spans: [{ start: 9, end: 9 }, { start: 0, end: 0 }] });
    // Touching and nearly adjacent ranges stay separate parts: clients may map parts by position.
    expect(r('bytes=1-2,3-4,6-7', 10)).toEqual({ type: 'partial', spans: [{ start: 1, end: 2 }, { start: 3, end: 4 }, { start: 6, end: 7 }] });
    // Unsatisfiable ones are dropped; one left is a plain single range.
    expect(r('bytes=2-3, 5-6, 100-200', 10)).toEqual({ type: 'partial', spans: [{ start: 2, end: 3 }, { start: 5, end: 6 }] });
    expect(r('bytes=2-3, 100-200, -0', 10)).toEqual({ type: 'partial', spans: [{ start: 2, end: 3 }] });
    expect(r('bytes=100-200, -0', 10)).toEqual({ type: 'unsatisfiable' });
  });

  it('coalesces two overlapping ranges into their union, in the place of the first', () => {
    expect(r('bytes=0-0,-1', 1)).toEqual({ type: 'partial', spans: [{ start: 0, end: 0 }] });
    expect(r('bytes=0-0,0-0', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 0 }] });
    expect(r('bytes=8-9,0-3,2-5', 10)).toEqual({ type: 'partial', spans: [{ start: 8, end: 9 }, { start: 0, end: 5 }] });
    expect(r('bytes=2-5,8-9,0-3', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 5 }, { start: 8, end: 9 }] });
    expect(r('bytes=0-9,3-4', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 9 }] });
    expect(r('bytes=3-4,-100', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 9 }] });
  });

  it('refuses more than two overlapping ranges', () => {
    const refused = { type: 'refused', reason: 'more than two overlapping ranges' };
    expect(r('bytes=0-,0-,0-', 10)).toEqual(refused);
    expect(r('bytes=0-9,1-1,5-5', 10)).toEqual(refused);
    expect(r('bytes=0-3,2-5,4-7', 10)).toEqual(refused);
    // Two separate overlapping pairs: more than two ranges overlap.
    expect(r('bytes=0-1,1-2,5-6,6-7', 10)).toEqual(refused);
  });

  it('clamps numbers beyond 2^53 instead of losing precision', () => {
    expect(r('bytes=0-99999999999999999999999', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 9 }] });
    expect(r('bytes=99999999999999999999999-', 10)).toEqual({ type: 'unsatisfiable' });
    // The largest size a file can have: exact up to its last byte, anything beyond is past the end.
    const max = Number.MAX_SAFE_INTEGER;
    expect(r('bytes=9007199254740990-', max)).toEqual({ type: 'partial', spans: [{ start: max - 1, end: max - 1 }] });
    expect(r('bytes=9007199254740991-', max)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=9007199254740993-9007199254740994', max)).toEqual({ type: 'unsatisfiable' });
    expect(r('bytes=-99999999999999999999', 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 9 }] });
  });

  it('accepts ASCII digits only', () => {
    expect(r('bytes=\u0661-\u0662', 10)).toEqual({ type: 'full' }); // Arabic-Indic digits
    expect(r('bytes=0x1-0x2', 10)).toEqual({ type: 'full' });
    expect(r('bytes=1e1-2e1', 10)).toEqual({ type: 'full' });
    expect(r('bytes=+1-2', 10)).toEqual({ type: 'full' });
  });

  it(`refuses more than ${MAX_RANGES} ranges without reading further, and accepts ${MAX_RANGES}`, () => {
    const refused = { type: 'refused', reason: `more than ${MAX_RANGES} ranges` };
    expect(r(`bytes=${Array.from({ length: 1000 }, (_, i) => `${i}-${i}`).join(',')}`, 10_000)).toEqual(refused);
    expect(parseRange(`bytes=${Array.from({ length: MAX_RANGES + 1 }, () => '0-0').join(',')},garbage`)).toEqual({ type: 'excessive' });
    expect(r(`bytes=${Array.from({ length: MAX_RANGES + 1 }, (_, i) => `${i * 2}-${i * 2}`).join(',')}`, 10_000)).toEqual(refused);
    const allowed = r(`bytes=${Array.from({ length: MAX_RANGES }, (_, i) => `${i * 2}-${i * 2}`).join(',')}`, 10_000);
    expect(allowed.type === 'partial' && allowed.spans.length).toBe(MAX_RANGES);
    // Empty list elements do not count.
    expect(r(`bytes=${','.repeat(500)}0-0`, 10)).toEqual({ type: 'partial', spans: [{ start: 0, end: 0 }] });
  });
});
