/**
 * Waiting for a condition instead of sleeping: tests synchronise on what happened (a fill started,
 * an index write landed, a socket closed), never on how long this machine usually takes. The
 * deadline only makes a broken run end with a clear message; it is generous on purpose and never
 * decides a pass.
 */

export interface WaitForOptions {
  /** What is awaited, for the failure message ("the index write landed"). */
  what: string;
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
  /** Poll interval (default 10 ms). */
  intervalMs?: number;
}

/**
 * Resolves with the first truthy value `condition` returns (it may be async); rejects with
 * "timed out waiting for <what>" once the deadline passed.
 */
export async function waitFor<T>(condition: () => T | Promise<T>, opts: WaitForOptions): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const intervalMs = opts.intervalMs ?? 10;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Resolves with `promise`, or rejects with "timed out waiting for <what>" after `timeoutMs` (default 30 s). */
export async function within<T>(promise: Promise<T>, opts: Omit<WaitForOptions, 'intervalMs'>): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${opts.what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
