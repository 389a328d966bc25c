/**
 * FillSource: where a fill's bytes come from: an upstream file, on one upstream of the set at a
 * time, or another replica of the cluster (peer-fill-source.ts). The Fill only ever asks a source
 * for "the file" or "bytes [start, end) of the same version", never builds URLs itself.
 *
 * UpstreamFillSource resolves the file's redirect once (the first request follows it hop by hop
 * through the HubClient and its RedirectPolicy) and sends later ranges straight to the URL that
 * answered (a signed CDN URL), re-resolving only when that URL stops working (401/403/404/410,
 * e.g. an expired signature). Answers are returned as they are: the Fill checks them.
 *
 * Failover: when the Fill finds the current upstream failing (connect error, timeout, 5xx,
 * stall), `failover` marks it down and moves to the next healthy upstream of the set, but only
 * after a HEAD there names the same blob (content digest) and size: the bytes already held and
 * the bytes still to come are then parts of one content, which the commit verifies whole anyway.
 * Each upstream is tried at most once per fill.
 */
import type { Interval } from '../model/span-set.js';
import { discardBody, type HubClient, type UpstreamBody } from '../upstream/hub-client.js';
import { isUnhealthy } from '../upstream/upstream-errors.js';
import type { UpstreamSet } from '../upstream/upstream-set.js';

export interface FillSource {
  /**
   * The fill's first request on the current upstream: the whole file (`span` undefined: a plain
   * GET) or one span of it (`Range`, no validator yet). Follows redirects.
   */
  openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody>;
  /**
   * `bytes [start, end)` of the version `validator` names (`Range` + `If-Range`); without a
   * validator (just after a failover, before the new upstream named its own), `Range` alone.
   */
  open(span: Interval, validator: string | undefined, signal: AbortSignal): Promise<UpstreamBody>;
  /**
   * The current upstream failed (`reason`): moves to the next healthy upstream that holds the same
   * blob. Resolves false (and stays put) when there is none.
   */
  failover(reason: string): Promise<boolean>;
  /** The upstream answering now (its configured base URL, for logs). */
  readonly upstream: string;
  /** True while the bytes come from another replica (not upstream): they are not counted as pulled. */
  readonly fromPeer?: boolean;
}

/** Answers of a resolved URL that mean "resolve again" rather than "the file is gone". */
const STALE_URL = new Set([401, 403, 404, 410]);

/** `Range` for `[start, end)` of a file of `size` bytes (open-ended when it runs to the end). */
export function rangeHeader(span: Interval, size: number): string {
  return span.end >= size ? `bytes=${span.start}-` : `bytes=${span.start}-${span.end - 1}`;
}

export interface UpstreamFillSourceOptions {
  upstreams: UpstreamSet;
  /** The file's path below an upstream's base (commit-pinned). */
  path: string;
  auth: string | undefined;
  size: number;
  /** Whether `client` has the fill's blob (same digest and size); throws when it cannot tell. */
  sameBlob: (client: HubClient) => Promise<boolean>;
  /** A switch to another upstream was refused or failed (for the log). */
  onRefused?: (upstream: string, reason: string) => void;
}

export class UpstreamFillSource implements FillSource {
  readonly #opts: UpstreamFillSourceOptions;
  #client: HubClient;
  readonly #tried = new Set<HubClient>();
  /** Where the file was found (after redirects); never logged (it may be signed). */
  #url: URL | undefined;

  constructor(opts: UpstreamFillSourceOptions) {
    this.#opts = opts;
    this.#client = opts.upstreams.current();
    this.#tried.add(this.#client);
  }

  get upstream(): string {
    return this.#opts.upstreams.nameOf(this.#client);
  }

  /**
   * Whether the upstream answering now has the fill's blob (same digest and size): asked by a
   * source that hands a fill over to this one (a peer replica's, see peer-fill-source.ts) before
   * any byte is taken from here. Throws when it cannot tell (the upstream is failing).
   */
  namesSameBlob(): Promise<boolean> {
    return this.#opts.sameBlob(this.#client);
  }

  async openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    const { path, auth, size } = this.#opts;
    const res = await this.#client.openBody(path, auth, span ? { range: rangeHeader(span, size) } : {}, signal);
    if (res.statusCode < 300) this.#url = res.url;
    return res;
  }

  async open(span: Interval, validator: string | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    const { path, auth, size } = this.#opts;
    const extra: Record<string, string> = { range: rangeHeader(span, size) };
    if (validator !== undefined) extra['if-range'] = validator;
    const client = this.#client;
    if (this.#url) {
      const url = this.#url;
      const res = await client.openUrl(url, auth, extra, signal);
      if (!STALE_URL.has(res.statusCode)) return res;
      discardBody(res.body);
      if (this.#url === url) this.#url = undefined;
    }
    const res = await client.openBody(path, auth, extra, signal);
    if (res.statusCode < 300 && this.#client === client) this.#url = res.url;
    return res;
  }

  async failover(reason: string): Promise<boolean> {
    const set = this.#opts.upstreams;
    set.markDown(this.#client, reason);
    for (let next = set.next(this.#tried); next; next = set.next(this.#tried)) {
      this.#tried.add(next);
      let same: boolean;
      try {
        same = await this.#opts.sameBlob(next);
      } catch (err) {
        if (isUnhealthy(err)) set.markDown(next, (err as Error).message);
        this.#opts.onRefused?.(set.nameOf(next), (err as Error).message);
        continue;
      }
      set.markUp(next);
      if (!same) {
        this.#opts.onRefused?.(set.nameOf(next), 'it names another blob or size for this file');
        continue;
      }
      this.#client = next;
      this.#url = undefined;
      return true;
    }
    return false;
  }
}
