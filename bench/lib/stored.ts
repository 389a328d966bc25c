/**
 * Downloads stored to a file (`curl -o`, `aria2c` output) and their check: size and sha256 against
 * the bench file, then the file is removed (its pages freed, so every round writes new ones).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { BenchContext, BenchFile } from './context.js';
import { run } from './external.js';

export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Checks a downloaded file (size and sha256), then removes it. */
export async function checkFile(ctx: BenchContext, what: string, file: string, f: BenchFile): Promise<void> {
  try {
    const st = fs.statSync(file);
    if (st.size !== f.size) ctx.fail(`${what}: ${st.size} bytes on disk, expected ${f.size}`);
    else {
      const sha = await fileSha256(file);
      if (sha !== f.sha256) ctx.fail(`${what}: sha256 ${sha}, expected ${f.sha256}`);
    }
  } catch (err) {
    ctx.fail(`${what}: no file (${(err as Error).message})`);
  } finally {
    fs.rmSync(file, { force: true });
  }
}

/**
 * One `curl -L -o file url`, checked like checkFile. Returns curl's own figures: body bytes and
 * seconds from the request to the last byte written (`%{time_total}`).
 */
export async function curlToFile(ctx: BenchContext, curl: string, what: string, url: string, file: string, f: BenchFile): Promise<{ bytes: number; seconds: number }> {
  const r = await run(curl, ['-s', '-S', '-L', '-o', file, '-w', '%{http_code} %{size_download} %{time_total}', url]);
  const [code, bytes, seconds] = r.stdout.trim().split(' ');
  if (r.code !== 0 || code !== '200') ctx.fail(`curl ${what} ${f.path}: exit ${r.code ?? r.signal}, status ${code}: ${r.stderr.trim()}`);
  await checkFile(ctx, `curl ${what} ${f.path}`, file, f);
  return { bytes: Number(bytes), seconds: Number(seconds) };
}
