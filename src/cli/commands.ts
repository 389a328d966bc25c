/**
 * The operator commands: `prefetch`, `import`, `ls`, `stats`, `verify`, `jobs`.
 *
 * They talk to a running server's admin API (`--url`, default from the configuration: adminListen,
 * else the main port; the admin token from HUBCACHE_ADMIN_TOKEN or the config file), except when
 * the server is stopped: `import`, `verify`, `ls`, `stats` and `jobs` then work on the data
 * directory itself, under its process lock (which is how they tell: the lock is free). `--url`
 * always means the API. Exit codes: 0 done, 1 failed (a file, a blob, the server), 2 misuse.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import type { ItemTracker } from '../admin/jobs.js';
import { importCache, importParams, parseImportRequest, type ImportProgress, type ImportRequest } from '../admin/import-cache.js';
import { describeRepo, listRepos, statsReport } from '../admin/inventory.js';
import { parsePrefetchRequest } from '../admin/prefetch.js';
import { parseListenAddress, type Config } from '../config/config.js';
import { loadConfig } from '../config/load-config.js';
import { isMirrorError } from '../errors.js';
import { AccessPolicy } from '../hub/access-policy.js';
import { isRepoType, validateRepoId } from '../hub/repo-ref.js';
import { itemJson, jobJson } from '../http/routes/admin.js';
import { createLogger } from '../observability/logger.js';
import { BlobLayout } from '../storage/blob-layout.js';
import type { CacheIndex } from '../storage/cache-index-contract.js';
import { openCacheIndex } from '../storage/open-index.js';
import { DataDirLock } from '../storage/data-dir-lock.js';
import { cacheBudget, DiskSpace, formatBytes } from '../storage/disk-space.js';
import type { JobItem, JobProgress, JobRow } from '../storage/cache-index-contract.js';
import { verifyBlobs, type VerifyProgress } from '../storage/verify.js';
import { proxySettingsFromEnv } from '../upstream/proxy-routes.js';
import { AdminClient, CliFailure } from './admin-client.js';
import { formatItem, ProgressView, type ItemLine } from './progress.js';
import { parseDuration, parseEvictRequest, parseSize, runEviction, type EvictRequest } from '../admin/evict.js';
import { Evictor, type EvictReport } from '../mirror/eviction.js';
import { renderJob, renderJobs, renderRepo, renderRepos, renderStats, summary, type JobView } from './render.js';

interface CommonOptions {
  url?: string;
  config?: string;
  dataDir?: string;
  json?: boolean;
}

/** How often a followed job is asked about (the CLI's own pace; the server pushes nothing). */
const POLL_MS = 300;
const PAGE = 1000;

export function registerOperatorCommands(program: Command): void {
  common(program.command('prefetch <repo>'), false)
    .description('Fill the cache with every file of a repo revision (or those matching --include/--exclude), through the running server. Exit 1 if any file failed.')
    .option('--type <type>', 'model, dataset or space', 'model')
    .option('--revision <revision>', 'branch, tag or commit', 'main')
    .option('--include <glob>', 'only files matching this glob (repeatable; fnmatch, as allow_patterns)', collect, [])
    .option('--exclude <glob>', 'skip files matching this glob (repeatable)', collect, [])
    .option('--token <token>', 'Hub token for gated or private repos, kept in the server\'s memory only [env HF_TOKEN]')
    .option('--concurrency <n>', 'files downloaded at once (default 4)')
    .option('--detach', 'submit the job and print its id without waiting')
    .action((repo: string, opts: CommonOptions & { type: string; revision: string; include: string[]; exclude: string[]; token?: string; concurrency?: string; detach?: boolean }) =>
      run(async () => {
        const concurrency = opts.concurrency === undefined ? undefined : Number(opts.concurrency);
        const body: Record<string, unknown> = { repo, type: opts.type, revision: opts.revision, include: opts.include, exclude: opts.exclude, ...(concurrency === undefined ? {} : { concurrency }) };
        usage(() => parsePrefetchRequest(body));
        const token = opts.token ?? (process.env.HF_TOKEN || undefined);
        const client = adminClient(opts, loadCliConfig(opts));
        const { job } = await client.post<{ job: JobView }>('/admin/prefetch', token === undefined ? body : { ...body, hubToken: token });
        if (opts.detach) {
          out(opts.json ? JSON.stringify({ job }, null, 2) : job.id);
          return 0;
        }
        return follow(client, job, 'files', opts.json === true);
      }),
    );

  common(program.command('import <dir>'), true)
    .description('Adopt a huggingface_hub cache (~/.cache/huggingface/hub, or one models--org--name folder) or a local_dir download: blobs re-hashed, hard-linked (copied across filesystems), then served as hits, offline too. Through the server when it runs, else directly. Exit 1 if anything was not imported.')
    .option('--repo <id>', 'the repo a local_dir download is of')
    .option('--type <type>', 'with --repo: model, dataset or space', 'model')
    .option('--revision <revision>', 'with --repo: the branch or tag it was downloaded at (recorded as a ref)')
    .option('--public', 'the repos are public: used when upstream cannot be asked (offline); upstream\'s answer wins otherwise')
    .option('--copy', 'copy blobs even on the same filesystem (no hard links)')
    .action((dir: string, opts: CommonOptions & { repo?: string; type: string; revision?: string; public?: boolean; copy?: boolean }) =>
      run(async () => {
        const req = usage(() =>
          parseImportRequest({ path: path.resolve(dir), ...(opts.repo === undefined ? {} : { repo: opts.repo, type: opts.type }), ...(opts.revision === undefined ? {} : { revision: opts.revision }), public: opts.public === true, copy: opts.copy === true }),
        );
        const config = loadCliConfig(opts);
        const lock = opts.url ? null : localLock(config, true);
        if (lock) return localImport(config, lock, req, opts.json === true);
        const client = adminClient(opts, config);
        const { job } = await client.post<{ job: JobView }>('/admin/import', importParams(req));
        return follow(client, job, 'files', opts.json === true);
      }),
    );

  common(program.command('ls [repo]'), true)
    .description('List the cached repos (revisions, files, sizes, hits, last access), or one repo\'s files')
    .option('--type <type>', 'with a repo: model, dataset or space', 'model')
    .action((repo: string | undefined, opts: CommonOptions & { type: string }) =>
      run(async () => {
        const ref = repo === undefined ? undefined : usage(() => ({ type: repoType(opts.type), id: validateRepoId(repo) }));
        const config = loadCliConfig(opts);
        const result = await onIndex(opts, config, async (index) => (ref ? describeRepo(index, ref) : { repos: await listRepos(index) }), (client) =>
          ref ? client.get(`/admin/repos/${ref.type}/${ref.id}`) : client.get('/admin/repos'),
        );
        if (opts.json) out(JSON.stringify(result, null, 2));
        else out(ref ? renderRepo(result as Parameters<typeof renderRepo>[0]) : renderRepos((result as { repos: Parameters<typeof renderRepos>[0] }).repos));
        return 0;
      }),
    );

  common(program.command('stats'), true)
    .description('Disk used and free, blobs, hit ratio, bytes served from cache and pulled from upstream')
    .action((opts: CommonOptions) =>
      run(async () => {
        const config = loadCliConfig(opts);
        const layout = new BlobLayout(config.dataDir);
        const report = await onIndex(
          opts,
          config,
          async (index) => statsReport({ index, dataDir: layout.root, minFreeBytes: config.minFreeBytes, budgetBytes: await cacheBudget(config.maxCacheBytes, new DiskSpace(layout.root, config.minFreeBytes)).catch(() => null) }),
          (client) => client.get('/admin/stats'),
        );
        out(opts.json ? JSON.stringify(report, null, 2) : renderStats(report as Parameters<typeof renderStats>[0]));
        return 0;
      }),
    );

  common(program.command('evict [repo]'), true)
    .description('Evict cached files: those of a repo (`org/name`, `org/name@revision`; blobs shared with another repo stay), those unused for a while (--unused-for 30d), or some bytes (--bytes 10G) in the eviction policy\'s order; files in use are never evicted. Through the server when it runs, else directly. Exit 1 if a file could not be removed.')
    .option('--type <type>', 'with a repo: model, dataset or space', 'model')
    .option('--unused-for <duration>', 'only files not used for this long (30d, 12h, 45m, 90s)')
    .option('--bytes <size>', 'at most about this much (10G, 500M, bytes), least recently used (or largest) first')
    .option('--dry-run', 'show what would be evicted, remove nothing')
    .action((repo: string | undefined, opts: CommonOptions & { type: string; unusedFor?: string; bytes?: string; dryRun?: boolean }) =>
      run(async () => {
        const at = repo?.lastIndexOf('@') ?? -1;
        const body: Record<string, unknown> = {
          ...(repo === undefined ? {} : { repo: at > 0 ? repo.slice(0, at) : repo, type: opts.type }),
          ...(repo !== undefined && at > 0 ? { revision: repo.slice(at + 1) } : {}),
          ...(opts.unusedFor === undefined ? {} : { unusedForSeconds: usage(() => parseDuration(opts.unusedFor ?? '')) }),
          ...(opts.bytes === undefined ? {} : { bytes: usage(() => parseSize(opts.bytes ?? '')) }),
          dryRun: opts.dryRun === true,
        };
        const req = usage(() => parseEvictRequest(body));
        const config = loadCliConfig(opts);
        const lock = opts.url ? null : localLock(config, false);
        const report = lock ? await localEvict(config, lock, req) : await adminClient(opts, config).post<EvictReport>('/admin/evict', body);
        if (opts.json) out(JSON.stringify(report, null, 2));
        else {
          for (const b of report.blobs) out(formatItem({ item: b.blob, outcome: b.outcome, ok: b.outcome !== 'failed', bytes: b.size, message: b.message ?? null }));
          const n = report.blobs.filter((b) => b.outcome === 'evicted' || b.outcome === 'would-evict').length;
          out(`${report.dryRun ? 'would evict' : 'evicted'} ${n} blobs, ${formatBytes(report.bytes)}${report.blobs.length > n ? `; ${report.blobs.length - n} not (in use or failed)` : ''}`);
        }
        return report.blobs.some((b) => b.outcome === 'failed') ? 1 : 0;
      }),
    );

  common(program.command('verify'), true)
    .description('Re-hash every stored blob; quarantine and forget corrupt ones. With the server running, as a background job through its admin API. Exit 1 if any was corrupt.')
    .action((opts: CommonOptions) =>
      run(async () => {
        const config = loadCliConfig(opts);
        const lock = opts.url ? null : localLock(config, true);
        if (lock) return localVerify(config, lock);
        const client = adminClient(opts, config);
        const { job } = await client.post<{ job: JobView }>('/admin/verify');
        return follow(client, job, 'blobs', opts.json === true);
      }),
    );

  const jobs = program.command('jobs').description('Background jobs (prefetch, import, verify): list, show, cancel');
  common(jobs.command('list', { isDefault: true }), true)
    .description('The newest jobs')
    .action((opts: CommonOptions) =>
      run(async () => {
        const config = loadCliConfig(opts);
        const result = await onIndex(opts, config, async (index) => ({ jobs: (await index.jobs.list(100)).map(jobJson) }), (client) => client.get('/admin/jobs'));
        const list = (result as { jobs: JobView[] }).jobs;
        out(opts.json ? JSON.stringify({ jobs: list }, null, 2) : renderJobs(list));
        return 0;
      }),
    );
  common(jobs.command('show <id>'), true)
    .description('One job, with its finished items')
    .action((id: string, opts: CommonOptions) =>
      run(async () => {
        const config = loadCliConfig(opts);
        const result = (await onIndex(
          opts,
          config,
          async (index) => {
            const job = await index.jobs.get(id);
            if (!job) throw new CliFailure(`no job ${id}`);
            return { job: jobJson(job), items: (await allItems((after) => index.jobs.items(id, after, PAGE))).map(itemJson) };
          },
          async (client) => {
            const first = await client.get<{ job: JobView; items: ItemLine[] & Array<{ seq: number }> }>(`/admin/jobs/${encodeURIComponent(id)}`);
            const items = [...first.items];
            while (items.length > 0 && items.length % PAGE === 0) {
              const more = await client.get<{ items: typeof first.items }>(`/admin/jobs/${encodeURIComponent(id)}?after=${items[items.length - 1]?.seq ?? 0}`);
              if (more.items.length === 0) break;
              items.push(...more.items);
            }
            return { job: first.job, items };
          },
        )) as { job: JobView; items: ItemLine[] };
        if (opts.json) out(JSON.stringify(result, null, 2));
        else {
          out(renderJob(result.job));
          for (const item of result.items) out(`  ${item.ok ? 'ok  ' : 'FAIL'} ${item.outcome.padEnd(11)} ${item.item}${item.message ? `  (${item.message})` : ''}`);
        }
        return 0;
      }),
    );
  common(jobs.command('cancel <id>'), true)
    .description('Cancel a queued or running job (with the server stopped: it will not resume)')
    .action((id: string, opts: CommonOptions) =>
      run(async () => {
        const config = loadCliConfig(opts);
        const result = (await onIndex(
          opts,
          config,
          async (index) => {
            const job = await index.jobs.get(id);
            if (!job) throw new CliFailure(`no job ${id}`);
            if (job.state !== 'queued' && job.state !== 'running') throw new CliFailure(`job ${id} has already finished (${job.state})`);
            const cancelled: JobRow = { ...job, state: 'cancelled', message: 'cancelled by the operator while the server was stopped', finishedAt: Date.now() };
            await index.jobs.save(cancelled);
            return { job: jobJson(cancelled) };
          },
          (client) => client.post(`/admin/jobs/${encodeURIComponent(id)}/cancel`),
        )) as { job: JobView };
        out(opts.json ? JSON.stringify(result, null, 2) : `job ${result.job.id}: ${result.job.state}`);
        return 0;
      }),
    );
}

/** Options every operator command takes. */
function common(cmd: Command, dataDir: boolean): Command {
  cmd
    .option('--url <url>', 'the server\'s admin API (default: adminListen, else http://127.0.0.1:<port>, from the configuration)')
    .option('-c, --config <file>', 'JSON configuration file (for the URL, token and data dir)')
    .option('--json', 'print JSON for scripts');
  if (dataDir) cmd.option('--data-dir <dir>', 'cache directory, used when the server is stopped [env HUBCACHE_DATA_DIR, default "./data"]');
  return cmd;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Runs a command and exits with its code; failures are printed as one message. */
function run(action: () => Promise<number>): Promise<void> {
  return action().then(
    (code) => process.exit(code),
    (err: unknown) => {
      const code = err instanceof CliFailure ? err.exitCode : 1;
      process.stderr.write(`hubcache: ${(err as Error).message}\n`);
      process.exit(code);
    },
  );
}

/** A usage check: its MirrorError (a bad repo id, type, glob…) is a misuse, exit 2. */
function usage<T>(check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (isMirrorError(err)) throw new CliFailure(err.message, 2);
    throw err;
  }
}

function repoType(text: string): 'model' | 'dataset' | 'space' {
  if (!isRepoType(text)) throw new CliFailure('--type must be model, dataset or space', 2);
  return text;
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** The configuration (file, HUBCACHE_* environment, --data-dir); problems exit 2 like `serve`. */
function loadCliConfig(opts: CommonOptions): Config {
  const loaded = loadConfig({ configFile: opts.config, env: process.env, flags: opts.dataDir === undefined ? {} : { dataDir: opts.dataDir } });
  if (!loaded.ok) throw new CliFailure(`invalid configuration:\n${loaded.errors.map((e) => `  - ${e}`).join('\n')}`, 2);
  return loaded.config;
}

function adminClient(opts: CommonOptions, config: Config): AdminClient {
  let url = opts.url;
  if (url === undefined) {
    const { host, port } = config.adminListen ? parseListenAddress(config.adminListen) : { host: config.host, port: config.port };
    const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
    url = `http://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
  }
  if (!/^https?:\/\/[^/]+/.test(url)) throw new CliFailure(`--url must be an http:// or https:// URL, got ${JSON.stringify(url)}`, 2);
  return new AdminClient(url, config.adminToken);
}

/**
 * The data dir's lock when the server is stopped (the command then works on the directory
 * itself), null when a server holds it. Without `create`, a data dir with no index is none of
 * ours: the server is elsewhere. (With a shared index, the command works on the shared database
 * through this data dir's configuration; other replicas keep running meanwhile.)
 */
function localLock(config: Pick<Config, 'dataDir' | 'index'>, create: boolean): DataDirLock | null {
  const layout = new BlobLayout(config.dataDir);
  // With `index: postgres` the data dir holds no index file; its lock file says a server used it.
  if (!fs.existsSync(config.index === 'postgres' ? layout.lockPath : layout.indexPath)) {
    if (!create) return null;
    fs.mkdirSync(layout.root, { recursive: true });
  }
  return DataDirLock.tryAcquire(layout.lockPath);
}

/** Runs `local` on the index of a stopped server's data dir, else `remote` through the API. */
async function onIndex<T>(opts: CommonOptions, config: Config, local: (index: CacheIndex) => T | Promise<T>, remote: (client: AdminClient) => Promise<unknown>): Promise<unknown> {
  const lock = opts.url ? null : localLock(config, false);
  if (!lock) return remote(adminClient(opts, config));
  try {
    const index = await openCacheIndex(config, new BlobLayout(config.dataDir), createLogger('warn', process.stderr));
    try {
      return await local(index);
    } finally {
      await index.close();
    }
  } finally {
    lock.release();
  }
}

async function allItems(page: (after: number) => Promise<JobItem[]>): Promise<JobItem[]> {
  const items: JobItem[] = [];
  for (let batch = await page(0); batch.length > 0; batch = await page(batch[batch.length - 1]?.seq ?? 0)) items.push(...batch);
  return items;
}

/** Follows a server job until it ends: progress, item lines, a summary. Exit 0 only if it is done. */
async function follow(client: AdminClient, job: JobView, unit: string, json: boolean): Promise<number> {
  const view = new ProgressView(process.stdout, job.kind, unit, json);
  const items: ItemLine[] = [];
  let after = 0;
  let current = job;
  const interrupted = (): void => {
    view.done();
    process.stderr.write(`hubcache: job ${job.id} goes on in the server (hubcache jobs cancel ${job.id} stops it)\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    for (;;) {
      let page: { job: JobView; items: Array<ItemLine & { seq: number }> };
      try {
        page = await client.get(`/admin/jobs/${job.id}?after=${after}&limit=${PAGE}`);
      } catch (err) {
        view.done();
        throw new CliFailure(`${(err as Error).message}; job ${job.id} resumes when the server is back (hubcache jobs show ${job.id})`);
      }
      current = page.job;
      for (const item of page.items) {
        items.push(item);
        view.item(item);
        after = item.seq;
      }
      view.update(current.progress);
      const finished = current.state === 'done' || current.state === 'failed' || current.state === 'cancelled';
      if (finished && page.items.length < PAGE) break;
      if (page.items.length < PAGE) await new Promise((r) => setTimeout(r, POLL_MS));
    }
  } finally {
    process.off('SIGINT', interrupted);
  }
  view.done();
  if (json) out(JSON.stringify({ job: current, items }, null, 2));
  else out(summary(current));
  return current.state === 'done' ? 0 : 1;
}

/** `import` with the server stopped: the same importer, on the data dir under its lock. */
async function localImport(config: Config, lock: DataDirLock, req: ImportRequest, json: boolean): Promise<number> {
  const log = createLogger('warn', process.stderr);
  const { createHubClient, openDataDir } = await import('../server.js');
  const opened = await openDataDir(config.dataDir, log, { held: lock, diskWriters: config.diskWriters, storage: config, index: config });
  const hub = createHubClient(config, log, proxySettingsFromEnv(process.env));
  const access = new AccessPolicy({ hfToken: config.hfToken, hub, authTtlMs: config.authTtlSeconds * 1000 });
  const view = new ProgressView(process.stdout, 'import', 'files', json);
  const local = new LocalJob('import', importParams(req), view);
  const stop = (): void => local.controller.abort();
  process.once('SIGINT', stop);
  try {
    const diskSpace = new DiskSpace(opened.layout.root, config.minFreeBytes);
    // The default budget (the filesystem less minFreeBytes) is the free-space check's already.
    const budgetBytes = config.maxCacheBytes === '' ? undefined : await cacheBudget(config.maxCacheBytes, diskSpace);
    await importCache(req, { store: opened.store, index: opened.index, access, diskSpace, ...(budgetBytes === undefined ? {} : { budgetBytes }) }, local);
    local.end(local.controller.signal.aborted ? 'cancelled' : undefined);
  } catch (err) {
    local.end('failed', (err as Error).message);
  } finally {
    process.off('SIGINT', stop);
    await hub.close();
    await opened.store.close();
    await opened.index.close();
    opened.lock.release();
  }
  view.done();
  const job = jobJson(local.row) as unknown as JobView;
  out(json ? JSON.stringify({ job, items: local.items }, null, 2) : summary(job));
  return local.row.state === 'done' ? 0 : 1;
}

/** `evict` with the server stopped: the same Evictor on the data dir under its lock (no reader can hold a lease). */
async function localEvict(config: Config, lock: DataDirLock, req: EvictRequest): Promise<EvictReport> {
  const log = createLogger('warn', process.stderr);
  const { openDataDir } = await import('../server.js');
  const opened = await openDataDir(config.dataDir, log, { held: lock, diskWriters: config.diskWriters, storage: config, index: config });
  try {
    const diskSpace = new DiskSpace(opened.layout.root, config.minFreeBytes);
    const evictor = new Evictor({
      store: opened.store,
      index: opened.index,
      budgetBytes: await cacheBudget(config.maxCacheBytes, diskSpace).catch(() => Infinity),
      policy: config.evictionPolicy,
      graceMs: config.evictionGraceSeconds * 1000,
    });
    return await runEviction(req, evictor, opened.index);
  } finally {
    await opened.store.close();
    await opened.index.close();
    opened.lock.release();
  }
}

/** `verify` with the server stopped: progress on stderr, the JSON report on stdout. */
async function localVerify(config: Config, lock: DataDirLock): Promise<number> {
  const log = createLogger('warn', process.stderr);
  const { openDataDir } = await import('../server.js');
  const opened = await openDataDir(config.dataDir, log, { held: lock, diskWriters: config.diskWriters, storage: config, index: config });
  const bar = verifyBar(process.stderr);
  try {
    const report = await verifyBlobs(opened.store, opened.index, { onProgress: bar.update });
    bar.done();
    out(JSON.stringify({ verified: report.verified, bytes: report.bytes, corrupt: report.corrupt, missing: report.missing }, null, 2));
    return report.corrupt.length > 0 ? 1 : 0;
  } finally {
    await opened.store.close();
    await opened.index.close();
    opened.lock.release();
  }
}

/** A one-line progress bar on a TTY, a line every 10 % otherwise. */
function verifyBar(stream: NodeJS.WriteStream): { update: (p: VerifyProgress) => void; done: () => void } {
  let lastDecile = -1;
  return {
    update: (p) => {
      const frac = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : p.done / Math.max(1, p.total);
      const line = `verify [${'#'.repeat(Math.round(frac * 30)).padEnd(30, '.')}] ${(frac * 100).toFixed(0)}%  ${p.done}/${p.total} blobs  ${(p.bytesDone / 1e9).toFixed(2)}/${(p.bytesTotal / 1e9).toFixed(2)} GB`;
      if (stream.isTTY) stream.write(`\r${line}`);
      else if (Math.floor(frac * 10) > lastDecile) {
        lastDecile = Math.floor(frac * 10);
        stream.write(`${line}\n`);
      }
    },
    done: () => {
      if (stream.isTTY) stream.write('\n');
    },
  };
}

/** A job run in this process (import with the server stopped): the same counters and items, in memory. */
class LocalJob implements ImportProgress {
  readonly controller = new AbortController();
  readonly signal = this.controller.signal;
  readonly succeeded = new Map<string, number>();
  readonly items: Array<ReturnType<typeof itemJson>> = [];
  readonly row: JobRow;
  readonly #view: ProgressView;

  constructor(kind: JobRow['kind'], params: Record<string, unknown>, view: ProgressView) {
    const now = Date.now();
    const progress: JobProgress = { itemsTotal: null, itemsDone: 0, itemsFailed: 0, bytesTotal: null, bytesDone: 0 };
    this.row = { id: 'local', kind, state: 'running', params, progress, message: null, createdAt: now, startedAt: now, finishedAt: null };
    this.#view = view;
  }

  setTotals(items: number, bytes: number | null): void {
    this.row.progress.itemsTotal = items;
    this.row.progress.bytesTotal = bytes;
    this.#view.update(this.row.progress);
  }

  item(name: string): ItemTracker {
    const p = this.row.progress;
    let moved = 0;
    let finished = false;
    return {
      add: (n) => {
        moved += n;
        p.bytesDone += n;
        this.#view.update(p);
      },
      finish: (outcome, ok, bytes, message) => {
        if (finished) return;
        finished = true;
        p.bytesDone += (ok ? bytes : 0) - moved;
        p.itemsDone++;
        if (!ok) p.itemsFailed++;
        const line = { seq: this.items.length + 1, item: name, outcome, ok, bytes, message: message ?? null };
        this.items.push(itemJson(line));
        this.#view.item(line);
        this.#view.update(p);
      },
    };
  }

  end(state?: 'failed' | 'cancelled', message?: string): void {
    const failed = this.row.progress.itemsFailed;
    this.row.state = state ?? (failed > 0 ? 'failed' : 'done');
    this.row.message = message ?? (failed > 0 ? `${failed} of ${this.row.progress.itemsTotal ?? this.row.progress.itemsDone} items failed` : null);
    this.row.finishedAt = Date.now();
  }
}
