#!/usr/bin/env node
/**
 * The process entry: `hubcache serve`. The only module that reads the environment, parses argv,
 * installs signal handlers and exits. Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration.
 */
import { Command, CommanderError, Option } from 'commander';
import { OPTIONS, envName, flagName } from './config/config.js';
import { loadConfig } from './config/load-config.js';
import { createLogger } from './observability/logger.js';
import { VERSION, openDataDir, startServer } from './server.js';
import { proxySettingsFromEnv, proxySettingsProblems } from './upstream/proxy-routes.js';
import { verifyBlobs, type VerifyProgress } from './storage/verify.js';

const program = new Command();
// Usage errors (a flag without its value, an unknown command) are configuration problems: exit 2.
// Set before the commands are added so they inherit it.
program.exitOverride();
program.name('hubcache').description('A Hugging Face-compatible caching mirror').version(VERSION);

const serve = program
  .command('serve')
  .description('Serve the mirror (configuration: flags > HUBCACHE_* environment > --config file > defaults)')
  .option('-c, --config <file>', 'JSON configuration file (see config/hubcache.example.json)')
  // Unknown flags and stray arguments are reported with every other configuration problem.
  .allowUnknownOption()
  .allowExcessArguments();
for (const o of OPTIONS) {
  const help = `${o.description} [env ${envName(o.key)}, default ${JSON.stringify(o.default)}]`;
  if (o.type.kind === 'boolean') {
    // `--offline`, `--offline=false` / `--offline false`, and `--no-offline` (added second, so the
    // option stays unset unless given: the environment and the config file still apply).
    serve.addOption(new Option(`${flagName(o.key)} [value]`, `${help} (true, false, 1 or 0; bare: true)`));
    serve.addOption(new Option(`--no-${flagName(o.key).slice(2)}`, `same as ${flagName(o.key)}=false`));
  } else {
    serve.addOption(new Option(`${flagName(o.key)} <value>`, help));
  }
}

serve.action(async (opts: Record<string, unknown>, command: Command) => {
  const { config: configFile, ...flags } = opts;
  const loaded = loadConfig({ configFile: configFile as string | undefined, env: process.env, flags });
  // The outbound proxy comes from the standard variables, not HUBCACHE_*: read once, here.
  const proxy = proxySettingsFromEnv(process.env);
  const problems = [...unexpectedArguments(command.args), ...(loaded.ok ? [] : loaded.errors), ...proxySettingsProblems(proxy)];
  if (!loaded.ok || problems.length > 0) exitInvalid(problems);
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
    if (!loaded.ok) exitInvalid(loaded.errors);
    const log = createLogger('warn', process.stderr);
    let opened;
    try {
      opened = await openDataDir(loaded.config.dataDir, log, loaded.config);
    } catch (err) {
      process.stderr.write(`hubcache verify: ${(err as Error).message}\n`);
      process.exit(1);
    }
    const bar = progressBar(process.stderr);
    const report = await verifyBlobs(opened.store, opened.index, bar.update);
    bar.done();
    await opened.store.close();
    opened.index.close();
    opened.lock.release();
    process.stdout.write(`${JSON.stringify({ verified: report.verified, bytes: report.bytes, corrupt: report.corrupt, missing: report.missing }, null, 2)}\n`);
    process.exit(report.corrupt.length > 0 ? 1 : 0);
  });

/** Prints every configuration problem in one message and exits 2. */
function exitInvalid(problems: readonly string[]): never {
  process.stderr.write(`hubcache: invalid configuration:\n${problems.map((e) => `  - ${e}`).join('\n')}\n`);
  process.exit(2);
}

/** Command-line words commander did not take: unknown flags (`--ofline`) and stray arguments. */
function unexpectedArguments(args: readonly string[]): string[] {
  return args.map((a) => (a.startsWith('-') ? `unknown option ${a.split('=')[0] ?? a} (from command line)` : `unexpected argument ${JSON.stringify(a)} (from command line)`));
}

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

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Commander has printed its message; help and --version end with code 0.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  throw err;
}
