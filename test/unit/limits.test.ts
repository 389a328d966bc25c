/**
 * The fill engine's two shared limits, without sockets: WriteGate (diskWriters: writes in flight
 * on the data dir) and ConnLimiter (maxUpstreamConnections: demand first, base connections always).
 */
import { describe, expect, it } from 'vitest';
import { ConnLimiter } from '../../src/mirror/conn-limiter.js';
import { WriteGate } from '../../src/storage/write-gate.js';

function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

describe('WriteGate', () => {
  it('runs at most `limit` writes at once, the others in arrival order', async () => {
    const g = new WriteGate(2);
    const holds = [gate(), gate(), gate(), gate()];
    const started: number[] = [];
    const runs = holds.map((h, i) =>
      g.run(async () => {
        started.push(i);
        await h.wait;
        return i;
      }),
    );
    await Promise.resolve();
    await Promise.resolve();
    expect(started).toEqual([0, 1]);
    expect([g.active, g.waiting, g.waited]).toEqual([2, 2, 2]);
    holds[1]!.open();
    await runs[1];
    await Promise.resolve();
    expect(started).toEqual([0, 1, 2]);
    holds[0]!.open();
    holds[2]!.open();
    holds[3]!.open();
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3]);
    expect([g.active, g.waiting, g.waited]).toEqual([0, 0, 2]);
  });

  it('a failing write gives its slot back', async () => {
    const g = new WriteGate(1);
    await expect(g.run(() => Promise.reject(new Error('EIO')))).rejects.toThrow('EIO');
    expect(await g.run(() => Promise.resolve('next'))).toBe('next');
  });
});

describe('ConnLimiter', () => {
  it('grants extras up to the cap, base connections always, and hands freed ones to demand first', async () => {
    const c = new ConnLimiter(3);
    const base = [c.base(), c.base()];
    const extra = c.tryAcquire();
    expect(extra).not.toBeNull();
    expect(c.tryAcquire()).toBeNull();
    const b3 = c.base(); // a third fill's first connection: over the cap, still granted
    expect(c.active).toBe(4);
    const order: string[] = [];
    const plain = c.acquire(false);
    const demand = c.acquire(true);
    void plain.granted.then(() => order.push('plain'));
    void demand.granted.then(() => order.push('demand'));
    extra!.release(); // 3 active: still at the cap
    b3.release(); // 2 active: one slot, demand goes first
    await Promise.resolve();
    await Promise.resolve();
    expect(order).toEqual(['demand']);
    base[0]!.release();
    await plain.granted;
    expect(order).toEqual(['demand', 'plain']);
    // A cancelled request never takes a slot.
    const cancelled = c.acquire(false);
    cancelled.cancel();
    base[1]!.release();
    expect(c.active).toBe(2);
    const g = c.tryAcquire();
    expect(g).not.toBeNull();
    g!.release();
    g!.release(); // idempotent
    expect(c.active).toBe(2);
  });
});
