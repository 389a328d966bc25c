/**
 * The CLI's side of the operator API: JSON requests to `<url>/admin/...` with the admin token
 * (never a Hub token in the Authorization header), and the failures turned into messages an
 * operator can act on.
 */

/** A command's failure: the message to print and the exit code (1: it failed, 2: it was misused). */
export class CliFailure extends Error {
  readonly exitCode: number;

  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

export class AdminClient {
  readonly baseUrl: string;
  readonly #token: string;

  /** @param token the admin token ('' for an admin listener without one). */
  constructor(baseUrl: string, token: string) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#token = token;
  }

  get<T>(path: string): Promise<T> {
    return this.#request<T>('GET', path, undefined);
  }

  post<T>(path: string, body: Record<string, unknown> = {}): Promise<T> {
    return this.#request<T>('POST', path, body);
  }

  async #request<T>(method: string, path: string, body: Record<string, unknown> | undefined): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliFailure(`cannot reach the mirror's admin API at ${this.baseUrl} (${cause?.code ?? cause?.message ?? (err as Error).message}): is the server running? (--url, or adminListen/port in its configuration)`);
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      parsed = undefined;
    }
    if (res.ok && parsed !== undefined) return parsed as T;
    const message = (parsed as { error?: unknown } | undefined)?.error;
    if (res.status === 401) throw new CliFailure(`the admin API at ${this.baseUrl} refused the request: ${this.#token ? 'wrong admin token' : 'no admin token'} (set HUBCACHE_ADMIN_TOKEN to the server's adminToken)`);
    if (res.status === 404 && message === 'Not found') {
      throw new CliFailure(`no admin API at ${this.baseUrl}: enable it on the server with adminToken (main port) or adminListen (its own address), or point --url at it`);
    }
    throw new CliFailure(typeof message === 'string' ? message : `the admin API answered ${res.status} ${res.statusText}`);
  }
}
