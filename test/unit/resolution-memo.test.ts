/**
 * The FileResolver's memo of answers (per identity and request as asked): a repeated question is
 * answered without the index and without upstream, but never past the first expiry of what the
 * answer rests on: the branch pin (refs TTL), the token's grant (auth TTL), the repo's publicity
 * (auth TTL). Identities never share answers. A real resolver, index and HubClient against the
 * fake hub; time is an injected clock moved by hand, so expiries are reached exactly.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Clock } from '../../src/clock.js';
import { isMirrorError } from '../../src/errors.js';
import { AccessPolicy } from '../../src/hub/access-policy.js';
import { FileResolver } from '../../src/hub/file-resolver.js';
import { RefPins } from '../../src/hub/ref-pins.js';
import type { FileRequest } from '../../src/hub/repo-ref.js';
import { SqliteCacheIndex as CacheIndex } from '../../src/storage/sqlite-cache-index.js';
import { HubClient } from '../../src/upstream/hub-client.js';
import { makeContent } from '../support/content.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';

const REFS_TTL = 60_000;
const AUTH_TTL = 30_000;
const TOKEN = 'hf_memo_granted';
const OTHER = 'hf_memo_other';
let hub: FakeHub;
let seed = 700;

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addKnownToken(TOKEN);
  hub.addKnownToken(OTHER);
});
afterAll(() => hub.stop());

/** Wall and monotonic time, moved only by `advance`. */
class ManualClock implements Clock {
  wall = Date.parse('2026-06-01T00:00:00Z');
  mono = 1_000;
  now = (): number => this.wall;
  monotonic = (): number => this.mono;
  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
}

let dir: string;
let index: CacheIndex;
let client: HubClient;
let clock: ManualClock;
let resolver: FileResolver;
let policy: AccessPolicy;

beforeEach(() => {
  hub.resetCounters();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-memo-'));
  index = CacheIndex.open(path.join(dir, 'index.sqlite'));
  client = new HubClient({
    upstream: hub.url,
    connectTimeoutMs: 5_000,
    metadataTimeoutMs: 8_000,
    headersTimeoutMs: 8_000,
    bodyIdleTimeoutMs: 8_000,
    userAgent: 'hubcache-test',
    allowPrivateRedirects: true,
    retries: 0,
  });
  clock = new ManualClock();
  policy = new AccessPolicy({ hfToken: '', hub: client, authTtlMs: AUTH_TTL, clock });
  resolver = new FileResolver({ index, hub: client, pins: new RefPins(index, REFS_TTL, clock), policy });
});
afterEach(async () => {
  vi.restoreAllMocks();
  await client.close();
  await index.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const request = (id: string, file: string, revision = 'main'): FileRequest => ({ repo: { type: 'model', id }, view: 'resolve', revision, path: file });
/** Upstream requests of any kind to the hub (metadata HEADs, repo info). */
const upstream = (): number => hub.count({ server: 'hub' });
/** Every read the resolver could make of the index. */
function spyOnIndexReads(): () => number {
  const spies = [vi.spyOn(index, 'getRef'), vi.spyOn(index, 'getFile')];
  return () => spies.reduce((n, s) => n + s.mock.calls.length, 0);
}

describe('the resolution memo', () => {
  it('answers a branch question again with no index read and no upstream request, until the pin expires', async () => {
    const id = `org/memo-branch-${seed}`;
    const c1 = hub.addRepo({ id, files: { 'w.safetensors': makeContent(64 * 1024, seed++) } }).commit;
    const anonymous = policy.tokenless;
    const req = request(id, 'w.safetensors');
    expect((await resolver.resolve(req, anonymous)).commit).toBe(c1); // one upstream HEAD, the branch pinned
    const c2 = hub.commit({ id }, { 'w.safetensors': makeContent(64 * 1024, seed++) }).commit;
    const reads = spyOnIndexReads();
    const quiet = async (from: number, to: number): Promise<void> => {
      const before = [upstream(), reads()];
      for (let t = from; t < to; t += (to - from) / 10) {
        clock.mono = t0 + t;
        expect((await resolver.resolve(req, anonymous)).commit).toBe(c1);
      }
      expect([upstream(), reads()]).toEqual(before);
    };
    const t0 = clock.mono;

    // Upstream's answer holds for the grant TTL (shorter than the pin here): nothing is read.
    await quiet(0, AUTH_TTL - 1);
    // Past it, the pin (still fresh) and the index answer, once (and the repo's publicity is
    // asked); that answer then holds until the pin expires.
    clock.mono = t0 + AUTH_TTL;
    expect((await resolver.resolve(req, anonymous)).commit).toBe(c1);
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(1);
    await quiet(AUTH_TTL, REFS_TTL - 1);

    clock.mono = t0 + REFS_TTL; // the pin is REFS_TTL old: the branch is asked again
    expect((await resolver.resolve(req, anonymous)).commit).toBe(c2);
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(2);
  });

  it('keeps a token’s grant for the auth TTL only: a revoked token is refused once it passes; other tokens never share it', async () => {
    const id = `org/memo-gated-${seed}`;
    hub.addRepo({ id, files: { 'w.safetensors': makeContent(64 * 1024, seed++) }, gated: { allowedTokens: [TOKEN] } });
    const granted = policy.client(`Bearer ${TOKEN}`);
    const other = policy.client(`Bearer ${OTHER}`);
    const req = request(id, 'w.safetensors');
    await resolver.resolve(req, granted);
    await expect(resolver.resolve(req, other)).rejects.toSatisfy((e: unknown) => isMirrorError(e) && e.status === 403);

    hub.revoke({ id }, TOKEN);
    const heads = hub.count({ server: 'hub', method: 'HEAD' });
    clock.advance(AUTH_TTL - 1);
    await resolver.resolve(req, granted); // upstream's grant still stands (revocation takes effect within the TTL)
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(heads);
    // The refused token is asked again each time: refusals are never memoized.
    await expect(resolver.resolve(req, other)).rejects.toSatisfy((e: unknown) => isMirrorError(e) && e.status === 403);
    expect(hub.count({ server: 'hub', method: 'HEAD' })).toBe(heads + 1);

    clock.advance(1);
    await expect(resolver.resolve(req, granted)).rejects.toSatisfy((e: unknown) => isMirrorError(e) && e.status === 403);
  });

  it('an answer from the index holds while the repo’s publicity does: once it lapses, a repo gone private is refused', async () => {
    const id = `org/memo-public-${seed}`;
    const commit = hub.addRepo({ id, files: { 'config.json': Buffer.from('{"a": 1}\n') } }).commit;
    const anonymous = policy.tokenless;
    const req = request(id, 'config.json', commit);
    await resolver.resolve(req, anonymous); // asked upstream, recorded as public
    // A new process's resolver over the same index: answered from the index (publicity asked once).
    const fresh = new FileResolver({ index, hub: client, pins: new RefPins(index, REFS_TTL, clock), policy: new AccessPolicy({ hfToken: '', hub: client, authTtlMs: AUTH_TTL, clock }) });
    const heads = hub.count({ server: 'hub', method: 'HEAD' });
    const fromIndex = await fresh.resolve(req, anonymous);
    expect(fromIndex.source).toBe('index');
    hub.deleteRepo({ id });
    const before = upstream();
    const reads = spyOnIndexReads();
    clock.advance(AUTH_TTL - 1);
    expect((await fresh.resolve(req, anonymous)).commit).toBe(commit);
    expect([upstream(), reads(), hub.count({ server: 'hub', method: 'HEAD' })]).toEqual([before, 0, heads]);

    clock.advance(1); // publicity is asked again: the repo is gone, the index no longer answers
    await expect(fresh.resolve(req, anonymous)).rejects.toSatisfy((e: unknown) => isMirrorError(e) && e.status >= 400 && e.status < 500);
  });
});
