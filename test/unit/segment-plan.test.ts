/**
 * The fill's scheduling decisions, without sockets: segment sizes, the order work is handed out,
 * end-game splits, and what a reader waiting at an offset gets.
 */
import { describe, expect, it } from 'vitest';
import { DEMAND_ALIGN, SegmentPlan, segmentSize, type Claim, type Work } from '../../src/mirror/segment-plan.js';

const MiB = 1024 * 1024;

function plan(size: number, connections = 8, segmentBytes = segmentSize(size, connections)): SegmentPlan {
  const p = new SegmentPlan({ size, connections, segmentBytes });
  p.ranged = true;
  p.segmented = true;
  return p;
}

/** Takes the next work, fails if there is none. */
function take(p: SegmentPlan): Claim {
  const w = p.next();
  expect(w).not.toBeNull();
  const c = p.take(w!);
  expect(c).not.toBeNull();
  return c!;
}

/** The connection received and wrote the whole claim. */
function finish(p: SegmentPlan, c: Claim): void {
  c.pos = c.end;
  p.written(c.start, c.end);
  p.release(c);
}

describe('segment sizes', () => {
  it('half a file per connection round, rounded up to whole MiB, within 16 and 64 MiB', () => {
    expect(segmentSize(64 * MiB, 8)).toBe(16 * MiB);
    expect(segmentSize(512 * MiB, 8)).toBe(32 * MiB);
    expect(segmentSize(1024 * MiB, 8)).toBe(64 * MiB);
    expect(segmentSize(100 * 1024 * MiB, 8)).toBe(64 * MiB);
    expect(segmentSize(300 * MiB + 1, 8)).toBe(19 * MiB);
    expect(segmentSize(256 * MiB, 1)).toBe(64 * MiB);
  });
});

describe('work list', () => {
  it('hands out segments lowest offset first, shares the last round evenly, and covers the file exactly once', () => {
    const size = 512 * MiB;
    const p = plan(size);
    const first = p.claim(0, 32 * MiB); // the fill's first request
    const claims = [first];
    for (let i = 0; i < 7; i++) claims.push(take(p));
    expect(claims.map((c) => [c.start / MiB, c.end / MiB])).toEqual(Array.from({ length: 8 }, (_, i) => [32 * i, 32 * i + 32]));
    // Everyone busy: nothing to hand out (remainders of 32 MiB would be split, but gaps come first).
    const w = p.next()!;
    expect(w.victim).toBeUndefined();
    expect([w.start, w.end]).toEqual([256 * MiB, 288 * MiB]);
    // Finish them all, in any order, taking the next gap each time: the union is the file.
    let guard = 0;
    while (!p.complete && guard++ < 100) {
      const c = claims.shift();
      if (!c) break;
      finish(p, c);
      const next = p.next();
      if (next) claims.push(p.take(next)!);
    }
    while (claims.length > 0) finish(p, claims.shift()!);
    expect(p.complete).toBe(true);
    expect(p.covered.size).toBe(size);
    expect(p.next()).toBeNull();
  });

  it('shrinks segments to an even share when fewer than one per connection is left', () => {
    const p = plan(100 * MiB, 4); // segments of 16 MiB
    const a = p.claim(0, 16 * MiB);
    const b = take(p);
    const c = take(p);
    expect([b.start, c.start]).toEqual([16 * MiB, 32 * MiB]);
    // 52 MiB unclaimed over 4 connections: 13 MiB each.
    const d = take(p);
    expect(d.end - d.start).toBe(13 * MiB);
    for (const x of [a, b, c, d]) finish(p, x);
    // 39 MiB left: 10 MiB shares, then 8 MiB (29 MiB / 4 rounded up), never below 4 MiB.
    const e = take(p);
    expect(e.end - e.start).toBe(10 * MiB);
  });

  it('splits the largest remainder of a straggler in half when nothing is left to claim, but not a small one', () => {
    const p = plan(64 * MiB, 2, 32 * MiB);
    const a = p.claim(0, 32 * MiB);
    const b = p.claim(32 * MiB, 48 * MiB);
    const c = p.claim(48 * MiB, 64 * MiB);
    a.rate = a.measured = 40 * MiB;
    b.rate = b.measured = 5 * MiB;
    c.rate = c.measured = 4 * MiB;
    expect(p.next()?.victim).toBeDefined(); // no gap left: only splits
    finish(p, a); // the reference now: the rate `a` got (40 MiB/s)
    b.pos = 36 * MiB; // 12 MiB left
    c.pos = 50 * MiB; // 14 MiB left: the largest
    const w = p.next()!;
    expect([w.victim, w.start, w.end]).toEqual([c, 57 * MiB, 64 * MiB]);
    const d = p.take(w)!;
    expect([c.end, d.start, d.end]).toEqual([57 * MiB, 57 * MiB, 64 * MiB]);
    // b (12 MiB left) is the largest now.
    expect(p.next()?.victim).toBe(b);
    b.pos = 41 * MiB; // 7 MiB left
    c.pos = 52 * MiB; // 5 MiB
    d.pos = 58 * MiB; // 6 MiB
    expect(p.next()).toBeNull(); // no remainder of 8 MiB or more
  });

  it('splits no connection as fast as the others (the mirror or the link is the limit: a split only costs bytes), nor one not measured yet', () => {
    const p = plan(256 * MiB, 4, 64 * MiB);
    const claims = [0, 1, 2, 3].map((i) => p.claim(i * 64 * MiB, (i + 1) * 64 * MiB));
    for (const [i, c] of claims.entries()) {
      c.pos = c.start + (i + 1) * 8 * MiB; // 56, 48, 40, 32 MiB left
      c.rate = c.measured = (10 + i) * MiB; // within a factor of 2 of each other
    }
    expect(p.next()).toBeNull();
    // One falls behind: below half of the best other (13 MiB/s): it is split, the largest such remainder first.
    claims[1]!.measured = 6 * MiB;
    claims[2]!.measured = 6 * MiB;
    expect(p.next()?.victim).toBe(claims[1]);
    // Unmeasured (its request just started): never split.
    claims[1]!.measured = Number.NaN;
    expect(p.next()?.victim).toBe(claims[2]);
    // The rate the last finished connection got counts as a reference too.
    for (const c of claims.slice(1)) c.rate = c.measured = 8 * MiB;
    expect(p.next()).toBeNull();
    claims[0]!.measured = 20 * MiB;
    finish(p, claims[0]!);
    expect(p.next()?.victim).toBe(claims[1]);
  });

  it('a stale split (the victim passed the point meanwhile) is not taken', () => {
    const p = plan(64 * MiB, 2);
    const first = p.claim(0, 16 * MiB);
    first.measured = 40 * MiB;
    finish(p, first);
    const a = p.claim(16 * MiB, 64 * MiB);
    a.measured = 2 * MiB; // a straggler
    const w = p.next()!;
    expect([w.victim, w.start]).toEqual([a, 40 * MiB]);
    a.pos = 44 * MiB;
    const c = p.take(w)!;
    // Split point moved up to where the victim is.
    expect([a.end, c.start]).toEqual([44 * MiB, 44 * MiB]);
    const again = p.take({ start: 10 * MiB, end: 44 * MiB, victim: a, demand: false });
    expect(again).toBeNull();
  });

  it('a single-stream fill gets no work besides demand; a fill without ranges gets none at all', () => {
    const p = new SegmentPlan({ size: 32 * MiB, connections: 1, segmentBytes: 16 * MiB });
    const only = p.claim(0, 32 * MiB);
    only.reach = 32 * MiB;
    only.rate = 0; // stalled
    expect(p.next()).toBeNull();
    expect(p.demandFor(30 * MiB)).toBe('wait'); // not ranged: the stream will get there
    p.ranged = true;
    expect(p.next()).toBeNull(); // ranged but not segmented: nothing without a reader
    const token = p.want(30 * MiB);
    const w = p.next()!;
    expect([w.start, w.end, w.victim, w.demand]).toEqual([30 * MiB, 32 * MiB, only, true]);
    p.forget(token);
    expect(p.next()).toBeNull();
  });
});

describe('demand', () => {
  it('a reader near a connection waits; far from it, the claim is split at the reader (aligned down, never below the connection)', () => {
    const size = 256 * MiB;
    const p = plan(size, 1);
    p.segmented = false;
    const s = p.claim(0, size);
    s.reach = size;
    s.pos = 10 * MiB;
    p.written(0, 9 * MiB);
    expect(p.demandFor(200 * MiB)).toBe('wait'); // rate not measured yet: wait for the first sample
    s.rate = 0;
    expect(p.demandFor(5 * MiB)).toBe('ready');
    expect(p.demandFor(9 * MiB + 5)).toBe('wait'); // received, being written
    expect(p.demandFor(14 * MiB)).toBe('wait'); // within 4 MiB of the connection
    s.rate = 20 * MiB; // 20 MiB/s: a second ahead is "soon"
    expect(p.demandFor(29 * MiB)).toBe('wait');
    const x = 200 * MiB + 12345;
    const d = p.demandFor(x);
    expect(d).toEqual({ start: Math.floor(x / DEMAND_ALIGN) * DEMAND_ALIGN, end: size, victim: s, demand: true });
    const c = p.take(d as Exclude<typeof d, string>)!;
    expect(s.end).toBe(c.start);
    // The suffix of the file is inside the new claim, 56 MiB past its start: split again there.
    c.rate = 0;
    const tail = p.demandFor(size - 500);
    expect(tail).toEqual({ start: size - DEMAND_ALIGN, end: size, victim: c, demand: true });
    // Once the new claim's connection is close enough, its readers wait for it.
    c.pos = size - 2 * MiB;
    expect(p.demandFor(size - 500)).toBe('wait');
  });

  it('a reader in a gap gets a span starting at it, bounded by the next claim and a segment', () => {
    const size = 512 * MiB;
    const p = plan(size);
    p.claim(0, 32 * MiB);
    p.claim(300 * MiB, 332 * MiB);
    const x = 200 * MiB + 100;
    const d = p.demandFor(x);
    expect(d).toEqual({ start: 200 * MiB, end: 232 * MiB, demand: true });
    const near = p.demandFor(290 * MiB);
    expect(near).toEqual({ start: 290 * MiB, end: 300 * MiB, demand: true });
    // A demanded span comes before the lowest gap.
    const token = p.want(x);
    expect(p.next()).toEqual(d);
    p.forget(token);
    expect(p.next()).toEqual({ start: 32 * MiB, end: 64 * MiB, demand: false });
  });

  it('an abandoned demand claim (its request got no byte) goes back to the claim it was split off while that request still reaches over it', () => {
    const size = 128 * MiB;
    const p = plan(size, 1);
    p.segmented = false;
    const s = p.claim(0, size);
    s.reach = size;
    s.pos = MiB;
    s.rate = 0;
    const d = p.demandFor(100 * MiB) as { start: number; end: number; victim?: Claim; demand: boolean };
    const c = p.take(d)!;
    expect(s.end).toBe(100 * MiB);
    p.release(c);
    expect(s.end).toBe(size);
    // Once the stream stopped (its request no longer reaches past its end), it is not given back.
    const c2 = p.take(p.demandFor(100 * MiB) as { start: number; end: number; victim?: Claim; demand: boolean })!;
    s.reach = s.end;
    p.release(c2);
    expect(s.end).toBe(100 * MiB);
  });

  it('a reader at a connection that went silent after delivering bytes gets a request from where it stopped; one that never delivered a byte is waited for', () => {
    const size = 128 * MiB;
    const p = plan(size, 8);
    const a = take(p);
    a.reach = a.end;
    a.pos = 5 * MiB + 123;
    a.rate = 0;
    a.measured = 1_000_000;
    // Silent, but not (yet) for the stall time: the reader at its position waits.
    expect(p.demandFor(a.pos)).toBe('wait');
    expect(p.demandFor(a.pos + MiB)).toBe('wait');
    a.stalled = true;
    // Right at the connection, or a little ahead: the rest of its span from where it stopped, or
    // from the reader's aligned offset (what the silent one holds below it is taken over later).
    for (const x of [a.pos, a.pos + 100, a.pos + MiB]) {
      const w = p.demandFor(x) as Work;
      expect([w.start, w.end, w.victim, w.demand]).toEqual([Math.max(a.pos, Math.floor(x / DEMAND_ALIGN) * DEMAND_ALIGN), a.end, a, true]);
    }
    // Bytes already received (being written) are not asked for again.
    expect(p.demandFor(a.pos - 1)).toBe('wait');
    const token = p.want(a.pos);
    const c = p.take(p.next()!)!;
    p.forget(token);
    // The silent connection's end is where it stopped: it has nothing left to fetch.
    expect([a.end, c.start, c.end]).toEqual([a.pos, a.pos, segmentSize(size, 8)]);
    // The replacement went silent before its first byte: no chain of requests to a dead upstream.
    c.rate = 0;
    c.measured = 0;
    c.stalled = true;
    expect(p.demandFor(c.pos)).toBe('wait');
    // Each replacement that sends a little and goes silent is replaced in turn, maxTakeovers (5)
    // times in a row on the same span; then the idle timeout and its resumes have it.
    let last = c;
    for (let n = 1; n <= 5; n++) {
      expect(last.takeovers).toBe(n);
      last.pos += MiB;
      last.measured = 500_000;
      if (n === 5) break;
      const t = p.want(last.pos);
      const next = p.take(p.next()!)!;
      p.forget(t);
      expect([next.start, last.end]).toEqual([last.pos, last.pos]);
      next.stalled = true;
      last = next;
    }
    expect(p.demandFor(last.pos)).toBe('wait');
    // Only the file's last byte to go: an upstream mirror holds it back until it has verified
    // the file, from any request; nothing to take over.
    const tail = plan(size, 8);
    const z = tail.claim(size - 4 * MiB, size);
    Object.assign(z, { reach: size, pos: size - 1, rate: 0, measured: 1_000_000, stalled: true });
    expect(tail.demandFor(size - 1)).toBe('wait');
    z.pos = size - 2;
    expect(typeof tail.demandFor(size - 2)).toBe('object');
    // Without ranges there is nothing to ask for: the idle timeout deals with it.
    const q = plan(size, 8);
    q.ranged = false;
    const b = q.claim(0, size);
    Object.assign(b, { reach: size, pos: MiB, rate: 0, measured: 1_000_000, stalled: true });
    expect(q.demandFor(MiB)).toBe('wait');
  });
});
