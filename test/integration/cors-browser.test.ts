/**
 * CORS in a real browser: a page served from one 127.0.0.1 port reads files from the mirror on
 * another port (another origin), as transformers.js or @huggingface/hub do in a web page. A fetch
 * with `Authorization` and `Range` makes Chromium send a preflight first; the page must then get
 * the 206 and be able to read X-Repo-Commit, ETag and Content-Range. A page from an origin that is
 * not in corsOrigins must be refused by the browser.
 *
 * Needs Chromium (Debian's /usr/bin/chromium, or CHROMIUM_PATH); skipped with a message without it,
 * except under CI=true.
 */
import fs from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
// Under CI (which installs Debian's chromium) a missing browser fails the test instead of hiding it.
const haveChromium = fs.existsSync(CHROMIUM) || process.env.CI === 'true';
if (!haveChromium) process.stderr.write(`cors-browser.test.ts: skipped, no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)\n`);

const REPO: RepoRef = { id: 'org/browser-model' };
const WEIGHTS = makeContent(300_000, 81);
const KEY = 'mirror-access-key-browser';
/** Bounds every browser step, so a hung fetch fails the test instead of stalling it. */
const STEP_MS = 30_000;

interface PageFetch {
  status?: number;
  commit?: string | null;
  etag?: string | null;
  contentRange?: string | null;
  errorCode?: string | null;
  length?: number;
  sha256?: string;
  error?: string;
}

let hub: FakeHub;
let mirror: TestMirror;
let commit: string;
let allowedPage: { server: Server; url: string };
let otherPage: { server: Server; url: string };
let userDataDir: string;
let browser: BrowserContext;

/** A page server: the origin the browser runs our script in. */
async function startPageServer(): Promise<{ server: Server; url: string }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>page</title><p>a page on another origin</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Runs `fetch(url, {headers})` inside the page and reports what the page can see. */
async function fetchFromPage(page: Page, url: string, headers: Record<string, string>): Promise<PageFetch> {
  return page.evaluate(
    async ({ url, headers, timeoutMs }) => {
      try {
        const r = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
        const body = await r.arrayBuffer();
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', body));
        return {
          status: r.status,
          commit: r.headers.get('X-Repo-Commit'),
          etag: r.headers.get('ETag'),
          contentRange: r.headers.get('Content-Range'),
          errorCode: r.headers.get('X-Error-Code'),
          length: body.byteLength,
          sha256: Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join(''),
        };
      } catch (err) {
        return { error: String(err) };
      }
    },
    { url, headers, timeoutMs: STEP_MS - 5_000 },
  );
}

async function openPage(url: string): Promise<Page> {
  const page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.goto(url);
  return page;
}

/** Request lines the mirror logged for `method` on paths containing `pathPart`. */
function logged(method: string, pathPart: string): number {
  return mirror.logs.filter((l) => l.includes('"msg":"request"') && l.includes(`"method":"${method}"`) && l.includes(pathPart)).length;
}

describe.skipIf(!haveChromium)(`CORS in Chromium${haveChromium ? '' : ` (skipped: no Chromium at ${CHROMIUM})`}`, () => {
  beforeAll(async () => {
    hub = await startFakeHub();
    ({ commit } = hub.addRepo({ ...REPO, files: { 'config.json': Buffer.from('{"browser": true}\n'), 'model.safetensors': WEIGHTS } }));
    allowedPage = await startPageServer();
    otherPage = await startPageServer();
    mirror = await startMirror(hub.url, { corsOrigins: [allowedPage.url], accessKeys: [KEY] });
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-chromium-'));
    browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
      timeout: 60_000,
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
    await mirror?.destroy();
    await hub?.stop();
    for (const p of [allowedPage, otherPage]) if (p) await new Promise<void>((resolve) => p.server.close(() => resolve()));
  });

  it('a listed origin reads a range with Authorization (after a preflight) and the headers a client needs', async () => {
    const page = await openPage(allowedPage.url);
    const url = `${mirror.url}/${REPO.id}/resolve/main/model.safetensors`;
    const got = await fetchFromPage(page, url, { Authorization: `Bearer ${KEY}`, Range: 'bytes=1000-50999' });
    expect(got.error).toBeUndefined();
    expect(got.status).toBe(206);
    expect(got.commit).toBe(commit);
    expect(got.etag).toBe(`"${sha256Hex(WEIGHTS)}"`);
    expect(got.contentRange).toBe(`bytes 1000-50999/${WEIGHTS.length}`);
    expect([got.length, got.sha256]).toEqual([50_000, sha256Hex(WEIGHTS.subarray(1000, 51_000))]);
    // Authorization is not a simple header: the browser asked first, and the mirror admitted it without a key.
    expect(logged('OPTIONS', '/model.safetensors')).toBeGreaterThanOrEqual(1);

    // Errors are readable too: the page sees the Hub's error code.
    const missing = await fetchFromPage(page, `${mirror.url}/${REPO.id}/resolve/main/missing.bin`, { Authorization: `Bearer ${KEY}` });
    expect([missing.status, missing.errorCode]).toEqual([404, 'EntryNotFound']);
    await page.close();
  });

  it('a page from an origin not in corsOrigins is refused by the browser, and its GET is never sent', async () => {
    const page = await openPage(otherPage.url);
    const got = await fetchFromPage(page, `${mirror.url}/${REPO.id}/resolve/main/config.json`, { Authorization: `Bearer ${KEY}`, Range: 'bytes=0-9' });
    expect(got.status).toBeUndefined();
    expect(got.error).toMatch(/TypeError/);
    expect(logged('OPTIONS', '/config.json')).toBeGreaterThanOrEqual(1);
    expect(logged('GET', '/config.json')).toBe(0);
    await page.close();
  });
});
