/**
 * `Range` header parsing and resolution (RFC 9110 §14), pure functions.
 *
 * Contract: a multi-range request is answered with ONE range, the smallest span covering every
 * requested range (RFC 9110 §14.2 lets a server coalesce), so it never costs more than one pass
 * over the blob; past `MAX_RANGES` parts the header is ignored (a full 200). Syntax errors are
 * ignored too, as the RFC requires.
 */

export type RangeSpec =
  | { kind: 'bounded'; start: number; end: number }
  | { kind: 'from'; start: number }
  | { kind: 'suffix'; length: number };

export type ParsedRange = { type: 'none' } | { type: 'ranges'; specs: RangeSpec[] };

/** Resolved byte span, both ends inclusive. */
export interface ByteSpan {
  start: number;
  end: number;
}

export const MAX_RANGES = 100;

/** Numbers beyond 2^53 are clamped: they can only ever mean "past the end". */
function toInt(digits: string): number {
  const n = Number(digits);
  return Number.isSafeInteger(n) ? n : Number.MAX_SAFE_INTEGER;
}

export function parseRange(header: string | undefined): ParsedRange {
  if (header === undefined) return { type: 'none' };
  const m = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!m?.[1]) return { type: 'none' };
  const parts = m[1].split(',');
  if (parts.length > MAX_RANGES) return { type: 'none' };
  const specs: RangeSpec[] = [];
  for (const part of parts) {
    const p = part.trim();
    if (p === '') continue;
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

/**
 * Resolves the parsed header against the blob size:
 * - `full`: no usable Range, send the whole body (200);
 * - `partial`: one span (206), the cover of all satisfiable specs;
 * - `unsatisfiable`: no spec overlaps the content (416 with `Content-Range: bytes *\/size`).
 */
export function resolveRange(
  parsed: ParsedRange,
  size: number,
): { type: 'full' } | { type: 'partial'; span: ByteSpan } | { type: 'unsatisfiable' } {
  if (parsed.type === 'none') return { type: 'full' };
  let cover: ByteSpan | null = null;
  for (const spec of parsed.specs) {
    const span = resolveSpec(spec, size);
    if (!span) continue;
    cover = cover ? { start: Math.min(cover.start, span.start), end: Math.max(cover.end, span.end) } : span;
  }
  return cover ? { type: 'partial', span: cover } : { type: 'unsatisfiable' };
}
