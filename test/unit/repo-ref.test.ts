import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { fileUrlPath, isCommitSha, parseFileUrl } from '../../src/hub/repo-ref.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof MirrorError ? err.code : 'other';
  }
  return undefined;
}

describe('parseFileUrl', () => {
  it('parses models, datasets and spaces, with and without an org', () => {
    expect(parseFileUrl('/org/name/resolve/main/config.json')).toEqual({
      repo: { type: 'model', id: 'org/name' },
      view: 'resolve',
      revision: 'main',
      path: 'config.json',
    });
    expect(parseFileUrl('/gpt2/resolve/main/config.json')?.repo).toEqual({ type: 'model', id: 'gpt2' });
    expect(parseFileUrl('/datasets/org/ds/resolve/v1.0/data/train.parquet')).toMatchObject({
      repo: { type: 'dataset', id: 'org/ds' },
      revision: 'v1.0',
      path: 'data/train.parquet',
    });
    expect(parseFileUrl('/spaces/org/app/raw/main/app.py')).toMatchObject({ repo: { type: 'space', id: 'org/app' }, view: 'raw' });
    expect(parseFileUrl('/datasets/squad/resolve/main/x.json')?.repo).toEqual({ type: 'dataset', id: 'squad' });
  });

  it('decodes revisions, encoded or not, and nested paths', () => {
    expect(parseFileUrl('/org/name/resolve/refs%2Fpr%2F1/config.json')?.revision).toBe('refs/pr/1');
    expect(parseFileUrl('/org/name/resolve/refs/pr/1/config.json')).toMatchObject({ revision: 'refs/pr/1', path: 'config.json' });
    expect(parseFileUrl('/org/name/resolve/refs%2Fconvert%2Fparquet/a/b.parquet')?.revision).toBe('refs/convert/parquet');
    const sha = 'a'.repeat(40);
    expect(parseFileUrl(`/org/name/resolve/${sha}/sub/dir/x.bin`)).toMatchObject({ revision: sha, path: 'sub/dir/x.bin' });
    expect(parseFileUrl('/org/name/resolve/main/with%20space%23.txt')?.path).toBe('with space#.txt');
    expect(parseFileUrl('/org/name/resolve/main/%C3%A9t%C3%A9.txt')?.path).toBe('été.txt');
  });

  it('round-trips through fileUrlPath', () => {
    const req = parseFileUrl('/datasets/org/ds/resolve/refs%2Fpr%2F3/a%20b/c%23d.txt');
    expect(req).not.toBeNull();
    expect(fileUrlPath(req!)).toBe('/datasets/org/ds/resolve/refs%2Fpr%2F3/a%20b/c%23d.txt');
  });

  it('returns null for paths that are not file URLs', () => {
    expect(parseFileUrl('/')).toBeNull();
    expect(parseFileUrl('/api/models/org/name')).toBeNull();
    expect(parseFileUrl('/org/name/blob/main/x')).toBeNull();
    expect(parseFileUrl('/org/name/resolve/main')).toBeNull();
  });

  it('rejects traversal, control characters and malformed names with 400 codes', () => {
    expect(code(() => parseFileUrl('/org/name/resolve/main/../../etc/passwd'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/%2e%2e/%2e%2e/etc/passwd'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/a%2F..%2Fb'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/a%00b'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/a%0d%0aX-Injected:%201'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/a%5cb'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main//x'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl(`/org/name/resolve/main/${'a'.repeat(300)}`))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/name/resolve/main/%E0%A4%A'))).toBe('InvalidPath');
    expect(code(() => parseFileUrl('/org/na..me/resolve/main/x'))).toBe('InvalidRepoId');
    expect(code(() => parseFileUrl('/org/-name/resolve/main/x'))).toBe('InvalidRepoId');
    expect(code(() => parseFileUrl('/org/name%2Fx/resolve/main/x'))).toBe('InvalidRepoId');
    expect(code(() => parseFileUrl('/org/name/resolve/ma..in/x'))).toBe('InvalidRevision');
    expect(code(() => parseFileUrl('/org/name/resolve/%2Fetc/x'))).toBe('InvalidRevision');
    expect(code(() => parseFileUrl('/org/name/resolve/a%0Ab/x'))).toBe('InvalidRevision');
  });

  it('recognises commit shas', () => {
    expect(isCommitSha('0123456789abcdef0123456789abcdef01234567')).toBe(true);
    expect(isCommitSha('main')).toBe(false);
    expect(isCommitSha('0123456789ABCDEF0123456789abcdef01234567')).toBe(false);
  });
});
