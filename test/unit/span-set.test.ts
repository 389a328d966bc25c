import { describe, expect, it } from 'vitest';
import { SpanSet } from '../../src/model/span-set.js';

const list = (s: SpanSet) => s.spans().map((x) => [x.start, x.end]);

describe('SpanSet', () => {
  it('merges overlapping and touching intervals, keeps disjoint ones apart, counts bytes once', () => {
    const s = new SpanSet();
    s.add(10, 20);
    s.add(30, 40);
    expect(list(s)).toEqual([[10, 20], [30, 40]]);
    s.add(20, 25); // touches the first
    expect(list(s)).toEqual([[10, 25], [30, 40]]);
    s.add(0, 5);
    s.add(24, 31); // bridges two
    expect(list(s)).toEqual([[0, 5], [10, 40]]);
    s.add(12, 18); // inside
    s.add(7, 7); // empty
    expect(list(s)).toEqual([[0, 5], [10, 40]]);
    expect(s.size).toBe(35);
    s.add(0, 100); // swallows everything
    expect(list(s)).toEqual([[0, 100]]);
    expect(s.size).toBe(100);
  });

  it('answers has, covers and coveredEnd at the edges', () => {
    const s = new SpanSet();
    s.add(10, 20);
    s.add(30, 40);
    expect([s.has(9), s.has(10), s.has(19), s.has(20), s.has(30)]).toEqual([false, true, true, false, true]);
    expect(s.covers(10, 20)).toBe(true);
    expect(s.covers(10, 21)).toBe(false);
    expect(s.covers(15, 35)).toBe(false);
    expect(s.covers(50, 50)).toBe(true);
    expect(s.coveredEnd(10)).toBe(20);
    expect(s.coveredEnd(19)).toBe(20);
    expect(s.coveredEnd(20)).toBe(20);
    expect(s.coveredEnd(25)).toBe(25);
    expect(s.coveredEnd(35)).toBe(40);
  });

  it('finds the first gap within a limit', () => {
    const s = new SpanSet();
    expect(s.firstGap(0, 100)).toEqual({ start: 0, end: 100 });
    s.add(0, 10);
    s.add(20, 30);
    expect(s.firstGap(0, 100)).toEqual({ start: 10, end: 20 });
    expect(s.firstGap(12, 100)).toEqual({ start: 12, end: 20 });
    expect(s.firstGap(20, 100)).toEqual({ start: 30, end: 100 });
    expect(s.firstGap(0, 15)).toEqual({ start: 10, end: 15 });
    expect(s.firstGap(0, 10)).toBeNull();
    expect(s.firstGap(22, 30)).toBeNull();
    s.add(10, 20);
    s.add(30, 100);
    expect(s.firstGap(0, 100)).toBeNull();
  });

  it('agrees with a bitmap under random adds', () => {
    let seed = 42;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 50; round++) {
      const s = new SpanSet();
      const bits = new Uint8Array(200);
      for (let k = 0; k < 20; k++) {
        const a = rnd(200);
        const b = a + rnd(30);
        s.add(a, Math.min(b, 200));
        for (let i = a; i < Math.min(b, 200); i++) bits[i] = 1;
        expect(s.size).toBe(bits.reduce((n, x) => n + x, 0));
        expect(Array.from(bits, (_, i) => (s.has(i) ? 1 : 0))).toEqual(Array.from(bits));
        const spans = s.spans();
        for (let i = 1; i < spans.length; i++) expect(spans[i]!.start).toBeGreaterThan(spans[i - 1]!.end);
      }
    }
  });
});
