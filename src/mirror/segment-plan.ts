/**
 * SegmentPlan: which bytes of a blob each upstream connection of its fill fetches next. Pure
 * bookkeeping, no I/O: the Fill reports what was claimed, received and written, and asks what a
 * free connection or a waiting reader should do.
 *
 * - A *claim* is a span `[start, end)` one connection fetches; `pos` is the next byte it will
 *   receive. Its `end` may shrink (another connection takes the rest: a split), never below `pos`.
 * - `covered` holds the bytes written to the staging file. Work is found in the gaps of
 *   covered ∪ claims, lowest offset first; bytes are fetched once (upstream bytes ≈ the file).
 * - Segmented fills carve gaps into segments of `segmentBytes`; near the end, when fewer than one
 *   segment per connection is left, what is left is shared evenly, so connections finish together.
 *   A connection with nothing left to claim takes half of the largest remainder of a straggler (an
 *   end-game split): a connection below STRAGGLER_RATE_FRACTION of the best rate another one gets
 *   (running, or the last to finish), with at least 2 × MIN_SPLIT_BYTES left. Every split ends a
 *   running request early, and what upstream had already sent past the new end (whatever the socket
 *   buffers hold: 3–6 MiB per split, measured on a loaded mirror) is fetched twice; when every
 *   connection is equally slow (the mirror or the link is the limit, not one connection), a split
 *   would only add those bytes and gain no time.
 * - Demand first: a reader waiting at `x` gets the bytes soon if a connection will reach `x`
 *   within about a second (DEMAND_SOON; a connection whose rate is not measured yet counts as
 *   about to); otherwise the plan answers with work that starts at
 *   `x` (aligned down to DEMAND_ALIGN, never below what a connection already has): a new span in
 *   a gap, or a split of the claim that holds `x`. A reader waiting on a connection that went
 *   silent (`stalled`) gets a new request from where that one stopped. Single-stream fills
 *   (`segmented` false) only ever get demand work; a fill that cannot ask for ranges (`ranged`
 *   false) gets none.
 */
import { SpanSet, type Interval, type ReadonlySpanSet } from '../model/span-set.js';

const MiB = 1024 * 1024;
/** A reader this close to a connection's position (or within a second of its rate) waits for it. */
export const DEMAND_SOON_BYTES = 4 * MiB;
/** A demand span starts at the wanted offset rounded down to this. */
export const DEMAND_ALIGN = 64 * 1024;
/** End-game splits leave each side at least this much. */
export const MIN_SPLIT_BYTES = 4 * MiB;
/** A connection slower than this fraction of the best rate of the fill's others is a straggler (end-game splits). */
export const STRAGGLER_RATE_FRACTION = 0.5;
/** The smallest segment handed out near the end of a fill. */
export const MIN_SEGMENT_BYTES = 4 * MiB;
const SPLIT_ALIGN = MiB;

/** Segment size for a file: half a file per connection round, within [16 MiB, 64 MiB], whole MiB. */
export function segmentSize(size: number, connections: number): number {
  const per = Math.ceil(size / (2 * Math.max(1, connections)) / MiB) * MiB;
  return Math.min(64 * MiB, Math.max(16 * MiB, per));
}

export interface Claim {
  readonly id: number;
  readonly start: number;
  /** Next byte the connection will receive. */
  pos: number;
  /** End (exclusive) of what this connection must fetch; may shrink, never below `pos`. */
  end: number;
  /**
   * How far the upstream request in flight reaches (exclusive; `pos` when none is in flight): a
   * claim whose end was moved down can be moved back up to here while its request still runs.
   */
  reach: number;
  /**
   * Bytes per second lately (the Fill keeps it current), for demand decisions; NaN until measured
   * (a connection that just started: readers wait for its first sample rather than split it).
   */
  rate: number;
  /**
   * Bytes per second smoothed over the last samples (each sample weighs half), kept when the
   * connection stops (`rate` drops to 0): what this connection gets, for end-game splits; NaN until
   * measured. One sample of a busy mirror's bursty reads is no evidence of a slow connection.
   */
  measured: number;
  /**
   * The connection went silent (the Fill sets it: no byte for the stall time, while the mirror was
   * not holding it back). A reader waiting at its position has the rest fetched by a new request.
   */
  stalled: boolean;
  /** Silent connections this span went through before this one (each replaced by the next). */
  takeovers: number;
}

/** Work for a connection: fetch `[start, end)`; `victim`: first shrink that claim's end to `start`. */
export interface Work {
  start: number;
  end: number;
  victim?: Claim;
  /** Asked for by a waiting reader (gets a connection before other work). */
  demand: boolean;
}

export type DemandAnswer = 'ready' | 'wait' | Work;

export interface PlanOptions {
  size: number;
  /** Connections of the fill's own work list (upstreamConnections), for segment sizes. */
  connections: number;
  segmentBytes: number;
  /**
   * Times in a row a span's silent connection is replaced (default 5): past it, the stall is left
   * to the idle timeout and its resumes, so an upstream that sends a little on every connection
   * and then goes silent ends in a failure, not in a request every few seconds forever.
   */
  maxTakeovers?: number;
}

export class SegmentPlan {
  readonly size: number;
  readonly #connections: number;
  readonly #segmentBytes: number;
  readonly #maxTakeovers: number;
  readonly #covered = new SpanSet();
  readonly #claims = new Map<number, Claim>();
  readonly #demands = new Map<number, number>();
  #nextId = 1;
  /** `measured` of the last claim released after it had a rate: what a connection got lately. */
  #finishedRate = Number.NaN;
  /** Whether spans other than the whole file may be asked for (strong validator, Range honoured). */
  ranged = false;
  /** Whether the fill uses several connections (else only demand work beside its one stream). */
  segmented = false;

  constructor(opts: PlanOptions) {
    this.size = opts.size;
    this.#connections = Math.max(1, opts.connections);
    this.#segmentBytes = opts.segmentBytes;
    this.#maxTakeovers = opts.maxTakeovers ?? 5;
  }

  /** Bytes written to the staging file. */
  get covered(): ReadonlySpanSet {
    return this.#covered;
  }

  get claims(): IterableIterator<Claim> {
    return this.#claims.values();
  }

  get complete(): boolean {
    return this.#covered.covers(0, this.size);
  }

  /** Records bytes written. */
  written(start: number, end: number): void {
    this.#covered.add(start, end);
  }

  /** A new claim of `[start, end)` (after `take`, or for a fill's first request). */
  claim(start: number, end: number): Claim {
    const c: Claim = { id: this.#nextId++, start, pos: start, end, reach: start, rate: Number.NaN, measured: Number.NaN, stalled: false, takeovers: 0 };
    this.#claims.set(c.id, c);
    return c;
  }

  /**
   * Applies `work`: shrinks its victim (if any, and if it still reaches that far) and claims the
   * span. Null when the work is stale (the victim already passed the split point).
   */
  take(work: Work): Claim | null {
    let { start } = work;
    const { end } = work;
    if (work.victim) {
      const v = work.victim;
      if (!this.#claims.has(v.id) || v.end !== end) return null;
      start = Math.max(start, v.pos);
      if (start >= end) return null;
      v.end = start;
    } else if (this.#takenAt(start)) {
      return null;
    }
    const c = this.claim(start, end);
    if (work.victim?.stalled) c.takeovers = work.victim.takeovers + 1;
    return c;
  }

  /**
   * Removes a claim: done (its bytes are written), or abandoned (its request failed before any
   * byte). An abandoned claim that was split off a claim whose request still reaches over it is
   * given back to that claim.
   */
  release(c: Claim): void {
    this.#claims.delete(c.id);
    if (c.measured > 0) this.#finishedRate = c.measured;
    if (c.pos > c.start || c.end <= c.start) return;
    for (const other of this.#claims.values()) {
      if (other.end === c.start && other.reach > other.end && other.pos <= other.end) {
        other.end = Math.min(other.reach, c.end);
        return;
      }
    }
  }

  /** Registers a reader waiting at `pos`; `forget` with the returned token when it stops waiting. */
  want(pos: number): number {
    const token = this.#nextId++;
    this.#demands.set(token, pos);
    return token;
  }

  forget(token: number): void {
    this.#demands.delete(token);
  }

  get demands(): number {
    return this.#demands.size;
  }

  /** What a reader waiting at `x` should do: read now, wait, or have this work started for it. */
  demandFor(x: number): DemandAnswer {
    if (x >= this.size || this.#covered.has(x)) return 'ready';
    const c = this.#claimAt(x);
    if (c) {
      if (x < c.pos) return 'wait'; // received, being written
      // A connection that went silent after it had delivered bytes: its reader would wait for the
      // idle timeout. A new request takes over from where it stopped. One that never delivered a
      // byte is not taken over (its replacement would be the same kind of request to the same
      // place): the idle timeout and resumes deal with it, so a dead upstream costs no request
      // storm; nor is one past maxTakeovers in a row; nor one with only the file's last byte to
      // go: a mirror upstream of us (another hubcache, a replica) holds that byte back until it
      // has verified the file, and would hold it back from the replacement too.
      const lastByteOnly = c.pos === this.size - 1;
      if (c.stalled && c.measured > 0 && c.takeovers < this.#maxTakeovers && !lastByteOnly && this.ranged) return { start: Math.max(c.pos, alignDown(x, DEMAND_ALIGN)), end: c.end, victim: c, demand: true };
      if (Number.isNaN(c.rate) || x - c.pos <= Math.max(DEMAND_SOON_BYTES, c.rate)) return 'wait';
      if (!this.ranged) return 'wait';
      const at = Math.max(c.pos, alignDown(x, DEMAND_ALIGN));
      return { start: at, end: c.end, victim: c, demand: true };
    }
    if (!this.ranged) return 'wait';
    const taken = this.#taken();
    const gap = taken.firstGap(Math.max(0, alignDown(x, DEMAND_ALIGN)), x + 1);
    if (!gap) return 'wait';
    const end = taken.firstGap(gap.start, this.size)?.end ?? this.size;
    return { start: gap.start, end: Math.min(end, gap.start + this.#segmentBytes), demand: true };
  }

  /**
   * Work for a free connection: a waiting reader's first, then (segmented fills) the lowest gap,
   * then an end-game split. Null: nothing worth a connection.
   */
  next(): Work | null {
    const wanted = [...new Set(this.#demands.values())].sort((a, b) => a - b);
    for (const x of wanted) {
      const d = this.demandFor(x);
      if (typeof d !== 'string') return d;
    }
    if (!this.segmented || !this.ranged) return null;
    const taken = this.#taken();
    const gap = taken.firstGap(0, this.size);
    if (gap) {
      const unclaimed = this.size - taken.size;
      const share = Math.ceil(unclaimed / this.#connections / MiB) * MiB;
      const len = Math.min(this.#segmentBytes, Math.max(MIN_SEGMENT_BYTES, share));
      return { start: gap.start, end: Math.min(gap.end, gap.start + len), demand: false };
    }
    let victim: Claim | null = null;
    for (const c of this.#claims.values()) {
      if (c.end - c.pos < 2 * MIN_SPLIT_BYTES || !this.#straggler(c)) continue;
      if (!victim || c.end - c.pos > victim.end - victim.pos) victim = c;
    }
    if (!victim) return null;
    const at = alignDown(victim.pos + Math.floor((victim.end - victim.pos) / 2), SPLIT_ALIGN);
    if (at - victim.pos < MIN_SPLIT_BYTES || victim.end - at < MIN_SPLIT_BYTES) return null;
    return { start: at, end: victim.end, victim, demand: false };
  }

  /** Whether `c` is measured and well below the best (smoothed) rate another connection of this fill gets. */
  #straggler(c: Claim): boolean {
    if (!(c.measured >= 0)) return false; // not measured yet
    let best = this.#finishedRate > 0 ? this.#finishedRate : 0;
    for (const o of this.#claims.values()) if (o !== c && o.measured > best) best = o.measured;
    return c.measured < STRAGGLER_RATE_FRACTION * best;
  }

  #claimAt(x: number): Claim | undefined {
    for (const c of this.#claims.values()) if (c.start <= x && x < c.end) return c;
    return undefined;
  }

  #takenAt(x: number): boolean {
    return this.#covered.has(x) || this.#claimAt(x) !== undefined;
  }

  /** covered ∪ claims. */
  #taken(): SpanSet {
    const t = new SpanSet();
    for (const s of this.#covered.spans()) t.add(s.start, s.end);
    for (const c of this.#claims.values()) t.add(c.start, c.end);
    return t;
  }
}

function alignDown(x: number, unit: number): number {
  return Math.floor(x / unit) * unit;
}

export type { Interval };
