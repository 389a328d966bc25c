/**
 * The dashboard (`/_/`) in a real browser: Chromium opens the page, is asked for the metrics
 * token, and then shows a download in progress whose progress bar moves while the download runs,
 * and the hit ratio once a second request was served from the cache.
 *
 * "Moves" is shown by two different values, not by timing: the fake CDN holds the body at two
 * barriers (1 MiB, then 2 MiB), and the page must show each offset in turn before the next one
 * is released.
 *
 * The jobs card: asked for the admin token (a wrong one is refused), it starts a prefetch from
 * its form and shows the job until it is done; upstream is asked for exactly the files the globs
 * name, once each. On an address without the operator API it says so.
 *
 * Needs Chromium (Debian's /usr/bin/chromium, or CHROMIUM_PATH); skipped with a message without
 * it. With DASHBOARD_SCREENSHOT=<file.png> it also saves a screenshot of the page there (the one
 * in docs/ was made so).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { within } from '../support/wait-for.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Under CI (which installs Debian's chromium) a missing browser fails the test instead of hiding it.
const haveChromium = fs.existsSync(CHROMIUM) || process.env.CI === 'true';
if (!haveChromium) process.stderr.write(`dashboard-browser.test.ts: skipped, no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)\n`);

const MiB = 1024 * 1024;
const REPO: RepoRef = { id: 'acme/dashboard-model' };
const WEIGHTS = makeContent(3 * MiB, 131);
const TOKEN = 'dashboard-metrics-token';
const ADMIN = 'dashboard-admin-secret-0123';
/** Bounds every browser step, so a hung page fails the test instead of stalling it. */
const STEP_MS = 30_000;

let hub: FakeHub;
let mirror: TestMirror;
let userDataDir: string;
let browser: BrowserContext;

/**
 * The little of the DOM the page-side predicates use: the tests compile without DOM types, and
 * the page's CSP forbids evaluating strings, so predicates are functions that cast `globalThis`.
 */
interface PageDom {
  document: {
    getElementById(id: string): { textContent: string | null } | null;
    querySelector(selector: string): { value?: number } | null;
  };
}

/** Waits until the page's first download row shows a progress bar at exactly `bytes`. */
async function progressShows(page: Page, bytes: number): Promise<void> {
  await page.waitForFunction((want) => (globalThis as unknown as PageDom).document.querySelector('#fills progress')?.value === want, bytes, { timeout: STEP_MS, polling: 50 });
}

describe.skipIf(!haveChromium)(`the dashboard in Chromium${haveChromium ? '' : ` (skipped: no Chromium at ${CHROMIUM})`}`, () => {
  beforeAll(async () => {
    hub = await startFakeHub();
    hub.addRepo({ ...REPO, files: { 'model.safetensors': WEIGHTS, 'config.json': Buffer.from('{"dashboard": true}\n') } });
    // Barriers hold upstream bodies on purpose; a client waiting at a held connection would have it
    // replaced after upstreamStallSeconds (segmented.test.ts tests that), and these tests count the
    // requests and hold the moments: no stall takeovers here.
    mirror = await startMirror(hub.url, { metricsToken: TOKEN, upstreamStallSeconds: 0 });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      viewport: { width: 900, height: 760 },
      timeout: 60_000,
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    await mirror?.destroy();
    await hub?.stop();
  });

  it('asks for the token, then shows a download moving through two barriers, and the hit ratio after a hit', async () => {
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(`${mirror.url}/_/`);

    // An anonymous visitor gets the form and no data.
    await page.waitForSelector('#login:not([hidden])');
    expect(await page.isHidden('#main')).toBe(true);
    expect(await page.content()).not.toContain(REPO.id);
    await page.fill('#token', TOKEN);
    await page.click('#login-submit');
    await page.waitForSelector('#main:not([hidden])');
    await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('state')?.textContent?.startsWith('live'));

    // A small file first, missed then hit, so the page has a ratio to show during the download.
    const configUrl = `${mirror.url}/${REPO.id}/resolve/main/config.json`;
    expect(header(await download(configUrl), 'x-mirror-cache')).toBe('miss');
    expect(header(await download(configUrl), 'x-mirror-cache')).toBe('hit');
    await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('hit-ratio')?.textContent === '50.0%');

    const sha = hub.fileInfo(REPO, 'model.safetensors').sha256;
    const first = hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'barrier', atBytes: MiB });
    const second = hub.setFault({ server: 'cdn', pathIncludes: sha }, { kind: 'barrier', atBytes: 2 * MiB });
    const url = `${mirror.url}/${REPO.id}/resolve/main/model.safetensors`;
    const miss = download(url);
    try {
      await within(first.reached, { what: 'the CDN body reached 1 MiB' });
      await progressShows(page, MiB);
      const row = (await page.textContent('#fills li')) ?? '';
      expect(row).toContain(`models/${REPO.id} · model.safetensors`);
      expect(row).toContain('1.0 MiB of 3.0 MiB (33.3%)');
      expect(row).toContain('1 client reading');

      first.release();
      await within(second.reached, { what: 'the CDN body reached 2 MiB' });
      await progressShows(page, 2 * MiB);
      expect(await page.textContent('#fills li')).toContain('2.0 MiB of 3.0 MiB (66.7%)');
      // Bytes sent by a response still open are counted as they go (the client has all 2 MiB the fill has).
      await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('served-fill')?.textContent === '2.0 MiB');
      if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
    } finally {
      first.release();
      second.release();
    }
    const got = await miss;
    expect([got.status, header(got, 'x-mirror-cache'), got.sha256]).toEqual([200, 'miss', sha256Hex(WEIGHTS)]);
    await page.waitForSelector('#no-fills:not([hidden])');

    const hit = await download(url);
    expect([hit.status, header(hit, 'x-mirror-cache'), hit.sha256]).toEqual([200, 'hit', sha256Hex(WEIGHTS)]);
    // Two misses (config.json, the weights) and two hits.
    await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('hit-counts')?.textContent?.startsWith('2 hits · 2 misses'));
    expect(await page.textContent('#hit-ratio')).toBe('50.0%');
    expect(await page.textContent('#served-cache')).toBe('3.0 MiB');
    expect(await page.textContent('#upstream-file')).toBe('3.0 MiB');
    expect(await page.textContent('#saved')).toBe('3.0 MiB');
    expect(await page.textContent('#repos tbody')).toContain(`models/${REPO.id}`);
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('asks for the admin token, starts a prefetch from the jobs card and shows it until done: each matching file fetched once', async () => {
    const id = 'acme/dashboard-prefetch';
    const files = { 'a.safetensors': makeContent(MiB, 132), 'b.safetensors': makeContent(MiB + 7, 133), 'notes.md': Buffer.from('# not asked for\n') };
    hub.addRepo({ id, files });
    const fetched = (name: string) => hub.count({ server: 'cdn', method: 'GET', pathIncludes: hub.fileInfo({ id }, name).sha256 });
    // A mirror of its own, with the operator API on its port.
    const admin = await startMirror(hub.url, { metricsToken: TOKEN, adminToken: ADMIN });
    const page = await browser.newPage();
    page.setDefaultTimeout(STEP_MS);
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    try {
      await page.goto(`${admin.url}/_/`);
      await page.waitForSelector('#login:not([hidden])');
      await page.fill('#token', TOKEN);
      await page.click('#login-submit');

      // The jobs card asks for its own token; a wrong one is refused.
      await page.waitForSelector('#admin-login:not([hidden])');
      expect(await page.isHidden('#jobs-panel')).toBe(true);
      await page.fill('#admin-token', 'not-the-admin-token-at-all');
      await page.click('#admin-submit');
      await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('jobs-state')?.textContent === 'admin token refused');
      await page.fill('#admin-token', ADMIN);
      await page.click('#admin-submit');
      await page.waitForSelector('#jobs-panel:not([hidden])');

      await page.fill('#pf-repo', id);
      await page.fill('#pf-include', '*.safetensors');
      await page.click('#pf-start');
      await page.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('pf-result')?.textContent?.startsWith('started job '));
      const jobId = /^started job (\S+)/.exec((await page.textContent('#pf-result')) ?? '')?.[1] ?? '';
      const row = `#jobs tr[data-id="${jobId}"]`;
      await page.waitForSelector(`${row}[data-state="done"]`);
      const text = (await page.textContent(row)) ?? '';
      expect(text).toContain(`prefetch`);
      expect(text).toContain(`models/${id}@main · *.safetensors`);
      expect(text).toContain('2 of 2 files');
      expect([fetched('a.safetensors'), fetched('b.safetensors')]).toEqual([1, 1]);
      expect(hub.count({ server: 'hub', method: 'GET', pathIncludes: `/${id}/resolve/` })).toBe(2); // the two redirects; notes.md never asked
      // The admin token stays in the tab: not in the page, not in the job.
      expect(await page.content()).not.toContain(ADMIN);
      expect(pageErrors).toEqual([]);
    } finally {
      await page.close();
      await admin.destroy();
    }

    // Without adminToken this address has no operator API, and the card says so.
    const other = await browser.newPage();
    other.setDefaultTimeout(STEP_MS);
    await other.goto(`${mirror.url}/_/`);
    await other.waitForSelector('#login:not([hidden])');
    await other.fill('#token', TOKEN);
    await other.click('#login-submit');
    await other.waitForFunction(() => (globalThis as unknown as PageDom).document.getElementById('jobs-state')?.textContent?.startsWith('No operator API on this address'));
    expect(await other.isHidden('#admin-login')).toBe(true);
    expect(await other.isHidden('#jobs-panel')).toBe(true);
    await other.close();
  });

  it('serves the page with a strict content security policy and no data in it', async () => {
    const res = await download(`${mirror.url}/_/`);
    expect(res.status).toBe(200);
    expect(header(res, 'content-security-policy')).toContain("default-src 'none'");
    expect(res.body.toString('utf8')).not.toContain(REPO.id);
    expect((await download(`${mirror.url}/_/status`)).status).toBe(401);
  });
});
