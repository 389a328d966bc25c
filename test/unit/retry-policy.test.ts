import { describe, expect, it } from 'vitest';
import { RetryPolicy, retryAfterSeconds, retryHintMs } from '../../src/upstream/retry-policy.js';

const NOW = Date.UTC(2026, 0, 1, 12, 0, 0);

describe('retry hints', () => {
  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(retryHintMs({ 'retry-after': '2' }, NOW)).toBe(2000);
    expect(retryHintMs({ 'retry-after': new Date(NOW + 5000).toUTCString() }, NOW)).toBe(5000);
    expect(retryHintMs({ 'retry-after': new Date(NOW - 5000).toUTCString() }, NOW)).toBe(0);
    expect(retryHintMs({ 'retry-after': 'soon' }, NOW)).toBeUndefined();
    expect(retryHintMs({}, NOW)).toBeUndefined();
  });

  it("reads the Hub's RateLimit header when the quota is spent, and only then", () => {
    expect(retryHintMs({ ratelimit: '"api";r=0;t=55' }, NOW)).toBe(55_000);
    expect(retryHintMs({ ratelimit: 'limit=100, remaining=0, reset=7' }, NOW)).toBe(7000);
    expect(retryHintMs({ ratelimit: '"api";r=12;t=55' }, NOW)).toBeUndefined();
    // Retry-After wins over RateLimit.
    expect(retryHintMs({ 'retry-after': '1', ratelimit: '"api";r=0;t=55' }, NOW)).toBe(1000);
    expect(retryAfterSeconds({ ratelimit: '"resolvers";r=0;t=90' }, NOW)).toBe('90');
  });
});

describe('RetryPolicy', () => {
  const policy = (retries = 3, maxWaitMs = 30_000, random = () => 0.5) => new RetryPolicy({ retries, maxWaitMs, random });

  it('retries 429 and 5xx only, within the budget', () => {
    const p = policy(2);
    for (const status of [429, 500, 502, 503, 504]) expect(p.decide(status, {}, 0, NOW).waitMs).toBeGreaterThan(0);
    for (const status of [400, 401, 403, 404, 416, 501]) expect(p.decide(status, {}, 0, NOW)).toMatchObject({ waitMs: undefined, reason: 'not retryable' });
    expect(p.decide(503, {}, 1, NOW).waitMs).toBeGreaterThan(0);
    expect(p.decide(503, {}, 2, NOW)).toMatchObject({ waitMs: undefined, reason: 'budget spent' });
    expect(policy(0).decide(503, {}, 0, NOW)).toMatchObject({ waitMs: undefined, reason: 'budget spent' });
  });

  it('honours Retry-After as a floor, with a little added jitter', () => {
    for (const r of [0, 0.5, 0.999]) {
      const wait = policy(3, 30_000, () => r).decide(429, { 'retry-after': '2' }, 0, NOW).waitMs ?? -1;
      expect(wait).toBeGreaterThanOrEqual(2000);
      expect(wait).toBeLessThan(2200);
    }
  });

  it('gives up at once when upstream asks for longer than the maximum wait', () => {
    expect(policy(3, 30_000).decide(429, { 'retry-after': '31' }, 0, NOW)).toMatchObject({ waitMs: undefined, reason: 'wait too long', hintMs: 31_000 });
    expect(policy(3, 30_000).decide(429, { ratelimit: '"api";r=0;t=300' }, 0, NOW)).toMatchObject({ waitMs: undefined, reason: 'wait too long' });
  });

  it('backs off exponentially with jitter when upstream gives no hint', () => {
    const low = policy(5, 30_000, () => 0);
    const high = policy(5, 30_000, () => 0.999);
    expect([0, 1, 2, 3].map((a) => low.decide(500, {}, a, NOW).waitMs)).toEqual([125, 250, 500, 1000]);
    expect([0, 1, 2, 3].map((a) => high.decide(500, {}, a, NOW).waitMs)).toEqual([249, 499, 999, 1999]);
    // Three retries fit under the route's default 2 s start wait.
    expect([0, 1, 2].reduce((sum, a) => sum + (high.decide(503, {}, a, NOW).waitMs ?? 0), 0)).toBeLessThan(2000);
  });

  it('never waits past a deadline', () => {
    const p = policy();
    expect(p.decide(503, { 'retry-after': '1' }, 0, NOW, 3000, 1000).waitMs).toBeGreaterThanOrEqual(1000);
    expect(p.decide(503, { 'retry-after': '1' }, 0, NOW, 1900, 1000)).toMatchObject({ waitMs: undefined, reason: 'deadline' });
  });
});
