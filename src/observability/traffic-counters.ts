/**
 * TrafficCounters: what the mirror served and pulled, for `hubcache stats`. Counted in memory and
 * added to the index's `counters` table on each flush (every few seconds and at shutdown), so the
 * totals survive restarts; `since` is when counting began in this data directory. A crash loses
 * at most the last few seconds.
 *
 * - Requests: file GETs that sent a body, by where it came from: `hit` (disk), `miss` (this
 *   request started the download), `joined` (another request's download), `bypass` (a small range
 *   fetched upstream as that range). HEADs, 304s and 416s are not counted.
 * - Bytes served to clients, by the same four.
 * - Bytes pulled from upstream: the size of every download that was stored, plus bypassed ranges.
 */
import type { InventoryStore } from '../storage/cache-index-contract.js';

export type ServedFrom = 'hit' | 'miss' | 'joined' | 'bypass';

const SOURCES: readonly ServedFrom[] = ['hit', 'miss', 'joined', 'bypass'];

export interface TrafficReport {
  /** When counting began (ISO time), null before the first flush. */
  since: string | null;
  requests: Record<ServedFrom, number> & { total: number };
  /** Requests answered from disk / all counted requests; null when there were none. */
  hitRatio: number | null;
  bytesServed: Record<ServedFrom, number> & { total: number };
  /** Bytes served from disk / all bytes served; null when none were. */
  byteHitRatio: number | null;
  bytesPulledFromUpstream: number;
}

export class TrafficCounters {
  #pending: Record<string, number> = {};
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A file GET answered with `bytes` body bytes from `from`. */
  served(from: ServedFrom, bytes: number): void {
    this.#add(`requests.${from}`, 1);
    this.#add(`bytes_served.${from}`, bytes);
    if (from === 'bypass') this.#add('bytes_pulled', bytes);
  }

  /** A download of `bytes` was verified and stored. */
  pulled(bytes: number): void {
    this.#add('bytes_pulled', bytes);
  }

  /**
   * Hands what was counted since the last flush to `write` (with the initial `since`), which adds
   * it to the index and says whether that landed; what did not land is kept for the next flush.
   */
  async flush(write: (deltas: Readonly<Record<string, number>>, initial: Readonly<Record<string, number>>) => Promise<boolean>): Promise<void> {
    const deltas = this.#pending;
    this.#pending = {};
    let landed = false;
    try {
      landed = await write(deltas, { since: this.#now() });
    } finally {
      if (!landed) for (const [k, v] of Object.entries(deltas)) this.#add(k, v);
    }
  }

  /** The persisted totals plus what is not flushed yet. */
  async report(store: InventoryStore): Promise<TrafficReport> {
    const c = { ...(await store.counters()) };
    for (const [k, v] of Object.entries(this.#pending)) c[k] = (c[k] ?? 0) + v;
    return trafficReport(c);
  }

  #add(name: string, n: number): void {
    this.#pending[name] = (this.#pending[name] ?? 0) + n;
  }
}

/** Counter rows → the report (also used with the server stopped, from the index alone). */
export function trafficReport(c: Readonly<Record<string, number>>): TrafficReport {
  const requests = Object.fromEntries(SOURCES.map((s) => [s, c[`requests.${s}`] ?? 0])) as Record<ServedFrom, number>;
  const bytes = Object.fromEntries(SOURCES.map((s) => [s, c[`bytes_served.${s}`] ?? 0])) as Record<ServedFrom, number>;
  const totalRequests = SOURCES.reduce((n, s) => n + requests[s], 0);
  const totalBytes = SOURCES.reduce((n, s) => n + bytes[s], 0);
  return {
    since: c.since === undefined ? null : new Date(c.since).toISOString(),
    requests: { ...requests, total: totalRequests },
    hitRatio: totalRequests > 0 ? requests.hit / totalRequests : null,
    bytesServed: { ...bytes, total: totalBytes },
    byteHitRatio: totalBytes > 0 ? bytes.hit / totalBytes : null,
    bytesPulledFromUpstream: c.bytes_pulled ?? 0,
  };
}
