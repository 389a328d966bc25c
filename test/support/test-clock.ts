/**
 * A clock a test can step: the mirror's TTLs (branch pins, grants to tokens, repo visibility) are
 * measured on it, so "after the TTL" is one `advance()` instead of a sleep. Real time still flows
 * underneath: with TTLs of a minute or more, "still within the TTL" cannot be broken by a slow
 * machine either.
 *
 * `now()` follows `Date.now()` (so a faked system time is honoured, as by the system clock) plus
 * the steps; `monotonic()` follows `performance.now()` plus the same steps.
 */
import type { Clock } from '../../src/clock.js';

export class TestClock implements Clock {
  #offsetMs = 0;

  now(): number {
    return Date.now() + this.#offsetMs;
  }

  monotonic(): number {
    return performance.now() + this.#offsetMs;
  }

  /** Time passes: both clocks move forward by `ms`. */
  advance(ms: number): void {
    this.#offsetMs += ms;
  }
}
