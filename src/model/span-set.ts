/**
 * SpanSet: a set of byte offsets kept as sorted, disjoint, non-adjacent half-open intervals
 * `[start, end)`. It records which parts of a blob are present (written to a staging file, or
 * claimed by a download in progress); a blob filled by several connections at once is a set of
 * ranges, not a prefix.
 *
 * Offsets are integers ≥ 0. Adding an interval merges it with every interval it overlaps or
 * touches, so `spans()` is always the minimal description of the set.
 */

/** A half-open interval of byte offsets: `start` ≤ offset < `end`. */
export interface Interval {
  start: number;
  end: number;
}

export interface ReadonlySpanSet {
  /** Bytes in the set. */
  readonly size: number;
  /** Whether `pos` is in the set. */
  has(pos: number): boolean;
  /** Whether every offset of `[start, end)` is in the set (an empty interval is covered). */
  covers(start: number, end: number): boolean;
  /** The end of the run of present bytes that starts at `pos` (`pos` itself when absent). */
  coveredEnd(pos: number): number;
  /** The first absent interval of `[from, limit)`, or null when all of it is present. */
  firstGap(from: number, limit: number): Interval | null;
  spans(): readonly Interval[];
}

export class SpanSet implements ReadonlySpanSet {
  /** Sorted by start; disjoint and non-adjacent. */
  #spans: Interval[] = [];
  #size = 0;

  get size(): number {
    return this.#size;
  }

  spans(): readonly Interval[] {
    return this.#spans;
  }

  /** Adds `[start, end)`; an empty interval changes nothing. */
  add(start: number, end: number): void {
    if (!(end > start)) return;
    const spans = this.#spans;
    // First span that ends at or after `start` (it may touch or overlap the new one).
    const i = this.#indexEndingAtOrAfter(start);
    let s = start;
    let e = end;
    let j = i;
    let removed = 0;
    while (j < spans.length && spans[j]!.start <= e) {
      s = Math.min(s, spans[j]!.start);
      e = Math.max(e, spans[j]!.end);
      removed += spans[j]!.end - spans[j]!.start;
      j++;
    }
    spans.splice(i, j - i, { start: s, end: e });
    this.#size += e - s - removed;
  }

  has(pos: number): boolean {
    const span = this.#spanAt(pos);
    return span !== undefined;
  }

  covers(start: number, end: number): boolean {
    if (!(end > start)) return true;
    const span = this.#spanAt(start);
    return span !== undefined && span.end >= end;
  }

  coveredEnd(pos: number): number {
    return this.#spanAt(pos)?.end ?? pos;
  }

  firstGap(from: number, limit: number): Interval | null {
    let pos = from;
    const spans = this.#spans;
    for (let i = this.#indexEndingAtOrAfter(from); i < spans.length && pos < limit; i++) {
      const span = spans[i]!;
      if (span.end <= pos) continue;
      if (span.start > pos) return { start: pos, end: Math.min(span.start, limit) };
      pos = span.end;
    }
    return pos < limit ? { start: pos, end: limit } : null;
  }

  /** The span containing `pos`, if any. */
  #spanAt(pos: number): Interval | undefined {
    const span = this.#spans[this.#indexEndingAfter(pos)];
    return span && span.start <= pos ? span : undefined;
  }

  /** Index of the first span whose end is > pos (binary search). */
  #indexEndingAfter(pos: number): number {
    let lo = 0;
    let hi = this.#spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#spans[mid]!.end > pos) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** Index of the first span whose end is ≥ pos (a span ending exactly at pos touches it). */
  #indexEndingAtOrAfter(pos: number): number {
    let lo = 0;
    let hi = this.#spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#spans[mid]!.end >= pos) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }
}
