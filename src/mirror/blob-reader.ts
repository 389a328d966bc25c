/**
 * BlobReader: the pull interface between a blob's bytes (a cached file, a running fill, an upstream
 * range held in memory) and the code that writes them to a client socket.
 *
 * Contract:
 * - `next()` resolves with the next chunk of the reader's span, in order, or `null` once every byte
 *   of the span was returned. It rejects with the source's failure (the caller then cuts the
 *   connection: a client never gets a complete answer with missing or wrong bytes). Calls do not
 *   overlap: the caller awaits one before asking again.
 * - A chunk is the caller's until it calls `release(chunk)`; only then may the reader reuse its
 *   memory (readers that preread into a few reused buffers wait in `next()` for a release). The
 *   caller releases a chunk once the socket no longer needs it (the write callback). A chunk may be a
 *   view of memory shared with other readers (a fill's recently written buffers): callers never
 *   modify chunks.
 * - `close()` releases everything (file descriptors, subscriptions, buffers); it is idempotent and
 *   may be called at any time, also while a `next()` is pending (which then resolves `null` or
 *   rejects). Closing a reader never affects the source or other readers.
 */
import type { Readable } from 'node:stream';

export interface BlobReader {
  next(): Promise<Buffer | null>;
  release(chunk: Buffer): void;
  close(): void;
}

/** A reader over bytes already in memory (an upstream range fetched whole): one chunk, never copied. */
export function bufferReader(bytes: Buffer): BlobReader {
  let done = false;
  return {
    next: () => {
      if (done) return Promise.resolve(null);
      done = true;
      return Promise.resolve(bytes.length > 0 ? bytes : null);
    },
    release: () => undefined,
    close: () => {
      done = true;
    },
  };
}

/**
 * A reader over a Node Readable (byte mode). Chunks are the stream's own and never reused, so
 * `release` is a no-op. Closing destroys the stream.
 */
export function readableReader(stream: Readable): BlobReader {
  const it = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let closed = false;
  return {
    next: async () => {
      if (closed) return null;
      const r = await it.next();
      return r.done ? null : r.value;
    },
    release: () => undefined,
    close: () => {
      if (closed) return;
      closed = true;
      stream.destroy();
    },
  };
}
