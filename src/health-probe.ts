/**
 * `hubcache health`: asks a running mirror's `GET /healthz` whether it is healthy, for container
 * health checks and monitoring scripts. Which server: the one serving the configured data
 * directory, at the address it recorded when it started listening (so `serve --port 9000` or
 * port 0 is found without repeating the flag); with no record, or when `--host`/`--port` are given
 * to `health` itself, the configured host and port (a wildcard address is probed on loopback).
 */
import { Agent, request } from 'undici';
import type { Config } from './config/config.js';
import { BlobLayout } from './storage/blob-layout.js';
import { readListeningRecord } from './storage/listening-record.js';

export interface HealthTarget {
  url: string;
  /** Where the address came from, for the message. */
  from: 'listening record' | 'configuration';
}

/** The server to probe for `config`; `explicitAddress`: host or port were given on the command line. */
export function healthTarget(config: Config, explicitAddress: boolean): HealthTarget {
  const record = explicitAddress ? undefined : readListeningRecord(new BlobLayout(config.dataDir).listeningPath);
  if (record) return { url: record.url, from: 'listening record' };
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host;
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${config.port}`, from: 'configuration' };
}

export type HealthResult = { healthy: true; detail: string } | { healthy: false; detail: string };

/**
 * One GET of `<url>/healthz`, bounded by `timeoutMs` (below the container's health-check timeout).
 * Its own connection pool, never an outbound proxy: the server is local.
 */
export async function probeHealth(url: string, timeoutMs: number): Promise<HealthResult> {
  const target = `${url}/healthz`;
  const dispatcher = new Agent({ connectTimeout: timeoutMs, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
  try {
    const res = await request(target, { dispatcher, signal: AbortSignal.timeout(timeoutMs), headers: { 'user-agent': 'hubcache-health' } });
    const body = (await res.body.text()).trim().slice(0, 300);
    if (res.statusCode === 200) return { healthy: true, detail: `${target}: ${body}` };
    return { healthy: false, detail: `${target} answered ${res.statusCode}: ${body}` };
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
    const reason = e.name === 'TimeoutError' || e.name === 'AbortError' ? `no answer within ${timeoutMs} ms` : (e.cause?.message ?? e.message) || (e.code ?? 'request failed');
    return { healthy: false, detail: `no answer from ${target} (${reason})` };
  } finally {
    await dispatcher.close();
  }
}
