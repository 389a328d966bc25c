/**
 * Deterministic test content and the digests the Hugging Face Hub publishes for it.
 *
 * `makeContent` is meant for big fixtures (up to a few hundred MiB): it derives one 1 MiB
 * pseudo-random block from the seed with AES-CTR and fills the buffer with rotated copies of
 * it (block `i` is the base block rotated by `i * 4099` bytes, with its first word xored with
 * `i`), so every 1 MiB block differs and the whole buffer costs about one `memcpy`.
 */
import { createCipheriv, createHash } from 'node:crypto';

const BLOCK_SIZE = 1 << 20;
const ROTATE_STEP = 4099; // odd, so `i * ROTATE_STEP mod 2^20` is distinct for every block index below 2^20

const baseBlocks = new Map<number, Buffer>();

/** The 1 MiB pseudo-random block a seed expands to (cached: a handful of seeds per test run). */
function baseBlock(seed: number): Buffer {
  const cached = baseBlocks.get(seed);
  if (cached) return cached;
  const key = createHash('sha256').update(`hubcache-test-content:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const block = Buffer.concat([cipher.update(Buffer.alloc(BLOCK_SIZE)), cipher.final()]);
  if (baseBlocks.size > 64) baseBlocks.clear();
  baseBlocks.set(seed, block);
  return block;
}

/**
 * Deterministic pseudo-random content.
 *
 * The same `(size, seed)` always gives the same bytes, and `makeContent(n, s)` is a prefix of
 * `makeContent(m, s)` for `n <= m`. Different seeds give unrelated content. Fast enough for
 * 256 MiB (a few hundred milliseconds at most).
 *
 * @param size - number of bytes (a non-negative safe integer)
 * @param seed - any number; distinct seeds give distinct content
 */
export function makeContent(size: number, seed: number): Buffer {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new RangeError(`makeContent: invalid size ${size}`);
  }
  const base = baseBlock(seed);
  const out = Buffer.allocUnsafe(size);
  for (let offset = 0, index = 0; offset < size; offset += BLOCK_SIZE, index++) {
    const length = Math.min(BLOCK_SIZE, size - offset);
    const rotation = (index * ROTATE_STEP) % BLOCK_SIZE;
    const first = Math.min(length, BLOCK_SIZE - rotation);
    base.copy(out, offset, rotation, rotation + first);
    if (length > first) base.copy(out, offset + first, 0, length - first);
    if (length >= 4) out.writeUInt32LE((out.readUInt32LE(offset) ^ index) >>> 0, offset);
  }
  return out;
}

/** Lower-case hex sha256 of a buffer (the Hub's LFS oid, `X-Linked-Etag` without quotes). */
export function sha256Hex(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Lower-case hex sha1 of a buffer. */
export function sha1Hex(buf: Uint8Array | string): string {
  return createHash('sha1').update(buf).digest('hex');
}

/**
 * Git blob id of some content: sha1 of `blob <size>\0` followed by the content. This is the
 * Hub's `ETag` (without quotes) for a regular (non-LFS) file and the tree entry `oid`.
 */
export function gitBlobSha1Hex(buf: Uint8Array): string {
  return createHash('sha1').update(`blob ${buf.length}\0`).update(buf).digest('hex');
}

/**
 * The git LFS pointer file stored in git for an LFS file (what `/raw/` returns for it).
 *
 * @param sha256 - hex sha256 of the real content
 * @param size - size of the real content in bytes
 */
export function lfsPointer(sha256: string, size: number): Buffer {
  return Buffer.from(`version https://git-lfs.github.com/spec/v1\noid sha256:${sha256}\nsize ${size}\n`);
}
