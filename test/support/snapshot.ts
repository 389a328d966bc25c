/**
 * Helpers for snapshot tests: read back a client's snapshot folder, and record what a JS client
 * received (every `Link` header) through a wrapping `fetch`.
 */
import fs from 'node:fs';
import path from 'node:path';

/** path → content of every file under `dir` (symlinks followed), sorted by path. */
export function readTree(dir: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.statSync(path.join(dir, r));
      if (st.isDirectory()) walk(r);
      else out[r] = fs.readFileSync(path.join(dir, r));
    }
  };
  walk('');
  return out;
}

/** A `fetch` that records every response's URL, status and `Link` header. */
export function recordingFetch(): { fetch: typeof fetch; seen: Array<{ url: string; status: number; link: string | null; headers: Headers }> } {
  const seen: Array<{ url: string; status: number; link: string | null; headers: Headers }> = [];
  const wrapped: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    seen.push({ url: res.url, status: res.status, link: res.headers.get('link'), headers: res.headers });
    return res;
  };
  return { fetch: wrapped, seen };
}
