/**
 * T06: tokens and signed CDN URLs never leave the request they came with. A canary token and the
 * fake CDN's signed-URL signatures are planted in a realistic session (gated downloads, errors,
 * ranges, HEADs, a revoked grant); afterwards they must appear nowhere: not in the logs, the SQLite
 * files, any file of the data dir, or any response a client received.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { TestClock } from '../support/test-clock.js';

const CANARY = `hf_CANARY${randomBytes(12).toString('hex')}`;
const CANARY_REVOKED = `hf_CANARYREVOKED${randomBytes(8).toString('hex')}`;
let hub: FakeHub;
let mirror: TestMirror;
const responses: Download[] = [];

function allFiles(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ id: 'org/gated', files: { 'README.md': Buffer.from('# gated\n'), 'weights.safetensors': makeContent(2 * 1024 * 1024, 1), 'config.json': Buffer.from('{"gated": true}\n') }, gated: { allowedTokens: [CANARY, CANARY_REVOKED] } });
  hub.addRepo({ id: 'org/private', files: { 'config.json': Buffer.from('{"private": true}\n') }, private: { allowedTokens: [CANARY] } });
  hub.addRepo({ id: 'org/public', files: { 'model.safetensors': makeContent(1024 * 1024, 2) } });
  const clock = new TestClock();
  mirror = await startMirror(hub.url, { logLevel: 'trace', authTtlSeconds: 60 }, { clock });
  const auth = { authorization: `Bearer ${CANARY}` };
  const base = mirror.url;
  const calls: Array<[string, Parameters<typeof download>[1]]> = [
    [`${base}/org/gated/resolve/main/weights.safetensors`, { headers: auth }],
    [`${base}/org/gated/resolve/main/weights.safetensors`, { headers: { ...auth, range: 'bytes=0-99' } }],
    [`${base}/org/gated/resolve/main/weights.safetensors`, { method: 'HEAD', headers: auth }],
    [`${base}/org/gated/resolve/main/config.json`, { headers: auth }],
    [`${base}/org/gated/resolve/main/weights.safetensors`, {}],
    [`${base}/org/gated/resolve/main/missing.bin`, { headers: auth }],
    [`${base}/org/private/resolve/main/config.json`, { headers: auth }],
    [`${base}/org/private/resolve/main/config.json`, {}],
    [`${base}/org/public/resolve/main/model.safetensors`, { headers: auth }],
    [`${base}/org/public/resolve/main/model.safetensors`, { headers: { authorization: `Bearer ${CANARY}x` } }],
    [`${base}/org/gated/resolve/main/weights.safetensors`, { headers: { authorization: `Bearer ${CANARY_REVOKED}` } }],
  ];
  for (const [u, o] of calls) responses.push(await download(u, o));
  hub.revoke({ id: 'org/gated' }, CANARY_REVOKED);
  clock.advance(60_000 + 1); // past the auth TTL: the grant is asked again, and refused
  responses.push(await download(`${base}/org/gated/resolve/main/weights.safetensors`, { headers: { authorization: `Bearer ${CANARY_REVOKED}` } }));
  await mirror.close(); // flush everything to disk
});
afterAll(async () => {
  await mirror?.destroy();
  await hub?.stop();
});

describe('secrets', () => {
  it('the session really used the canaries and signed URLs', () => {
    expect(responses.filter((r) => r.status === 200).length).toBeGreaterThan(3);
    expect(hub.requests.some((r) => r.headers.authorization === `Bearer ${CANARY}`)).toBe(true);
    expect(hub.requests.filter((r) => r.server === 'cdn' && r.path.includes('Signature=')).length).toBeGreaterThan(0);
    expect(responses.at(-1)?.status).toBe(403); // revocation honoured
  });

  it('appear in no log line, data file, SQLite page or response', () => {
    const signatures = hub.requests
      .filter((r) => r.server === 'cdn')
      .map((r) => /Signature=([^&]+)/.exec(r.path)?.[1])
      .filter((s): s is string => s !== undefined);
    expect(signatures.length).toBeGreaterThan(0);
    const needles = [CANARY, CANARY_REVOKED, 'hf_CANARY', ...signatures, 'X-Amz-Signature'];
    const haystacks: Array<[string, string]> = [['logs', mirror.logs.join('\n')]];
    for (const f of allFiles(mirror.dataDir)) haystacks.push([f, fs.readFileSync(f).toString('latin1')]);
    responses.forEach((r, i) => haystacks.push([`response ${i}`, JSON.stringify(r.headers) + r.body.toString('latin1')]));
    expect(haystacks.length).toBeGreaterThan(5);
    for (const [where, text] of haystacks) for (const n of needles) expect(text.includes(n), `${n.slice(0, 12)}… in ${where}`).toBe(false);
  });
});
