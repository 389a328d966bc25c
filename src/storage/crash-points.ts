/**
 * Fault injection for the crash-safety tests: when the environment variable
 * HUBCACHE_TEST_CRASH_AT names a point, the process kills itself with SIGKILL there, exactly
 * like a power cut at that instruction. Unset in production; the check is a string comparison.
 */
export type CrashPoint = 'after-staging-fsync' | 'during-upload' | 'after-upload' | 'after-rename' | 'after-index-commit' | 'after-evict-unlink';

const armed = process.env.HUBCACHE_TEST_CRASH_AT;

export function crashPoint(point: CrashPoint): void {
  if (armed === point) process.kill(process.pid, 'SIGKILL');
}
