/**
 * Scopes in the index (who may read a recording back): an index written before scopes existed
 * keeps its meaning (anonymous rows public, token rows unreadable), and a conflicting write never
 * narrows public content.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { blobKey } from '../../src/storage/blob-layout.js';
import { SqliteCacheIndex as CacheIndex, type FileRow } from '../../src/storage/sqlite-cache-index.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';

const repo = { type: 'model' as const, id: 'org/name' };
const C1 = '1'.repeat(40);
const key = blobKey('gitsha1', 'a'.repeat(40))!;
let dir: string | undefined;
afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

function indexFile(): string {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-scope-'));
  return path.join(dir, 'index.sqlite');
}

const row = (p: string, scope: string | null): FileRow => ({ repo, commit: C1, view: 'resolve', path: p, blobKey: key, size: 2, etag: 'a'.repeat(40), isLfs: false, contentType: 'text/plain', scope, checkedAt: 1 });

describe('CacheIndex scopes', () => {
  it('an index from before scopes: anonymous rows, refs and API answers become public; token rows stay unreadable', async () => {
    const file = indexFile();
    const old = new Database(file);
    old.exec(MIGRATIONS[0]!);
    old.exec(MIGRATIONS[1]!);
    old.pragma('user_version = 2');
    const insert = old.prepare(
      `INSERT INTO files (repo_type, repo_id, commit_sha, view, path, blob_key, size, etag, is_lfs, content_type, anonymous_ok, checked_at)
       VALUES ('model', 'org/name', ?, 'resolve', ?, ?, 2, ?, 0, 'text/plain', ?, 1)`,
    );
    insert.run(C1, 'public.txt', key, 'a'.repeat(40), 1);
    insert.run(C1, 'token.txt', key, 'a'.repeat(40), 0);
    old.prepare(`INSERT INTO refs (repo_type, repo_id, revision, commit_sha, checked_at) VALUES ('model', 'org/name', 'main', ?, 7)`).run(C1);
    old.prepare(`INSERT INTO api_responses (repo_type, repo_id, commit_sha, request_key, status, headers, next_page, body, stored_at) VALUES ('model', 'org/name', ?, 'q', 200, '{}', NULL, ?, 5)`).run(C1, Buffer.from('[]'));
    old.close();

    const index = CacheIndex.open(file);
    expect((await index.getFile(repo, C1, 'resolve', 'public.txt'))?.scope).toBe('anonymous');
    expect((await index.getFile(repo, C1, 'resolve', 'token.txt'))?.scope).toBeNull();
    expect(await index.getRef(repo, 'main')).toEqual({ commit: C1, checkedAt: 7, scope: 'anonymous' });
    expect((await index.getApiResponse(repo, C1, 'q'))?.scope).toBe('anonymous');
    await index.close();
  });

  it('public is sticky; a service scope survives a token answer and is replaced by another service', async () => {
    const index = CacheIndex.open(indexFile());
    const scopeAfter = async (p: string, writes: Array<string | null>): Promise<string | null | undefined> => {
      for (const s of writes) await index.putFile(row(p, s));
      return (await index.getFile(repo, C1, 'resolve', p))?.scope;
    };
    expect(await scopeAfter('a', ['anonymous', 'service:x', null])).toBe('anonymous');
    expect(await scopeAfter('b', ['service:x', null])).toBe('service:x');
    expect(await scopeAfter('c', ['service:x', 'service:y'])).toBe('service:y');
    expect(await scopeAfter('d', [null, 'service:x', 'anonymous'])).toBe('anonymous');
    const api = (scope: string) => ({ status: 200, headers: {}, nextPage: undefined, body: Buffer.from('[]'), storedAt: 1, scope });
    await index.putApiResponse(repo, C1, 'q1', api('anonymous'));
    await index.putApiResponse(repo, C1, 'q1', api('service:x'));
    await index.putApiResponse(repo, C1, 'q2', api('service:x'));
    await index.putApiResponse(repo, C1, 'q2', api('anonymous'));
    expect([(await index.getApiResponse(repo, C1, 'q1'))?.scope, (await index.getApiResponse(repo, C1, 'q2'))?.scope]).toEqual(['anonymous', 'anonymous']);
    await index.close();
  });
});
