#!/usr/bin/env node
/**
 * The process entry: `hubcache serve`, `health`, and the operator commands (cli/commands.ts:
 * prefetch, import, ls, stats, verify, jobs, evict). The only modules that read the environment,
 * parse argv, install signal handlers and exit. Exit codes: 0 ok, 1 runtime failure, 2 invalid
 * configuration or usage (`health`: 1, see there).
 */
import { Command, CommanderError, Option } from 'commander';
import { OPTIONS, envName, flagName } from './config/config.js';
import { loadConfig } from './config/load-config.js';
import { createLogger } from './observability/logger.js';
import { VERSION } from './version.js';
import { proxySettingsFromEnv, proxySettingsProblems } from './upstream/proxy-routes.js';
import { registerOperatorCommands } from './cli/commands.js';

const program = new Command();
// Usage errors (a flag without its value, an unknown command) are configuration problems: exit 2.
// Set before the commands are added so they inherit it.
program.exitOverride();
program.name('hubcache').description('A Hugging Face-compatible caching mirror').version(VERSION);

/**
 * The configuration options of `serve`, as flags: `health` takes the same ones, so it reads the
 * configuration `serve` would (config file, environment, flags).
 */
function withConfigOptions(command: Command): Command {
  command
    .option('-c, --config <file>', 'JSON configuration file (see config/hubcache.example.json)')
    // Unknown flags and stray arguments are reported with every other configuration problem.
    .allowUnknownOption()
    .allowExcessArguments();
  for (const o of OPTIONS) {
    const help = `${o.description} [env ${envName(o.key)}, default ${JSON.stringify(o.default)}]`;
    if (o.type.kind === 'boolean') {
      // `--offline`, `--offline=false` / `--offline false`, and `--no-offline` (added second, so the
      // option stays unset unless given: the environment and the config file still apply).
      command.addOption(new Option(`${flagName(o.key)} [value]`, `${help} (true, false, 1 or 0; bare: true)`));
      command.addOption(new Option(`--no-${flagName(o.key).slice(2)}`, `same as ${flagName(o.key)}=false`));
    } else {
      command.addOption(new Option(`${flagName(o.key)} <value>`, help));
    }
  }
  return command;
}

const serve = withConfigOptions(program.command('serve').description('Serve the mirror (configuration: flags > HUBCACHE_* environment > --config file > defaults)'));

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
    // Loaded here, not at the top: the other commands start without the server's modules.
    const { startServer } = await import('./server.js');
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

/** Longest wait for the server's answer: below the image's HEALTHCHECK --timeout (5 s). */
const HEALTH_TIMEOUT_MS = 4_000;

withConfigOptions(
  program
    .command('health')
    .description(
      "Ask the running server's /healthz whether it is healthy; exit 0 if so, else 1. Reads the same configuration as serve; finds the server at the address it recorded in the data directory, else at the configured host and port.",
    ),
).action(async (opts: Record<string, unknown>, command: Command) => {
  const { config: configFile, ...flags } = opts;
  const loaded = loadConfig({ configFile: configFile as string | undefined, env: process.env, flags });
  const problems = [...unexpectedArguments(command.args), ...(loaded.ok ? [] : loaded.errors)];
  // Exit 1, not 2: container health checks reserve 2, and a server cannot be running with a
  // configuration that does not load.
  if (!loaded.ok || problems.length > 0) {
    process.stderr.write(`hubcache health: invalid configuration:\n${problems.map((e) => `  - ${e}`).join('\n')}\n`);
    process.exit(1);
  }
  const { healthTarget, probeHealth } = await import('./health-probe.js');
  const target = healthTarget(loaded.config, flags.host !== undefined || flags.port !== undefined);
  const result = await probeHealth(target.url, HEALTH_TIMEOUT_MS);
  if (result.healthy) {
    process.stdout.write(`hubcache health: healthy: ${result.detail}\n`);
    process.exit(0);
  }
  const hint = target.from === 'configuration' ? ` (address from the configuration; is "hubcache serve" running with it, data directory ${loaded.config.dataDir}?)` : ' (address recorded by the server in its data directory)';
  process.stderr.write(`hubcache health: unhealthy: ${result.detail}${hint}\n`);
  process.exit(1);
});

registerOperatorCommands(program);

/** Prints every configuration problem in one message and exits 2. */
function exitInvalid(problems: readonly string[]): never {
  process.stderr.write(`hubcache: invalid configuration:\n${problems.map((e) => `  - ${e}`).join('\n')}\n`);
  process.exit(2);
}

/** Command-line words commander did not take: unknown flags (`--ofline`) and stray arguments. */
function unexpectedArguments(args: readonly string[]): string[] {
  return args.map((a) => (a.startsWith('-') ? `unknown option ${a.split('=')[0] ?? a} (from command line)` : `unexpected argument ${JSON.stringify(a)} (from command line)`));
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Commander has printed its message; help and --version end with code 0.
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  throw err;
}
