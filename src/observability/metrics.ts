/**
 * Metrics: the mirror's counters and gauges, exposed in the Prometheus text format (prom-client).
 *
 * The hot path only adds to plain numbers: a request, an upstream call or a fill event costs a
 * few map lookups (label sets are cached, nothing is built per request) and additions; prom-client
 * reads those numbers when scraped (each metric's `collect`). Gauges (disk, index rows, fills in
 * flight) are read from their owners at scrape time through `MetricsSources`.
 *
 * Labels are low-cardinality by construction: a route class, a method, a status, a cache result,
 * a byte source, a known `X-Error-Code`. Never a repo, a path or a token.
 *
 * Feeds (see server.ts): the request log (`RequestObserver`: statuses, cache results, bytes served,
 * time to first byte), the upstream client (`UpstreamObserver`: requests and metadata bytes), the
 * Mirror (fill events and failovers; file bytes received, read at scrape) and the retry hook;
 * the evictor calls `evicted()`.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERROR_TABLE } from '../errors.js';
import type { LiveRequest, RequestObserver, RequestOutcome } from '../http/request-log.js';

/** What the mirror made of a request: its cache status, `error` for a failed one, `none` when it had none. */
export type CacheResult = 'hit' | 'miss' | 'joined' | 'bypass' | 'error' | 'none';
/** Where the bytes of a file response came from: disk, a fill in progress, upstream ranges not stored. */
export type ServedSource = 'cache' | 'fill' | 'bypass';
export type UpstreamKind = 'file' | 'metadata';
export type RouteClass = 'file' | 'api' | 'health' | 'metrics' | 'dashboard' | 'other';
export type IndexTable = 'refs' | 'files' | 'blobs' | 'api_responses';

export interface StorageStats {
  /** Bytes of the blobs in the cache (as recorded in the index). */
  usedBytes: number;
  /** The most the cache may hold now. */
  budgetBytes: number;
  /** Free bytes on the cache disk. */
  freeBytes: number;
  rows: Record<IndexTable, number>;
}

/** What the metrics read from the rest of the mirror when scraped. */
export interface MetricsSources {
  /** Fills running, and waiting for a slot. */
  fills(): { running: number; queued: number };
  /** Writes to staging files: in flight, waiting for a slot (`diskWriters`), and how many waited so far. */
  diskWrites(): { active: number; waiting: number; waited: number };
  /** Bytes received from upstream for files, since start: by fills, and by range bypasses. */
  upstreamFileBytes(): { fill: number; bypass: number; written: number };
  storage(): Promise<StorageStats>;
}

/** Told about every request sent upstream (each redirect hop and retry), and metadata body bytes. */
export interface UpstreamObserver {
  upstreamRequest(kind: UpstreamKind): void;
  metadataBytes(bytes: number): void;
}

/** For the eviction engine: one call per blob removed from the cache to make room. */
export interface EvictionObserver {
  evicted(bytes: number): void;
}

export type FillEvent = 'started' | 'committed' | 'failed' | 'resumed';

/** Totals the dashboard shows (the same numbers the counters expose). */
export interface Totals {
  /** File GETs by cache result. */
  fileGets: Record<CacheResult, number>;
  served: Record<ServedSource, number>;
  upstreamBytes: Record<UpstreamKind, number>;
  upstreamRequests: Record<UpstreamKind, number>;
  fills: Record<'started' | 'committed' | 'failed', number>;
  resumes: number;
  retries: number;
  evictions: number;
  evictedBytes: number;
}

interface Cell {
  readonly labels: Record<string, string>;
  n: number;
}

const CACHE_RESULTS: readonly CacheResult[] = ['hit', 'miss', 'joined', 'bypass', 'error', 'none'];
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
/** `X-Error-Code` values worth a series; anything else (an upstream's own code) counts as `other`. */
const KNOWN_ERROR_CODES = new Set<string>([...Object.values(ERROR_TABLE).flatMap((s) => (s.hubCode ? [s.hubCode] : [])), 'GatedRepo', 'DisabledRepo']);
/** Time to first byte: a cached HEAD takes well under a millisecond, a cold GET up to fillStartWaitMs and beyond. */
const FIRST_BYTE_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The route class of a request path (the label `route`). */
export function routeOf(path: string): RouteClass {
  if (path === '/healthz') return 'health';
  if (path === '/metrics') return 'metrics';
  if (path === '/_' || path.startsWith('/_/')) return 'dashboard';
  if (path.startsWith('/api/')) return 'api';
  if (path.includes('/resolve/') || path.includes('/raw/')) return 'file';
  return 'other';
}

export function cacheResultOf(cacheStatus: string | undefined, status: number): CacheResult {
  if (cacheStatus === 'hit' || cacheStatus === 'miss' || cacheStatus === 'joined' || cacheStatus === 'bypass') return status >= 400 ? 'error' : cacheStatus;
  return status >= 400 ? 'error' : 'none';
}

function sourceOf(cacheStatus: string | undefined): ServedSource | undefined {
  if (cacheStatus === 'hit') return 'cache';
  if (cacheStatus === 'miss' || cacheStatus === 'joined') return 'fill';
  if (cacheStatus === 'bypass') return 'bypass';
  return undefined;
}

/** A nested map of cells, one level per label, so finding a label set allocates nothing once it exists. */
class CellTree {
  readonly #root = new Map<string | number, unknown>();
  readonly #names: readonly string[];

  constructor(names: readonly string[]) {
    this.#names = names;
  }

  /** The cell of one label set (values in the order of the names given to the constructor). */
  cell(a: string | number, b?: string | number, c?: string | number, d?: string | number): Cell {
    const depth = this.#names.length;
    const keyAt = (i: number): string | number => (i === 0 ? a : i === 1 ? b : i === 2 ? c : d) ?? '';
    let node = this.#root;
    for (let i = 0; i < depth - 1; i++) {
      let next = node.get(keyAt(i)) as Map<string | number, unknown> | undefined;
      if (!next) {
        next = new Map();
        node.set(keyAt(i), next);
      }
      node = next;
    }
    let cell = node.get(keyAt(depth - 1)) as Cell | undefined;
    if (!cell) {
      const labels: Record<string, string> = {};
      this.#names.forEach((name, i) => (labels[name] = String(keyAt(i))));
      cell = { labels, n: 0 };
      node.set(keyAt(depth - 1), cell);
    }
    return cell;
  }

  *cells(): IterableIterator<Cell> {
    const depth = this.#names.length;
    function* walk(node: Map<string | number, unknown>, level: number): IterableIterator<Cell> {
      for (const v of node.values()) {
        if (level === depth - 1) yield v as Cell;
        else yield* walk(v as Map<string | number, unknown>, level + 1);
      }
    }
    yield* walk(this.#root, 0);
  }
}

/** Copies plain-number cells into a prom-client counter (scrape time). */
function reportCells(counter: Counter, cells: Iterable<Cell>): void {
  counter.reset();
  for (const cell of cells) counter.inc(cell.labels, cell.n);
}

/** Node.js process metrics are per process, not per mirror: one registry, shared by every Metrics. */
let processRegistry: Registry | undefined;
function defaultMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
    // Gauges that prom-client names like counters (promtool rejects them); each has a correctly
    // named twin (nodejs_active_handles, nodejs_active_requests, nodejs_active_resources).
    for (const misnamed of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) processRegistry.removeSingleMetric(misnamed);
  }
  return processRegistry;
}

export class Metrics implements RequestObserver, UpstreamObserver, EvictionObserver {
  readonly registry = new Registry();
  #sources: MetricsSources | undefined;
  /** The storage numbers of the scrape in progress: read once for all the gauges that show them. */
  #scrapeStorage: Promise<StorageStats> | undefined;

  readonly #requests = new CellTree(['route', 'method', 'status', 'cache']);
  readonly #errors = new CellTree(['code']);
  readonly #served: Record<ServedSource, number> = { cache: 0, fill: 0, bypass: 0 };
  readonly #upstreamRequests: Record<UpstreamKind, number> = { file: 0, metadata: 0 };
  #metadataBytes = 0;
  readonly #fills = { started: 0, committed: 0, failed: 0 };
  #resumes = 0;
  readonly #retries = { retried: 0, gave_up: 0 };
  #failovers = 0;
  #evictions = 0;
  #evictedBytes = 0;
  /** Responses in progress, with the body bytes already counted. */
  readonly #live = new Map<LiveRequest, number>();
  readonly #firstByte: Histogram;
  readonly #firstByteChildren = new CellTree(['method', 'route', 'cache']);
  readonly #firstByteBound = new Map<Cell, ReturnType<Histogram['labels']>>();

  constructor() {
    const registers = [this.registry];
    const served = this.#served;
    const upstreamRequests = this.#upstreamRequests;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- prom-client calls collect() with the metric as `this`
    const self = this;

    new Counter({
      name: 'hubcache_http_requests_total',
      help: 'Requests answered, by route class, method, status and cache result (hit, miss, joined, bypass, error, none).',
      labelNames: ['route', 'method', 'status', 'cache'],
      registers,
      collect() {
        reportCells(this, self.#requests.cells());
      },
    });
    new Counter({
      name: 'hubcache_http_errors_total',
      help: 'Error responses by X-Error-Code (none: an error without one; other: a code relayed from upstream).',
      labelNames: ['code'],
      registers,
      collect() {
        reportCells(this, self.#errors.cells());
      },
    });
    new Counter({
      name: 'hubcache_served_bytes_total',
      help: 'File body bytes sent to clients, by source: cache (disk), fill (a download in progress), bypass (upstream ranges, not stored).',
      labelNames: ['source'],
      registers,
      collect() {
        self.#countLiveBytes();
        this.reset();
        for (const source of ['cache', 'fill', 'bypass'] as const) this.inc({ source }, served[source]);
      },
    });
    new Counter({
      name: 'hubcache_upstream_requests_total',
      help: 'Requests sent upstream, by kind: file (body GETs, each redirect hop and retry) or metadata (HEADs and API calls).',
      labelNames: ['kind'],
      registers,
      collect() {
        this.reset();
        for (const kind of ['file', 'metadata'] as const) this.inc({ kind }, upstreamRequests[kind]);
      },
    });
    new Counter({
      name: 'hubcache_upstream_bytes_total',
      help: 'Body bytes received from upstream, by kind: file (fills and range bypasses; not what a fill streamed from another replica) or metadata (API answers).',
      labelNames: ['kind'],
      registers,
      collect() {
        const files = self.#sources?.upstreamFileBytes() ?? { fill: 0, bypass: 0 };
        this.reset();
        this.inc({ kind: 'file' }, files.fill + files.bypass);
        this.inc({ kind: 'metadata' }, self.#metadataBytes);
      },
    });
    new Counter({
      name: 'hubcache_fill_bytes_total',
      help: 'Bytes written to the cache by fills (downloads of whole files, from upstream or streamed from another replica); its rate is the fill throughput.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#sources?.upstreamFileBytes().written ?? 0);
      },
    });
    new Counter({
      name: 'hubcache_fills_total',
      help: 'Fills (downloads of a whole file from upstream) by outcome: started, committed (verified and stored), failed.',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        for (const outcome of ['started', 'committed', 'failed'] as const) this.inc({ outcome }, self.#fills[outcome]);
      },
    });
    new Gauge({
      name: 'hubcache_fills_in_progress',
      help: 'Fills running now.',
      registers,
      collect() {
        this.set(self.#sources?.fills().running ?? 0);
      },
    });
    new Gauge({
      name: 'hubcache_fills_queued',
      help: 'Fills waiting for a download slot (maxConcurrentFills).',
      registers,
      collect() {
        this.set(self.#sources?.fills().queued ?? 0);
      },
    });
    new Gauge({
      name: 'hubcache_disk_writes_in_progress',
      help: 'Writes to staging files in flight (at most diskWriters).',
      registers,
      collect() {
        this.set(self.#sources?.diskWrites().active ?? 0);
      },
    });
    new Gauge({
      name: 'hubcache_disk_writes_waiting',
      help: 'Writes to staging files waiting for a free disk writer (diskWriters).',
      registers,
      collect() {
        this.set(self.#sources?.diskWrites().waiting ?? 0);
      },
    });
    new Counter({
      name: 'hubcache_disk_write_waits_total',
      help: 'Writes to staging files that had to wait for a free disk writer: rising steadily, the disk is what slows the fills down.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#sources?.diskWrites().waited ?? 0);
      },
    });
    new Counter({
      name: 'hubcache_fill_resumes_total',
      help: 'Dropped, stalled or trickling upstream bodies resumed with Range + If-Range.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#resumes);
      },
    });
    new Counter({
      name: 'hubcache_upstream_retries_total',
      help: 'Upstream 429/5xx answers, by outcome: retried, or gave_up (the client got the error).',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        this.inc({ outcome: 'retried' }, self.#retries.retried);
        this.inc({ outcome: 'gave_up' }, self.#retries.gave_up);
      },
    });
    new Counter({
      name: 'hubcache_upstream_failovers_total',
      help: 'Requests moved to another upstream after one failed.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#failovers);
      },
    });
    new Counter({
      name: 'hubcache_evictions_total',
      help: 'Blobs evicted from the cache to make room.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#evictions);
      },
    });
    new Counter({
      name: 'hubcache_evicted_bytes_total',
      help: 'Bytes of the blobs evicted from the cache.',
      registers,
      collect() {
        this.reset();
        this.inc(self.#evictedBytes);
      },
    });
    const storageGauge = (name: string, help: string, pick: (s: StorageStats) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const stats = await self.#storageForScrape();
          if (stats) this.set(pick(stats));
        },
      });
    };
    storageGauge('hubcache_cache_used_bytes', 'Bytes of the blobs on the local disk, what maxCacheBytes counts (with storage s3: the local copies).', (s) => s.usedBytes);
    storageGauge('hubcache_cache_budget_bytes', 'The most the cache may hold now: what it holds plus the free space above minFreeBytes.', (s) => s.budgetBytes);
    storageGauge('hubcache_disk_free_bytes', 'Free bytes on the cache disk (for unprivileged writers).', (s) => s.freeBytes);
    new Gauge({
      name: 'hubcache_index_rows',
      help: 'Rows in the SQLite index, by table.',
      labelNames: ['table'],
      registers,
      async collect() {
        const stats = await self.#storageForScrape();
        if (!stats) return;
        for (const [table, n] of Object.entries(stats.rows)) this.set({ table }, n);
      },
    });
    this.#firstByte = new Histogram({
      name: 'hubcache_http_first_byte_seconds',
      help: 'Time from a GET or HEAD request to its response headers (the first byte), by route class and cache result.',
      labelNames: ['method', 'route', 'cache'],
      buckets: FIRST_BYTE_BUCKETS,
      registers,
    });
  }

  /** Where gauges and fill bytes are read from at scrape time (set once the mirror is built). */
  attach(sources: MetricsSources): void {
    this.#sources = sources;
  }

  /** The scrape: this mirror's metrics and the process's. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    const merged = Registry.merge([this.registry, defaultMetricsRegistry()]);
    this.#scrapeStorage = this.#sources?.storage();
    this.#scrapeStorage?.catch(() => undefined);
    try {
      return { contentType: this.registry.contentType, body: await merged.metrics() };
    } finally {
      this.#scrapeStorage = undefined;
    }
  }

  /** Unreadable numbers (index busy, statfs failing) keep those gauges at their last values; the scrape still answers. */
  async #storageForScrape(): Promise<StorageStats | undefined> {
    return (this.#scrapeStorage ?? this.#sources?.storage())?.catch(() => undefined);
  }

  // RequestObserver
  opened(live: LiveRequest): void {
    this.#live.set(live, 0);
  }

  closed(live: LiveRequest, r: RequestOutcome): void {
    const counted = this.#live.get(live) ?? 0;
    this.#live.delete(live);
    const source = sourceOf(r.cacheStatus);
    if (source && r.bytes > counted) this.#served[source] += r.bytes - counted;
    const route = routeOf(r.path);
    const method = METHODS.has(r.method) ? r.method : 'OTHER';
    const cache = cacheResultOf(r.cacheStatus, r.status);
    this.#requests.cell(route, method, r.status, cache).n++;
    if (r.status >= 400) {
      const code = r.errorCode === undefined ? 'none' : KNOWN_ERROR_CODES.has(r.errorCode) ? r.errorCode : 'other';
      this.#errors.cell(code).n++;
    }
    if (method === 'GET' || method === 'HEAD') {
      const firstByteAt = method === 'GET' && r.firstByteAt !== undefined ? r.firstByteAt : r.endedAt;
      const key = this.#firstByteChildren.cell(method, route, cache);
      let child = this.#firstByteBound.get(key);
      if (!child) {
        child = this.#firstByte.labels(key.labels);
        this.#firstByteBound.set(key, child);
      }
      child.observe(Math.max(0, firstByteAt - r.startedAt) / 1000);
    }
  }

  /** Counts the bytes long responses have sent so far (called at scrape). */
  #countLiveBytes(): void {
    for (const [live, counted] of this.#live) {
      const bytes = live.transfer?.bytes ?? 0;
      const source = sourceOf(live.cacheStatus);
      if (!source || bytes <= counted) continue;
      this.#served[source] += bytes - counted;
      this.#live.set(live, bytes);
    }
  }

  // UpstreamObserver
  upstreamRequest(kind: UpstreamKind): void {
    this.#upstreamRequests[kind]++;
  }

  metadataBytes(bytes: number): void {
    this.#metadataBytes += bytes;
  }

  /**
   * A fill's event as the mirror reports it; a split, failover or lease event is counted elsewhere
   * (or not at all). A takeover (a silent connection replaced by a ranged request) is a resume.
   */
  fillEvent(event: FillEvent | 'split' | 'takeover' | 'failover' | 'fenced' | 'unclaimed'): void {
    if (event === 'split' || event === 'failover' || event === 'fenced' || event === 'unclaimed') return;
    if (event === 'resumed' || event === 'takeover') this.#resumes++;
    else this.#fills[event]++;
  }

  retry(gaveUp: boolean): void {
    if (gaveUp) this.#retries.gave_up++;
    else this.#retries.retried++;
  }

  /** For a future multi-upstream client: one call per request moved to another upstream. */
  failedOver(): void {
    this.#failovers++;
  }

  // EvictionObserver
  evicted(bytes: number): void {
    this.#evictions++;
    this.#evictedBytes += bytes;
  }

  /** The totals behind the counters (the dashboard's numbers). */
  totals(): Totals {
    this.#countLiveBytes();
    const fileGets = Object.fromEntries(CACHE_RESULTS.map((c) => [c, 0])) as Record<CacheResult, number>;
    for (const cell of this.#requests.cells()) {
      if (cell.labels.route === 'file' && cell.labels.method === 'GET') fileGets[cell.labels.cache as CacheResult] += cell.n;
    }
    const files = this.#sources?.upstreamFileBytes() ?? { fill: 0, bypass: 0 };
    return {
      fileGets,
      served: { ...this.#served },
      upstreamBytes: { file: files.fill + files.bypass, metadata: this.#metadataBytes },
      upstreamRequests: { ...this.#upstreamRequests },
      fills: { ...this.#fills },
      resumes: this.#resumes,
      retries: this.#retries.retried,
      evictions: this.#evictions,
      evictedBytes: this.#evictedBytes,
    };
  }

  storage(): Promise<StorageStats> | undefined {
    return this.#sources?.storage();
  }
}
