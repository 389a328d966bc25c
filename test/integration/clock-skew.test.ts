/**
 * T31 / F10: the wall clock steps a day back or forward (NTP, a resumed VM, an operator fixing the
 * date). Blobs have no expiry; the TTLs (branch pins, grants to tokens) are measured on the
 * monotonic clock, so revocation and branch moves are still honoured within their TTLs, a fresh pin
 * is not dropped early, and a pin stored while the clock was ahead is not trusted for a day.
 *
 * Only `Date` is faked (vitest fake timers with `toFake: ['Date']`, advancing with real time):
 * timers, `performance.now()` and the upstream's clock are left alone, like a real clock step.
 * Time passing (past a TTL) is a step of the mirror's injected clock (both its wall and its
 * monotonic time move, as they would), not a sleep.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { TestClock } from '../support/test-clock.js';

const DAY = 86_400_000;
const TTL_S = 60;
const TOKEN = 'hf_valid_skew_token';
const MiB = 1024 * 1024;
const repo = { id: 'org/skew' };
const gated = { id: 'org/skew-gated' };
let hub: FakeHub;
let mirror: TestMirror;
let seed = 9100;
const clock = new TestClock();

beforeAll(async () => {
  hub = await startFakeHub();
  hub.addRepo({ ...repo, files: { 'model.safetensors': makeContent(2 * MiB, seed++), 'config.json': Buffer.from('{"v": 1}\n') } });
  hub.addRepo({ ...gated, files: { 'w.safetensors': makeContent(MiB, seed++) }, gated: { allowedTokens: [TOKEN] } });
  mirror = await startMirror(hub.url, { refsTtlSeconds: TTL_S, authTtlSeconds: TTL_S }, { clock });
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
});
// Each test starts from the true time and makes its own steps.
beforeEach(() => {
  vi.setSystemTime(vi.getRealSystemTime());
});
afterAll(async () => {
  vi.useRealTimers();
  await mirror?.destroy();
  await hub?.stop();
});

const pastTtl = () => clock.advance(TTL_S * 1000 + 1);
const modelUrl = () => `${mirror.url}/${repo.id}/resolve/main/model.safetensors`;
const gatedUrl = () => `${mirror.url}/${gated.id}/resolve/main/w.safetensors`;
const bearer = { authorization: `Bearer ${TOKEN}` };
/** Moves `main` to a new commit whose model differs; returns the commit and the model's sha256. */
function moveMain(): { commit: string; sha256: string } {
  const { commit } = hub.commit(repo, { 'model.safetensors': makeContent(2 * MiB, seed++) });
  return { commit, sha256: hub.fileInfo(repo, 'model.safetensors').sha256 };
}

describe('T31: wall-clock steps', () => {
  it('a day back: blobs still served; revocation and a moved branch still take effect within their TTLs', async () => {
    const c1 = hub.head(repo);
    const first = await download(modelUrl(), { keepBody: false });
    expect([first.status, header(first, 'x-repo-commit')]).toEqual([200, c1]);
    expect((await download(gatedUrl(), { headers: bearer, keepBody: false })).status).toBe(200);

    vi.setSystemTime(Date.now() - DAY);
    const hit = await download(modelUrl(), { keepBody: false });
    expect([hit.status, header(hit, 'x-mirror-cache'), header(hit, 'x-repo-commit')]).toEqual([200, 'hit', c1]);
    expect(hit.sha256).toBe(first.sha256);
    expect((await download(gatedUrl(), { headers: bearer, keepBody: false })).status).toBe(200);

    hub.revoke(gated, TOKEN);
    const c2 = moveMain();
    pastTtl();
    // The grant and the pin were made "a day in the future": by wall-clock arithmetic both would
    // now live for a day more.
    const denied = await download(gatedUrl(), { headers: bearer });
    expect([denied.status, header(denied, 'x-error-code')]).toEqual([403, 'GatedRepo']);
    expect(denied.body.length).toBeLessThan(1000);
    const moved = await download(modelUrl(), { keepBody: false });
    expect([moved.status, header(moved, 'x-repo-commit')]).toEqual([200, c2.commit]);
    expect(moved.sha256).toBe(c2.sha256);
    const revision = await download(`${mirror.url}/api/models/${repo.id}/revision/main`);
    expect((JSON.parse(revision.body.toString()) as { sha: string }).sha).toBe(c2.commit);
  });

  it('a day forward: a fresh pin stays fresh (the snapshot does not change under a client), then expires on time', async () => {
    const pinned = hub.head(repo);
    expect(header(await download(modelUrl(), { method: 'HEAD' }), 'x-repo-commit')).toBe(pinned);
    vi.setSystemTime(Date.now() + DAY);
    const c3 = moveMain();
    // By wall-clock arithmetic the pin would be a day old: still fresh by the monotonic clock.
    expect(header(await download(modelUrl(), { method: 'HEAD' }), 'x-repo-commit')).toBe(pinned);
    pastTtl();
    const after = await download(modelUrl(), { keepBody: false });
    expect([header(after, 'x-repo-commit'), after.sha256]).toEqual([c3.commit, c3.sha256]);
  });

  it('a pin stored while the clock was a day ahead is stale for the next process once the clock is corrected', async () => {
    vi.setSystemTime(Date.now() + DAY); // a day ahead
    pastTtl(); // whatever pin this process holds has expired: the next answer pins (and stores) anew
    const stored = hub.head(repo);
    const fetched = await download(modelUrl(), { keepBody: false });
    expect([fetched.status, header(fetched, 'x-repo-commit')]).toEqual([200, stored]);
    await mirror.close();
    vi.setSystemTime(Date.now() - DAY); // corrected
    mirror = await startMirror(hub.url, { dataDir: mirror.dataDir, refsTtlSeconds: TTL_S, authTtlSeconds: TTL_S }, { clock });
    const c4 = moveMain();
    // checked_at is a day in the future: a negative age is not "fresh".
    const answer = await download(modelUrl(), { keepBody: false });
    expect([header(answer, 'x-repo-commit'), answer.sha256]).toEqual([c4.commit, c4.sha256]);
    // Cached blobs of earlier commits are still served by commit.
    const old = await download(`${mirror.url}/${repo.id}/resolve/${stored}/model.safetensors`, { keepBody: false });
    expect([old.status, header(old, 'x-mirror-cache'), header(old, 'x-repo-commit')]).toEqual([200, 'hit', stored]);
  });
});
