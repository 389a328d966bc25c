/**
 * Preallocation of staging files: the blocks of a whole blob are reserved before its first byte
 * is written, so a fill written by several connections at once, at several offsets, still lands
 * in few extents, and a fill that was admitted cannot run out of space halfway.
 *
 * Node has no fallocate(2) binding: util-linux's `fallocate -l <size> <path>` makes the call
 * (mode 0: allocate, extend the size, never overwrite data, so it may run while writes land).
 * Never `--posix`: glibc's posix_fallocate emulation writes zeros over the whole file where the
 * filesystem lacks the call. Where the call is unsupported (or the binary is missing), files are
 * written without it and that is logged once.
 */
import { execFile } from 'node:child_process';

/** Files below this are not preallocated: a process spawn costs more than their layout gains. */
export const PREALLOCATE_MIN_BYTES = 8 * 1024 * 1024;

export class Preallocator {
  readonly #onUnsupported: (reason: string) => void;
  #unsupported = false;

  /** `onUnsupported` is called once, the first time preallocation turns out not to work here. */
  constructor(onUnsupported: (reason: string) => void = () => undefined) {
    this.#onUnsupported = onUnsupported;
  }

  /**
   * Reserves `size` bytes for `file`. Resolves true when the blocks are allocated, false when it
   * was skipped (small file, unsupported here). Rejects only with a full disk (ENOSPC).
   */
  async preallocate(file: string, size: number): Promise<boolean> {
    if (this.#unsupported || size < PREALLOCATE_MIN_BYTES) return false;
    const failure = await new Promise<{ code: string; text: string } | null>((resolve) => {
      execFile('fallocate', ['-l', String(size), file], { timeout: 30_000 }, (err, _stdout, stderr) => {
        if (!err) resolve(null);
        else resolve({ code: String((err as NodeJS.ErrnoException).code ?? ''), text: `${stderr}`.trim() || err.message });
      });
    });
    if (!failure) return true;
    if (/no space left/i.test(failure.text)) {
      const err = new Error(`fallocate: ${failure.text}`) as NodeJS.ErrnoException;
      err.code = 'ENOSPC';
      throw err;
    }
    const missing = failure.code === 'ENOENT';
    if (missing || /not supported/i.test(failure.text)) {
      this.#unsupported = true;
      this.#onUnsupported(missing ? 'the fallocate program (util-linux) is not installed' : failure.text);
    }
    // Anything else (the fill was cancelled and its file removed meanwhile): this file only.
    return false;
  }
}
