/**
 * Runs an external client (curl, wget, aria2c, ...) asynchronously. Tests start the mirror in the
 * same process, so a synchronous child_process call would block the event loop the mirror needs
 * to answer the very tool being waited for: always go through `runTool`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface ToolResult {
  /** Exit code (0 on success). */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `cmd args` and resolves with its exit code and output; a non-zero exit does not reject
 * (tests assert on `code`), but a missing binary or a timeout does.
 */
export async function runTool(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<ToolResult> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, args, {
      encoding: 'utf8',
      maxBuffer: 16 * 1024 * 1024,
      timeout: opts.timeoutMs ?? 60_000,
      cwd: opts.cwd,
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { code?: unknown; stdout?: string; stderr?: string; killed?: boolean; signal?: string };
    if (typeof e.code === 'number' && !e.killed) {
      return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
    throw err;
  }
}

/** A parsed HTTP response head (status line + headers). */
export interface ResponseHead {
  status: number;
  /** Lower-case names; repeated headers joined with `, `. */
  headers: Record<string, string>;
}

/**
 * Parses the header blocks curl prints with `-D -` or `-I` (one block per response when
 * redirects are followed or a `100 Continue` came first); returns every block in order.
 */
export function parseResponseHeads(text: string): ResponseHead[] {
  const heads: ResponseHead[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const lines = block.split(/\r?\n/).filter((l) => l.length > 0);
    const statusLine = lines[0];
    const m = statusLine ? /^HTTP\/[\d.]+\s+(\d{3})/.exec(statusLine) : null;
    if (!m) continue;
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) continue;
      const name = line.slice(0, i).trim().toLowerCase();
      const value = line.slice(i + 1).trim();
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
    }
    heads.push({ status: Number(m[1]), headers });
  }
  return heads;
}

/** The last response head in curl's header output (throws if there is none). */
export function lastResponseHead(text: string): ResponseHead {
  const heads = parseResponseHeads(text);
  const last = heads[heads.length - 1];
  if (!last) throw new Error(`no HTTP response head in: ${JSON.stringify(text.slice(0, 500))}`);
  return last;
}
