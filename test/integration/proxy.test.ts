/**
 * Outbound proxy: every upstream connection (HEADs, API calls, file GETs, the CDN redirect hop)
 * goes through the configured forward proxy, NO_PROXY is judged per target host, the proxy is
 * never shown a client's token, and the SSRF guard still holds when the proxy resolves names.
 *
 * The proxies connect out from their own loopback addresses (tinyproxy 127.0.0.3, the recording
 * relay 127.0.0.4), so the fake hub's `remoteAddress` tells a proxied request from a direct one
 * (127.0.0.1).
 */
import { createServer, type Server } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RecordedRequest } from '../support/fake-hub.js';
import { startRecordingProxy, startTinyproxy, type RecordingProxy, type Tinyproxy } from '../support/forward-proxy.js';
import { startMirrorProcess } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const TOKEN = 'hf_proxyCanaryToken0123456789abcdef';
let hub: FakeHub;
let tinyproxy: Tinyproxy;
let relay: RecordingProxy;
let seed = 900;
const mirrors: TestMirror[] = [];

beforeAll(async () => {
  hub = await startFakeHub();
  const ports = [new URL(hub.url).port, new URL(hub.cdnUrl).port].map(Number);
  tinyproxy = await startTinyproxy({ connectPorts: ports });
  relay = await startRecordingProxy();
});
afterAll(async () => {
  await Promise.allSettled(mirrors.map((m) => m.destroy()));
  await Promise.allSettled([tinyproxy?.stop(), relay?.stop()]);
  await hub?.stop();
});

async function mirrorWith(proxy: { httpProxy?: string; httpsProxy?: string; noProxy?: string }, overrides: Parameters<typeof startMirror>[1] = {}): Promise<TestMirror> {
  const m = await startMirror(hub.url, overrides, { proxy });
  mirrors.push(m);
  return m;
}

/** A fresh repo with one LFS file (served through the CDN redirect) and one regular file. */
function repo() {
  const id = `org/proxied-${seed}`;
  const lfs = makeContent(256 * 1024, seed++);
  const small = Buffer.from(`{"model_type": "proxied-${seed}"}\n`);
  hub.addRepo({ id, files: { 'model.safetensors': lfs, 'config.json': small } });
  return { id, lfs: hub.fileInfo({ id }, 'model.safetensors'), small: hub.fileInfo({ id }, 'config.json') };
}

function requestsOf(id: string, since: number): RecordedRequest[] {
  return hub.requests.filter((r) => r.seq >= since && (decodeURIComponent(r.path).includes(id) || r.server === 'cdn'));
}

const nextSeq = () => (hub.requests.at(-1)?.seq ?? -1) + 1;
const hubPort = () => new URL(hub.url).port;
const cdnPort = () => new URL(hub.cdnUrl).port;

describe('outbound proxy', () => {
  it('sends the HEAD, API, file GETs and the CDN hop through tinyproxy, in CONNECT tunnels only; the bytes are right', async () => {
    const m = await mirrorWith({ httpProxy: tinyproxy.url });
    const r = repo();
    const since = nextSeq();
    const linesBefore = tinyproxy.requestLines().length;
    const auth = { authorization: `Bearer ${TOKEN}` };

    const lfs = await download(`${m.url}/${r.id}/resolve/main/model.safetensors`, { headers: auth });
    expect([lfs.status, lfs.complete, lfs.sha256]).toEqual([200, true, r.lfs.sha256]);
    const small = await download(`${m.url}/${r.id}/resolve/main/config.json`, { headers: auth });
    expect([small.status, small.body.equals(r.small.content)]).toEqual([200, true]);
    const api = await download(`${m.url}/api/models/${r.id}/revision/main`, { headers: auth });
    expect(api.status).toBe(200);

    const seen = requestsOf(r.id, since);
    const kinds = seen.map((q) => `${q.server} ${q.method}`);
    expect(kinds).toEqual(expect.arrayContaining(['hub HEAD', 'hub GET', 'cdn GET']));
    // Every request the hub and the CDN saw came over a connection tinyproxy opened.
    expect(seen.map((q) => q.remoteAddress)).toEqual(seen.map(() => tinyproxy.bindAddress));
    // The token still reached the Hub (inside the tunnel), never the CDN.
    expect(seen.filter((q) => q.server === 'hub' && q.hasAuthorization).length).toBeGreaterThan(0);
    expect(seen.filter((q) => q.server === 'cdn' && q.hasAuthorization)).toEqual([]);

    const lines = tinyproxy.requestLines().slice(linesBefore);
    expect(lines.filter((l) => l === `CONNECT 127.0.0.1:${hubPort()} HTTP/1.1`).length).toBeGreaterThan(0);
    expect(lines.filter((l) => l === `CONNECT 127.0.0.1:${cdnPort()} HTTP/1.1`).length).toBeGreaterThan(0);
    // No absolute-form request (`GET http://…`, which would hand the proxy our headers).
    expect(lines.filter((l) => !l.startsWith('CONNECT '))).toEqual([]);
  });

  it('NO_PROXY for the CDN host (per target, with its port) sends only the CDN hop directly', async () => {
    const m = await mirrorWith({ httpProxy: tinyproxy.url, noProxy: `example.invalid, 127.0.0.1:${cdnPort()}` });
    const r = repo();
    const since = nextSeq();
    const linesBefore = tinyproxy.requestLines().length;

    const d = await download(`${m.url}/${r.id}/resolve/main/model.safetensors`);
    expect([d.status, d.sha256]).toEqual([200, r.lfs.sha256]);

    const seen = requestsOf(r.id, since);
    const from = (server: string) => [...new Set(seen.filter((q) => q.server === server).map((q) => q.remoteAddress))];
    expect(from('hub')).toEqual([tinyproxy.bindAddress]);
    expect(from('cdn')).toEqual(['127.0.0.1']);
    const lines = tinyproxy.requestLines().slice(linesBefore);
    expect(lines.filter((l) => l.includes(`:${cdnPort()} `))).toEqual([]);
    expect(lines.filter((l) => l.includes(`:${hubPort()} `)).length).toBeGreaterThan(0);
  });

  it('never shows the proxy a client token: only CONNECT heads with the proxy URL’s own credentials (recording proxy)', async () => {
    const m = await mirrorWith({ httpProxy: relay.url.replace('//', '//proxy-user:p%40ss-word@') });
    const headsBefore = relay.heads.length;
    const since = nextSeq();
    const repos = [repo(), repo(), repo()];
    const got: Array<[number, string]> = [];
    for (const r of repos) {
      const d = await download(`${m.url}/${r.id}/resolve/main/model.safetensors`, { headers: { authorization: `Bearer ${TOKEN}` } });
      got.push([d.status, d.sha256]);
    }

    // What the proxy itself was told, checked first: it is the point of this test.
    const heads = relay.heads.slice(headsBefore);
    expect(heads.length).toBeGreaterThan(0);
    const expectedAuth = `Basic ${Buffer.from('proxy-user:p@ss-word').toString('base64')}`;
    for (const h of heads) {
      expect(h.raw).not.toContain(TOKEN);
      expect(h.raw).not.toMatch(/^authorization:/im);
      expect(h.requestLine).toMatch(/^CONNECT 127\.0\.0\.1:\d+ HTTP\/1\.1$/);
      expect(h.raw).toMatch(new RegExp(`^proxy-authorization: ${expectedAuth.replace(/[+/=]/g, '\\$&')}\\r$`, 'im'));
    }
    expect(got).toEqual(repos.map((r) => [200, r.lfs.sha256]));
    // The Hub did get the token, through the tunnel, on HEAD and GET.
    const hubSeen = hub.requests.filter((q) => q.seq >= since && q.server === 'hub');
    expect(hubSeen.filter((q) => q.hasAuthorization).map((q) => q.method)).toEqual(expect.arrayContaining(['HEAD', 'GET']));
    expect(new Set(hub.requests.filter((q) => q.seq >= since).map((q) => q.remoteAddress))).toEqual(new Set([relay.bindAddress]));
    // HEADs keep their tunnel alive: three files' HEADs, one tunnel opened by a HEAD.
    expect(hubSeen.filter((q) => q.method === 'HEAD').length).toBe(3);
    expect(heads.filter((h) => h.firstTunnelLine?.startsWith('HEAD ')).length).toBe(1);
    expect(heads.filter((h) => h.requestLine.includes(`:${cdnPort()} `)).length).toBeGreaterThan(0);
  });

  describe('SSRF guard behind a proxy (allowPrivateRedirects: false)', () => {
    let canary: Server;
    let canaryPort: number;
    let connections = 0;

    beforeAll(async () => {
      canary = createServer((_req, res) => res.end('canary'));
      canary.on('connection', (s: Socket) => {
        connections++;
        s.destroy();
      });
      await new Promise<void>((resolve) => canary.listen({ port: 0, host: '::', ipv6Only: false }, resolve));
      canaryPort = (canary.address() as AddressInfo).port;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => canary.close(() => resolve()));
    });

    it('refuses a private literal and a name resolving to loopback before asking the proxy', async () => {
      // The relay would connect anywhere: only the mirror's own checks stand in the way.
      const m = await mirrorWith({ httpProxy: relay.url }, { allowPrivateRedirects: false, allowedRedirectHosts: ['127.0.0.2', 'localhost', '[::ffff:7f00:2]'] });
      const cases: Array<[string, RegExp]> = [
        [`http://127.0.0.2:${canaryPort}/x`, /127\.0\.0\.2 is not a public address \(loopback/],
        [`http://[::ffff:127.0.0.2]:${canaryPort}/x`, /not a public address \(loopback/],
        [`http://localhost:${canaryPort}/x`, /localhost resolves to (127\.0\.0\.1|::1), not a public address \(loopback/],
      ];
      const headsBefore = relay.heads.length;
      for (const [location, message] of cases) {
        const r = repo();
        const fault = hub.setFault({ server: 'hub', method: 'GET', pathIncludes: `/${r.id}/resolve/` }, { kind: 'redirect', location });
        try {
          const d = await download(`${m.url}/${r.id}/resolve/main/model.safetensors`);
          expect([location, d.status, header(d, 'x-error-code')]).toEqual([location, 502, 'UpstreamError']);
          expect(header(d, 'x-error-message')).toMatch(message);
        } finally {
          fault.remove();
        }
      }
      // The upstream itself went through the proxy; the canary was never asked for, nor reached.
      const heads = relay.heads.slice(headsBefore);
      expect(heads.filter((h) => h.requestLine.includes(`:${hubPort()} `)).length).toBeGreaterThan(0);
      expect(heads.filter((h) => h.requestLine.includes(`:${canaryPort} `))).toEqual([]);
      expect(connections).toBe(0);
    });
  });

  it('bounds a proxy that accepts connections and never answers (504, not a hang)', async () => {
    const silent = net.createServer();
    const held = new Set<Socket>();
    silent.on('connection', (s: Socket) => {
      held.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const m = await mirrorWith({ httpProxy: `http://127.0.0.1:${(silent.address() as AddressInfo).port}` }, { connectTimeoutSeconds: 0.5, metadataTimeoutSeconds: 5 });
      const r = repo();
      const d = await download(`${m.url}/${r.id}/resolve/main/config.json`);
      expect([d.status, header(d, 'x-error-code')]).toEqual([504, 'UpstreamTimeout']);
      const api = await download(`${m.url}/api/models/${r.id}/revision/main`);
      expect([api.status, header(api, 'x-error-code')]).toEqual([504, 'UpstreamTimeout']);
      expect(held.size).toBeGreaterThan(0);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('hubcache serve takes HTTP_PROXY / NO_PROXY from its environment and logs the proxy without its password', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-proxy-'));
    const password = 'pr0xy-s3cret-passw0rd';
    const proxyUrl = relay.url.replace('//', `//ops:${password}@`);
    const child = await startMirrorProcess(hub.url, dataDir, { http_proxy: proxyUrl, NO_PROXY: 'example.invalid' });
    try {
      const r = repo();
      const since = nextSeq();
      const d = await download(`${child.url}/${r.id}/resolve/main/model.safetensors`);
      expect([d.status, d.sha256]).toEqual([200, r.lfs.sha256]);
      const seen = hub.requests.filter((q) => q.seq >= since);
      expect(seen.length).toBeGreaterThan(0);
      expect(new Set(seen.map((q) => q.remoteAddress))).toEqual(new Set([relay.bindAddress]));
      const line = child.output.find((l) => l.includes('outbound proxy'));
      expect(line).toContain(`http://127.0.0.1:${relay.port} (with credentials)`);
      expect(line).toContain('example.invalid');
      expect(child.output.filter((l) => l.includes(password) || l.includes('ops:'))).toEqual([]);
    } finally {
      await child.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('hubcache serve exits 2 on a proxy URL it cannot use', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-proxy-'));
    try {
      await expect(startMirrorProcess(hub.url, dataDir, { HTTPS_PROXY: 'socks5://127.0.0.1:1080', HTTP_PROXY: 'http://proxy.example/some/path' })).rejects.toThrow(/exited \(2\)[\s\S]*HTTP_PROXY: a proxy URL has no path[\s\S]*HTTPS_PROXY: socks5: proxies are not supported/);
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
