/**
 * Clock: wall time for what is persisted or shown (timestamps in the index, logs), monotonic time
 * for every freshness decision (TTLs). A wall clock that steps (NTP, a VM resumed, an operator
 * fixing the date) must neither keep an answer alive for a day nor expire everything at once
 *. Injected so tests can step the wall clock without touching timers.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch. Persist it; never measure elapsed time with it alone. */
  now(): number;
  /** Monotonic milliseconds from an arbitrary origin: only differences mean anything. */
  monotonic(): number;
}

/** Date.now and performance.now, looked up at each call (so a faked Date is honoured). */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
};
