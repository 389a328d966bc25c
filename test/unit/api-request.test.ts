import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { canonicalQuery, infoCarriesSha, parseApiPath, parsePathsInfoBody, questionKey, upstreamApiPath } from '../../src/hub/api-request.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof MirrorError ? err.code : 'other';
  }
  return undefined;
}

const model = (id: string) => ({ type: 'model' as const, id });

describe('parseApiPath', () => {
  it('reads repo info, revision, tree and paths-info for every repo type, with and without an org', () => {
    expect(parseApiPath('/api/models/org/name')).toEqual({ kind: 'info', repo: model('org/name') });
    expect(parseApiPath('/api/models/gpt2')).toEqual({ kind: 'info', repo: model('gpt2') });
    expect(parseApiPath('/api/datasets/org/ds/revision/main')).toEqual({ kind: 'revision', repo: { type: 'dataset', id: 'org/ds' }, revision: 'main' });
    expect(parseApiPath('/api/models/gpt2/revision/HEAD')).toEqual({ kind: 'revision', repo: model('gpt2'), revision: 'HEAD' });
    expect(parseApiPath('/api/spaces/org/app/tree/main')).toEqual({ kind: 'tree', repo: { type: 'space', id: 'org/app' }, revision: 'main', path: '' });
    expect(parseApiPath('/api/models/org/name/paths-info/v1.0')).toEqual({ kind: 'paths-info', repo: model('org/name'), revision: 'v1.0' });
    expect(parseApiPath('/api/models/gpt2/tree/main/sub/dir')).toMatchObject({ repo: model('gpt2'), revision: 'main', path: 'sub/dir' });
  });

  it('takes revisions encoded (Python, JS) or raw (JS listFiles), and tree paths encoded as one segment', () => {
    expect(parseApiPath('/api/models/org/name/tree/refs%2Fpr%2F1/sub')).toMatchObject({ revision: 'refs/pr/1', path: 'sub' });
    expect(parseApiPath('/api/models/org/name/tree/refs/pr/1/sub/x')).toMatchObject({ revision: 'refs/pr/1', path: 'sub/x' });
    expect(parseApiPath('/api/models/org/name/tree/refs/convert/parquet')).toMatchObject({ revision: 'refs/convert/parquet', path: '' });
    expect(parseApiPath('/api/models/org/name/revision/refs/pr/1')).toMatchObject({ revision: 'refs/pr/1' });
    expect(parseApiPath('/api/models/org/name/paths-info/refs%2Fpr%2F1')).toMatchObject({ revision: 'refs/pr/1' });
    expect(parseApiPath('/api/models/org/name/tree/main/sub%2Fdir')).toMatchObject({ revision: 'main', path: 'sub/dir' });
    expect(parseApiPath('/api/models/org/name/tree/main/')).toMatchObject({ revision: 'main', path: '' });
    expect(parseApiPath('/api/models/org/name/tree/main/with%20space%23.txt')).toMatchObject({ path: 'with space#.txt' });
  });

  it('singles out Xet token routes and leaves everything else to pass through', () => {
    expect(parseApiPath('/api/models/org/name/xet-read-token/main')).toEqual({ kind: 'xet-token' });
    expect(parseApiPath('/api/datasets/ds/xet-read-token/abc')).toEqual({ kind: 'xet-token' });
    expect(parseApiPath('/api/models/org/name/xet-write-token/main')).toEqual({ kind: 'xet-token' });
    for (const p of ['/api/whoami-v2', '/api/models/org/name/refs', '/api/models/gpt2/refs', '/api/models/org/name/commits/main', '/api/models', '/api/kernels/org/k', '/api/models/org/name/tree', '/api/agent-harnesses']) {
      expect(parseApiPath(p), p).toEqual({ kind: 'other' });
    }
  });

  it('rejects invalid names and dot segments with 400 codes', () => {
    expect(code(() => parseApiPath('/api/models/org/na..me/revision/main'))).toBe('InvalidRepoId');
    expect(code(() => parseApiPath('/api/models/org/name/revision/a..b'))).toBe('InvalidRevision');
    expect(code(() => parseApiPath('/api/models/org/name/tree/main/a//b'))).toBe('InvalidPath');
    expect(code(() => parseApiPath('/api/models/org/name/tree/main/%2e%2e/x'))).toBe('InvalidPath');
    expect(code(() => parseApiPath('/api/models/org/name/refs/..%2F..%2Fx'))).toBe('InvalidPath');
    expect(code(() => parseApiPath('/api/models/org/name/revision/%E0%A4%A'))).toBe('InvalidRevision');
  });

  it('refuses paths the router only matched once normalised, and malformed pass-through paths', () => {
    // `/x/../api/...` and `/%61pi/...` reach the API routes after URL normalisation: passing them
    // through as sent would skip the Xet refusal and every check on the parsed form.
    for (const p of ['/x/../api/models/org/name/xet-read-token/main', '/x/%2e%2e/api/models/org/name/refs', '/%61pi/models/org/name/xet-read-token/main', '/api/models/org/name/refs/%zz', '/api/whoami-v2%']) {
      expect(code(() => parseApiPath(p)), p).toBe('InvalidPath');
    }
    expect(parseApiPath('/api/models/org/name/refs/%00')).toEqual({ kind: 'other' });
  });
});

describe('queries', () => {
  it('keeps the parameters a cached endpoint understands, in order; anything else means pass-through', () => {
    expect(canonicalQuery('revision', 'expand=sha&expand=siblings')).toBe('expand=sha&expand=siblings');
    expect(canonicalQuery('revision', 'expand%5B%5D=likes')).toBe('expand%5B%5D=likes');
    expect(canonicalQuery('info', '')).toBe('');
    expect(canonicalQuery('tree', 'recursive=true&expand=false&cursor=abc%3D')).toBe('recursive=true&expand=false&cursor=abc%3D');
    expect(canonicalQuery('tree', 'recursive=true&utm=1')).toBeNull();
    expect(canonicalQuery('revision', 'cursor=x')).toBeNull();
  });

  it('knows when a repo-info answer names its commit', () => {
    expect(infoCarriesSha('')).toBe(true);
    expect(infoCarriesSha('blobs=true')).toBe(true);
    expect(infoCarriesSha('expand=likes&expand=sha')).toBe(true);
    expect(infoCarriesSha('expand[]=sha')).toBe(true);
    expect(infoCarriesSha('expand=likes')).toBe(false);
  });
});

describe('paths-info bodies', () => {
  it('reads the form (Python) and JSON (JS) encodings alike', () => {
    const form = parsePathsInfoBody(Buffer.from('paths=a.txt&paths=sub%2Fb.bin&expand=True'), 'application/x-www-form-urlencoded');
    const json = parsePathsInfoBody(Buffer.from('{"paths":["a.txt","sub/b.bin"],"expand":true}'), 'application/json');
    expect(form).toEqual({ paths: ['a.txt', 'sub/b.bin'], expand: true });
    expect(json).toEqual(form);
    expect(questionKey({ kind: 'paths-info', body: form })).toBe(questionKey({ kind: 'paths-info', body: json }));
    expect(parsePathsInfoBody(Buffer.from('{"paths":["a"]}'), 'application/json; charset=utf-8')).toEqual({ paths: ['a'], expand: false });
    expect(parsePathsInfoBody(Buffer.from('paths=a'), undefined)).toEqual({ paths: ['a'], expand: false });
  });

  it('refuses malformed JSON bodies', () => {
    expect(code(() => parsePathsInfoBody(Buffer.from('{'), 'application/json'))).toBe('InvalidRequest');
    expect(code(() => parsePathsInfoBody(Buffer.from('{"paths":[1]}'), 'application/json'))).toBe('InvalidRequest');
    expect(code(() => parsePathsInfoBody(Buffer.from('[]'), 'application/json'))).toBe('InvalidRequest');
  });
});

describe('keys and upstream paths', () => {
  it('distinguishes questions that differ in path, query or body, without ambiguity', () => {
    const keys = new Set([
      questionKey({ kind: 'tree', path: 'a?recursive=true', query: '' }),
      questionKey({ kind: 'tree', path: 'a', query: 'recursive=true' }),
      questionKey({ kind: 'info', query: '' }),
      questionKey({ kind: 'info', query: 'blobs=true' }),
      questionKey({ kind: 'paths-info', body: { paths: ['a'], expand: true } }),
      questionKey({ kind: 'paths-info', body: { paths: ['a'], expand: false } }),
    ]);
    expect(keys.size).toBe(6);
  });

  it('asks upstream with the revision encoded as one segment', () => {
    const repo = model('org/name');
    expect(upstreamApiPath(repo, { kind: 'info', query: 'expand=sha' }, undefined)).toBe('/api/models/org/name?expand=sha');
    expect(upstreamApiPath(repo, { kind: 'info', query: '' }, 'refs/pr/1')).toBe('/api/models/org/name/revision/refs%2Fpr%2F1');
    expect(upstreamApiPath({ type: 'dataset', id: 'd' }, { kind: 'tree', path: 'a b/c', query: 'recursive=true' }, 'main')).toBe('/api/datasets/d/tree/main/a%20b/c?recursive=true');
    expect(upstreamApiPath(repo, { kind: 'paths-info', body: { paths: [], expand: false } }, 'v1')).toBe('/api/models/org/name/paths-info/v1');
  });
});
