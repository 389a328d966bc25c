/**
 * The process logger: pino, JSON lines on stdout. Anything that looks like a credential is
 * redacted by path as a second line of defence; the first is never putting one in a log call.
 */
import { pino, type Logger } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'hubcache' },
      redact: { paths: ['authorization', 'headers.authorization', 'req.headers.authorization', 'token', 'hfToken', 's3AccessKeyId', 's3SecretAccessKey', 'secretAccessKey', 'credentials'], censor: '[redacted]' },
    },
    destination ?? process.stdout,
  );
}

export type { Logger };
