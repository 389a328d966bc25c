/**
 * When to ask upstream again after a 429 or a 5xx, and after how long.
 *
 * - Retried statuses: 429, 500, 502, 503, 504. Anything else is upstream's final word.
 * - Upstream's own hint wins: `Retry-After` (delta-seconds or an HTTP date), else the Hub's
 *   `RateLimit: "<policy>";r=<remaining>;t=<seconds to reset>` when `r` is 0. A hint longer than
 *   `maxWaitMs` ends the retries at once: the client gets the 429/503 with a Retry-After and
 *   decides for itself (holding a herd of clients for minutes helps nobody).
 * - Without a hint: exponential backoff with jitter, `baseDelayMs · 2^attempt · [0.5, 1)`. The
 *   defaults (0.25, 0.5, 1 s) keep three retries under the route's default 2 s start wait, so a
 *   persistent 5xx still reaches the client as a clean error status.
 * - A hint is honoured as a floor: jitter is only ever added (≤ 10 %, ≤ 500 ms), so several
 *   mirrors behind one rate limit do not come back in the same millisecond, and never too early.
 * - `deadlineMs` (metadata requests): no retry whose wait would leave less than `minAttemptMs`
 *   before the deadline. The whole metadata question stays inside its timeout.
 */
import type { Headers } from './upstream-errors.js';

function headerValue(headers: Headers, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export const RETRYABLE_STATUSES: ReadonlySet<number> = new Set([429, 500, 502, 503, 504]);

export interface RetryPolicyOptions {
  /** Retries after the first attempt (0: never retry). */
  retries: number;
  /** Longest wait upstream may ask for; a longer hint ends the retries. */
  maxWaitMs: number;
  /** First backoff step when upstream gives no hint. */
  baseDelayMs?: number;
  /** Source of randomness in [0, 1) (tests). */
  random?: () => number;
}

export interface RetryDecision {
  /** Milliseconds to wait before the next attempt, or undefined: give up now. */
  waitMs: number | undefined;
  /** Why we give up (for logs), when we do. */
  reason?: 'not retryable' | 'budget spent' | 'wait too long' | 'deadline';
  /** Upstream's hint, in ms, if it gave one. */
  hintMs: number | undefined;
}

export class RetryPolicy {
  readonly retries: number;
  readonly maxWaitMs: number;
  readonly #baseDelayMs: number;
  readonly #random: () => number;

  constructor(opts: RetryPolicyOptions) {
    this.retries = Math.max(0, Math.floor(opts.retries));
    this.maxWaitMs = Math.max(0, opts.maxWaitMs);
    this.#baseDelayMs = opts.baseDelayMs ?? 250;
    this.#random = opts.random ?? Math.random;
  }

  /**
   * @param attempt retries already made for this question (0 after the first answer).
   * @param remainingMs time left before the caller's deadline, if it has one.
   * @param minAttemptMs time an attempt needs after the wait for the deadline to be worth it.
   */
  decide(status: number, headers: Headers, attempt: number, now = Date.now(), remainingMs?: number, minAttemptMs = 0): RetryDecision {
    const hintMs = retryHintMs(headers, now);
    if (!RETRYABLE_STATUSES.has(status)) return { waitMs: undefined, reason: 'not retryable', hintMs };
    if (attempt >= this.retries) return { waitMs: undefined, reason: 'budget spent', hintMs };
    let waitMs: number;
    if (hintMs !== undefined) {
      if (hintMs > this.maxWaitMs) return { waitMs: undefined, reason: 'wait too long', hintMs };
      waitMs = hintMs + Math.floor(this.#random() * Math.min(500, hintMs * 0.1));
    } else {
      const step = this.#baseDelayMs * 2 ** attempt;
      waitMs = Math.min(this.maxWaitMs, Math.floor(step * (0.5 + 0.5 * this.#random())));
    }
    if (remainingMs !== undefined && waitMs + minAttemptMs > remainingMs) return { waitMs: undefined, reason: 'deadline', hintMs };
    return { waitMs, hintMs };
  }
}

/**
 * Upstream's "come back in" hint, in ms: `Retry-After` (seconds or HTTP date), else the reset of an
 * exhausted `RateLimit` (IETF draft, as the Hub sends it: `"api";r=0;t=55`). Undefined if none.
 */
export function retryHintMs(headers: Headers, now = Date.now()): number | undefined {
  const retryAfter = headerValue(headers, 'retry-after')?.trim();
  if (retryAfter) {
    if (/^\d{1,9}$/.test(retryAfter)) return Number(retryAfter) * 1000;
    const at = Date.parse(retryAfter);
    if (Number.isFinite(at) && /[a-z]/i.test(retryAfter)) return Math.max(0, at - now);
  }
  const rateLimit = headerValue(headers, 'ratelimit');
  if (rateLimit) {
    const params = parseRateLimit(rateLimit);
    if (params.r === 0 && params.t !== undefined) return params.t * 1000;
  }
  return undefined;
}

/** `"api";r=0;t=55` (or `limit=…, remaining=0, reset=55` from older drafts) → { r, t }. */
function parseRateLimit(value: string): { r: number | undefined; t: number | undefined } {
  const num = (re: RegExp): number | undefined => {
    const m = re.exec(value);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  return {
    r: num(/(?:^|[;,\s])(?:r|remaining)\s*=\s*(\d{1,9})\b/i),
    t: num(/(?:^|[;,\s])(?:t|reset)\s*=\s*(\d{1,9})\b/i),
  };
}

/** The Retry-After a client should get for an upstream answer, in whole seconds, if upstream hinted one. */
export function retryAfterSeconds(headers: Headers, now = Date.now()): string | undefined {
  const ms = retryHintMs(headers, now);
  return ms === undefined ? undefined : String(Math.max(1, Math.ceil(ms / 1000)));
}
