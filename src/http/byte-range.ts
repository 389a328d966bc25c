/**
 * `Range` header parsing and resolution (RFC 9110 §14), pure functions.
 *
 * Contract:
 * - Syntax errors and other units make the header ignored (a full 200), as the RFC requires.
 * - Satisfiable ranges are answered as asked, one part each, in the order they were listed: a
 *   client that maps the parts of a `multipart/byteranges` answer to its ranges by position (the
 *   JS Xet client does) gets exactly the parts it counted on. Nearly adjacent ranges are not merged
 *   for that reason; the ~100 bytes of part headers they would save are not worth it.
 * - Overlapping ranges may be coalesced (RFC 9110 §14.6): two that overlap become their union, in
 *   the place of the first. More than two overlapping ranges, or more than `MAX_RANGES` ranges in
 *   the header, are refused (RFC 9110 §14.2; 416 with `Content-Range: bytes *\/size`) whatever
 *   the cache holds: the answer never depends on the cache state, and a cold file is never
 *   downloaded whole for a set of ranges. Since the parts left are disjoint, a multipart body is
 *   never larger than the file plus the part headers (no amplification, CVE-2011-3192).
 */

export type RangeSpec =
  | { kind: 'bounded'; start: number; end: number }
  | { kind: 'from'; start: number }
  | { kind: 'suffix'; length: number };

/** `none`: no usable Range (absent or ignored). `excessive`: more than MAX_RANGES specs. */
export type ParsedRange = { type: 'none' } | { type: 'ranges'; specs: RangeSpec[] } | { type: 'excessive' };

/** Resolved byte span, both ends inclusive. */
export interface ByteSpan {
  start: number;
  end: number;
}

/** Most ranges one request may ask for (and so most parts of a multipart answer). */
export const MAX_RANGES = 64;

export type ResolvedRange =
  /** No usable Range: the whole body (200). */
  | { type: 'full' }
  /** One span (a plain 206) or several pairwise disjoint spans in the client's order (multipart 206). */
  | { type: 'partial'; spans: ByteSpan[] }
  /** No range overlaps the content (416). */
  | { type: 'unsatisfiable' }
  /** Too many, or too many overlapping, ranges (416): `reason` says which. */
  | { type: 'refused'; reason: string };

/** Numbers beyond 2^53 are clamped: they can only ever mean "past the end". */
function toInt(digits: string): number {
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

export function parseRange(header: string | undefined): ParsedRange {
  if (header === undefined) return { type: 'none' };
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m?.[1]) return { type: 'none' };
  const specs: RangeSpec[] = [];
  for (const part of m[1].split(',')) {
    const p = part.trim();
    if (p === '') continue;
    // Refused past the cap without reading further: the work per request stays bounded.
    if (specs.length === MAX_RANGES) return { type: 'excessive' };
    // `\d` without the `u` flag is ASCII 0-9 only: no other digits, signs, exponents or hex.
    const r = /^(\d*)\s*-\s*(\d*)$/.exec(p);
    if (!r) return { type: 'none' };
    const [, a = '', b = ''] = r;
    if (a === '' && b === '') return { type: 'none' };
    if (a === '') specs.push({ kind: 'suffix', length: toInt(b) });
    else if (b === '') specs.push({ kind: 'from', start: toInt(a) });
    else {
      const start = toInt(a);
      const end = toInt(b);
      if (end < start) return { type: 'none' };
      specs.push({ kind: 'bounded', start, end });
    }
  }
  return specs.length === 0 ? { type: 'none' } : { type: 'ranges', specs };
}

/** One spec against a size: the span, or `null` when it is unsatisfiable. */
function resolveSpec(spec: RangeSpec, size: number): ByteSpan | null {
  switch (spec.kind) {
    case 'bounded':
      return spec.start < size ? { start: spec.start, end: Math.min(spec.end, size - 1) } : null;
    case 'from':
      return spec.start < size ? { start: spec.start, end: size - 1 } : null;
    case 'suffix':
      return spec.length > 0 && size > 0 ? { start: Math.max(0, size - spec.length), end: size - 1 } : null;
  }
}

/** Resolves the parsed header against the blob size (see the module contract). */
export function resolveRange(parsed: ParsedRange, size: number): ResolvedRange {
  if (parsed.type === 'none') return { type: 'full' };
  if (parsed.type === 'excessive') return { type: 'refused', reason: `more than ${MAX_RANGES} ranges` };
  const spans: ByteSpan[] = [];
  for (const spec of parsed.specs) {
    const span = resolveSpec(spec, size);
    if (span) spans.push(span);
  }
  if (spans.length === 0) return { type: 'unsatisfiable' };
  if (spans.length === 1) return { type: 'partial', spans };
  // Walk the spans by start: one that begins at or before the furthest end seen overlaps the
  // span holding that end (and only it: everything before is disjoint).
  const order = spans.map((_, i) => i).sort((i, j) => spans[i]!.start - spans[j]!.start || i - j);
  let furthest = order[0]!;
  let overlap: [number, number] | null = null;
  for (const i of order.slice(1)) {
    const span = spans[i]!;
    const reach = spans[furthest]!;
    if (span.start <= reach.end) {
      if (overlap) return { type: 'refused', reason: 'more than two overlapping ranges' };
      overlap = [Math.min(furthest, i), Math.max(furthest, i)];
    }
    if (span.end > reach.end) furthest = i;
  }
  if (!overlap) return { type: 'partial', spans };
  const [first, second] = overlap;
  const a = spans[first]!;
  const b = spans[second]!;
  const merged = spans.filter((_, i) => i !== second);
  merged[first] = { start: Math.min(a.start, b.start), end: Math.max(a.end, b.end) };
  return { type: 'partial', spans: merged };
}
