/**
 * The bytes a body must equal, without holding them: `makeContent(size, seed)`
 * (test/support/content.ts) builds block i (1 MiB) as its seed's base block rotated by
 * i × 4099 bytes with the first 32-bit word xored with i. `ExpectedContent` compares a received
 * chunk at any offset with those bytes straight from the 1 MiB base block (a memcmp that stays in
 * cache), so a client checks a 1 GiB body at memcmp speed with 1 MiB of memory.
 *
 * That layout is an implementation detail of makeContent: `expectedContent` first checks itself
 * against makeContent over several MiB at awkward offsets and, if the layout ever changes,
 * falls back to the materialized buffer (correct, just more memory).
 */
import { makeContent } from '../../test/support/content.js';

const BLOCK = 1 << 20;
const MASK = BLOCK - 1;
const ROTATE_STEP = 4099;

/** Source bytes a body must equal: the bench's deterministic content (makeContent(size, seed)). */
export interface ContentRef {
  seed: number;
  size: number;
}

export interface ExpectedContent {
  readonly size: number;
  /**
   * Compares `chunk[from, to)` with the source bytes at `offset`; returns the absolute offset of
   * the first difference (or of the first byte past the end of the source), or -1 when equal.
   */
  mismatch(chunk: Uint8Array, from: number, to: number, offset: number): number;
}

/** Lazily-built base block per seed (makeContent(1 MiB, seed): block 0 is unrotated, xored with 0). */
const bases = new Map<number, Buffer>();
function baseBlock(seed: number): Buffer {
  let b = bases.get(seed);
  if (!b) {
    if (bases.size > 32) bases.clear();
    b = makeContent(BLOCK, seed);
    bases.set(seed, b);
  }
  return b;
}

class BlockView implements ExpectedContent {
  readonly #base: Buffer;
  readonly #word = Buffer.alloc(4);
  constructor(
    readonly size: number,
    seed: number,
  ) {
    this.#base = baseBlock(seed);
  }

  mismatch(chunk: Uint8Array, from: number, to: number, offset: number): number {
    const base = this.#base;
    let pos = offset;
    let i = from;
    while (i < to) {
      if (pos >= this.size) return pos;
      const index = Math.floor(pos / BLOCK);
      const within = pos & MASK;
      const blockStart = pos - within;
      const blockLen = Math.min(BLOCK, this.size - blockStart);
      const rotation = (index * ROTATE_STEP) % BLOCK;
      if (within < 4 && blockLen >= 4) {
        // The first word of every block is xored with its index.
        const w = this.#word;
        for (let k = 0; k < 4; k++) w[k] = base[(rotation + k) & MASK]!;
        w.writeUInt32LE((w.readUInt32LE(0) ^ index) >>> 0, 0);
        const n = Math.min(4 - within, to - i);
        for (let k = 0; k < n; k++) if (chunk[i + k] !== w[within + k]) return pos + k;
        i += n;
        pos += n;
        continue;
      }
      // Contiguous run in the base block: up to the block's end or the rotation's wrap point.
      const src = (within + rotation) & MASK;
      const n = Math.min(to - i, blockLen - within, BLOCK - src);
      if (Buffer.compare(chunk.subarray(i, i + n), base.subarray(src, src + n)) !== 0) {
        for (let k = 0; k < n; k++) if (chunk[i + k] !== base[src + k]) return pos + k;
      }
      i += n;
      pos += n;
    }
    return -1;
  }
}

class BufferView implements ExpectedContent {
  readonly size: number;
  constructor(readonly buf: Buffer) {
    this.size = buf.length;
  }
  mismatch(chunk: Uint8Array, from: number, to: number, offset: number): number {
    const n = to - from;
    const avail = Math.max(0, Math.min(n, this.size - offset));
    const a = chunk.subarray(from, from + avail);
    if (Buffer.compare(a, this.buf.subarray(offset, offset + avail)) !== 0) {
      for (let k = 0; k < avail; k++) if (a[k] !== this.buf[offset + k]) return offset + k;
    }
    return avail < n ? offset + avail : -1;
  }
}

let layoutChecked: boolean | undefined;
/** Whether BlockView reproduces makeContent (checked once per process). */
function layoutHolds(): boolean {
  if (layoutChecked !== undefined) return layoutChecked;
  const size = 9 * BLOCK + 12_345;
  const seed = 987_654;
  const ref = makeContent(size, seed);
  const view = new BlockView(size, seed);
  let ok = true;
  // Chunks of odd sizes at odd offsets, crossing block boundaries and the xored words.
  // Tiny steps only around block boundaries (the xored words), big steps over everything.
  const check = (from: number, to: number, step: number): void => {
    for (let off = from; off < to && ok; off += step) {
      const end = Math.min(to, off + step);
      if (view.mismatch(ref, off, end, off) !== -1) ok = false;
    }
  };
  for (const boundary of [BLOCK, 2 * BLOCK, 9 * BLOCK]) for (const step of [1, 3]) check(boundary - 64, boundary + 64, step);
  for (const step of [4093, 65_536, 1_000_003, BLOCK + 7]) check(0, size, step);
  // And it must see a flipped byte.
  const bad = Buffer.from(ref.subarray(3 * BLOCK, 3 * BLOCK + 100));
  bad[50] = bad[50]! ^ 1;
  if (view.mismatch(bad, 0, bad.length, 3 * BLOCK) !== 3 * BLOCK + 50) ok = false;
  layoutChecked = ok;
  if (!ok) console.error('bench: makeContent layout changed; comparing against materialized buffers instead');
  return ok;
}

export function expectedContent(ref: ContentRef): ExpectedContent {
  return layoutHolds() ? new BlockView(ref.size, ref.seed) : new BufferView(makeContent(ref.size, ref.seed));
}
