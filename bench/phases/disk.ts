/**
 * Disk layout: 15 × 256 MiB shards pulled at once onto a fresh ext4 filesystem, through the
 * mirror (its blobs) and, as the reference, by 15 parallel `curl -o` straight from the fake hub.
 * Each pass gets its own freshly made filesystem in an image file (preallocated with fallocate
 * where it can be, else sparse), loop-mounted (root only).
 * Figures: extents per file (`filefrag`) and read-back MB/s with the page cache dropped (`sync`,
 * `echo 3 > /proc/sys/vm/drop_caches`, then `dd iflag=direct`). Everything is unmounted and
 * removed in a finally (and by the bench's Ctrl-C handler).
 */
import fs from 'node:fs';
import path from 'node:path';
import { findBlob, type BenchContext, type BenchFile, type HubWorld } from '../lib/context.js';
import { directRead, extents, run } from '../lib/external.js';
import { fmt, fmtSize, median } from '../lib/stats.js';
import { findTool, mustTool } from '../lib/tools.js';
import { fileSha256 } from '../lib/stored.js';

interface Pass {
  pullS: number;
  extents: number[];
  readMBps: number;
}

export async function diskPhase(ctx: BenchContext): Promise<void> {
  const { s } = ctx;
  const n = s.diskShards;
  const tools = { mkfs: mustTool('mkfs.ext4'), filefrag: mustTool('filefrag'), mount: mustTool('mount'), umount: mustTool('umount'), dd: mustTool('dd'), curl: mustTool('curl'), fallocate: findTool('fallocate') };
  ctx.progress(`disk: ${n} × ${fmtSize(s.diskShardSize)} at once onto fresh ext4 (loop-mounted ${s.diskImageGiB} GiB image), mirror vs ${n} parallel curl -o; ${s.rounds} rounds`);
  const dir = fs.mkdtempSync(path.join(ctx.tmp, 'disk-'));
  const img = path.join(dir, 'fs.img');
  const mnt = path.join(dir, 'mnt');
  fs.mkdirSync(mnt);
  let mounted = false;
  const unmount = async (): Promise<void> => {
    if (!mounted) return;
    const r = await run(tools.umount, [mnt]);
    if (r.code !== 0) {
      console.error(`  note: umount ${mnt}: ${r.stderr.trim()}; lazy unmount`);
      await run(tools.umount, ['-l', mnt]);
    }
    mounted = false;
  };
  // Two steps, so that the janitor (if this process dies) unmounts before it removes the directory.
  const removeDir = ctx.cleanup.push('disk image dir', () => fs.rmSync(dir, { recursive: true, force: true }), { kind: 'rm', path: dir });
  const unmountAtEnd = ctx.cleanup.push('disk unmount', unmount, { kind: 'umount', path: mnt });
  const freshFs = async (): Promise<void> => {
    await unmount();
    fs.rmSync(img, { force: true });
    // Preallocated (fallocate: unwritten extents, no data written) rather than sparse, so the
    // image's own layout on the host disk follows the order of its offsets, not the order in
    // which the pass happened to write them: otherwise read-back measures the host filesystem.
    const bytes = s.diskImageGiB * 2 ** 30;
    const fa = tools.fallocate ? await run(tools.fallocate, ['-l', String(bytes), img]) : null;
    if (!fa || fa.code !== 0) {
      if (fa) console.error(`  note: fallocate: ${fa.stderr.trim()}; using a sparse image`);
      fs.closeSync(fs.openSync(img, 'w'));
      fs.truncateSync(img, bytes);
    }
    // Inode tables and journal initialised now, so no lazy-init thread writes during the pass.
    const mk = await run(tools.mkfs, ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', img]);
    if (mk.code !== 0) throw new Error(`mkfs.ext4: ${mk.stderr.trim()}`);
    const m = await run(tools.mount, ['-o', 'loop', img, mnt]);
    if (m.code !== 0) throw new Error(`mount -o loop: ${m.stderr.trim()}`);
    mounted = true;
  };
  const measure = async (what: string, files: { file: string; f: BenchFile }[]): Promise<{ extents: number[]; readMBps: number }> => {
    await run('sync', []);
    const ext: number[] = [];
    for (const { file } of files) ext.push(await extents(tools.filefrag, file));
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    let bytes = 0;
    let seconds = 0;
    for (const { file } of files) {
      const r = await directRead(tools.dd, file);
      bytes += r.bytes;
      seconds += r.seconds;
    }
    for (const { file, f } of files) {
      const sha = await fileSha256(file);
      if (sha !== f.sha256) ctx.fail(`disk ${what} ${path.basename(file)}: sha256 ${sha}, expected ${f.sha256}`);
    }
    return { extents: ext, readMBps: bytes / 1e6 / seconds };
  };

  try {
    await ctx.hubWorld('disk', async (h: HubWorld) => {
      const shards = h.addFiles('disk', n, s.diskShardSize);
      const fig = { mirror: [] as Pass[], direct: [] as Pass[] };
      const directPass = async (): Promise<void> => {
        await freshFs();
        const out = path.join(mnt, 'direct');
        fs.mkdirSync(out);
        const t0 = performance.now();
        const rs = await Promise.all(shards.map((f) => run(tools.curl, ['-s', '-S', '-L', '-o', path.join(out, f.path), '-w', '%{http_code}', h.hubUrl(f)])));
        const pullS = (performance.now() - t0) / 1000;
        rs.forEach((r, i) => {
          if (r.code !== 0 || r.stdout.trim() !== '200') ctx.fail(`disk direct curl ${shards[i]!.path}: exit ${r.code ?? r.signal}, status ${r.stdout.trim()}: ${r.stderr.trim()}`);
        });
        const m = await measure('direct', shards.map((f) => ({ file: path.join(out, f.path), f })));
        fig.direct.push({ pullS, ...m });
      };
      const mirrorPass = async (): Promise<void> => {
        await freshFs();
        let files: { file: string; f: BenchFile }[] = [];
        let pullS = NaN;
        await ctx.withMirror(h, 'disk', path.join(mnt, 'mirror-data'), async (w) => {
          const b = await ctx.clients.gets(shards.map((f) => ({ url: w.mirrorUrl(f), expect: f.ref })));
          pullS = b.wallMs / 1000;
          b.outcomes.forEach((o, i) => ctx.checkGet(`disk mirror ${shards[i]!.path}`, o, { size: s.diskShardSize }));
          files = shards.flatMap((f) => {
            const file = findBlob(w.mirror.dataDir, f.sha256);
            if (!file) ctx.fail(`disk mirror: no blob for ${f.path}`);
            return file ? [{ file, f }] : [];
          });
        });
        // The mirror is closed: its blobs are final and nothing writes any more.
        const m = await measure('mirror', files);
        fig.mirror.push({ pullS, ...m });
      };
      for (let r = 0; r < s.rounds; r++) {
        const passes = r % 2 === 0 ? [mirrorPass, directPass] : [directPass, mirrorPass];
        for (const p of passes) await p();
        const mm = fig.mirror.at(-1)!;
        const dd = fig.direct.at(-1)!;
        ctx.progress(
          `   round ${r + 1}: extents median/max mirror ${median(mm.extents)}/${Math.max(...mm.extents)}, direct ${median(dd.extents)}/${Math.max(...dd.extents)}; ` +
            `read-back mirror ${fmt(mm.readMBps, 0)} MB/s, direct ${fmt(dd.readMBps, 0)} MB/s; pull ${fmt(mm.pullS, 1)} s / ${fmt(dd.pullS, 1)} s`,
        );
      }
      const label = `${n} × ${fmtSize(s.diskShardSize)} at once onto fresh ext4`;
      const base = { phase: 'disk', referenceName: `${n} × curl -o (direct)` } as const;
      ctx.report.add({
        ...base,
        label: `${label}: extents per file (median)`,
        unit: 'extents',
        better: 'lower',
        mirror: fig.mirror.map((p) => median(p.extents)),
        reference: fig.direct.map((p) => median(p.extents)),
        goals: [
          { on: 'mirror', op: '<=', value: 4 },
          { on: 'ratio', op: '<', value: 1 },
        ],
        digits: 1,
        note: 'goal: ≤ 4 and fewer than direct',
      });
      ctx.report.add({ ...base, label: `${label}: extents per file (max)`, unit: 'extents', better: 'lower', mirror: fig.mirror.map((p) => Math.max(...p.extents)), reference: fig.direct.map((p) => Math.max(...p.extents)), goals: [], digits: 0, info: true });
      ctx.report.add({ ...base, label: `${label}: read-back, page cache dropped (dd iflag=direct)`, unit: 'MB/s', better: 'higher', mirror: fig.mirror.map((p) => p.readMBps), reference: fig.direct.map((p) => p.readMBps), goals: [], digits: 0, info: true });
      ctx.report.add({ ...base, label: `${label}: all pulled`, unit: 's', better: 'lower', mirror: fig.mirror.map((p) => p.pullS), reference: fig.direct.map((p) => p.pullS), goals: [], digits: 1, info: true });
      ctx.details.disk = { shards: n, shardSize: s.diskShardSize, imageGiB: s.diskImageGiB, ...fig };
    });
  } finally {
    await unmountAtEnd();
    await removeDir();
  }
}
