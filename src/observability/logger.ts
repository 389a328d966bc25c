/**
 * The process logger: pino, JSON lines on stdout. Anything that looks like a credential is
 * redacted by path as a second line of defence; the first is never putting one in a log call.
 *
 * Stdout is written asynchronously (pino's sonic-boom destination): lines logged while a write is
 * in flight go out together in the next one, so one line per request does not cost one blocking
 * write per request (at `info` a synchronous stdout made a warm HEAD ~40% dearer). Nothing waits
 * for a fill-up: a line is written as soon as the previous write is done, and whatever is pending
 * is flushed synchronously when the process exits.
 */
import { destination as pinoDestination, pino, type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'hubcache' },
      redact: { paths: ['authorization', 'headers.authorization', 'req.headers.authorization', 'token', 'hfToken', 'metricsToken', 'adminToken', 'hubToken', 's3AccessKeyId', 's3SecretAccessKey', 'secretAccessKey', 'indexUrl', 'credentials'], censor: '[redacted]' },
    },
    destination ?? pinoDestination({ dest: 1, sync: false }),
  );
}

export type { Logger };
