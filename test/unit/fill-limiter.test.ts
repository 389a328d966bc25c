import { describe, expect, it } from 'vitest';
import { isMirrorError } from '../../src/errors.js';
import { FillLimiter } from '../../src/mirror/fill-limiter.js';

describe('FillLimiter', () => {
  it('hands slots out first come first served, refuses past the queue limit with Overloaded + Retry-After', async () => {
    const limiter = new FillLimiter(2, 2);
    expect(limiter.tryAcquire()).toBe(true);
    expect(limiter.tryAcquire()).toBe(true);
    expect(limiter.tryAcquire()).toBe(false);
    const order: string[] = [];
    const a = limiter.wait().then(() => order.push('a'));
    const b = limiter.wait().then(() => order.push('b'));
    expect(limiter.queued).toBe(2);
    let refused: unknown;
    try {
      void limiter.wait();
    } catch (err) {
      refused = err;
    }
    expect(isMirrorError(refused) && refused.code).toBe('Overloaded');
    expect(isMirrorError(refused) && refused.headers['Retry-After']).toBe('5');
    limiter.release();
    await a;
    expect(order).toEqual(['a']);
    expect(limiter.active).toBe(2); // the slot passed on
    limiter.release();
    await b;
    expect(order).toEqual(['a', 'b']);
    limiter.release();
    limiter.release();
    expect(limiter.active).toBe(0);
  });

  it('close rejects the waiters and refuses new ones', async () => {
    const limiter = new FillLimiter(1, 10);
    expect(limiter.tryAcquire()).toBe(true);
    const waiting = limiter.wait();
    const { MirrorError } = await import('../../src/errors.js');
    limiter.close(new MirrorError('UpstreamUnavailable', 'shutting down'));
    await expect(waiting).rejects.toThrow('shutting down');
    expect(limiter.tryAcquire()).toBe(false);
    expect(() => limiter.wait()).toThrow('shutting down');
  });

  it('keeps FIFO order over a long queue', async () => {
    const limiter = new FillLimiter(1, 5000);
    expect(limiter.tryAcquire()).toBe(true);
    const order: number[] = [];
    const all = Array.from({ length: 3000 }, (_, i) => limiter.wait().then(() => order.push(i)));
    for (let i = 0; i < 3000; i++) limiter.release();
    await Promise.all(all);
    expect(order).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(limiter.queued).toBe(0);
  });
});
