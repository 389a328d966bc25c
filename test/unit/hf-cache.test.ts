/** What `hubcache import` reads from a huggingface_hub cache laid out by hand: shapes, names, links. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { keyOfEtag, scanCache } from '../../src/admin/hf-cache.js';

const C1 = 'c'.repeat(40);
const C2 = 'd'.repeat(40);
const SHA = 'a'.repeat(64);
const GIT = 'b'.repeat(40);
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-scan-')));
  dirs.push(d);
  return d;
}

/** A repo folder with blobs and snapshot links, as huggingface_hub writes it. */
function repoFolder(root: string, name: string, snapshots: Record<string, Record<string, string>>, blobs: Record<string, string>, refs: Record<string, string> = {}): string {
  const folder = path.join(root, name);
  for (const [etag, content] of Object.entries(blobs)) {
    fs.mkdirSync(path.join(folder, 'blobs'), { recursive: true });
    fs.writeFileSync(path.join(folder, 'blobs', etag), content);
  }
  for (const [commit, files] of Object.entries(snapshots)) {
    for (const [p, target] of Object.entries(files)) {
      const link = path.join(folder, 'snapshots', commit, p);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(target, link);
    }
  }
  for (const [ref, commit] of Object.entries(refs)) {
    fs.mkdirSync(path.dirname(path.join(folder, 'refs', ref)), { recursive: true });
    fs.writeFileSync(path.join(folder, 'refs', ref), commit);
  }
  return folder;
}

describe('scanCache', () => {
  it('reads repos of every type, their snapshot links, and refs (pull request refs too)', async () => {
    const root = tmp();
    repoFolder(root, 'models--org--name', { [C1]: { 'w.safetensors': `../../blobs/${SHA}`, 'sub/config.json': `../../../blobs/${GIT}` } }, { [SHA]: 'weights', [GIT]: '{}' }, { main: C1, 'refs/pr/1': C1 });
    repoFolder(root, 'datasets--org--data', { [C2]: { 'train.csv': `../../blobs/${GIT}` } }, { [GIT]: 'a,b' });
    repoFolder(root, 'spaces--gpt2', { [C2]: { 'app.py': `../../blobs/${GIT}` } }, { [GIT]: 'print()' });
    fs.mkdirSync(path.join(root, '.locks'));
    fs.writeFileSync(path.join(root, 'version.txt'), '1');
    const scan = await scanCache(root);
    expect(scan.shape).toBe('hub-cache');
    expect(scan.problems).toEqual([]);
    expect(scan.files.map((f) => [f.repo.type, f.repo.id, f.commit, f.path, f.blobKey, f.size])).toEqual([
      ['dataset', 'org/data', C2, 'train.csv', `gitsha1:${GIT}`, 3],
      ['model', 'org/name', C1, 'sub/config.json', `gitsha1:${GIT}`, 2],
      ['model', 'org/name', C1, 'w.safetensors', `sha256:${SHA}`, 7],
      ['space', 'gpt2', C2, 'app.py', `gitsha1:${GIT}`, 7],
    ]);
    expect(scan.refs.map((r) => [r.repo.id, r.revision, r.commit])).toEqual([
      ['org/name', 'main', C1],
      ['org/name', 'refs/pr/1', C1],
    ]);
    const one = await scanCache(path.join(root, 'models--org--name'));
    expect(one.shape).toBe('repo-folder');
    expect(one.files).toHaveLength(2);
  });

  it('skips or refuses what it cannot trust, and says why', async () => {
    const root = tmp();
    const outside = path.join(tmp(), 'outside.bin');
    fs.writeFileSync(outside, 'x');
    const other = repoFolder(root, 'models--org--other', { [C2]: { 'x.bin': `../../blobs/${SHA}` } }, { [SHA]: 'other' });
    const folder = repoFolder(
      root,
      'models--org--name',
      {
        [C1]: {
          'escape.bin': outside,
          'cross-repo.bin': path.join(other, 'blobs', SHA),
          'dangling.bin': '../../blobs/missing',
          'a-dir': '../../blobs',
          'not-an-etag.bin': '../../blobs/README',
        },
        'not-a-commit': { 'x.bin': `../../blobs/${SHA}` },
      },
      { [SHA]: 'ok', README: 'no etag' },
      { main: 'not a commit' },
    );
    fs.writeFileSync(path.join(folder, 'snapshots', C1, 'copied.bin'), 'a copy, not a link');
    fs.mkdirSync(path.join(root, 'models--bad..name', 'snapshots'), { recursive: true });
    const scan = await scanCache(root);
    expect(scan.files.map((f) => `${f.repo.id}/${f.path}`)).toEqual(['org/other/x.bin']);
    const problem = (item: string) => scan.problems.find((p) => p.item === item);
    expect(problem(`models--org--name/snapshots/${C1}/escape.bin`)).toMatchObject({ outcome: 'refused', message: expect.stringMatching(/leads outside the cache/) });
    expect(problem(`models--org--name/snapshots/${C1}/cross-repo.bin`)).toMatchObject({ outcome: 'skipped', message: expect.stringMatching(/does not link to a blob of its repo/) });
    expect(problem(`models--org--name/snapshots/${C1}/dangling.bin`)).toMatchObject({ outcome: 'skipped', message: expect.stringMatching(/dangling/) });
    expect(problem(`models--org--name/snapshots/${C1}/a-dir`)).toMatchObject({ outcome: 'skipped', message: 'not a regular file' });
    expect(problem(`models--org--name/snapshots/${C1}/not-an-etag.bin`)).toMatchObject({ outcome: 'skipped' });
    expect(problem(`models--org--name/snapshots/${C1}/copied.bin`)).toMatchObject({ outcome: 'skipped', message: expect.stringMatching(/a copy, not a link/) });
    expect(problem('models--org--name/snapshots/not-a-commit')).toMatchObject({ outcome: 'skipped' });
    expect(problem('models--org--name/refs/main')).toMatchObject({ outcome: 'skipped', message: 'not a ref file naming a commit' });
    expect(problem('models--bad..name')).toMatchObject({ outcome: 'skipped', message: 'not a valid repo name' });
    expect(scan.refs).toEqual([]);
  });

  it('names the shapes it expects when given something else', async () => {
    const root = tmp();
    await expect(scanCache(path.join(root, 'missing'))).rejects.toThrow(/does not exist/);
    fs.writeFileSync(path.join(root, 'file'), '');
    await expect(scanCache(path.join(root, 'file'))).rejects.toThrow(/is not a directory/);
    await expect(scanCache(root)).rejects.toThrow(/no models--\*\/, datasets--\*\/ or spaces--\*\/ folder with snapshots\//);
    repoFolder(root, 'models--org--name', { [C1]: { 'a.bin': `../../blobs/${SHA}` } }, { [SHA]: 'x' });
    await expect(scanCache(root, { repo: { type: 'model', id: 'org/name' } })).rejects.toThrow(/--repo is only for local_dir downloads/);
  });
});

describe('keyOfEtag', () => {
  it('sha256 for LFS etags, git sha1 for regular files, nothing else', () => {
    expect(keyOfEtag(SHA)).toBe(`sha256:${SHA}`);
    expect(keyOfEtag(GIT)).toBe(`gitsha1:${GIT}`);
    for (const bad of ['', 'A'.repeat(64), `${SHA}0`, 'g'.repeat(40), '../etc']) expect(keyOfEtag(bad), bad).toBeNull();
  });
});
