/**
 * The service token (`hfToken`) is the mirror's own identity, shared by every client that sends no
 * token: what upstream gave it is recorded for it (rows, pins, API answers) and served back to
 * tokenless clients from the index, also when upstream is down or with `offline: true`. What only
 * it could read is never served to anyone else (a client with another token, anonymous callers
 * once hfToken is removed, another service token); public content is served offline to everyone,
 * a client with its own token included.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const SERVICE = 'hf_valid_service_token';
const OTHER = 'hf_valid_other_user';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
let hub: FakeHub;
let seq = 0;

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addKnownToken(OTHER);
});
afterAll(async () => {
  await hub?.stop();
});

interface Repos {
  pub: string;
  gated: string;
  priv: string;
  pubCommit: string;
  gatedCommit: string;
  privCommit: string;
  config: Buffer;
  weights: Buffer;
  secret: Buffer;
}

/** A public, a gated (granted to the service token) and a private (service only) repo, fresh per test. */
function addRepos(): Repos {
  const n = ++seq;
  const config = Buffer.from(`{"public": ${n}}\n`);
  const weights = makeContent(300_000, 700 + n);
  const secret = makeContent(200_000, 800 + n);
  const pub = `org/svc-public-${n}`;
  const gated = `org/svc-gated-${n}`;
  const priv = `org/svc-private-${n}`;
  const pubCommit = hub.addRepo({ id: pub, files: { 'config.json': config, 'model.safetensors': weights }, xet: false }).commit;
  const gatedCommit = hub.addRepo({ id: gated, files: { 'w.safetensors': secret, 'README.md': Buffer.from('# gated\n') }, gated: { allowedTokens: [SERVICE] }, xet: false }).commit;
  const privCommit = hub.addRepo({ id: priv, files: { 'secret.json': Buffer.from(`{"secret": ${n}}\n`) }, private: { allowedTokens: [SERVICE] }, xet: false }).commit;
  return { pub, gated, priv, pubCommit, gatedCommit, privCommit, config, weights, secret };
}

/** What a tokenless client asks while upstream is up: files by branch, repo info, tree pages. */
function questions(r: Repos): Array<{ path: string; sha256?: string }> {
  return [
    { path: `/${r.pub}/resolve/main/config.json`, sha256: sha256Hex(r.config) },
    { path: `/${r.pub}/resolve/main/model.safetensors`, sha256: sha256Hex(r.weights) },
    { path: `/${r.gated}/resolve/main/w.safetensors`, sha256: sha256Hex(r.secret) },
    { path: `/api/models/${r.pub}/revision/main` },
    { path: `/api/models/${r.pub}/tree/${r.pubCommit}?recursive=true` },
    { path: `/api/models/${r.priv}/revision/main` },
    { path: `/api/models/${r.priv}/tree/${r.privCommit}?recursive=true` },
  ];
}

async function askAll(m: TestMirror, r: Repos, headers: Record<string, string> = {}): Promise<Download[]> {
  const out: Download[] = [];
  for (const q of questions(r)) out.push(await download(`${m.url}${q.path}`, { headers }));
  return out;
}

function expectAllServed(r: Repos, answers: Download[], online?: Download[]): void {
  questions(r).forEach((q, i) => {
    const d = answers[i]!;
    expect([q.path, d.status]).toEqual([q.path, 200]);
    if (q.sha256) expect([q.path, d.sha256]).toEqual([q.path, q.sha256]);
    else if (online) expect([q.path, d.body.toString()]).toEqual([q.path, online[i]!.body.toString()]);
  });
}

describe('hfToken: the service identity', () => {
  it('files and API answers fetched while upstream is up are served to tokenless clients when upstream is down and with offline: true', async () => {
    const r = addRepos();
    // refs TTL 0: every branch question goes upstream, so the answers below really are the fallback.
    const m = await startMirror(hub.url, { hfToken: SERVICE, refsTtlSeconds: 0, metadataTimeoutSeconds: 1 });
    let off: TestMirror | undefined;
    try {
      const online = await askAll(m, r);
      expectAllServed(r, online);

      await hub.stop();
      try {
        const down = await askAll(m, r);
        expectAllServed(r, down, online);
        expect(header(down[3]!, 'x-mirror-cache')).toBe('stale'); // revision/main: the last known commit
      } finally {
        await hub.restart();
      }

      await m.close();
      // Recorded for the service identity, yet the token itself is in no file of the data dir.
      for (const e of fs.readdirSync(m.dataDir, { recursive: true, withFileTypes: true })) {
        if (e.isFile()) expect(fs.readFileSync(path.join(e.parentPath, e.name)).includes(SERVICE), e.name).toBe(false);
      }
      off = await startMirror(hub.url, { dataDir: m.dataDir, hfToken: SERVICE, offline: true });
      const before = hub.requests.length;
      expectAllServed(r, await askAll(off, r), online);
      expect(hub.requests.length).toBe(before);
    } finally {
      await off?.close();
      await m.destroy();
    }
  });

  it('offline, content only the service token could read is served to tokenless clients but not to a client with another token; public content is served to that client', async () => {
    const r = addRepos();
    const m = await startMirror(hub.url, { hfToken: SERVICE });
    let off: TestMirror | undefined;
    try {
      const online = await askAll(m, r);
      expectAllServed(r, online);
      await m.close();
      off = await startMirror(hub.url, { dataDir: m.dataDir, hfToken: SERVICE, offline: true });

      // Tokenless clients are the service identity: everything it was given.
      expectAllServed(r, await askAll(off, r), online);

      // A client with its own token: public content yes, service-only content fails closed.
      const theirs = await askAll(off, r, bearer(OTHER));
      questions(r).forEach((q, i) => {
        const d = theirs[i]!;
        const serviceOnly = q.path.includes(r.gated) || q.path.includes(r.priv);
        expect([q.path, d.status]).toEqual([q.path, serviceOnly ? 503 : 200]);
        if (serviceOnly) expect(d.body.includes(r.secret.subarray(0, 64))).toBe(false);
        if (serviceOnly) expect(d.body.toString()).not.toMatch(/secret/);
        else if (q.sha256) expect(d.sha256).toBe(q.sha256);
      });
    } finally {
      await off?.close();
      await m.destroy();
    }
  });

  it("tokenless clients' answers are recorded: a later request is answered from the index, with no upstream call", async () => {
    const r = addRepos();
    const m = await startMirror(hub.url, { hfToken: SERVICE });
    try {
      expect((await download(`${m.url}/${r.pub}/resolve/main/config.json`)).status).toBe(200);
      // The branch was pinned: the next file of the snapshot is asked about at the pinned commit.
      hub.resetCounters();
      expect((await download(`${m.url}/${r.pub}/resolve/main/model.safetensors`, { method: 'HEAD' })).status).toBe(200);
      expect(hub.requests.filter((q) => q.method === 'HEAD').map((q) => q.path)).toEqual([`/${r.pub}/resolve/${r.pubCommit}/model.safetensors`]);

      const info = `${m.url}/api/models/${r.pub}/revision/main`;
      const tree = `${m.url}/api/models/${r.pub}/tree/${r.pubCommit}?recursive=true`;
      const first = [await download(info), await download(tree)];
      expect(first.map((d) => d.status)).toEqual([200, 200]);

      hub.resetCounters();
      const byCommit = await download(`${m.url}/${r.pub}/resolve/${r.pubCommit}/config.json`);
      expect([byCommit.status, byCommit.body.equals(r.config)]).toEqual([200, true]);
      const again = [await download(info), await download(tree)];
      expect(again.map((d) => [d.status, header(d, 'x-mirror-cache')])).toEqual([
        [200, 'hit'],
        [200, 'hit'],
      ]);
      expect(again.map((d) => d.body.toString())).toEqual(first.map((d) => d.body.toString()));
      expect(hub.requests).toEqual([]);
    } finally {
      await m.destroy();
    }
  });

  it('removing or replacing hfToken exposes nothing only the service token could read; public content stays served', async () => {
    const r = addRepos();
    const m = await startMirror(hub.url, { hfToken: SERVICE });
    const later: TestMirror[] = [];
    const gatedFile = `/${r.gated}/resolve/${r.gatedCommit}/w.safetensors`;
    const privTree = `/api/models/${r.priv}/tree/${r.privCommit}?recursive=true`;
    const privInfo = `/api/models/${r.priv}/revision/${r.privCommit}`;
    const pubFile = `/${r.pub}/resolve/${r.pubCommit}/config.json`;
    try {
      for (const p of [gatedFile, privTree, privInfo, pubFile]) expect([p, (await download(`${m.url}${p}`)).status]).toEqual([p, 200]);
      await m.close();

      // Same data dir, no hfToken: anonymous callers get upstream's refusal, never the cache.
      const anon = await startMirror(hub.url, { dataDir: m.dataDir });
      later.push(anon);
      const refused = await download(`${anon.url}${gatedFile}`);
      expect([refused.status, header(refused, 'x-error-code')]).toEqual([401, 'GatedRepo']);
      expect(refused.body.includes(r.secret.subarray(0, 64))).toBe(false);
      for (const p of [privTree, privInfo]) {
        const d = await download(`${anon.url}${p}`);
        expect([p, d.status]).toEqual([p, 401]);
        expect(d.body.toString()).not.toMatch(/secret/);
      }
      expect((await download(`${anon.url}${pubFile}`)).body.equals(r.config)).toBe(true);
      await anon.close();

      // Nor offline, without hfToken or with another token as hfToken.
      for (const overrides of [{}, { hfToken: OTHER }]) {
        const off = await startMirror(hub.url, { dataDir: m.dataDir, offline: true, ...overrides });
        later.push(off);
        for (const p of [gatedFile, privTree, privInfo]) {
          const d = await download(`${off.url}${p}`);
          expect([p, d.status]).toEqual([p, 503]);
          expect(d.body.includes(r.secret.subarray(0, 64))).toBe(false);
          expect(d.body.toString()).not.toMatch(/secret/);
        }
        const pub = await download(`${off.url}${pubFile}`);
        expect([pub.status, pub.body.equals(r.config)]).toEqual([200, true]);
        await off.close();
      }
    } finally {
      for (const x of later) await x.close();
      await m.destroy();
    }
  });
});
