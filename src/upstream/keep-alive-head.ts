/**
 * HEAD requests over kept-alive connections. undici closes the connection after every HEAD
 * (interop with servers that send a body anyway, nodejs/undici#258), which would cost a TCP and
 * TLS handshake per metadata lookup against the Hub; Node's own http client keeps them open.
 * Only HEAD goes through here: bodies go through the undici pool.
 */
import http from 'node:http';
import https from 'node:https';
import type { Headers } from './upstream-errors.js';

export interface HeadResponse {
  statusCode: number;
  headers: Headers;
}

/** Fresh attempts after a kept-alive connection turned out closed (more than one may be stale). */
const MAX_STALE_RETRIES = 3;

export class KeepAliveHead {
  readonly #http: http.Agent;
  readonly #https: https.Agent;
  readonly #connectTimeoutMs: number;

  constructor(opts: { maxSockets: number; connectTimeoutMs: number }) {
    const agentOptions = { keepAlive: true, keepAliveMsecs: 30_000, maxSockets: opts.maxSockets, maxFreeSockets: 32, scheduling: 'lifo' as const };
    this.#http = new http.Agent(agentOptions);
    this.#https = new https.Agent(agentOptions);
    this.#connectTimeoutMs = opts.connectTimeoutMs;
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
    return new Promise((resolve, reject) => {
      const req = request(url, { method: 'HEAD', headers, agent: isHttps ? this.#https : this.#http, signal }, (res) => {
        res.resume();
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers });
      });
      req.on('error', (err) => reject(Object.assign(err, { reusedSocket: req.reusedSocket })));
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        const timer = setTimeout(() => {
          const err = new Error(`connect timeout after ${this.#connectTimeoutMs} ms`);
          err.name = 'TimeoutError';
          req.destroy(err);
        }, this.#connectTimeoutMs);
        socket.once('connect', () => clearTimeout(timer));
        socket.once('close', () => clearTimeout(timer));
      });
      req.end();
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}
