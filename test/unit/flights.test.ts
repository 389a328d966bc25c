import { describe, expect, it } from 'vitest';
import { PromiseFlights } from '../../src/mirror/flights.js';

describe('PromiseFlights', () => {
  it('shares one call among concurrent callers and forgets it when settled', async () => {
    const flights = new PromiseFlights<number>();
    let calls = 0;
    const start = () => {
      calls++;
      return new Promise<number>((r) => setTimeout(() => r(42), 10));
    };
    const results = await Promise.all(Array.from({ length: 50 }, () => flights.run('k', start)));
    expect(results).toEqual(Array(50).fill(42));
    expect(calls).toBe(1);
    expect(flights.size).toBe(0);
    await flights.run('k', start);
    expect(calls).toBe(2);
  });

  it('does not cache failures', async () => {
    const flights = new PromiseFlights<number>();
    await expect(flights.run('k', () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(flights.size).toBe(0);
    await expect(flights.run('k', () => Promise.resolve(1))).resolves.toBe(1);
  });
});
