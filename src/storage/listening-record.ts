/**
 * `<dataDir>/listening.json`: the address the process serving a data directory actually listens
 * on, written once it listens and removed when it closes. `hubcache health` reads it, so a server
 * started with `--port 9000` (or port 0) is found by a health check that only knows the data
 * directory. One process per data directory (the lock), so the file has one writer.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';

export interface ListeningRecord {
  /** `http://host:port` reachable from this machine (a wildcard listen address becomes loopback). */
  url: string;
  pid: number;
}

/** Written to a temporary name, then renamed: a reader never sees half a record. */
export async function writeListeningRecord(file: string, record: ListeningRecord): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fsp.writeFile(tmp, `${JSON.stringify(record)}\n`);
  await fsp.rename(tmp, file);
}

/** Removes the record if this process wrote it (a later server on the same directory may have replaced it). */
export function removeListeningRecord(file: string): void {
  if (readListeningRecord(file)?.pid === process.pid) fs.rmSync(file, { force: true });
}

/** The record, or undefined when there is none or it is not one (a stale or foreign file is not an error). */
export function readListeningRecord(file: string): ListeningRecord | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const { url, pid } = parsed as Record<string, unknown>;
  if (typeof url !== 'string' || !/^http:\/\/[^/?#@]+$/.test(url) || typeof pid !== 'number') return undefined;
  return { url, pid };
}
