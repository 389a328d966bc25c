/**
 * startServer: opens the stores for a Config, builds the app and listens. Used by `hubcache serve`
 * and by the integration tests (same code path, temp dirs, port 0). `close()` drains: stops
 * accepting, cancels fills, closes the upstream pool and the index.
 */
import { VERSION } from './version.js';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createAdaptorServer, getRequestListener } from '@hono/node-server';
import type { Logger } from 'pino';
import type { Hono } from 'hono';
import { ImportRunner } from './admin/import-cache.js';
import { Jobs } from './admin/jobs.js';
import { PrefetchRunner } from './admin/prefetch.js';
import { VerifyRunner } from './admin/verify-job.js';
import { createAdminApp, createApp, createFileListener, type AppDeps } from './app.js';
import { systemClock, type Clock } from './clock.js';
import { parseListenAddress, type Config } from './config/config.js';
import type { AppEnv } from './http/app-env.js';
import { adminRoutes } from './http/routes/admin.js';
import { peerRoutes } from './http/routes/peer.js';
import { PeerClient } from './cluster/peer-client.js';
import { LeaseCoordinator } from './mirror/lease-coordinator.js';
import { TrafficCounters } from './observability/traffic-counters.js';
import { AccessPolicy } from './hub/access-policy.js';
import { FileResolver } from './hub/file-resolver.js';
import { MetadataCache } from './hub/metadata-cache.js';
import { RefPins } from './hub/ref-pins.js';
import { RepoPolicy } from './hub/repo-policy.js';
import { Mirror, type MirrorOptions } from './mirror/mirror.js';
import { BlobLayout } from './storage/blob-layout.js';
import { FsBlobStore, type BlobStoreOptions } from './storage/blob-store.js';
import type { BlobStore } from './storage/blob-store-contract.js';
import type { BlobRow, CacheIndex } from './storage/cache-index-contract.js';
import { openCacheIndex, type IndexConfig } from './storage/open-index.js';
import { HubClient } from './upstream/hub-client.js';
import { UpstreamSet } from './upstream/upstream-set.js';
import { ProxyRoutes, showProxy, type ProxySettings } from './upstream/proxy-routes.js';
import { constants } from 'node:fs';
import fsp from 'node:fs/promises';
import { DataDirLock } from './storage/data-dir-lock.js';
import { assertLocalFilesystem } from './storage/filesystem-check.js';
import { cacheBudget, DiskSpace } from './storage/disk-space.js';
import { Evictor } from './mirror/eviction.js';
import { reconcile } from './storage/reconcile.js';
import { WriteGate } from './storage/write-gate.js';
import { removeListeningRecord, writeListeningRecord } from './storage/listening-record.js';
import { Activity } from './observability/activity.js';
import { Metrics, type StorageStats } from './observability/metrics.js';

export interface RunningServer {
  /** `http://host:port` as reachable from this machine. */
  url: string;
  port: number;
  /** The admin listener's URL (`adminListen`), if configured. */
  adminUrl?: string;
  close(): Promise<void>;
}

export { VERSION };

export interface OpenDataDir {
  layout: BlobLayout;
  store: BlobStore;
  index: CacheIndex;
  lock: DataDirLock;
  /** Writes to staging files in flight (`diskWriters`), for the metrics. */
  writeGate: WriteGate;
}

/** The options that choose and reach the blob store. */
export type StorageConfig = Pick<Config, 'storage' | 's3Endpoint' | 's3Bucket' | 's3Region' | 's3Prefix' | 's3ForcePathStyle' | 's3AccessKeyId' | 's3SecretAccessKey' | 's3TimeoutSeconds' | 's3AbandonedUploadHours'>;

/**
 * The blob store `storage` names, over the data dir's layout (staging, local copies). The S3
 * driver (and the AWS SDK, a third of a second of loading) is imported only when it is chosen:
 * every CLI command and every fs-backed server starts without it.
 */
export async function createBlobStore(layout: BlobLayout, c: StorageConfig, fsOptions: BlobStoreOptions = {}, log?: Logger): Promise<BlobStore> {
  if (c.storage === 'fs') return new FsBlobStore(layout, fsOptions);
  const { S3BlobStore } = await import('./storage/s3-blob-store.js');
  return new S3BlobStore(layout, {
    local: fsOptions,
    endpoint: c.s3Endpoint,
    bucket: c.s3Bucket,
    region: c.s3Region,
    prefix: c.s3Prefix,
    forcePathStyle: c.s3ForcePathStyle,
    credentials: c.s3AccessKeyId ? { accessKeyId: c.s3AccessKeyId, secretAccessKey: c.s3SecretAccessKey } : undefined,
    timeoutMs: c.s3TimeoutSeconds * 1000,
    abandonedUploadMs: c.s3AbandonedUploadHours * 3600 * 1000,
    onAbandonedUploads: (report) => {
      if ('error' in report) log?.warn({ reason: report.error }, 'abandoned multipart uploads not swept: listing them failed');
      else if (report.aborted + report.failed > 0) log?.info({ aborted: report.aborted, failed: report.failed, olderThanHours: c.s3AbandonedUploadHours }, 'aborted abandoned multipart uploads in the bucket (left by a killed process)');
    },
  });
}

/**
 * Takes the data dir's process lock (or uses `held`, the caller's), opens the index and reconciles
 * it with the blob store (a crash may have left staging files, lost index rows, or rows whose
 * blobs are gone). `storage`: which blob store (default: the data dir itself).
 */
export async function openDataDir(dataDir: string, log: Logger, opts: { diskWriters?: number; held?: DataDirLock; storage?: StorageConfig; index?: IndexConfig } = {}): Promise<OpenDataDir> {
  const layout = new BlobLayout(dataDir);
  await fsp.mkdir(layout.root, { recursive: true }).catch((err: unknown) => {
    throw notWritable(layout.root, layout.root, err);
  });
  await assertWritable(layout);
  await assertLocalFilesystem(layout.root);
  const lock = opts.held ?? DataDirLock.acquire(layout.lockPath, layout.root);
  let store: BlobStore | undefined;
  let index: CacheIndex | undefined;
  const writeGate = new WriteGate(opts.diskWriters ?? 4);
  try {
    const fsOptions: BlobStoreOptions = {
      gate: writeGate,
      onPreallocateUnsupported: (reason) => log.warn({ reason }, 'staging files cannot be preallocated on this filesystem: written without it (more fragmentation, no space reserved up front)'),
    };
    store = opts.storage ? await createBlobStore(layout, opts.storage, fsOptions, log) : new FsBlobStore(layout, fsOptions);
    await store.init();
    index = await openCacheIndex(opts.index ?? { index: 'sqlite', indexUrl: '' }, layout, log);
    const report = await reconcile(store, index);
    if (report.storeUnavailable) log.warn({ storage: store.kind, reason: report.storeUnavailable }, 'blob store unreachable at startup: index not reconciled with it; local copies are served, other blobs get 503 until it answers');
    if (report.forgotten.length + report.adopted.length + report.removed.length > 0) {
      log.warn({ checked: report.checked, forgotten: report.forgotten.length, adopted: report.adopted.length, removed: report.removed.length }, 'reconciled the index with the blob store');
    }
    return { layout, store, index, lock, writeGate };
  } catch (err) {
    await index?.close().catch(() => undefined);
    await store?.close().catch(() => undefined);
    lock.release();
    throw err;
  }
}

/**
 * The data directory and what the process must write in it (left there by an earlier run, maybe
 * as another user) must be writable, checked up front: SQLite would only say "unable to open
 * database file".
 */
async function assertWritable(layout: BlobLayout): Promise<void> {
  const paths = [layout.root, layout.lockPath, layout.indexPath, `${layout.indexPath}-wal`, `${layout.indexPath}-shm`, layout.blobsDir, layout.stagingDir, layout.listeningPath];
  for (const p of paths) {
    try {
      await fsp.access(p, constants.W_OK);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && p !== layout.root) continue;
      throw notWritable(layout.root, p, err);
    }
  }
}

function notWritable(root: string, p: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  const who = uid === undefined ? 'this process' : `this process (uid ${uid}, gid ${gid})`;
  const fix = uid === undefined ? '' : `: make the user with uid ${uid} own it (e.g. chown -R ${uid}:${gid} ${root})`;
  return new Error(`The data directory ${root} is not writable by ${who}: ${p}: ${code}${fix}`);
}

/** What the process environment contributes besides Config (read once by the entry point). */
export interface ServerEnvironment {
  /** Outbound proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY); none by default. */
  proxy?: ProxySettings;
  /** Time for every freshness decision (branch pins, grants); tests inject one they can step. */
  clock?: Clock;
  /**
   * Which other replica a miss reads from instead of upstream (the owner of the blob's fill), with
   * `clusterSecret` set. The fill leases decide it; tests inject one. Omitted: always upstream.
   */
  peerFor?: MirrorOptions['peerFor'];
  /**
   * `false`: file downloads go through the app's file route like every other request, instead of
   * the file listener in front of it (tests compare the two; default true).
   */
  fileListener?: boolean;
}

/** How often the dashboard's history records the totals (one hour of samples is kept). */
const HISTORY_INTERVAL_MS = 10_000;
/** Disk and index numbers are read at most this often (the dashboard polls every second). */
const STORAGE_STATS_TTL_MS = 1_000;

/**
 * The cache's size, budget (maxCacheBytes, resolved) and free space, and the index's row counts.
 */
function storageStats(index: CacheIndex, disk: DiskSpace, budgetBytes: () => number, usedBytes: () => number): () => Promise<StorageStats> {
  let last: { at: number; stats: Promise<StorageStats> } | undefined;
  return () => {
    const now = performance.now();
    if (last && now - last.at < STORAGE_STATS_TTL_MS) return last.stats;
    const stats = (async (): Promise<StorageStats> => {
      const counts = await index.stats();
      const freeBytes = await disk.available().catch(() => 0);
      return {
        usedBytes: usedBytes(),
        budgetBytes: budgetBytes(),
        freeBytes,
        rows: counts.rows,
      };
    })();
    last = { at: now, stats };
    stats.catch(() => {
      last = undefined;
    });
    return stats;
  };
}

/**
 * The client of one upstream (the server makes one per upstream; the offline CLI one for its few
 * questions, of the first upstream).
 */
export function createHubClient(config: Config, log: Logger, proxy: ProxySettings = {}, upstream: string = config.upstream[0]!, metrics?: Metrics): HubClient {
  return new HubClient({
    upstream,
    connectTimeoutMs: config.connectTimeoutSeconds * 1000,
    metadataTimeoutMs: config.metadataTimeoutSeconds * 1000,
    headersTimeoutMs: config.upstreamHeadersTimeoutSeconds * 1000,
    bodyIdleTimeoutMs: config.upstreamIdleTimeoutSeconds * 1000,
    userAgent: `hubcache/${VERSION}`,
    offline: config.offline,
    retries: config.upstreamRetries,
    retryMaxWaitMs: config.upstreamRetryMaxWaitSeconds * 1000,
    minBodyBytesPerSecond: config.upstreamMinBytesPerSecond,
    allowedRedirectHosts: config.allowedRedirectHosts,
    allowPrivateRedirects: config.allowPrivateRedirects,
    proxy,
    ...(metrics ? { observer: metrics } : {}),
    onRetry: (e) => {
      metrics?.retry(e.waitMs === undefined);
      if (e.waitMs !== undefined) log.warn({ upstream: e.what, status: e.status, attempt: e.attempt + 1, waitMs: e.waitMs }, 'upstream busy: retrying');
      else log.warn({ upstream: e.what, status: e.status, retries: e.attempt, reason: e.gaveUp }, 'upstream busy: giving up, the client gets the error');
    },
  });
}

export async function startServer(config: Config, log: Logger, env: ServerEnvironment = {}): Promise<RunningServer> {
  const proxy = env.proxy ?? {};
  // Validates the proxy settings before the data dir is locked; the log never shows credentials.
  const proxyRoutes = new ProxyRoutes(proxy);
  const { layout, store, index, lock, writeGate } = await openDataDir(config.dataDir, log, { diskWriters: config.diskWriters, storage: config, index: config });
  if (config.storage === 's3') {
    // Where, never with what credentials.
    log.info({ storage: 's3', endpoint: config.s3Endpoint || '(AWS)', bucket: config.s3Bucket, prefix: config.s3Prefix, forcePathStyle: config.s3ForcePathStyle }, 'blobs are stored in an S3 bucket; the data dir keeps the index, staging and local copies');
  }
  const metrics = new Metrics();
  const activity = new Activity();
  // One HubClient per upstream (its own pools, redirect policy and retries); the set picks.
  const hub = new UpstreamSet(
    config.upstream.map((base) => ({ base, client: createHubClient(config, log, proxy, base, metrics) })),
    {
      onState: (e) => {
        if (e.state === 'down') log.warn({ upstream: e.upstream, reason: e.reason, coolDownMs: e.coolDownMs }, config.upstream.length > 1 ? 'upstream down: skipped until its cool-down ends, the next one is asked' : 'upstream down');
        else log.info({ upstream: e.upstream }, 'upstream answering again');
      },
    },
  );
  if (proxyRoutes.configured && !config.offline) {
    const upstreamProxy = proxyRoutes.proxyFor(new URL(config.upstream[0]!));
    log.info({ ...proxyRoutes.describe(), upstreamVia: upstreamProxy ? showProxy(upstreamProxy) : 'direct (NO_PROXY)' }, 'outbound proxy: upstream connections go through it (CONNECT tunnels), except NO_PROXY hosts');
  }
  if (config.allowPrivateRedirects) log.warn('allowPrivateRedirects: upstream redirects may lead to loopback, private and link-local addresses');
  if (config.hfToken) log.warn('service token (hfToken) configured: clients without a token read upstream with it');
  if (config.accessKeys.length > 0) log.info({ keys: config.accessKeys.length }, 'access keys required: clients must send one as their bearer token');
  if (config.allowRepos.length + config.denyRepos.length > 0) log.info({ allowRepos: config.allowRepos, denyRepos: config.denyRepos }, 'repo policy');
  if (config.allowWrites) log.warn(`allowWrites: API write requests are passed upstream${config.hfToken ? ', with the service token for clients that send none' : ''}`);
  if (config.offline) log.warn('offline mode (offline: true): upstream is never contacted; only cached files and metadata are served');
  // One clock for every freshness decision; one policy for who may read what.
  const clock = env.clock ?? systemClock;
  const access = new AccessPolicy({ hfToken: config.hfToken, hub, authTtlMs: config.authTtlSeconds * 1000, clock });
  // One branch → commit pin per revision for files and metadata alike.
  const pins = new RefPins(index, config.refsTtlSeconds * 1000, clock);
  const resolver = new FileResolver({
    index,
    hub,
    pins,
    policy: access,
    onStale: (req) => log.warn({ repo: req.repo.id, revision: req.revision }, 'upstream unreachable: answered from the index'),
  });
  const traffic = new TrafficCounters(() => clock.now());
  const diskSpace = new DiskSpace(layout.root, config.minFreeBytes);
  const evictor = new Evictor({
    store,
    index,
    budgetBytes: await cacheBudget(config.maxCacheBytes, diskSpace),
    policy: config.evictionPolicy,
    graceMs: config.evictionGraceSeconds * 1000,
    maxMetadataBytes: config.maxMetadataBytes,
    clock,
    onEvicted: (key, size, why) => {
      metrics.evicted(size);
      log.info({ blob: key, size, why }, 'blob evicted');
    },
    onProblem: (what, err) => log.warn({ err: { message: (err as Error).message } }, `eviction: ${what} failed`),
  });
  log.info({ budgetBytes: evictor.budgetBytes, storedBytes: evictor.usedBytes(), policy: evictor.policy }, 'cache budget');
  // Replicas read each other's blobs with the cluster secret, over a pool of their own.
  const peers =
    config.clusterSecret === ''
      ? undefined
      : new PeerClient({
          secret: config.clusterSecret,
          connectTimeoutMs: config.connectTimeoutSeconds * 1000,
          headersTimeoutMs: config.upstreamHeadersTimeoutSeconds * 1000,
          bodyIdleTimeoutMs: config.upstreamIdleTimeoutSeconds * 1000,
          userAgent: `hubcache/${VERSION} (peer)`,
        });
  if (peers) log.info(`cluster secret configured: other replicas may read this one's blobs at /internal/v1/blobs/`);
  // Replicas sharing the index in PostgreSQL: one fill per blob across them (fill leases).
  // Imported only here, like the S3 and PostgreSQL index drivers: a mirror without them never loads pg.
  const cluster = peers && config.index === 'postgres' && config.peerUrl !== '' ? await (await import('./cluster/open-fill-leases.js')).openFillLeases(config, log) : undefined;
  if (config.index === 'postgres' && !cluster) log.warn('index "postgres" without peerUrl and clusterSecret: no fill leases, each replica downloads a file on its own (set both for one download per file across the replicas)');
  if (cluster) log.info({ replicaId: cluster.leases.replicaId, peerUrl: cluster.leases.peerUrl, leaseTtlMs: cluster.leases.leaseTtlMs }, 'fill leases: one download per blob across the replicas');
  const mirror = new Mirror({
    ...(peers ? { peers } : {}),
    ...(cluster ? { coordinator: new LeaseCoordinator(cluster.leases) } : {}),
    ...(env.peerFor ? { peerFor: env.peerFor } : {}),
    store,
    index,
    hub,
    maxResumes: config.maxResumes,
    // A silence as long as the idle timeout is resumed by that timeout anyway.
    stallMs: config.upstreamStallSeconds < config.upstreamIdleTimeoutSeconds ? config.upstreamStallSeconds * 1000 : 0,
    rangeBypassMaxBytes: config.rangeBypassMaxBytes,
    maxConcurrentFills: config.maxConcurrentFills,
    maxQueuedFills: config.maxQueuedFills,
    segmentMinBytes: config.segmentMinBytes,
    upstreamConnections: config.upstreamConnections,
    maxUpstreamConnections: config.maxUpstreamConnections,
    diskSpace,
    evictor,
    onFillEvent: (event, key, error, pulledBytes) => {
      metrics.fillEvent(event);
      if (event === 'failed') activity.fillFailed(key, error?.code, error?.message);
      if (event === 'failed') log.warn({ blob: key, code: error?.code, message: error?.message }, 'fill failed');
      else if (event === 'split') log.debug({ blob: key }, 'fill split');
      else if (event === 'takeover') log.warn({ blob: key }, 'fill takeover: an upstream connection went silent while a client waited for its bytes; a new request continues from where it stopped');
      else if (event === 'fenced') log.warn({ blob: key }, 'fill lease taken over by another replica before the commit: the verified blob was served, the new owner records it');
      else if (event === 'unclaimed') log.warn({ blob: key, message: error?.message }, 'fill leases unreadable: fetching without a lease');
      else if (event !== 'failover') log.info({ blob: key }, `fill ${event}`);
      if (event === 'committed') traffic.pulled(pulledBytes ?? knownSize(index.knownBlob(key)));
    },
    onFailover: (key, d) => {
      if ('to' in d) metrics.failedOver();
      if ('to' in d) log.warn({ blob: key, upstream: d.to }, 'fill continues from the next upstream at the bytes it holds');
      else log.warn({ blob: key, upstream: d.refused, reason: d.reason }, 'fill cannot continue from this upstream');
    },
  });
  const metadata = new MetadataCache({
    index,
    hub,
    pins,
    policy: access,
    onStale: (repo, revision) => log.warn({ repo: repo.id, type: repo.type, revision }, 'upstream unreachable: API answered from the index'),
  });
  metrics.attach({
    fills: () => ({ running: mirror.runningFills, queued: mirror.queuedFills }),
    diskWrites: () => ({ active: writeGate.active, waiting: writeGate.waiting, waited: writeGate.waited }),
    upstreamFileBytes: () => mirror.upstreamFileBytes,
    storage: storageStats(index, diskSpace, () => evictor.budgetBytes, () => evictor.usedBytes()),
  });
  const sampleTotals = (): void => activity.sample(metrics.totals());
  sampleTotals();
  const sampleTimer = setInterval(sampleTotals, HISTORY_INTERVAL_MS);
  sampleTimer.unref();
  const repoPolicy = new RepoPolicy(config.allowRepos, config.denyRepos);
  const jobs = new Jobs({
    index,
    log,
    clock,
    runners: {
      prefetch: new PrefetchRunner({ resolver, mirror, metadata, access, policy: repoPolicy }),
      import: new ImportRunner({ store, index, access, diskSpace, reservedBytes: () => mirror.reservedBytes, ...(config.maxCacheBytes === '' ? {} : { budgetBytes: evictor.budgetBytes }) }),
      verify: new VerifyRunner(store, index),
    },
  });
  const adminEnabled = config.adminToken !== '' || config.adminListen !== '';
  const admin: Hono<AppEnv> | undefined = adminEnabled
    ? adminRoutes({ token: config.adminToken, jobs, index, dataDir: layout.root, minFreeBytes: config.minFreeBytes, traffic, mirror, evictor, policy: repoPolicy, log })
    : undefined;
  let url = '';
  const appDeps: AppDeps = {
    log,
    index,
    resolver,
    mirror,
    metadata,
    hub,
    dataDir: layout.root,
    fillStartWaitMs: config.fillStartWaitMs,
    publicUrl: config.publicUrl,
    listenUrl: () => url,
    policy: repoPolicy,
    accessKeys: config.accessKeys,
    corsOrigins: config.corsOrigins,
    access,
    allowWrites: config.allowWrites,
    observability: {
      metrics,
      activity,
      mirror,
      metricsToken: config.metricsToken,
      maxConcurrentFills: config.maxConcurrentFills,
      maxQueuedFills: config.maxQueuedFills,
      version: VERSION,
      startedAt: Date.now(),
    },
    requestObserver: {
      opened: (live) => metrics.opened(live),
      closed: (live, outcome) => {
        metrics.closed(live, outcome);
        activity.request(outcome);
      },
    },
    traffic,
    // With adminListen the operator API lives on that listener only.
    ...(admin && config.adminListen === '' ? { admin } : {}),
    ...(config.clusterSecret === '' ? {} : { peer: peerRoutes({ mirror, secret: config.clusterSecret }) }),
  };
  const app = createApp(appDeps);

  // Slowloris guard without cutting long downloads: headers must arrive within
  // clientHeadersTimeoutSeconds (checked at least every second), bodies are unbounded, and a
  // connection on which nothing moves for clientIdleTimeoutSeconds is closed.
  const headersTimeout = config.clientHeadersTimeoutSeconds * 1000;
  // File downloads first, without Hono (http/file-listener.ts); the app answers everything else.
  const appListener = getRequestListener(app.fetch);
  const files = env.fileListener === false ? () => false : createFileListener(appDeps);
  const server = createServer({ headersTimeout, requestTimeout: 0, connectionsCheckingInterval: Math.min(1_000, Math.max(100, headersTimeout / 4)) }, (req, res) => {
    if (!files(req, res)) void appListener(req, res);
  });
  server.keepAliveTimeout = config.clientKeepAliveTimeoutSeconds * 1000;
  server.timeout = config.clientIdleTimeoutSeconds * 1000;
  // Node enforces headersTimeout only while header bytes keep arriving: a connection that sends
  // nothing, or a few bytes and then nothing, would be held until the idle timeout. Its first
  // request's headers must be complete within the same time (later ones: keepAliveTimeout).
  const answered = new WeakSet<Socket>();
  server.on('request', (req: IncomingMessage) => answered.add(req.socket));
  server.on('connection', (socket: Socket) => {
    const timer = setTimeout(() => {
      if (!answered.has(socket)) socket.destroy();
    }, headersTimeout);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // A deep accept queue (the kernel caps it at net.core.somaxconn): a burst of thousands of
    // clients connecting at once must not overflow it (dropped SYNs cost clients seconds).
    server.listen({ port: config.port, host: config.host, backlog: 4096 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  url = shownUrl(config.host, port);
  let adminServer: Server | undefined;
  let adminUrl: string | undefined;
  if (admin && config.adminListen !== '') {
    const { host, port: adminPort } = parseListenAddress(config.adminListen);
    adminServer = createAdaptorServer({ fetch: createAdminApp(log, admin).fetch, createServer, serverOptions: { headersTimeout, requestTimeout: 0 } }) as Server;
    adminServer.keepAliveTimeout = config.clientKeepAliveTimeoutSeconds * 1000;
    try {
      await listen(adminServer, adminPort, host);
    } catch (err) {
      server.close();
      await evictor.close();
      await mirror.close();
      await hub.close();
      await peers?.close();
      await cluster?.close();
      await index.close();
      lock.release();
      throw new Error(`adminListen ${config.adminListen}: ${(err as Error).message}`);
    }
    adminUrl = shownUrl(host, (adminServer.address() as AddressInfo).port);
    if (config.adminToken === '' && !isLoopback(host)) log.warn({ adminUrl }, 'admin API without adminToken on a non-loopback address: whoever reaches it can run prefetch, import and verify');
    log.info({ adminUrl, tokenRequired: config.adminToken !== '' }, 'admin API listening (operator API only)');
  } else if (admin) {
    log.info('admin API enabled under /admin/ on the main port (adminToken required)');
  }
  /** One at a time: a flush still waiting for the index is not overtaken by the next. */
  let flushing: Promise<void> = Promise.resolve();
  const flush = (): Promise<void> =>
    (flushing = flushing.then(async () => {
      try {
        // One transaction: a locked index costs one short busy wait per flush.
        await traffic.flush((deltas, initial) => index.flushTouches({ deltas, initial }));
      } catch (err) {
        log.warn({ err: { message: (err as Error).message } }, 'index: access times and counters not written');
      }
    }));
  const flushTimer = setInterval(() => void flush(), 5_000);
  flushTimer.unref();
  try {
    await writeListeningRecord(layout.listeningPath, { url, pid: process.pid });
  } catch (err) {
    log.warn({ file: layout.listeningPath, message: (err as Error).message }, 'could not record the listening address: hubcache health falls back to the configured host and port');
  }
  void jobs.resume();
  evictor.start();
  log.info({ url, dataDir: layout.root, upstream: config.upstream, ...(adminUrl ? { adminUrl } : {}) }, 'hubcache listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    ...(adminUrl ? { adminUrl } : {}),
    close: () => {
      closing ??= (async () => {
        clearInterval(flushTimer);
        clearInterval(sampleTimer);
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        const adminClosed = adminServer ? new Promise<void>((resolve) => adminServer.close(() => resolve())) : Promise.resolve();
        adminServer?.closeAllConnections();
        // Jobs first: interrupted, they stay recorded as running and resume at the next start.
        await jobs.close();
        await evictor.close();
        await mirror.close();
        // Open responses end when their readers fail or finish; give them a moment, then cut.
        const timer = setTimeout(() => server.closeAllConnections(), 2_000);
        await serverClosed;
        await adminClosed;
        clearTimeout(timer);
        await hub.close();
        await peers?.close();
        await cluster?.close();
        await flush();
        await store.close();
        await index.close();
        removeListeningRecord(layout.listeningPath);
        lock.release();
      })();
      return closing;
    },
  };
}

/** The size of a memoised blob row (a committed fill has one: it was recorded just before). */
function knownSize(row: BlobRow | false | undefined): number {
  return row ? row.size : 0;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** `http://host:port` as reachable from this machine (a wildcard address is shown as loopback). */
function shownUrl(host: string, port: number): string {
  const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `http://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
