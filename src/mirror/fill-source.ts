/**
 * FillSource: where a fill's bytes come from. Today an upstream file; the seam where failover
 * to another upstream (and later a peer replica) plugs in: the Fill only ever asks a source for
 * "the file" or "bytes [start, end) of the same version", never builds URLs itself.
 *
 * UpstreamFillSource resolves the file's redirect once (the first request follows it hop by hop
 * through the HubClient and its RedirectPolicy) and sends later ranges straight to the URL that
 * answered (a signed CDN URL), re-resolving only when that URL stops working (401/403/404/410,
 * e.g. an expired signature). Answers are returned as they are: the Fill checks them.
 */
import type { Interval } from '../model/span-set.js';
import { discardBody, type HubClient, type UpstreamBody } from '../upstream/hub-client.js';

export interface FillSource {
  /**
   * The fill's first request: the whole file (`span` undefined: a plain GET) or one span of it
   * (`Range`, no validator yet). Follows redirects.
   */
  openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody>;
  /** `bytes [start, end)` of the version `validator` names (`Range` + `If-Range`). */
  open(span: Interval, validator: string, signal: AbortSignal): Promise<UpstreamBody>;
}

/** Answers of a resolved URL that mean "resolve again" rather than "the file is gone". */
const STALE_URL = new Set([401, 403, 404, 410]);

/** `Range` for `[start, end)` of a file of `size` bytes (open-ended when it runs to the end). */
export function rangeHeader(span: Interval, size: number): string {
  return span.end >= size ? `bytes=${span.start}-` : `bytes=${span.start}-${span.end - 1}`;
}

export class UpstreamFillSource implements FillSource {
  readonly #hub: HubClient;
  readonly #path: string;
  readonly #auth: string | undefined;
  readonly #size: number;
  /** Where the file was found (after redirects); never logged (it may be signed). */
  #url: URL | undefined;

  constructor(hub: HubClient, upstreamPath: string, auth: string | undefined, size: number) {
    this.#hub = hub;
    this.#path = upstreamPath;
    this.#auth = auth;
    this.#size = size;
  }

  async openFirst(span: Interval | undefined, signal: AbortSignal): Promise<UpstreamBody> {
    const res = await this.#hub.openBody(this.#path, this.#auth, span ? { range: rangeHeader(span, this.#size) } : {}, signal);
    if (res.statusCode < 300) this.#url = res.url;
    return res;
  }

  async open(span: Interval, validator: string, signal: AbortSignal): Promise<UpstreamBody> {
    const extra = { range: rangeHeader(span, this.#size), 'if-range': validator };
    if (this.#url) {
      const res = await this.#hub.openUrl(this.#url, this.#auth, extra, signal);
      if (!STALE_URL.has(res.statusCode)) return res;
      discardBody(res.body);
      this.#url = undefined;
    }
    const res = await this.#hub.openBody(this.#path, this.#auth, extra, signal);
    if (res.statusCode < 300) this.#url = res.url;
    return res;
  }
}
