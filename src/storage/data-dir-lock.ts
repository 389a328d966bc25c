/**
 * One process per data directory. The lock is an exclusive SQLite lock on `<dataDir>/lock.sqlite`
 * held for the life of the process: the operating system releases it when the process dies, even
 * by kill -9, so there is no stale-lock cleanup and no PID reuse problem.
 */
import Database from 'better-sqlite3';
import { MirrorError } from '../errors.js';

export class DataDirLock {
  readonly #db: Database.Database;

  private constructor(db: Database.Database) {
    this.#db = db;
  }

  /** Takes the lock or throws a clear error naming the directory. */
  static acquire(lockFile: string, dataDir: string): DataDirLock {
    const lock = DataDirLock.tryAcquire(lockFile);
    if (!lock) throw new MirrorError('Internal', `The data directory ${dataDir} is in use by another hubcache process (one process per data directory)`);
    return lock;
  }

  /** Takes the lock, or null when another process holds it (the CLI then talks to that server). */
  static tryAcquire(lockFile: string): DataDirLock | null {
    const db = new Database(lockFile, { timeout: 0 });
    try {
      db.pragma('locking_mode = EXCLUSIVE');
      // The first write under EXCLUSIVE locking mode takes the lock and keeps it until close.
      db.exec('CREATE TABLE IF NOT EXISTS owner (pid INTEGER, started_at INTEGER); DELETE FROM owner;');
      db.prepare('INSERT INTO owner (pid, started_at) VALUES (?, ?)').run(process.pid, Date.now());
    } catch (err) {
      db.close();
      const code = (err as { code?: string }).code ?? '';
      if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return null;
      throw err;
    }
    return new DataDirLock(db);
  }

  release(): void {
    if (this.#db.open) this.#db.close();
  }
}
