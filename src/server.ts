/**
 * startServer: opens the stores for a Config, builds the app and listens. Used by `hubcache serve`
 * and by the integration tests (same code path, temp dirs, port 0). `close()` drains: stops
 * accepting, cancels fills, closes the upstream pool and the index.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createAdaptorServer } from '@hono/node-server';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import { systemClock, type Clock } from './clock.js';
import type { Config } from './config/config.js';
import { AccessPolicy } from './hub/access-policy.js';
import { FileResolver } from './hub/file-resolver.js';
import { MetadataCache } from './hub/metadata-cache.js';
import { RefPins } from './hub/ref-pins.js';
import { RepoPolicy } from './hub/repo-policy.js';
import { Mirror } from './mirror/mirror.js';
import { BlobLayout } from './storage/blob-layout.js';
import { FsBlobStore } from './storage/blob-store.js';
import type { BlobStore } from './storage/blob-store-contract.js';
import { S3BlobStore } from './storage/s3-blob-store.js';
import { CacheIndex } from './storage/cache-index.js';
import { HubClient } from './upstream/hub-client.js';
import { ProxyRoutes, showProxy, type ProxySettings } from './upstream/proxy-routes.js';
import fsp from 'node:fs/promises';
import { DataDirLock } from './storage/data-dir-lock.js';
import { assertLocalFilesystem } from './storage/filesystem-check.js';
import { DiskSpace } from './storage/disk-space.js';
import { reconcile } from './storage/reconcile.js';

export interface RunningServer {
  /** `http://host:port` as reachable from this machine. */
  url: string;
  port: number;
  close(): Promise<void>;
}

export const VERSION = '0.1.0';

export interface OpenDataDir {
  layout: BlobLayout;
  store: BlobStore;
  index: CacheIndex;
  lock: DataDirLock;
}

/** The options that choose and reach the blob store. */
export type StorageConfig = Pick<Config, 'storage' | 's3Endpoint' | 's3Bucket' | 's3Region' | 's3Prefix' | 's3ForcePathStyle' | 's3AccessKeyId' | 's3SecretAccessKey' | 's3TimeoutSeconds'>;

/** The blob store `storage` names, over the data dir's layout (staging, local copies). */
export function createBlobStore(layout: BlobLayout, c: StorageConfig): BlobStore {
  if (c.storage === 'fs') return new FsBlobStore(layout);
  return new S3BlobStore(layout, {
    endpoint: c.s3Endpoint,
    bucket: c.s3Bucket,
    region: c.s3Region,
    prefix: c.s3Prefix,
    forcePathStyle: c.s3ForcePathStyle,
    credentials: c.s3AccessKeyId ? { accessKeyId: c.s3AccessKeyId, secretAccessKey: c.s3SecretAccessKey } : undefined,
    timeoutMs: c.s3TimeoutSeconds * 1000,
  });
}

/**
 * Takes the data dir's process lock, opens the index and reconciles it with the blob store (a
 * crash may have left staging files, lost index rows, or rows whose blobs are gone).
 * `storage`: which blob store (default: the data dir itself).
 */
export async function openDataDir(dataDir: string, log: Logger, storage?: StorageConfig): Promise<OpenDataDir> {
  const layout = new BlobLayout(dataDir);
  await fsp.mkdir(layout.root, { recursive: true });
  await assertLocalFilesystem(layout.root);
  const lock = DataDirLock.acquire(layout.lockPath, layout.root);
  let store: BlobStore | undefined;
  try {
    store = storage ? createBlobStore(layout, storage) : new FsBlobStore(layout);
    await store.init();
    const index = CacheIndex.open(layout.indexPath, {
      onWriteProblem: (event, detail) => {
        if (event === 'caught-up') log.info(detail, 'index: deferred writes landed');
        else if (event === 'dropped') log.error(detail, 'index: deferred writes dropped (metadata is asked again, blobs are adopted at the next start)');
        else log.warn(detail, 'index busy or full: writes deferred, the mirror keeps serving');
      },
    });
    const report = await reconcile(store, index);
    if (report.storeUnavailable) log.warn({ storage: store.kind, reason: report.storeUnavailable }, 'blob store unreachable at startup: index not reconciled with it; local copies are served, other blobs get 503 until it answers');
    if (report.forgotten.length + report.adopted.length + report.removed.length > 0) {
      log.warn({ checked: report.checked, forgotten: report.forgotten.length, adopted: report.adopted.length, removed: report.removed.length }, 'reconciled the index with the blob store');
    }
    return { layout, store, index, lock };
  } catch (err) {
    await store?.close().catch(() => undefined);
    lock.release();
    throw err;
  }
}

/** What the process environment contributes besides Config (read once by the entry point). */
export interface ServerEnvironment {
  /** Outbound proxy (HTTPS_PROXY, HTTP_PROXY, NO_PROXY); none by default. */
  proxy?: ProxySettings;
  /** Time for every freshness decision (branch pins, grants); tests inject one they can step. */
  clock?: Clock;
}

export async function startServer(config: Config, log: Logger, env: ServerEnvironment = {}): Promise<RunningServer> {
  const proxy = env.proxy ?? {};
  // Validates the proxy settings before the data dir is locked; the log never shows credentials.
  const proxyRoutes = new ProxyRoutes(proxy);
  const { layout, store, index, lock } = await openDataDir(config.dataDir, log, config);
  if (config.storage === 's3') {
    // Where, never with what credentials.
    log.info({ storage: 's3', endpoint: config.s3Endpoint || '(AWS)', bucket: config.s3Bucket, prefix: config.s3Prefix, forcePathStyle: config.s3ForcePathStyle }, 'blobs are stored in an S3 bucket; the data dir keeps the index, staging and local copies');
  }
  const hub = new HubClient({
    upstream: config.upstream,
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
    onRetry: (e) => {
      if (e.waitMs !== undefined) log.warn({ upstream: e.what, status: e.status, attempt: e.attempt + 1, waitMs: e.waitMs }, 'upstream busy: retrying');
      else log.warn({ upstream: e.what, status: e.status, retries: e.attempt, reason: e.gaveUp }, 'upstream busy: giving up, the client gets the error');
    },
  });
  if (proxyRoutes.configured && !config.offline) {
    const upstreamProxy = proxyRoutes.proxyFor(new URL(config.upstream));
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
  const mirror = new Mirror({
    store,
    index,
    hub,
    maxResumes: config.maxResumes,
    rangeBypassMaxBytes: config.rangeBypassMaxBytes,
    maxConcurrentFills: config.maxConcurrentFills,
    maxQueuedFills: config.maxQueuedFills,
    diskSpace: new DiskSpace(layout.root, config.minFreeBytes),
    onFillEvent: (event, key, error) => {
      if (event === 'failed') log.warn({ blob: key, code: error?.code, message: error?.message }, 'fill failed');
      else log.info({ blob: key }, `fill ${event}`);
    },
  });
  const metadata = new MetadataCache({
    index,
    hub,
    pins,
    policy: access,
    onStale: (repo, revision) => log.warn({ repo: repo.id, type: repo.type, revision }, 'upstream unreachable: API answered from the index'),
  });
  let url = '';
  const app = createApp({
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
    policy: new RepoPolicy(config.allowRepos, config.denyRepos),
    accessKeys: config.accessKeys,
    corsOrigins: config.corsOrigins,
    access,
    allowWrites: config.allowWrites,
  });

  // Slowloris guard without cutting long downloads: headers must arrive within
  // clientHeadersTimeoutSeconds (checked at least every second), bodies are unbounded, and a
  // connection on which nothing moves for clientIdleTimeoutSeconds is closed.
  const headersTimeout = config.clientHeadersTimeoutSeconds * 1000;
  const server = createAdaptorServer({
    fetch: app.fetch,
    createServer,
    serverOptions: { headersTimeout, requestTimeout: 0, connectionsCheckingInterval: Math.min(1_000, Math.max(100, headersTimeout / 4)) },
  }) as Server;
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
  const shownHost = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  url = `http://${shownHost.includes(':') ? `[${shownHost}]` : shownHost}:${port}`;
  const flushTimer = setInterval(() => {
    try {
      index.flushTouches();
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'index: access times not written');
    }
  }, 5_000);
  flushTimer.unref();
  log.info({ url, dataDir: layout.root, upstream: config.upstream }, 'hubcache listening');

  let closing: Promise<void> | null = null;
  return {
    url,
    port,
    close: () => {
      closing ??= (async () => {
        clearInterval(flushTimer);
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await mirror.close();
        // Open responses end when their readers fail or finish; give them a moment, then cut.
        const timer = setTimeout(() => server.closeAllConnections(), 2_000);
        await serverClosed;
        clearTimeout(timer);
        await hub.close();
        await store.close();
        index.close();
        lock.release();
      })();
      return closing;
    },
  };
}
