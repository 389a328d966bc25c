#!/usr/bin/env node
/**
 * The process entry: `hubcache serve`. The only module that reads the environment, parses argv,
 * installs signal handlers and exits. Exit codes: 0 ok, 1 runtime failure, 2 invalid configuration.
 */
import { Command, Option } from 'commander';
import { OPTIONS, envName, flagName } from './config/config.js';
import { loadConfig } from './config/load-config.js';
import { createLogger } from './observability/logger.js';
import { VERSION, startServer } from './server.js';

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
  if (!loaded.ok) {
    process.stderr.write(`hubcache: invalid configuration:\n${loaded.errors.map((e) => `  - ${e}`).join('\n')}\n`);
    process.exit(2);
  }
  const log = createLogger(loaded.config.logLevel);
  let running;
  try {
    running = await startServer(loaded.config, log);
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

await program.parseAsync(process.argv);
