/**
 * Fresh memory pages for the next writer, so that no contender pays for the order it runs in.
 *
 * Why: on a VM whose balloon reports free pages to the host (Firecracker's free page reporting, as
 * on the machines this bench was written on), a guest page that stayed free for a couple of seconds
 * is given back to the host, and the next first touch faults it in again: writing 1 GiB into the
 * page cache then costs 1.0-2.5 s of system time, against 0.2 s onto pages freed a moment before.
 * Which contender of a round got which pages depended on its place in the rotation (nginx
 * proxy_cache always ran right after the `curl -o` run that had just deleted its file, the mirror
 * never did). A machine that has been serving for a while has no such pages: its page cache is
 * full and recycled.
 *
 * `recyclePages(dir, bytes)` writes `bytes` to a scratch file in `dir` and deletes it, right before a
 * run that will store about that much: the run then writes onto pages just freed, whoever it is.
 * BENCH_RECYCLE_PAGES=0 turns it off (then the order decides, as before).
 */
import fs from 'node:fs/promises';
import path from 'node:path';

const BLOCK = 4 * 1024 * 1024;
let block: Buffer | null = null;

export async function recyclePages(dir: string, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  block ??= Buffer.alloc(BLOCK, 0xa5);
  const file = path.join(dir, `.recycle-${process.pid}`);
  const fh = await fs.open(file, 'w');
  try {
    for (let at = 0; at < bytes; at += BLOCK) await fh.write(block, 0, Math.min(BLOCK, bytes - at), at);
  } finally {
    await fh.close();
    await fs.rm(file, { force: true });
  }
}
