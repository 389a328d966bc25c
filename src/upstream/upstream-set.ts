/**
 * UpstreamSet (config `upstream`, an ordered list): the upstreams the mirror may ask, e.g. the Hub
 * first and a regional mirror second, with their health.
 *
 * Health is a circuit breaker per upstream: a connect error, a timeout or a 5xx answer (after the
 * HubClient's own retries) marks it down for a cool-down (30 s, doubling while it keeps failing,
 * at most 5 min), during which it is skipped while another is healthy; once the cool-down is over
 * the next request tries it again (one probe), and a success marks it up. Every state change is
 * reported (logged by the server). A 4xx is an answer, not a failure: it stands and is never
 * asked elsewhere (a file that is gone or denied on the first upstream is not looked for on the
 * next one).
 *
 * The set is itself an UpstreamApi: metadata and API questions go to the first healthy upstream,
 * and move on to the next healthy one on a failure. Fills use the members directly (one HubClient
 * each) and switch mid-download through `next` (see mirror/fill-source.ts). With one upstream,
 * every request goes to it, down or not (there is nothing else to ask).
 */
import type { Dispatcher } from 'undici';
import type { FileRequest } from '../hub/repo-ref.js';
import {
  describe,
  discardBody,
  type ApiRequestOptions,
  type BodySpeedFloor,
  type HubClient,
  type UpstreamApi,
  type UpstreamApiAnswer,
  type UpstreamBody,
  type UpstreamFileMeta,
} from './hub-client.js';
import { isUnhealthy } from './upstream-errors.js';

export interface UpstreamStateEvent {
  /** The upstream's base URL (configuration, never a signed URL). */
  upstream: string;
  state: 'down' | 'up';
  /** Why it went down. */
  reason?: string;
  /** How long it is skipped (down only). */
  coolDownMs?: number;
}

export interface UpstreamSetOptions {
  /** First cool-down after a failure (default 30 s); doubled per further failure. */
  coolDownMs?: number;
  /** Longest cool-down (default 5 min). */
  maxCoolDownMs?: number;
  onState?: (event: UpstreamStateEvent) => void;
  /** Monotonic milliseconds (tests). */
  now?: () => number;
}

interface Member {
  readonly base: string;
  readonly client: HubClient;
  downUntil: number;
  failures: number;
}

export class UpstreamSet implements UpstreamApi {
  readonly #members: Member[];
  readonly #coolDownMs: number;
  readonly #maxCoolDownMs: number;
  readonly #onState: UpstreamSetOptions['onState'];
  readonly #now: () => number;

  constructor(upstreams: ReadonlyArray<{ base: string; client: HubClient }>, opts: UpstreamSetOptions = {}) {
    if (upstreams.length === 0) throw new Error('UpstreamSet needs at least one upstream');
    this.#members = upstreams.map((u) => ({ base: u.base, client: u.client, downUntil: 0, failures: 0 }));
    this.#coolDownMs = opts.coolDownMs ?? 30_000;
    this.#maxCoolDownMs = opts.maxCoolDownMs ?? 300_000;
    this.#onState = opts.onState;
    this.#now = opts.now ?? (() => performance.now());
  }

  get clients(): HubClient[] {
    return this.#members.map((m) => m.client);
  }

  /** Whether `client` is outside its cool-down. */
  healthy(client: HubClient): boolean {
    const m = this.#member(client);
    return m !== undefined && m.downUntil <= this.#now();
  }

  /**
   * The upstreams to ask, in order: the healthy ones as configured; when none is healthy, only the
   * one whose cool-down ends first (a probe, rather than every dead one on every request).
   */
  candidates(): HubClient[] {
    const now = this.#now();
    const up = this.#members.filter((m) => m.downUntil <= now);
    if (up.length > 0) return up.map((m) => m.client);
    const soonest = this.#members.reduce((a, b) => (b.downUntil < a.downUntil ? b : a));
    return [soonest.client];
  }

  /** The upstream metadata goes to now. */
  current(): HubClient {
    return this.candidates()[0]!;
  }

  /** The first healthy upstream not in `tried` (a fill's failover), if any. */
  next(tried: ReadonlySet<HubClient>): HubClient | undefined {
    const now = this.#now();
    return this.#members.find((m) => !tried.has(m.client) && m.downUntil <= now)?.client;
  }

  /** The base URL of `client` (for logs). */
  nameOf(client: HubClient): string {
    return this.#member(client)?.base ?? '(unknown upstream)';
  }

  /** `client` failed (connect error, timeout, 5xx, stall): skipped for a cool-down. */
  markDown(client: HubClient, reason: string): void {
    const m = this.#member(client);
    if (!m) return;
    const now = this.#now();
    // Several requests failing at once on the same outage count as one failure.
    if (m.downUntil > now) return;
    m.failures++;
    const coolDownMs = Math.min(this.#maxCoolDownMs, this.#coolDownMs * 2 ** (m.failures - 1));
    m.downUntil = now + coolDownMs;
    this.#onState?.({ upstream: m.base, state: 'down', reason, coolDownMs });
  }

  /** `client` answered: healthy again if it was not. */
  markUp(client: HubClient): void {
    const m = this.#member(client);
    if (!m || m.failures === 0) return;
    m.failures = 0;
    m.downUntil = 0;
    this.#onState?.({ upstream: m.base, state: 'up' });
  }

  #member(client: HubClient): Member | undefined {
    return this.#members.find((m) => m.client === client);
  }

  /**
   * `ask` on the candidates in order until one answers. `failed(result)` says whether an answer
   * (not an exception) means the upstream is failing (a 5xx); such an answer is dropped with
   * `drop` when another upstream is left to ask, else returned.
   */
  async #ask<T>(ask: (c: HubClient) => Promise<T>, failed?: (r: T) => string | undefined, drop?: (r: T) => void): Promise<T> {
    const order = this.candidates();
    for (let i = 0; ; i++) {
      const client = order[i]!;
      const last = i === order.length - 1;
      let result: T;
      try {
        result = await ask(client);
      } catch (err) {
        if (!isUnhealthy(err)) throw err;
        this.markDown(client, (err as Error).message);
        if (last) throw err;
        continue;
      }
      const why = failed?.(result);
      if (why === undefined) {
        this.markUp(client);
        return result;
      }
      this.markDown(client, why);
      if (last) return result;
      drop?.(result);
    }
  }

  // ------------------------------------------------------------------ UpstreamApi

  get bodySpeedFloor(): BodySpeedFloor | undefined {
    return this.#members[0]!.client.bodySpeedFloor;
  }

  headFile(req: FileRequest, auth: string | undefined): Promise<UpstreamFileMeta> {
    return this.#ask((c) => c.headFile(req, auth));
  }

  /** Only requests that may be retried (reads) move to another upstream; a write goes to the current one. */
  requestApi(method: Dispatcher.HttpMethod, pathAndQuery: string, auth: string | undefined, opts: ApiRequestOptions = {}): Promise<UpstreamApiAnswer> {
    const retryable = opts.idempotent ?? (method === 'GET' || method === 'HEAD' || method === 'OPTIONS');
    if (!retryable) return this.current().requestApi(method, pathAndQuery, auth, opts);
    return this.#ask(
      (c) => c.requestApi(method, pathAndQuery, auth, opts),
      (r) => (r.statusCode >= 500 ? `answered ${r.statusCode} for ${describe(r.url)}` : undefined),
    );
  }

  openBody(pathAndQuery: string, auth: string | undefined, extra: Record<string, string>, signal?: AbortSignal): Promise<UpstreamBody> {
    return this.#ask(
      (c) => c.openBody(pathAndQuery, auth, extra, signal),
      (r) => (r.statusCode >= 500 ? `answered ${r.statusCode}` : undefined),
      (r) => discardBody(r.body),
    );
  }

  /** The path below whichever upstream's base `url` points into (each upstream judges its own URLs). */
  upstreamPathOf(url: string, from?: URL): string | undefined {
    for (const m of this.#members) {
      const p = m.client.upstreamPathOf(url, from);
      if (p !== undefined) return p;
    }
    return undefined;
  }

  async close(): Promise<void> {
    await Promise.all(this.#members.map((m) => m.client.close()));
  }
}
