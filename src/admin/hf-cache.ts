/**
 * Reads what a Hugging Face client left on disk, for `hubcache import`. Only reads; nothing in the
 * scanned directory is changed. Three shapes are recognised:
 *
 * - A huggingface_hub cache (`~/.cache/huggingface/hub`, also what @huggingface/hub writes):
 *   `models--org--name/` (and `datasets--…`, `spaces--…`) each with `blobs/<etag>`,
 *   `snapshots/<commit>/<path>` (links to `../../blobs/<etag>`) and `refs/<branch>` (a file
 *   holding the commit). The etag is the file's digest as the Hub names it: the sha256 of an LFS
 *   file (64 hex), the git blob sha1 of a regular file (40 hex).
 * - One repo folder of such a cache (`models--org--name/` itself).
 * - A `local_dir` download: `<dir>/<path>` with `<dir>/.cache/huggingface/download/<path>.metadata`
 *   (three lines: commit, etag, time). It does not say which repo it came from: the caller names it.
 *
 * Every link must lead, after resolving all symlinks, to a regular file inside the scanned
 * directory; one that leads outside is refused (reported, never read). Paths and revisions are
 * validated as the mirror validates requests. Files whose etag cannot be known (copies instead of
 * links, unknown etag shapes) are skipped and reported. A directory of none of these shapes is an
 * error that says so.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { MirrorError } from '../errors.js';
import { isCommitSha, printable, validatePath, validateRepoId, validateRevision, type RepoRef, type RepoType } from '../hub/repo-ref.js';
import { blobKey, type BlobKey } from '../storage/blob-layout.js';

export type CacheShape = 'hub-cache' | 'repo-folder' | 'local-dir';

/** One file a client has, at one commit. */
export interface CachedFile {
  repo: RepoRef;
  commit: string;
  path: string;
  /** The file holding its bytes (all links resolved; inside the scanned directory). */
  source: string;
  /** The blob key its etag names: what the bytes must hash to. */
  blobKey: BlobKey;
  size: number;
}

/** A branch or tag the client saw, and when (ms since epoch). */
export interface CachedRef {
  repo: RepoRef;
  revision: string;
  commit: string;
  seenAt: number;
}

/** Something in the directory that is not imported, and why. */
export interface ScanProblem {
  /** The entry, relative to the scanned directory. */
  item: string;
  /** `refused`: unsafe (a link leading outside); `skipped`: unusable (unknown etag, bad name). */
  outcome: 'refused' | 'skipped';
  message: string;
}

export interface CacheScan {
  shape: CacheShape;
  /** The scanned directory, all links resolved. */
  root: string;
  files: CachedFile[];
  refs: CachedRef[];
  problems: ScanProblem[];
}

export interface ScanOptions {
  /** The repo a local_dir download is of (required for that shape, refused for the others). */
  repo?: RepoRef;
  /** local_dir: the branch or tag it was downloaded at (recorded when all its files share one commit). */
  revision?: string;
}

const TYPE_OF_FOLDER: Record<string, RepoType> = { models: 'model', datasets: 'dataset', spaces: 'space' };
const LOCAL_DIR_METADATA = path.join('.cache', 'huggingface', 'download');

/** What kind of directory `dir` is, checked up front (a 400 for anything else); reads only directory listings. */
export async function detectShape(dir: string, opts: ScanOptions = {}): Promise<{ shape: CacheShape; root: string; folders: string[] }> {
  let root: string;
  try {
    root = await fsp.realpath(dir);
  } catch {
    throw notACache(dir, 'it does not exist');
  }
  if (!(await fsp.stat(root)).isDirectory()) throw notACache(dir, 'it is not a directory');
  if (repoOfFolder(path.basename(root)) !== undefined && (await isDir(path.join(root, 'snapshots')))) return checked('repo-folder', root, [root]);
  if (await isDir(path.join(root, LOCAL_DIR_METADATA))) {
    if (!opts.repo) throw new MirrorError('InvalidRequest', `${dir} is a local_dir download, which does not record its repo: name it (--repo org/name, and --type if not a model)`);
    return { shape: 'local-dir', root, folders: [] };
  }
  const folders: string[] = [];
  for (const e of await fsp.readdir(root, { withFileTypes: true })) {
    if (e.isDirectory() && repoOfFolder(e.name) !== undefined && (await isDir(path.join(root, e.name, 'snapshots')))) folders.push(path.join(root, e.name));
  }
  if (folders.length === 0) {
    throw notACache(dir, 'it has no models--*/, datasets--*/ or spaces--*/ folder with snapshots/, and no .cache/huggingface/download/ of a local_dir download (the cache is usually ~/.cache/huggingface/hub)');
  }
  return checked('hub-cache', root, folders.sort());

  function checked(shape: CacheShape, r: string, f: string[]) {
    if (opts.repo) throw new MirrorError('InvalidRequest', `${dir} is a huggingface_hub cache, which names its repos itself: --repo is only for local_dir downloads`);
    return { shape, root: r, folders: f };
  }
}

export async function scanCache(dir: string, opts: ScanOptions = {}): Promise<CacheScan> {
  const { shape, root, folders } = await detectShape(dir, opts);
  const scan: CacheScan = { shape, root, files: [], refs: [], problems: [] };
  if (shape === 'local-dir') {
    await scanLocalDir(scan, opts.repo as RepoRef, opts.revision);
    return scan;
  }
  for (const folder of folders) {
    const repo = repoOfFolder(path.basename(folder));
    if (repo) await scanRepoFolder(scan, folder, repo);
    else scan.problems.push({ item: path.relative(root, folder) || '.', outcome: 'skipped', message: 'not a valid repo name' });
  }
  return scan;
}

function notACache(dir: string, why: string): MirrorError {
  return new MirrorError('InvalidRequest', `${dir} is not a huggingface_hub cache or a local_dir download: ${why}`);
}

/** `models--org--name` → the repo; undefined for other names; null for a cache name that is no valid repo. */
function repoOfFolder(name: string): RepoRef | null | undefined {
  const parts = name.split('--');
  const type = TYPE_OF_FOLDER[parts[0] ?? ''];
  if (!type || parts.length < 2) return undefined;
  try {
    return { type, id: validateRepoId(parts.slice(1).join('/')) };
  } catch {
    return null;
  }
}

async function scanRepoFolder(scan: CacheScan, folder: string, repo: RepoRef): Promise<void> {
  const rel = (p: string) => path.relative(scan.root, p) || '.';
  const refsDir = path.join(folder, 'refs');
  if (await isDir(refsDir)) {
    for (const file of await walk(refsDir)) {
      const revision = path.relative(refsDir, file).split(path.sep).join('/');
      const lst = await fsp.lstat(file);
      const text = lst.isFile() ? (await fsp.readFile(file, 'utf8')).trim() : '';
      if (!isCommitSha(text) || !isValid(() => validateRevision(revision))) {
        scan.problems.push({ item: rel(file), outcome: 'skipped', message: 'not a ref file naming a commit' });
        continue;
      }
      scan.refs.push({ repo, revision, commit: text, seenAt: Math.min(lst.mtimeMs, Date.now()) });
    }
  }
  const snapshots = path.join(folder, 'snapshots');
  for (const entry of await fsp.readdir(snapshots, { withFileTypes: true })) {
    const snapshot = path.join(snapshots, entry.name);
    if (!entry.isDirectory() || !isCommitSha(entry.name)) {
      scan.problems.push({ item: rel(snapshot), outcome: 'skipped', message: 'not a snapshot (a directory named by a commit)' });
      continue;
    }
    for (const file of await walk(snapshot)) {
      const repoPath = path.relative(snapshot, file).split(path.sep).join('/');
      const item = rel(file);
      if (!isValid(() => validatePath(repoPath))) {
        scan.problems.push({ item, outcome: 'refused', message: 'not a valid repo path' });
        continue;
      }
      const lst = await fsp.lstat(file);
      if (!lst.isSymbolicLink()) {
        scan.problems.push({ item, outcome: 'skipped', message: 'a copy, not a link to a blob: its etag is unknown' });
        continue;
      }
      const target = await insideRoot(scan.root, file);
      if (typeof target !== 'string') {
        scan.problems.push({ item, ...target });
        continue;
      }
      const key = keyOfEtag(path.basename(target));
      if (!key || path.dirname(target) !== path.join(folder, 'blobs')) {
        scan.problems.push({ item, outcome: 'skipped', message: `does not link to a blob of its repo named by its etag (${printable(path.relative(scan.root, target))})` });
        continue;
      }
      scan.files.push({ repo, commit: entry.name, path: repoPath, source: target, blobKey: key, size: (await fsp.stat(target)).size });
    }
  }
}

async function scanLocalDir(scan: CacheScan, repo: RepoRef, revision: string | undefined): Promise<void> {
  const metaRoot = path.join(scan.root, LOCAL_DIR_METADATA);
  const commits = new Set<string>();
  let latest = 0;
  for (const meta of await walk(metaRoot)) {
    const item = path.relative(scan.root, meta);
    if (!meta.endsWith('.metadata')) continue;
    const repoPath = path.relative(metaRoot, meta).slice(0, -'.metadata'.length).split(path.sep).join('/');
    const [commit = '', etag = '', time = ''] = (await fsp.readFile(meta, 'utf8')).split('\n').map((l) => l.trim());
    const key = keyOfEtag(etag);
    if (!isCommitSha(commit) || !key || !isValid(() => validatePath(repoPath))) {
      scan.problems.push({ item, outcome: 'skipped', message: 'not download metadata (commit, etag, time) of a valid path' });
      continue;
    }
    const file = path.join(scan.root, ...repoPath.split('/'));
    const target = await insideRoot(scan.root, file);
    if (typeof target !== 'string') {
      scan.problems.push({ item: path.relative(scan.root, file), ...target });
      continue;
    }
    commits.add(commit);
    latest = Math.max(latest, Number(time) * 1000 || 0);
    scan.files.push({ repo, commit, path: repoPath, source: target, blobKey: key, size: (await fsp.stat(target)).size });
  }
  if (revision !== undefined && !isCommitSha(revision)) {
    const [commit] = commits;
    if (commits.size === 1 && commit) scan.refs.push({ repo, revision: validateRevision(revision), commit, seenAt: Math.min(latest || Date.now(), Date.now()) });
    else scan.problems.push({ item: '.', outcome: 'skipped', message: `its files come from ${commits.size} commits: ${printable(revision)} is not recorded` });
  }
}

/**
 * Where `file` leads once every link is resolved: a regular file inside `root`, or why not (a link
 * leading outside is refused; a dangling one, or one to something else than a file, skipped).
 */
async function insideRoot(root: string, file: string): Promise<string | Omit<ScanProblem, 'item'>> {
  let target: string;
  try {
    target = await fsp.realpath(file);
  } catch {
    return { outcome: 'skipped', message: 'missing, or a dangling link' };
  }
  if (target !== root && !target.startsWith(root + path.sep)) {
    return { outcome: 'refused', message: `a link that leads outside the cache (${printable(target)})` };
  }
  if (!(await fsp.stat(target)).isFile()) return { outcome: 'skipped', message: 'not a regular file' };
  return target;
}

/** An etag as the Hub gives it → the blob key it names: sha256 (LFS) or git blob sha1; else null. */
export function keyOfEtag(etag: string): BlobKey | null {
  if (/^[0-9a-f]{64}$/.test(etag)) return blobKey('sha256', etag);
  if (/^[0-9a-f]{40}$/.test(etag)) return blobKey('gitsha1', etag);
  return null;
}

/** Every non-directory entry below `dir` (links not followed), sorted. */
async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isDirectory()) out.push(path.join(e.parentPath, e.name));
  }
  return out.sort();
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await fsp.stat(p)).isDirectory();
  } catch {
    return false;
  }
}

function isValid(check: () => unknown): boolean {
  try {
    check();
    return true;
  } catch {
    return false;
  }
}
