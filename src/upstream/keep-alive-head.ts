/**
 * HEAD requests over kept-alive connections. undici closes the connection after every HEAD
 * (interop with servers that send a body anyway, nodejs/undici#258), which would cost a TCP and
 * TLS handshake per metadata lookup against the Hub; Node's own http client keeps them open.
 * Only HEAD goes through here: bodies go through the undici pool.
 *
 * Behind a proxy (`proxyFor` names one for the URL) a HEAD goes through a CONNECT tunnel
 * (https-proxy-agent), for https:// and http:// targets alike, so the proxy sees only
 * `CONNECT host:port` and the proxy's own credentials, never the request's headers
 * (`Authorization`). Tunnels are kept alive like direct connections: routing HEADs through
 * undici instead would pay a new proxy connection, CONNECT and TLS handshake per HEAD.
 */
import http from 'node:http';
import https from 'node:https';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { proxyAuthorization, proxyEndpoint } from './proxy-routes.js';
import type { Headers } from './upstream-errors.js';

export interface HeadResponse {
  statusCode: number;
  headers: Headers;
}

export interface KeepAliveHeadOptions {
  maxSockets: number;
  /** Bound on a new connection: TCP (and, through a proxy, the CONNECT exchange). */
  connectTimeoutMs: number;
  /** The proxy to reach `url` through, or undefined to connect directly. */
  proxyFor?: (url: URL) => URL | undefined;
}
/** Fresh attempts after a kept-alive connection turned out closed (more than one may be stale). */
const MAX_STALE_RETRIES = 3;

export class KeepAliveHead {
  readonly #http: http.Agent;
  readonly #https: https.Agent;
  readonly #tunnels = new Map<string, TunnelAgent>();
  readonly #agentOptions: http.AgentOptions;
  readonly #connectTimeoutMs: number;
  readonly #proxyFor: KeepAliveHeadOptions['proxyFor'];

  constructor(opts: KeepAliveHeadOptions) {
    this.#agentOptions = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: opts.maxSockets, maxFreeSockets: 32, scheduling: 'lifo' };
    this.#http = new http.Agent(this.#agentOptions);
    this.#https = new https.Agent(this.#agentOptions);
    this.#connectTimeoutMs = opts.connectTimeoutMs;
    this.#proxyFor = opts.proxyFor;
  }

  /**
   * Sends a HEAD; rejects on network errors, on `signal`, or when connecting takes too long.
   *
   * A kept-alive connection that upstream closes just as the request goes out (its idle timeout
   * met our reuse) fails with ECONNRESET before any answer: the HEAD is sent again, on another
   * connection (HEAD is idempotent; Node leaves this retry to the caller, `req.reusedSocket`).
   */
  async head(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<HeadResponse> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#headOnce(url, headers, signal);
      } catch (err) {
        const stale = (err as { reusedSocket?: boolean }).reusedSocket === true && (err as NodeJS.ErrnoException).code === 'ECONNRESET';
        if (!stale || signal.aborted || attempt > MAX_STALE_RETRIES) throw err;
      }
    }
  }

  #headOnce(url: URL, headers: Record<string, string>, signal: AbortSignal): Promise<HeadResponse> {
    const isHttps = url.protocol === 'https:';
    const request = isHttps ? https.request : http.request;
    const proxy = this.#proxyFor?.(url);
    const agent = proxy ? this.#tunnel(proxy) : isHttps ? this.#https : this.#http;
    return new Promise((resolve, reject) => {
      // A request destroyed before it has a socket reports no error until one arrives (a tunnel
      // still being set up): the abort settles the promise itself.
      const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted', { cause: signal.reason }));
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      const req = request(url, { method: 'HEAD', headers, agent, signal }, (res) => {
        signal.removeEventListener('abort', onAbort);
        res.resume();
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers });
      });
      req.on('error', (err) => {
        signal.removeEventListener('abort', onAbort);
        reject(Object.assign(err, { reusedSocket: req.reusedSocket }));
      });
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => req.destroy(connectTimeout(this.#connectTimeoutMs)), this.#connectTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      req.end();
    });
  }

  #tunnel(proxy: URL): TunnelAgent {
    let agent = this.#tunnels.get(proxy.href);
    if (!agent) {
      const auth = proxyAuthorization(proxy);
      agent = new TunnelAgent(proxyEndpoint(proxy), { ...this.#agentOptions, ...(auth ? { headers: { 'Proxy-Authorization': auth } } : {}) }, this.#connectTimeoutMs);
      this.#tunnels.set(proxy.href, agent);
    }
    return agent;
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
    for (const agent of this.#tunnels.values()) agent.destroy();
  }
}

/**
 * A tunnel whose setup (connection to the proxy, CONNECT, its answer) is bounded: the request
 * fails with a TimeoutError when it takes longer than `timeoutMs`. A tunnel that completes
 * after that is closed at once; a proxy that never answers keeps its half-open connection until
 * it closes it (https-proxy-agent gives no handle on that socket before the answer).
 */
class TunnelAgent extends HttpsProxyAgent<string> {
  constructor(
    proxy: URL,
    opts: ConstructorParameters<typeof HttpsProxyAgent<string>>[1],
    readonly timeoutMs: number,
  ) {
    super(proxy, opts);
  }

  override async connect(req: http.ClientRequest, opts: Parameters<HttpsProxyAgent<string>['connect']>[1]) {
    const tunnel = super.connect(req, opts);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(connectTimeout(this.timeoutMs)), this.timeoutMs);
    });
    try {
      return await Promise.race([tunnel, timeout]);
    } catch (err) {
      tunnel.then((socket) => socket.destroy(), () => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}

function connectTimeout(ms: number): Error {
  const err = new Error(`connect timeout after ${ms} ms`);
  err.name = 'TimeoutError';
  return err;
}
