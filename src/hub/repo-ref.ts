/**
 * Pure parsing and validation of Hub names: repo ids, revisions and file paths, and the
 * `/{prefix}{repo}/{resolve|raw}/{revision}/{path}` URL shape.
 * Nothing here touches the network or the disk; every rejection is a MirrorError with a 400 code.
 */
import { MirrorError } from '../errors.js';

export type RepoType = 'model' | 'dataset' | 'space';

export interface RepoRef {
  type: RepoType;
  /** `name` (legacy, no org) or `org/name`. */
  id: string;
}

/** `resolve` serves the file (LFS content for LFS files); `raw` serves the git object (the LFS pointer). */
export type FileView = 'resolve' | 'raw';

export interface FileRequest {
  repo: RepoRef;
  view: FileView;
  /** Decoded revision: branch, tag, 40-hex commit, `refs/pr/N`, `refs/convert/...`. */
  revision: string;
  /** Decoded path inside the repo, segments joined by `/`. */
  path: string;
}

const URL_PREFIX: Record<RepoType, string> = { model: '', dataset: 'datasets/', space: 'spaces/' };
const PREFIX_TYPE: Record<string, RepoType> = { datasets: 'dataset', spaces: 'space' };

export function isRepoType(text: string): text is RepoType {
  return text === 'model' || text === 'dataset' || text === 'space';
}

/** URL prefix of a repo type in file URLs: `''`, `'datasets/'` or `'spaces/'`. */
export function urlPrefix(type: RepoType): string {
  return URL_PREFIX[type];
}

/** Plural used in API paths: `models`, `datasets`, `spaces`. */
export function apiTypeSegment(type: RepoType): string {
  return `${type}s`;
}

const COMMIT_RE = /^[0-9a-f]{40}$/;
/** A full commit sha: immutable, so anything addressed by it can be cached forever. */
export function isCommitSha(revision: string): boolean {
  return COMMIT_RE.test(revision);
}

// huggingface_hub's validate_repo_id: [\w\-.]{1,96} per part, no "--" or "..", no leading or
// trailing "-" or ".".
const REPO_PART_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$/;

export function validateRepoId(id: string): string {
  const parts = id.split('/');
  const ok =
    parts.length >= 1 &&
    parts.length <= 2 &&
    parts.every((p) => REPO_PART_RE.test(p) && !p.includes('--') && !p.includes('..'));
  if (!ok) throw new MirrorError('InvalidRepoId', `Invalid repo id: ${printable(id)}`);
  return id;
}

// Git ref-name rules that matter here, plus no control characters. `refs/pr/1` is allowed.
// eslint-disable-next-line no-control-regex
const BAD_REVISION_RE = /[\x00-\x20\x7f~^:?*[\\]|\.\.|@\{|\/\/|^\/|\/$|\.lock$|^\.|\/\./;

export function validateRevision(revision: string): string {
  if (revision.length === 0 || revision.length > 255 || BAD_REVISION_RE.test(revision)) {
    throw new MirrorError('InvalidRevision', `Invalid revision: ${printable(revision)}`);
  }
  return revision;
}

const MAX_PATH_LENGTH = 4096;
const MAX_SEGMENT_BYTES = 255;

/** A repo-relative file path: no empty, `.` or `..` segments, no control characters, no backslash. */
export function validatePath(path: string): string {
  const fail = (): never => {
    throw new MirrorError('InvalidPath', `Invalid file path: ${printable(path)}`);
  };
  if (path.length === 0 || path.length > MAX_PATH_LENGTH) fail();
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f\\]/.test(path)) fail();
  for (const seg of path.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || Buffer.byteLength(seg) > MAX_SEGMENT_BYTES) fail();
  }
  return path;
}

function decodeSegment(raw: string, code: 'InvalidRevision' | 'InvalidPath' | 'InvalidRepoId'): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new MirrorError(code, `Malformed percent-encoding: ${printable(raw)}`);
  }
}

/**
 * Parses a raw (still percent-encoded) URL path such as `/datasets/org/name/resolve/refs%2Fpr%2F1/a/b.bin`.
 * Returns `null` when the path does not have the shape of a file URL at all (the caller answers 404),
 * and throws a 400 MirrorError when it has the shape but a part is invalid.
 */
export function parseFileUrl(rawPath: string): FileRequest | null {
  const segs = rawPath.split('/').slice(1);
  let type: RepoType = 'model';
  const prefixType = segs[0] === undefined ? undefined : PREFIX_TYPE[segs[0]];
  if (prefixType !== undefined && segs.length > 4) {
    type = prefixType;
    segs.shift();
  }
  // The repo id has one or two segments; find the view marker right after it (never split
  // on a fixed count: model ids have no namespace or one).
  let markerAt: number;
  if (isView(segs[2]) && segs.length >= 5) markerAt = 2;
  else if (isView(segs[1]) && segs.length >= 4) markerAt = 1;
  else return null;

  const id = validateRepoId(segs.slice(0, markerAt).map((s) => decodeSegment(s, 'InvalidRepoId')).join('/'));
  const view = segs[markerAt] as FileView;
  let rest = segs.slice(markerAt + 1);

  // A revision is one segment (encoded `refs%2Fpr%2F1`), or unencoded `refs/pr/1` / `refs/convert/x`.
  let revision = decodeSegment(rest[0] ?? '', 'InvalidRevision');
  rest = rest.slice(1);
  if (revision === 'refs' && rest.length >= 3) {
    revision = ['refs', ...rest.slice(0, 2).map((s) => decodeSegment(s, 'InvalidRevision'))].join('/');
    rest = rest.slice(2);
  }
  validateRevision(revision);
  const path = validatePath(rest.map((s) => decodeSegment(s, 'InvalidPath')).join('/'));
  return { repo: { type, id }, view, revision, path };
}

function isView(seg: string | undefined): boolean {
  return seg === 'resolve' || seg === 'raw';
}

/** Encodes a repo path for a URL: each segment percent-encoded, slashes kept. */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** The upstream (or mirror) URL path of a file: `/{prefix}{repo}/{view}/{encoded revision}/{encoded path}`. */
export function fileUrlPath(req: FileRequest): string {
  return `/${urlPrefix(req.repo.type)}${req.repo.id}/${req.view}/${encodeURIComponent(req.revision)}/${encodePath(req.path)}`;
}

/** A stable string for a repo, used in keys and logs: `model:org/name`. */
export function repoKey(repo: RepoRef): string {
  return `${repo.type}:${repo.id}`;
}

/** Shortens and escapes untrusted text before it goes into a message or a header. */
export function printable(text: string, max = 200): string {
  const escaped = JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
  return escaped.replace(/[^\x20-\x7e]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
