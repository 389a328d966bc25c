/**
 * UpstreamSet's circuit breaker without sockets: order, cool-downs (doubling while failing),
 * the probe once a cool-down ends, and which upstream a fill may move to.
 */
import { describe, expect, it } from 'vitest';
import type { HubClient } from '../../src/upstream/hub-client.js';
import { UpstreamSet, type UpstreamStateEvent } from '../../src/upstream/upstream-set.js';

const client = (name: string) => ({ name }) as unknown as HubClient;

describe('UpstreamSet', () => {
  it('asks the first healthy upstream, skips a failing one for a doubling cool-down, probes it after', () => {
    let now = 0;
    const events: UpstreamStateEvent[] = [];
    const a = client('a');
    const b = client('b');
    const set = new UpstreamSet([{ base: 'http://a', client: a }, { base: 'http://b', client: b }], { coolDownMs: 1000, maxCoolDownMs: 3000, now: () => now, onState: (e) => events.push(e) });
    expect(set.current()).toBe(a);
    set.markDown(a, 'refused');
    set.markDown(a, 'refused again'); // the same outage, seen by another request
    expect(set.current()).toBe(b);
    expect(set.candidates()).toEqual([b]);
    now = 999;
    expect(set.current()).toBe(b);
    now = 1000; // cool-down over: asked again first
    expect(set.current()).toBe(a);
    set.markDown(a, 'still refused');
    now = 2999;
    expect(set.current()).toBe(b); // second cool-down: 2 s
    now = 3000;
    set.markDown(a, 'refused');
    now = 5999;
    expect(set.current()).toBe(b); // capped at 3 s
    now = 6000;
    set.markUp(a);
    set.markUp(a);
    expect(events.map((e) => [e.upstream, e.state, e.coolDownMs])).toEqual([
      ['http://a', 'down', 1000],
      ['http://a', 'down', 2000],
      ['http://a', 'down', 3000],
      ['http://a', 'up', undefined],
    ]);
  });

  it('with every upstream down, only the one whose cool-down ends first is asked; a fill moves only to healthy untried ones', () => {
    let now = 0;
    const a = client('a');
    const b = client('b');
    const c = client('c');
    const set = new UpstreamSet([{ base: 'http://a', client: a }, { base: 'http://b', client: b }, { base: 'http://c', client: c }], { coolDownMs: 1000, now: () => now });
    set.markDown(b, 'x');
    expect(set.next(new Set([a]))).toBe(c);
    expect(set.next(new Set([a, c]))).toBeUndefined();
    now = 10;
    set.markDown(a, 'x');
    now = 20;
    set.markDown(c, 'x');
    expect(set.candidates()).toEqual([b]);
    expect(set.next(new Set())).toBeUndefined();
  });
});
