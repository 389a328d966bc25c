#!/usr/bin/env node
/**
 * The process entry: `hubcache serve`. The only module that reads the environment, parses argv,
 * installs signal handlers and exits. Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration.
 */
import { Command, Option } from 'commander';
import { OPTIONS, envName, flagName } from './config/config.js';
import { loadConfig } from './config/load-config.js';
import { createLogger } from './observability/logger.js';
import { VERSION, openDataDir, startServer } from './server.js';
import { proxySettingsFromEnv, proxySettingsProblems } from './upstream/proxy-routes.js';
import { verifyBlobs, type VerifyProgress } from './storage/verify.js';

const program = new Command();
program.name('hubcache').description('A Hugging Face-compatible caching mirror').version(VERSION);

const serve = program
  .command('serve')
  .description('Serve the mirror (configuration: flags > HUBCACHE_* environment > --config file > defaults)')
  .option('-c, --config <file>', 'JSON configuration file (see config/hubcache.example.json)');
for (const o of OPTIONS) {
  serve.addOption(new Option(`${flagName(o.key)} <value>`, `${o.description} [env ${envName(o.key)}, default ${JSON.stringify(o.default)}]`));
}

serve.action(async (opts: Record<string, unknown>) => {
  const { config: configFile, ...flags } = opts;
  const loaded = loadConfig({ configFile: configFile as string | undefined, env: process.env, flags });
  // The outbound proxy comes from the standard variables, not HUBCACHE_*: read once, here.
  const proxy = proxySettingsFromEnv(process.env);
  const problems = [...(loaded.ok ? [] : loaded.errors), ...proxySettingsProblems(proxy)];
  if (!loaded.ok || problems.length > 0) {
    process.stderr.write(`hubcache: invalid configuration:\n${problems.map((e) => `  - ${e}`).join('\n')}\n`);
    process.exit(2);
  }
  const log = createLogger(loaded.config.logLevel);
  let running;
  try {
    running = await startServer(loaded.config, log, { proxy });
  } catch (err) {
    log.fatal({ message: (err as Error).message }, 'could not start');
    process.exit(1);
  }
  const shutdown = (signal: string): void => {
    log.info({ signal }, 'shutting down');
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ message: (err as Error).message }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
});

program
  .command('verify')
  .description('Re-hash every stored blob; quarantine and forget corrupt ones (run with the server stopped). Exit 1 if any was corrupt.')
  .option('-c, --config <file>', 'JSON configuration file')
  .option('--data-dir <dir>', 'cache directory [env HUBCACHE_DATA_DIR, default "./data"]')
  .action(async (opts: { config?: string; dataDir?: string }) => {
    const loaded = loadConfig({ configFile: opts.config, env: process.env, flags: opts.dataDir === undefined ? {} : { dataDir: opts.dataDir } });
    if (!loaded.ok) {
      process.stderr.write(`hubcache: invalid configuration:\n${loaded.errors.map((e) => `  - ${e}`).join('\n')}\n`);
      process.exit(2);
    }
    const log = createLogger('warn', process.stderr);
    let opened;
    try {
      opened = await openDataDir(loaded.config.dataDir, log);
    } catch (err) {
      process.stderr.write(`hubcache verify: ${(err as Error).message}\n`);
      process.exit(1);
    }
    const bar = progressBar(process.stderr);
    const report = await verifyBlobs(opened.store, opened.index, bar.update);
    bar.done();
    opened.index.close();
    opened.lock.release();
    process.stdout.write(`${JSON.stringify({ verified: report.verified, bytes: report.bytes, corrupt: report.corrupt, missing: report.missing }, null, 2)}\n`);
    process.exit(report.corrupt.length > 0 ? 1 : 0);
  });

/** A one-line progress bar on a TTY, a line every 10 % otherwise. */
function progressBar(out: NodeJS.WriteStream): { update: (p: VerifyProgress) => void; done: () => void } {
  let lastDecile = -1;
  return {
    update: (p) => {
      const frac = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : p.done / Math.max(1, p.total);
      const line = `verify [${'#'.repeat(Math.round(frac * 30)).padEnd(30, '.')}] ${(frac * 100).toFixed(0)}%  ${p.done}/${p.total} blobs  ${(p.bytesDone / 1e9).toFixed(2)}/${(p.bytesTotal / 1e9).toFixed(2)} GB`;
      if (out.isTTY) out.write(`\r${line}`);
      else if (Math.floor(frac * 10) > lastDecile) {
        lastDecile = Math.floor(frac * 10);
        out.write(`${line}\n`);
      }
    },
    done: () => {
      if (out.isTTY) out.write('\n');
    },
  };
}

await program.parseAsync(process.argv);
